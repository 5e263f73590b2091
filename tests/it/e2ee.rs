//! End-to-end encryption over HTTP: device, one-time and fallback keys across two users,
//! cross-signing and signatures, to-device delivery and key backup.

use grove_server::StreamPosition;
use reqwest::{Method, StatusCode};
use ruma::{DeviceId, UserId};
use serde_json::{Value, json};

use crate::support::{BACKENDS, TestNode, TestUser};

#[track_caller]
fn check_error(got: (StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["errcode"], errcode, "{}", got.1);
}

pub(crate) fn device_keys(user: &TestUser) -> Value {
    json!({
        "user_id": user.user_id,
        "device_id": user.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", user.device_id): "curvekey",
            format!("ed25519:{}", user.device_id): "edkey",
        },
        "signatures": { &user.user_id: { format!("ed25519:{}", user.device_id): "sig" } },
    })
}

fn otk(n: u32) -> Value {
    json!({ "key": format!("otk{n}"), "signatures": {} })
}

#[tokio::test]
async fn upload_query_and_claim_keys() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let hs = node.node().homeserver();
        let upload = "/_matrix/client/v3/keys/upload";

        let before = hs.notifier.current();
        let (status, counts) = node
            .post(
                upload,
                Some(&alice.token),
                json!({
                    "device_keys": device_keys(&alice),
                    "one_time_keys": {
                        "signed_curve25519:AAAA": otk(1),
                        "signed_curve25519:AAAB": otk(2),
                    },
                    "fallback_keys": { "signed_curve25519:FFFF": otk(9) },
                }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{counts}");
        assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 2);
        let alice_id = UserId::parse(alice.user_id.as_str()).expect("user");
        let alice_device: &DeviceId = alice.device_id.as_str().into();
        let changed = hs
            .e2ee
            .users_with_key_changes(before, hs.notifier.current())
            .await
            .expect("changes");
        assert_eq!(changed, vec![alice_id.clone()]);

        // Keys naming another device are refused; a reused key ID with new content too.
        let mut wrong = device_keys(&alice);
        wrong["device_id"] = json!("OTHER");
        check_error(
            node.post(upload, Some(&alice.token), json!({ "device_keys": wrong }))
                .await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        );
        check_error(
            node.post(
                upload,
                Some(&alice.token),
                json!({ "one_time_keys": { "signed_curve25519:AAAA": otk(7) } }),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        );

        let (status, query) = node
            .post(
                "/_matrix/client/v3/keys/query",
                Some(&bob.token),
                json!({ "device_keys": { &alice.user_id: [] } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{query}");
        let keys = &query["device_keys"][&alice.user_id][&alice.device_id];
        assert_eq!(
            keys["keys"][format!("ed25519:{}", alice.device_id)],
            "edkey"
        );

        let claim = json!({ "one_time_keys": { &alice.user_id: { &alice.device_id: "signed_curve25519" } } });
        let mut claimed = Vec::new();
        for _ in 0..3 {
            let (status, got) = node
                .post(
                    "/_matrix/client/v3/keys/claim",
                    Some(&bob.token),
                    claim.clone(),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{got}");
            let keys = got["one_time_keys"][&alice.user_id][&alice.device_id]
                .as_object()
                .expect("claimed")
                .clone();
            claimed.extend(keys.keys().cloned());
        }
        // Two one-time keys, then the fallback key.
        assert_eq!(
            claimed,
            vec![
                "signed_curve25519:AAAA".to_owned(),
                "signed_curve25519:AAAB".to_owned(),
                "signed_curve25519:FFFF".to_owned(),
            ]
        );
        let (counts, fallback) = hs
            .e2ee
            .key_counts(&alice_id, alice_device)
            .await
            .expect("counts");
        assert_eq!(counts.values().map(|c| u64::from(*c)).sum::<u64>(), 0);
        assert!(fallback.is_empty());
        // A new fallback key is unused again.
        let (status, _) = node
            .post(
                upload,
                Some(&alice.token),
                json!({ "fallback_keys": { "signed_curve25519:FFFG": otk(10) } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            hs.e2ee
                .key_counts(&alice_id, alice_device)
                .await
                .expect("fallback")
                .1
                .len(),
            1
        );

        let from = before.0.to_string();
        let (status, changes) = node
            .get(
                &format!(
                    "/_matrix/client/v3/keys/changes?from={from}&to={}",
                    hs.notifier.current().0
                ),
                Some(&alice.token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{changes}");
        assert_eq!(changes["changed"], json!([alice.user_id]));
    }
}

pub(crate) fn cross_key(user: &str, usage: &str, key: &str) -> Value {
    json!({ "user_id": user, "usage": [usage], "keys": { format!("ed25519:{key}"): key } })
}

#[tokio::test]
async fn cross_signing_and_signatures() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let path = "/_matrix/client/v3/keys/device_signing/upload";
        let (status, _) = node
            .post(
                "/_matrix/client/v3/keys/upload",
                Some(&alice.token),
                json!({ "device_keys": device_keys(&alice) }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);

        let first = json!({
            "master_key": cross_key(&alice.user_id, "master", "MASTER1"),
            "self_signing_key": cross_key(&alice.user_id, "self_signing", "SELF1"),
            "user_signing_key": cross_key(&alice.user_id, "user_signing", "USER1"),
        });
        let (status, body) = node.post(path, Some(&alice.token), first.clone()).await;
        assert_eq!(status, StatusCode::OK, "first upload needs no auth: {body}");
        let (status, body) = node.post(path, Some(&alice.token), first).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "repeating the same keys needs no auth: {body}"
        );

        let replace = json!({ "master_key": cross_key(&alice.user_id, "master", "MASTER2") });
        let (status, uia) = node.post(path, Some(&alice.token), replace.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uia}");
        let mut with_auth = replace;
        with_auth["auth"] = json!({
            "type": "m.login.password", "session": uia["session"],
            "identifier": { "type": "m.id.user", "user": &alice.user_id },
            "password": "correct horse battery",
        });
        let (status, body) = node.post(path, Some(&alice.token), with_auth).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        check_error(
            node.post(
                path,
                Some(&bob.token),
                json!({ "master_key": cross_key(&alice.user_id, "master", "X") }),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        );

        // A made-up signature by her self-signing key is refused and not stored (real ones:
        // `signatures.rs`).
        let mut signed_device = device_keys(&alice);
        signed_device["signatures"] = json!({ &alice.user_id: { "ed25519:SELF1": "devsig" } });
        let (status, body) = node
            .post(
                "/_matrix/client/v3/keys/signatures/upload",
                Some(&alice.token),
                json!({ &alice.user_id: { &alice.device_id: signed_device } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE",
            "{body}"
        );

        let query = json!({ "device_keys": { &alice.user_id: [] } });
        let (_, seen_by_bob) = node
            .post(
                "/_matrix/client/v3/keys/query",
                Some(&bob.token),
                query.clone(),
            )
            .await;
        assert_eq!(
            seen_by_bob["master_keys"][&alice.user_id]["keys"]["ed25519:MASTER2"],
            "MASTER2"
        );
        assert_eq!(
            seen_by_bob["self_signing_keys"][&alice.user_id]["usage"],
            json!(["self_signing"])
        );
        assert!(
            seen_by_bob["user_signing_keys"]
                .get(&alice.user_id)
                .is_none()
        );
        assert!(
            seen_by_bob["device_keys"][&alice.user_id][&alice.device_id]["signatures"]
                [&alice.user_id]
                .get("ed25519:SELF1")
                .is_none()
        );
        let (_, seen_by_alice) = node
            .post("/_matrix/client/v3/keys/query", Some(&alice.token), query)
            .await;
        assert_eq!(
            seen_by_alice["user_signing_keys"][&alice.user_id]["usage"],
            json!(["user_signing"])
        );
    }
}

#[tokio::test]
async fn to_device_delivery_is_idempotent_and_acknowledged() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let hs = node.node().homeserver();
        let bob_id = UserId::parse(bob.user_id.as_str()).expect("user");
        let bob_device: &DeviceId = bob.device_id.as_str().into();
        let start = hs.notifier.current();

        let body = json!({ "messages": { &bob.user_id: { &bob.device_id: { "hello": 1 } } } });
        for _ in 0..2 {
            let (status, got) = node
                .put(
                    "/_matrix/client/v3/sendToDevice/m.test/txn1",
                    Some(&alice.token),
                    body.clone(),
                )
                .await;
            assert_eq!((status, got), (StatusCode::OK, json!({})));
        }
        let all = json!({ "messages": { &bob.user_id: { "*": { "hello": 2 } } } });
        let (status, _) = node
            .put(
                "/_matrix/client/v3/sendToDevice/m.test/txn2",
                Some(&alice.token),
                all,
            )
            .await;
        assert_eq!(status, StatusCode::OK);

        let upto = hs.notifier.current();
        let got = hs
            .e2ee
            .sync_to_device(&bob_id, bob_device, start, upto)
            .await
            .expect("to-device");
        let events: Vec<Value> = got
            .iter()
            .map(|e| serde_json::from_str(e.json().get()).expect("json"))
            .collect();
        assert_eq!(
            events,
            vec![
                json!({ "type": "m.test", "sender": alice.user_id, "content": { "hello": 1 } }),
                json!({ "type": "m.test", "sender": alice.user_id, "content": { "hello": 2 } }),
            ]
        );
        // A later sync from `upto` acknowledges them; they are gone for good.
        assert!(
            hs.e2ee
                .sync_to_device(&bob_id, bob_device, upto, upto)
                .await
                .expect("ack")
                .is_empty()
        );
        assert!(
            hs.e2ee
                .sync_to_device(&bob_id, bob_device, StreamPosition(0), upto)
                .await
                .expect("gone")
                .is_empty()
        );
    }
}

#[tokio::test]
async fn key_backup_round_trip() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let t = Some(alice.token.as_str());
        check_error(
            node.get("/_matrix/client/v3/room_keys/version", t).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
        let algorithm = json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                                "auth_data": { "public_key": "pk", "signatures": {} } });
        let (status, created) = node
            .post("/_matrix/client/v3/room_keys/version", t, algorithm.clone())
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        let version = created["version"].as_str().expect("version").to_owned();

        let session = |index: u64, verified: bool, tag: &str| {
            json!({ "first_message_index": index, "forwarded_count": 0, "is_verified": verified,
                    "session_data": { "ciphertext": tag, "ephemeral": "e", "mac": "m" } })
        };
        let keys = format!("/_matrix/client/v3/room_keys/keys?version={version}");
        let (status, put) = node
            .put(&keys, t, json!({ "rooms": { "!r:example.org": { "sessions": { "s1": session(5, false, "first") } } } }))
            .await;
        assert_eq!(status, StatusCode::OK, "{put}");
        assert_eq!(put["count"], 1);
        let etag = put["etag"].clone();

        // A worse copy is ignored, a better one replaces it.
        let one = format!("/_matrix/client/v3/room_keys/keys/!r:example.org/s1?version={version}");
        let (_, put) = node.put(&one, t, session(9, false, "worse")).await;
        assert_eq!(put["etag"], etag);
        let (_, got) = node.get(&one, t).await;
        assert_eq!(got["session_data"]["ciphertext"], "first");
        let (_, put) = node.put(&one, t, session(9, true, "verified")).await;
        assert_ne!(put["etag"], etag);
        let (_, got) = node.get(&one, t).await;
        assert_eq!(got["session_data"]["ciphertext"], "verified");

        let (status, all) = node.get(&keys, t).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            all["rooms"]["!r:example.org"]["sessions"]["s1"]["first_message_index"],
            9
        );
        let (_, info) = node.get("/_matrix/client/v3/room_keys/version", t).await;
        assert_eq!(
            (info["version"].clone(), info["count"].clone()),
            (json!(version), json!(1))
        );

        // Only the latest version takes keys.
        let (_, newer) = node
            .post("/_matrix/client/v3/room_keys/version", t, algorithm)
            .await;
        let (status, refused) = node.put(&one, t, session(0, true, "old")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
        assert_eq!(refused["errcode"], "M_WRONG_ROOM_KEYS_VERSION");
        assert_eq!(refused["current_version"], newer["version"]);

        let (status, deleted) = node.request(Method::DELETE, &keys, t, None).await;
        assert_eq!(
            (status, deleted["count"].clone()),
            (StatusCode::OK, json!(0))
        );
        let (status, _) = node
            .request(
                Method::DELETE,
                &format!("/_matrix/client/v3/room_keys/version/{version}"),
                t,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        check_error(
            node.get(
                &format!("/_matrix/client/v3/room_keys/version/{version}"),
                t,
            )
            .await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
    }
}
