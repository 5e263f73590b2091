//! DAGs made to cost: hundreds of forks over one event, and a host that never answers the
//! questions a gap raises. Each fork must cost about as much as one message, and a gap the host
//! will not help with must not hold the transaction that opened it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Host, Reply, mallory};
use crate::support::enc;

const MISSING: &str = "/_matrix/federation/v1/get_missing_events/";

/// `count` topic changes by mallory, every one over the host's current head: as many forks,
/// each conflicting with all the others.
fn forks(host: &Host, count: usize) -> Vec<(String, Value)> {
    let creator = mallory(&host.name);
    (0..count)
        .map(|i| {
            let object = host.with_room(|r| {
                r.template(
                    "m.room.topic",
                    Some(""),
                    &creator,
                    json!({ "topic": format!("fork {i}") }),
                )
            });
            host.sign(object)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_forks_cost_what_as_many_messages_cost() {
    let host = Host::new().await;
    let (status, body) = host.join().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let forks = forks(&host, 600);
    let started = Instant::now();
    for (n, chunk) in forks.chunks(50).enumerate() {
        let answer = host
            .send(
                &format!("forks-{n}"),
                chunk.iter().map(|(_, e)| e.clone()).collect(),
            )
            .await;
        for (id, _) in chunk {
            assert_eq!(answer[id], json!({}), "{answer}");
        }
    }
    let took = started.elapsed();
    println!("600 forks taken in {took:?}");
    // Linear work takes a few seconds here; resolving every fork again for each new one took
    // minutes.
    assert!(took < Duration::from_secs(60), "600 forks took {took:?}");

    let room = host.room_id();
    let id = ruma::RoomId::parse(&room).expect("room ID");
    let rooms = &host.victim.node().homeserver().rooms;
    let (head, _) = rooms.extremities_and_gaps(&id).await.expect("head");
    assert!(head.len() <= 64, "{} extremities kept", head.len());

    // The victim's own user still writes to the room at once, and her event merges at most
    // as many forks as the spec lets one event name.
    let started = Instant::now();
    let (status, body) = host
        .victim
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/after-forks",
                enc(&room)
            ),
            Some(&host.alice.token),
            json!({ "msgtype": "m.text", "body": "still here" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let event_id = body["event_id"].as_str().expect("event ID");
    let pdu = rooms.pdu(event_id).await.expect("read").expect("stored");
    assert!(
        (2..=20).contains(&pdu.prev_events.len()),
        "{} prev_events",
        pdu.prev_events.len()
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_events_answer_that_never_comes_does_not_hold_the_transaction() {
    let host = Host::new().await;
    let (status, body) = host.join().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let creator = mallory(&host.name);
    for i in 0..3 {
        host.add(
            "m.room.message",
            None,
            &creator,
            json!({ "msgtype": "m.text", "body": format!("unseen {i}") }),
        );
    }
    let (id, last) = host.add(
        "m.room.message",
        None,
        &creator,
        json!({ "msgtype": "m.text", "body": "after the gap" }),
    );
    host.script(|asked, _, honest| {
        asked.path.starts_with(MISSING).then(|| Reply {
            status: 200,
            body: honest.clone(),
            delay: Duration::from_secs(600),
        })
    });
    let started = Instant::now();
    let answer = host.send("gap", vec![last]).await;
    let took = started.elapsed();
    println!("the transaction was answered in {took:?}: {answer}");
    // A Grove sender waits 12 s for a transaction's answer.
    assert!(
        took < Duration::from_secs(12),
        "the transaction waited {took:?}"
    );
    assert!(answer.get(&id).is_some(), "{answer}");
    assert!(host.asked(MISSING).len() <= 2, "asked again and again");
    // The victim keeps serving its users meanwhile.
    let (status, _) = host
        .victim
        .get("/_matrix/client/v3/account/whoami", Some(&host.alice.token))
        .await;
    assert_eq!(status, StatusCode::OK);
    host.stop().await;
}
