//! To-device paging: a sync carries at most 100 to-device messages, the next sync the rest,
//! nothing is skipped, and only what a later `since` acknowledges is deleted.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    rooms::{create_room, say},
    support::{BACKENDS, TestNode, message_bodies},
};

const V3: &str = "/_matrix/client/v3";
/// Messages sent; more than two full pages.
const SENT: usize = 250;

/// The sequence numbers of the to-device messages in a sync response.
fn numbers(resp: &Value) -> Vec<u64> {
    resp["to_device"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| e["content"]["n"].as_u64().expect("n"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn to_device_messages_are_paged_and_none_skipped() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let room = create_room(&node, &bob, json!({ "preset": "private_chat" })).await;
        let since = node.sync_now(&bob, None).await["next_batch"]
            .as_str()
            .expect("next_batch")
            .to_owned();
        for n in 0..SENT {
            let (status, body) = node
                .put(
                    &format!("{V3}/sendToDevice/m.test/txn{n}"),
                    Some(&alice.token),
                    json!({ "messages": { &bob.user_id: { &bob.device_id: { "n": n } } } }),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            // A room message among the to-device ones must not be skipped either.
            if n == 150 {
                say(&node, &bob, &room, "in between", "between").await;
            }
        }

        let mut received = Vec::new();
        let mut timeline = Vec::new();
        let mut token = since;
        let mut pages = Vec::new();
        loop {
            let resp = node.sync_now(&bob, Some(&token)).await;
            let page = numbers(&resp);
            timeline.extend(message_bodies(
                &resp["rooms"]["join"][&room]["timeline"]["events"],
            ));
            let next = resp["next_batch"].as_str().expect("next_batch").to_owned();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 100, "a page of {}", page.len());
            // Until acknowledged by the next `since`, a page is delivered again.
            let again = node.sync_now(&bob, Some(&token)).await;
            assert_eq!(numbers(&again), page, "an unacknowledged page is kept");
            assert_eq!(again["next_batch"], next);
            pages.push(page.len());
            received.extend(page);
            token = next;
            assert!(pages.len() < 10, "paging does not end: {pages:?}");
        }
        assert_eq!(pages, vec![100, 100, 50]);
        assert_eq!(received, (0..SENT as u64).collect::<Vec<_>>());
        assert_eq!(timeline, vec!["in between".to_owned()]);
    }
}
