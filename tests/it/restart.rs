//! Restart mid-traffic: everything acknowledged survives, and sync tokens from before the
//! restart still work.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};

use crate::support::{BACKENDS, TestNode};

/// Sends messages one after another until told to stop, recording the acknowledged event IDs.
fn spawn_sender(
    url: String,
    token: String,
    room: String,
    acked: Arc<Mutex<Vec<String>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let mut n = 0u64;
        while !*stop.borrow() {
            n += 1;
            let resp = http
                .put(format!(
                    "{url}/_matrix/client/v3/rooms/{room}/send/m.room.message/txn{n}"
                ))
                .bearer_auth(&token)
                .json(&json!({ "msgtype": "m.text", "body": format!("message {n}") }))
                .send()
                .await;
            match resp {
                Ok(resp) if resp.status().is_success() => {
                    if let Ok(body) = resp.json::<Value>().await
                        && let Some(id) = body["event_id"].as_str()
                    {
                        acked.lock().expect("lock").push(id.to_owned());
                    }
                }
                // The node is down or stopping: nothing was acknowledged; try again shortly.
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
}

async fn all_message_ids(node: &TestNode, token: &str, room: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100");
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let (status, page) = node.get(&path, Some(token)).await;
        assert!(status.is_success(), "{page}");
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        for event in &chunk {
            if event["type"] == "m.room.message" {
                ids.push(event["event_id"].as_str().expect("event_id").to_owned());
            }
        }
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    ids.reverse();
    ids
}

#[tokio::test]
async fn acknowledged_messages_and_sync_tokens_survive_a_restart() {
    for backend in BACKENDS {
        let mut node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let (status, room) = node
            .post(
                "/_matrix/client/v3/createRoom",
                Some(&alice.token),
                json!({ "preset": "public_chat" }),
            )
            .await;
        assert!(status.is_success(), "{room}");
        let room = room["room_id"].as_str().expect("room_id").to_owned();
        let (status, body) = node
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/join"),
                Some(&bob.token),
                json!({}),
            )
            .await;
        assert!(status.is_success(), "{body}");

        let (status, first) = node
            .get("/_matrix/client/v3/sync?timeout=0", Some(&bob.token))
            .await;
        assert!(status.is_success(), "{first}");
        let before = first["next_batch"].as_str().expect("next_batch").to_owned();

        let acked = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let sender = spawn_sender(
            node.url(),
            alice.token.clone(),
            room.clone(),
            acked.clone(),
            stop_rx,
        );
        while acked.lock().expect("lock").len() < 30 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node.restart().await;
        let at_restart = acked.lock().expect("lock").len();
        while acked.lock().expect("lock").len() < at_restart + 30 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(true).expect("stop");
        sender.await.expect("sender");
        let acked = acked.lock().expect("lock").clone();

        // Every acknowledged message is in the room's history, once, in the order sent.
        let stored = all_message_ids(&node, &bob.token, &room).await;
        let stored_set: HashSet<&String> = stored.iter().collect();
        assert_eq!(stored_set.len(), stored.len(), "duplicates in history");
        for id in &acked {
            assert!(
                stored_set.contains(id),
                "{backend:?}: acknowledged {id} lost"
            );
        }
        let positions: Vec<usize> = acked
            .iter()
            .map(|id| stored.iter().position(|s| s == id).expect("present"))
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "history out of order"
        );

        // The token from before the restart still works and yields what was sent since.
        let mut seen = HashSet::new();
        let mut since = before;
        for _ in 0..100 {
            let (status, sync) = node
                .get(
                    &format!("/_matrix/client/v3/sync?since={since}&timeout=0"),
                    Some(&bob.token),
                )
                .await;
            assert!(status.is_success(), "{sync}");
            let timeline = &sync["rooms"]["join"][&room]["timeline"];
            for event in timeline["events"].as_array().into_iter().flatten() {
                if let Some(id) = event["event_id"].as_str() {
                    seen.insert(id.to_owned());
                }
            }
            let next = sync["next_batch"].as_str().expect("next_batch").to_owned();
            if next == since || timeline["limited"] == json!(true) {
                break;
            }
            since = next;
        }
        let last = acked.last().expect("something acknowledged");
        assert!(
            seen.contains(last),
            "{backend:?}: incremental sync from the old token missed {last}"
        );
    }
}
