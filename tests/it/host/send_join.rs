//! Lying `send_join` answers. The victim must refuse the join (a Matrix error to the client,
//! soon) and store nothing of the room, rather than take a state its own auth rules would not
//! reach.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Host, Reply, SEND_JOIN, canonical, mallory};
use crate::support::enc;

/// The host answers `send_join` with its honest answer altered by `lie`.
fn lie_in_send_join(host: &Host, lie: impl Fn(&mut Value) + Send + Sync + 'static) {
    host.script(move |asked, _, honest| {
        asked.path.starts_with(SEND_JOIN).then(|| {
            let mut answer = honest.clone();
            lie(&mut answer);
            Reply::ok(answer)
        })
    });
}

/// Alice's join is refused with a Matrix error and the victim holds nothing of the room.
async fn assert_join_refused(host: &Host) {
    let (status, body) = host.join().await;
    assert_ne!(status, StatusCode::OK, "the join went through: {body}");
    assert!(body["errcode"].is_string(), "{status} {body}");
    assert!(
        !host.victim_knows_room().await,
        "the victim stored the room"
    );
}

/// Removes from `list` the events of `kind`.
fn without(list: &mut Value, kind: &str) {
    if let Some(events) = list.as_array_mut() {
        events.retain(|e| e["type"] != kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_honest_host_is_joined_through() {
    let host = Host::new().await;
    let (status, body) = host.join().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(host.victim_knows_room().await);
    // The same event listed twice in the state is no contradiction.
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_of_another_room_is_refused() {
    let host = Host::new().await;
    let creator = mallory(&host.name);
    let mut object = host.with_room(|r| {
        r.template(
            "m.room.topic",
            Some(""),
            &creator,
            json!({ "topic": "elsewhere" }),
        )
    });
    object.insert(
        "room_id".into(),
        ruma::CanonicalJsonValue::String(format!("!other:{}", host.name)),
    );
    let (_, foreign) = host.sign(object);
    lie_in_send_join(&host, move |a| {
        if let Some(state) = a["state"].as_array_mut() {
            state.push(foreign.clone());
        }
    });
    assert_join_refused(&host).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_with_missing_or_bad_signatures_is_refused() {
    for case in ["missing", "forged"] {
        let host = Host::new().await;
        let creator = mallory(&host.name);
        let object = host.with_room(|r| {
            r.template(
                "m.room.topic",
                Some(""),
                &creator,
                json!({ "topic": "unsigned" }),
            )
        });
        let (_, mut event) = host.sign(object);
        match case {
            "missing" => event["signatures"] = json!({}),
            _ => {
                let stranger = super::HostKey::generate("grove");
                let mut object = canonical(event.clone());
                object.remove("signatures");
                ruma::signatures::hash_and_sign_event(
                    host.name.as_str(),
                    &stranger.pair(),
                    &mut object,
                    &host.with_room(|r| r.rules.redaction.clone()),
                )
                .expect("signed");
                event =
                    serde_json::to_value(ruma::CanonicalJsonValue::Object(object)).expect("JSON");
            }
        }
        lie_in_send_join(&host, move |a| {
            if let Some(state) = a["state"].as_array_mut() {
                state.push(event.clone());
            }
        });
        assert_join_refused(&host).await;
        host.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_without_create_event_is_refused() {
    let host = Host::new().await;
    lie_in_send_join(&host, |a| {
        without(&mut a["state"], "m.room.create");
        without(&mut a["auth_chain"], "m.room.create");
    });
    assert_join_refused(&host).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_without_join_rules_is_refused() {
    let host = Host::new().await;
    lie_in_send_join(&host, |a| without(&mut a["state"], "m.room.join_rules"));
    assert_join_refused(&host).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_that_does_not_allow_the_join_is_refused() {
    let host = Host::new().await;
    let creator = mallory(&host.name);
    host.add(
        "m.room.join_rules",
        Some(""),
        &creator,
        json!({ "join_rule": "invite" }),
    );
    assert_join_refused(&host).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_its_own_auth_events_do_not_allow_is_refused() {
    // Eve never joined, yet her power levels make her an admin, and she named the room.
    let host = Host::new().await;
    let eve = format!("@eve:{}", host.name);
    let escalation = host.with_room(|r| {
        r.template(
            "m.room.power_levels",
            Some(""),
            &eve,
            json!({ "users": { eve.clone(): 100 } }),
        )
    });
    let (escalation_id, escalation) = host.sign(escalation);
    let name = host.with_room(|r| {
        r.template(
            "m.room.name",
            Some(""),
            &eve,
            json!({ "name": "eve's room" }),
        )
    });
    let (name_id, name) = host.sign(name);
    for (id, event) in [(escalation_id, escalation), (name_id, name)] {
        let kind = event["type"].as_str().expect("type").to_owned();
        lie_in_send_join(&host, move |a| {
            without(&mut a["state"], &kind);
            if let Some(state) = a["state"].as_array_mut() {
                state.push(event.clone());
            }
        });
        assert_join_refused(&host).await;
        assert!(!host.victim_has(&id).await, "{id} stored");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contradictory_state_is_refused_and_duplicates_are_not() {
    let host = Host::new().await;
    let creator = mallory(&host.name);
    let (first, _) = host.add(
        "m.room.topic",
        Some(""),
        &creator,
        json!({ "topic": "first" }),
    );
    let (second, _) = host.add(
        "m.room.topic",
        Some(""),
        &creator,
        json!({ "topic": "second" }),
    );
    // Both topics as state: which one holds is the host's to say, and it said both.
    let first_event = host.with_room(|r| r.event(&first).cloned()).expect("first");
    lie_in_send_join(&host, move |a| {
        if let Some(state) = a["state"].as_array_mut() {
            state.push(first_event.clone());
        }
    });
    assert_join_refused(&host).await;

    // The same event twice is only repetition.
    let second_event = host
        .with_room(|r| r.event(&second).cloned())
        .expect("second");
    lie_in_send_join(&host, move |a| {
        if let Some(state) = a["state"].as_array_mut() {
            state.push(second_event.clone());
        }
        if let Some(chain) = a["auth_chain"].as_array_mut() {
            let copy = chain.clone();
            chain.extend(copy);
        }
    });
    let (status, body) = host.join().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room = host.room_id();
    let (status, topic) = host
        .victim
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
                enc(&room)
            ),
            Some(&host.alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{topic}");
    assert_eq!(topic["topic"], "second");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_huge_state_is_refused_before_it_is_checked() {
    let host = Host::new().await;
    lie_in_send_join(&host, |a| {
        let Some(create) = a["state"]
            .as_array()
            .and_then(|s| s.iter().find(|e| e["type"] == "m.room.create"))
            .cloned()
        else {
            return;
        };
        a["state"] = Value::Array(vec![create; grove_federation::remote::MAX_JOIN_EVENTS + 1]);
    });
    let started = std::time::Instant::now();
    assert_join_refused(&host).await;
    // Refused by its length: no event of it was checked or stored.
    println!("huge state refused after {:?}", started.elapsed());
    host.stop().await;
}
