//! Forged and contradictory history from the host: `get_missing_events` and `backfill` answers
//! with events of other rooms, events not asked for, bad signatures, more than asked, answers
//! that never come; and DAGs made to cost: thousands of levels deep, wider than the spec allows.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use ruma::CanonicalJsonValue;
use serde_json::{Value, json};

use super::{Host, HostKey, Reply, canonical, mallory};

const MISSING: &str = "/_matrix/federation/v1/get_missing_events/";
const BACKFILL: &str = "/_matrix/federation/v1/backfill/";

/// A message by mallory over the host's head, taken into the host's room.
fn say(host: &Host, body: &str) -> (String, Value) {
    let creator = mallory(&host.name);
    host.add(
        "m.room.message",
        None,
        &creator,
        json!({ "msgtype": "m.text", "body": body }),
    )
}

/// Lies the host can tell about its room: valid events off the room's history (never asked
/// for), an event of another room, and a copy of a real event under a forged signature.
/// Returns the lies and their IDs.
fn lies(host: &Host, count: usize) -> (Vec<Value>, Vec<String>) {
    let creator = mallory(&host.name);
    let mut events = Vec::new();
    let mut ids = Vec::new();
    for i in 0..count {
        let object = host.with_room(|r| {
            r.template(
                "m.room.message",
                None,
                &creator,
                json!({ "msgtype": "m.text", "body": format!("not asked {i}") }),
            )
        });
        let (id, event) = host.sign(object);
        ids.push(id);
        events.push(event);
    }
    let mut foreign = host.with_room(|r| {
        r.template(
            "m.room.message",
            None,
            &creator,
            json!({ "msgtype": "m.text", "body": "elsewhere" }),
        )
    });
    foreign.insert(
        "room_id".into(),
        CanonicalJsonValue::String(format!("!other:{}", host.name)),
    );
    let (id, event) = host.sign(foreign);
    ids.push(id);
    events.push(event);
    let object = host.with_room(|r| {
        r.template(
            "m.room.message",
            None,
            &creator,
            json!({ "msgtype": "m.text", "body": "forged" }),
        )
    });
    let (id, event) = host.sign_with(&HostKey::generate("grove"), object);
    ids.push(id);
    events.push(event);
    (events, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_missing_events_are_not_stored() {
    let host = Host::new().await;
    let (status, body) = host.join().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    say(&host, "one");
    say(&host, "two");
    let (m3, last) = say(&host, "three");
    // More than asked for, most of it lies, the truth last (past the limit).
    let (lies, lie_ids) = lies(&host, 60);
    host.script(move |asked, _, honest| {
        asked.path.starts_with(MISSING).then(|| {
            let mut events = lies.clone();
            events.extend(honest["events"].as_array().cloned().unwrap_or_default());
            Reply::ok(json!({ "events": events }))
        })
    });
    let answer = host.send("gme-lies", vec![last]).await;
    assert_eq!(answer[&m3], json!({}), "{answer}");
    for id in &lie_ids {
        assert!(!host.victim_has(id).await, "{id} stored");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_backfill_is_not_stored() {
    let host = Host::new().await;
    let mut history = Vec::new();
    for i in 0..5 {
        history.push(say(&host, &format!("before {i}")).0);
    }
    let (lies, lie_ids) = lies(&host, 60);
    host.script(move |asked, _, honest| {
        asked.path.starts_with(BACKFILL).then(|| {
            let mut pdus = lies.clone();
            pdus.extend(honest["pdus"].as_array().cloned().unwrap_or_default());
            Reply::ok(json!({ "origin": "x", "origin_server_ts": 1, "pdus": pdus }))
        })
    });
    let (status, body) = host.join().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!host.asked(BACKFILL).is_empty(), "no backfill asked for");
    for id in &lie_ids {
        assert!(!host.victim_has(id).await, "{id} stored");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backfill_answer_that_never_comes_does_not_hold_the_join() {
    let host = Host::new().await;
    say(&host, "before");
    host.script(|asked, _, honest| {
        asked.path.starts_with(BACKFILL).then(|| Reply {
            status: 200,
            body: honest.clone(),
            delay: Duration::from_secs(600),
        })
    });
    let started = Instant::now();
    let (status, body) = host.join().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the join waited {:?}",
        started.elapsed()
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deep_gap_costs_a_bounded_number_of_requests() {
    let host = Host::new().await;
    let (status, body) = host.join().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut last = (String::new(), Value::Null);
    for i in 0..1_500 {
        last = say(&host, &format!("deep {i}"));
    }
    let (id, event) = last;
    let started = Instant::now();
    let answer = host.send("deep", vec![event]).await;
    println!("a gap of 1,500 events closed in {:?}", started.elapsed());
    assert_eq!(answer[&id], json!({}), "{answer}");
    let rounds = host.asked(MISSING).len();
    assert!(rounds <= 10, "{rounds} get_missing_events requests");
    // The victim kept serving its own users meanwhile, and still does.
    let (status, _) = host
        .victim
        .get("/_matrix/client/v3/account/whoami", Some(&host.alice.token))
        .await;
    assert_eq!(status, StatusCode::OK);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_wider_than_the_spec_allows_are_refused() {
    let host = Host::new().await;
    let (status, body) = host.join().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // 21 forward extremities: siblings over the same head.
    let creator = mallory(&host.name);
    let mut siblings = Vec::new();
    let mut ids = Vec::new();
    for i in 0..21 {
        let object = host.with_room(|r| {
            r.template(
                "m.room.message",
                None,
                &creator,
                json!({ "msgtype": "m.text", "body": format!("sibling {i}") }),
            )
        });
        let (id, event) = host.sign(object);
        ids.push(id);
        siblings.push(event);
    }
    let answer = host.send("siblings", siblings).await;
    for id in &ids {
        assert_eq!(answer[id], json!({}), "{answer}");
    }
    let mut wide = host.with_room(|r| {
        r.template(
            "m.room.message",
            None,
            &creator,
            json!({ "msgtype": "m.text", "body": "wide" }),
        )
    });
    wide.insert(
        "prev_events".into(),
        canonical(json!({ "p": ids }))
            .remove("p")
            .expect("prev_events"),
    );
    let (wide_id, wide) = host.sign(wide);
    let mut tall = host.with_room(|r| {
        r.template(
            "m.room.message",
            None,
            &creator,
            json!({ "msgtype": "m.text", "body": "many auth events" }),
        )
    });
    let mut auth: Vec<String> = host.with_room(|r| r.state.values().cloned().collect());
    auth.extend(ids.iter().take(11 - auth.len().min(11)).cloned());
    auth.truncate(11);
    tall.insert(
        "auth_events".into(),
        canonical(json!({ "a": auth }))
            .remove("a")
            .expect("auth_events"),
    );
    let (tall_id, tall) = host.sign(tall);
    let answer = host.send("wide", vec![wide, tall]).await;
    for id in [&wide_id, &tall_id] {
        assert!(answer[id]["error"].is_string(), "{id}: {answer}");
        assert!(!host.victim_has(id).await, "{id} stored");
    }
    host.stop().await;
}
