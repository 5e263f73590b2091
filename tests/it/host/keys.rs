//! The host's signing keys: rotated out (`old_verify_keys` with `expired_ts`), past their
//! `valid_until_ts`, published for another name, or in a document whose self-signature fails.

use reqwest::StatusCode;
use ruma::CanonicalJsonValue;
use serde_json::json;

use super::{Host, HostKey, Reply, mallory, now_ms};

const KEYS: &str = "/_matrix/key/v2/server";

/// A message by mallory over the host's head, stamped `ts`, signed with `key`, sent to the
/// victim: whether the victim took it.
async fn send_signed(host: &Host, key: &HostKey, ts: u64, txn: &str) -> (String, bool) {
    let creator = mallory(&host.name);
    let mut object = host.with_room(|r| {
        r.template(
            "m.room.message",
            None,
            &creator,
            json!({ "msgtype": "m.text", "body": txn }),
        )
    });
    object.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(ruma::Int::try_from(ts).expect("ts")),
    );
    let (id, event) = host.sign_with(key, object);
    let answer = host.send(txn, vec![event]).await;
    let taken = answer[&id] == json!({});
    (id, taken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_out_key_counts_for_what_it_signed_before_it_expired() {
    let old = HostKey::generate("old");
    let host = Host::with_key(old.clone()).await;
    // The room was made under the old key; the host has since moved to a new one.
    let new = HostKey::generate("new");
    let expired = now_ms();
    host.set_keys(
        vec![new.clone()],
        vec![(&old, expired)],
        now_ms() + 3_600_000,
    );
    let (status, body) = host.join().await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (_, taken) = send_signed(&host, &new, now_ms(), "by-new").await;
    assert!(taken, "an event under the current key");
    let (before, taken) = send_signed(&host, &old, expired - 1_000, "old-before").await;
    assert!(taken, "an event the old key signed before its expiry");
    let (after, taken) = send_signed(&host, &old, expired + 1_000, "old-after").await;
    assert!(!taken, "an event the old key signed after its expiry");
    assert!(host.victim_has(&before).await);
    assert!(!host.victim_has(&after).await);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_signs_nothing_after_its_valid_until_ts() {
    let key = HostKey::generate("grove");
    let host = Host::with_key(key.clone()).await;
    let until = now_ms() + 600_000;
    host.set_keys(vec![key.clone()], Vec::new(), until);
    let (status, body) = host.join().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fetches = host.asked(KEYS).len();

    // Stamped after the key's validity ends: refused (room versions from 5 on), after the
    // victim has asked whether the key was renewed.
    let (late, taken) = send_signed(&host, &key, until + 60_000, "late").await;
    assert!(!taken, "an event stamped past valid_until_ts");
    assert!(!host.victim_has(&late).await);
    assert!(
        host.asked(KEYS).len() > fetches,
        "the key was not asked for again"
    );
    let (_, taken) = send_signed(&host, &key, until - 60_000, "in-time").await;
    assert!(taken, "an event stamped within the key's validity");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_document_past_valid_until_is_fetched_again() {
    let key = HostKey::generate("grove");
    let host = Host::with_key(key.clone()).await;
    host.set_keys(vec![key.clone()], Vec::new(), now_ms() + 2_000);
    let (status, body) = host.join().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    // The host has rotated meanwhile; the victim learns the new key by asking again.
    let new = HostKey::generate("rotated");
    host.set_keys(
        vec![new.clone()],
        vec![(&key, now_ms())],
        now_ms() + 3_600_000,
    );
    let fetches = host.asked(KEYS).len();
    let (_, taken) = send_signed(&host, &new, now_ms(), "rotated").await;
    assert!(taken, "an event under the renewed document's key");
    assert!(host.asked(KEYS).len() > fetches);
    host.stop().await;
}

/// The host's key document altered by `lie` before it is served.
fn lie_in_keys(host: &Host, lie: impl Fn(&mut serde_json::Value) + Send + Sync + 'static) {
    host.script(move |asked, _, honest| {
        asked.path.starts_with(KEYS).then(|| {
            let mut doc = honest.clone();
            lie(&mut doc);
            Reply::ok(doc)
        })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_published_for_another_name_or_badly_self_signed_are_not_believed() {
    for case in ["another name", "bad self-signature", "no self-signature"] {
        let host = Host::new().await;
        let name = host.name.to_string();
        lie_in_keys(&host, move |doc| match case {
            "another name" => doc["server_name"] = json!("localhost:1"),
            "bad self-signature" => {
                doc["valid_until_ts"] = json!(doc["valid_until_ts"].as_u64().unwrap_or(0) + 1)
            }
            _ => doc["signatures"] = json!({ name.clone(): {} }),
        });
        // The room's events cannot be checked against a key the host did not vouch for.
        let (status, body) = host.join().await;
        assert_ne!(status, StatusCode::OK, "{case}: {body}");
        assert!(body["errcode"].is_string(), "{case}: {body}");
        assert!(!host.victim_knows_room().await, "{case}");
        host.stop().await;
    }
}
