//! End-to-end encryption between users on two nodes federated over real loopback QUIC: device
//! keys queried and one-time keys claimed across nodes (signed with real ed25519 keys and
//! checked on arrival), a to-device message from A reaching B's `/sync`, a device added on B
//! showing up in A's `device_lists.changed`, an unreachable server reported in `failures`, the
//! federation endpoints asked directly, to-device EDUs deduplicated by message ID, and the state
//! of a room joined through another node reaching the joiner's `/sync`.

use std::collections::BTreeMap;

use grove_server::storage::Backend;
use reqwest::StatusCode;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue,
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap, sign_json, verify_json},
};
use serde_json::{Value, json};

use crate::support::{TestNode, TestUser, enc, eventually};

const V3: &str = "/_matrix/client/v3";

/// A device's signing key, as a client holds it.
struct DeviceKey {
    pair: Ed25519KeyPair,
}

impl DeviceKey {
    fn new(device_id: &str) -> Self {
        let der = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&der, device_id.to_owned()).expect("key pair");
        Self { pair }
    }

    fn public(&self) -> String {
        Base64::<ruma::serde::base64::Standard>::new(self.pair.public_key().to_vec()).encode()
    }

    /// `object`, signed by this device for `user`.
    fn sign(&self, user: &TestUser, object: Value) -> Value {
        let mut object = canonical(object);
        sign_json(&user.user_id, &self.pair, &mut object).expect("sign");
        serde_json::to_value(object).expect("json")
    }
}

fn canonical(value: Value) -> CanonicalJsonObject {
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(o)) => o,
        other => panic!("not a canonical JSON object: {other:?}"),
    }
}

/// Checks that `object` carries a valid signature of `user`'s device `device` made with the
/// ed25519 key named inside `device_keys`.
#[track_caller]
fn check_signed(object: &Value, user: &str, device: &str, device_keys: &Value) {
    let key_id = format!("ed25519:{device}");
    let public = device_keys["keys"][&key_id]
        .as_str()
        .unwrap_or_else(|| panic!("no {key_id} in {device_keys}"));
    let public = Base64::<ruma::serde::base64::Standard>::parse(public).expect("base64 key");
    let keys: PublicKeyMap = BTreeMap::from([(
        user.to_owned(),
        BTreeMap::from([(key_id, Base64::new(public.as_bytes().to_vec()))]),
    )]);
    verify_json(&keys, &canonical(object.clone()))
        .unwrap_or_else(|e| panic!("signature of {user} {device} on {object}: {e}"));
}

/// Uploads signed device keys and `otks` signed one-time keys for `user`'s device.
async fn upload_keys(node: &TestNode, user: &TestUser, otks: u32) -> DeviceKey {
    let key = DeviceKey::new(&user.device_id);
    let curve = DeviceKey::new(&user.device_id).public();
    let device_keys = key.sign(
        user,
        json!({
            "user_id": user.user_id,
            "device_id": user.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", user.device_id): curve,
                format!("ed25519:{}", user.device_id): key.public(),
            },
        }),
    );
    let mut one_time = serde_json::Map::new();
    for n in 0..otks {
        let otk = key.sign(
            user,
            json!({ "key": DeviceKey::new("otk").public(), "n": n }),
        );
        one_time.insert(format!("signed_curve25519:AAAA{n:02}"), otk);
    }
    let (status, body) = node
        .post(
            &format!("{V3}/keys/upload"),
            Some(&user.token),
            json!({ "device_keys": device_keys, "one_time_keys": one_time }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "keys/upload: {body}");
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], otks);
    key
}

/// `user`'s view of another user's devices through `keys/query` on `node`.
async fn query(node: &TestNode, user: &TestUser, other: &str) -> Value {
    let (status, body) = node
        .post(
            &format!("{V3}/keys/query"),
            Some(&user.token),
            json!({ "device_keys": { other: [] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "keys/query: {body}");
    body
}

/// Queries `other`'s keys until `device` is there; checks its signature and that no server
/// failed.
async fn query_device(node: &TestNode, user: &TestUser, other: &TestUser, device: &str) -> Value {
    let keys = eventually(
        &format!("{} sees {} {device}", user.user_id, other.user_id),
        async || {
            let body = query(node, user, &other.user_id).await;
            let keys = &body["device_keys"][&other.user_id][device];
            if keys.is_object() {
                Ok(body)
            } else {
                Err(body.to_string())
            }
        },
    )
    .await;
    assert_eq!(keys["failures"], json!({}), "{keys}");
    let device_keys = keys["device_keys"][&other.user_id][device].clone();
    assert_eq!(device_keys["user_id"], other.user_id.as_str());
    check_signed(&device_keys, &other.user_id, device, &device_keys);
    device_keys
}

/// Claims one `signed_curve25519` key of `other`'s device; `None` when none is left.
async fn claim(
    node: &TestNode,
    user: &TestUser,
    other: &TestUser,
    device: &str,
) -> Option<(String, Value)> {
    let (status, body) = node
        .post(
            &format!("{V3}/keys/claim"),
            Some(&user.token),
            json!({ "one_time_keys": { &other.user_id: { device: "signed_curve25519" } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "keys/claim: {body}");
    assert_eq!(body["failures"], json!({}), "{body}");
    let keys = body["one_time_keys"][&other.user_id][device].as_object()?;
    let (id, key) = keys.iter().next()?;
    Some((id.clone(), key.clone()))
}

/// Syncs `user` once from `since` (a short long-poll), returning the response.
async fn sync(node: &TestNode, user: &TestUser, since: Option<&str>) -> Value {
    let path = match since {
        Some(s) => format!("{V3}/sync?timeout=500&since={s}"),
        None => format!("{V3}/sync"),
    };
    let (status, body) = node.get(&path, Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "sync: {body}");
    body
}

/// Syncs `user` until `done` holds for a response; returns that response.
async fn sync_until(
    node: &TestNode,
    user: &TestUser,
    since: &mut String,
    what: &str,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    eventually(what, async || {
        let body = sync(node, user, Some(since)).await;
        if let Some(next) = body["next_batch"].as_str() {
            *since = next.to_owned();
        }
        if done(&body) {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await
}

async fn keys_across_nodes(backend: Backend) {
    let b = TestNode::start_federated(backend, Vec::new()).await;
    let a = TestNode::start_federated(backend, vec![b.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;

    // A room both are in, so their keys are each other's business.
    let (status, created) = a
        .post(
            &format!("{V3}/createRoom"),
            Some(&alice.token),
            json!({ "preset": "public_chat" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom: {created}");
    let room = created["room_id"].as_str().expect("room_id").to_owned();
    b.join_via(&bob, &room, &a.server_name()).await;

    let _alice_key = upload_keys(&a, &alice, 2).await;
    let _bob_key = upload_keys(&b, &bob, 1).await;

    // Each sees the other's signed device keys, fetched from the other node.
    let bobs = query_device(&a, &alice, &bob, &bob.device_id).await;
    let alices = query_device(&b, &bob, &alice, &alice.device_id).await;

    // One-time keys claimed across nodes, each signed by its device; then they run out.
    let (id, otk) = claim(&a, &alice, &bob, &bob.device_id)
        .await
        .expect("a one-time key of bob");
    assert!(id.starts_with("signed_curve25519:"), "{id}");
    check_signed(&otk, &bob.user_id, &bob.device_id, &bobs);
    assert_eq!(claim(&a, &alice, &bob, &bob.device_id).await, None);
    let mut claimed = Vec::new();
    while let Some((id, otk)) = claim(&b, &bob, &alice, &alice.device_id).await {
        check_signed(&otk, &alice.user_id, &alice.device_id, &alices);
        claimed.push(id);
        assert!(
            claimed.len() <= 2,
            "more keys claimed than uploaded: {claimed:?}"
        );
    }
    assert_eq!(claimed.len(), 2, "{claimed:?}");

    // A to-device message from Alice on A reaches Bob's device on B, once.
    let mut bob_since = sync(&b, &bob, None).await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let message = json!({ "messages": { &bob.user_id: { &bob.device_id: { "secret": 42 } } } });
    for _ in 0..2 {
        let (status, body) = a
            .put(
                &format!("{V3}/sendToDevice/m.grove.test/txn1"),
                Some(&alice.token),
                message.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "sendToDevice: {body}");
    }
    let got = sync_until(&b, &bob, &mut bob_since, "to-device on B", |body| {
        body["to_device"]["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    })
    .await;
    let events = got["to_device"]["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "m.grove.test");
    assert_eq!(events[0]["sender"], alice.user_id.as_str());
    assert_eq!(events[0]["content"]["secret"], 42);
    // `*` reaches every device of the user.
    let (status, body) = a
        .put(
            &format!("{V3}/sendToDevice/m.grove.test/txn2"),
            Some(&alice.token),
            json!({ "messages": { &bob.user_id: { "*": { "secret": 43 } } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "sendToDevice: {body}");
    sync_until(&b, &bob, &mut bob_since, "to-device * on B", |body| {
        body["to_device"]["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["content"]["secret"] == 43))
    })
    .await;

    // A second device of Bob on B: Alice's sync on A says Bob's devices changed, and a new
    // query finds it.
    let mut alice_since = sync(&a, &alice, None).await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let (status, login) = b
        .post(
            &format!("{V3}/login"),
            None,
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "bob" },
                "password": "correct horse battery",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "login: {login}");
    let phone = TestUser {
        user_id: bob.user_id.clone(),
        token: login["access_token"].as_str().expect("token").to_owned(),
        device_id: login["device_id"].as_str().expect("device").to_owned(),
    };
    upload_keys(&b, &phone, 0).await;
    sync_until(
        &a,
        &alice,
        &mut alice_since,
        "bob's devices changed on A",
        |body| {
            body["device_lists"]["changed"]
                .as_array()
                .is_some_and(|c| c.iter().any(|u| u == bob.user_id.as_str()))
        },
    )
    .await;
    query_device(&a, &alice, &bob, &phone.device_id).await;
    let both = query(&a, &alice, &bob.user_id).await;
    let devices = both["device_keys"][&bob.user_id]
        .as_object()
        .expect("bob's devices");
    assert_eq!(devices.len(), 2, "{both}");

    // A server nobody can reach is reported as a failure, and the local answer still comes.
    let nowhere = grove_server::NodeKey::generate().expect("key").hex();
    let ghost = format!("@ghost:{nowhere}");
    let (status, body) = a
        .post(
            &format!("{V3}/keys/query"),
            Some(&alice.token),
            json!({ "device_keys": { &ghost: [], &alice.user_id: [] }, "timeout": 2000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "keys/query: {body}");
    assert!(body["failures"].get(&nowhere).is_some(), "{body}");
    assert!(
        body["device_keys"][&alice.user_id][&alice.device_id].is_object(),
        "{body}"
    );
    assert!(body["device_keys"].get(&ghost).is_none(), "{body}");

    // The federation endpoints themselves, as node A asks node B.
    let client = grove_federation::client::Client::new(
        a.node().overlay().expect("overlay").clone(),
        a.node().homeserver().key.clone(),
        ruma::ServerName::parse(a.server_name()).expect("server name"),
    );
    let b_name = ruma::ServerName::parse(b.server_name()).expect("server name");
    let path = format!("/_matrix/federation/v1/user/devices/{}", enc(&bob.user_id));
    let devices = client
        .request(&b_name, http::Method::GET, &path, None)
        .await
        .expect("user/devices");
    assert_eq!(devices["user_id"], bob.user_id.as_str(), "{devices}");
    let mut ids: Vec<&str> = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["device_id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![bob.device_id.as_str(), phone.device_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "{devices}");
    // Only the node's own users are answered for.
    let path = format!(
        "/_matrix/federation/v1/user/devices/{}",
        enc(&alice.user_id)
    );
    let err = client
        .request(&b_name, http::Method::GET, &path, None)
        .await
        .expect_err("another node's user");
    assert!(err.to_string().contains("M_NOT_FOUND"), "{err}");
    let answer = client
        .request(
            &b_name,
            http::Method::POST,
            "/_matrix/federation/v1/user/keys/query",
            Some(&json!({ "device_keys": { &alice.user_id: [], &bob.user_id: [] } })),
        )
        .await
        .expect("user/keys/query");
    assert!(
        answer["device_keys"].get(&alice.user_id).is_none(),
        "{answer}"
    );
    assert!(answer["device_keys"][&bob.user_id].is_object(), "{answer}");
    let err = client
        .request(
            &b_name,
            http::Method::POST,
            "/_matrix/federation/v1/user/keys/claim",
            Some(&json!({ "one_time_keys": [] })),
        )
        .await
        .expect_err("a claim that is not an object");
    assert!(err.to_string().contains("M_BAD_JSON"), "{err}");

    // An m.direct_to_device EDU delivered twice (a retried transaction) lands once; one whose
    // sender is not a user of the origin is dropped.
    let edu = |sender: &str, secret: u32| {
        json!({ "edu_type": "m.direct_to_device", "content": {
            "sender": sender, "type": "m.grove.test", "message_id": format!("m{secret}"),
            "messages": { &bob.user_id: { &bob.device_id: { "secret": secret } } },
        }})
    };
    let b_user = format!("@mallory:{}", b.server_name());
    for (txn, edus) in [
        ("t1", vec![edu(&alice.user_id, 44)]),
        ("t2", vec![edu(&alice.user_id, 44), edu(&b_user, 45)]),
        ("t3", vec![edu(&alice.user_id, 46)]),
    ] {
        let body = json!({ "origin": a.server_name(), "origin_server_ts": 0, "pdus": [],
            "edus": edus });
        client
            .request(
                &b_name,
                http::Method::PUT,
                &format!("/_matrix/federation/v1/send/{txn}"),
                Some(&body),
            )
            .await
            .expect("send transaction");
    }
    let mut secrets = Vec::new();
    sync_until(&b, &bob, &mut bob_since, "EDUs on B", |body| {
        for event in body["to_device"]["events"].as_array().into_iter().flatten() {
            secrets.push(event["content"]["secret"].clone());
        }
        secrets.contains(&json!(46))
    })
    .await;
    assert_eq!(secrets, vec![json!(44), json!(46)], "{secrets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_and_to_device_across_nodes_sqlite() {
    keys_across_nodes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_and_to_device_across_nodes_postgres() {
    keys_across_nodes(Backend::Postgres).await;
}

/// A node that is offline: its users' keys are still answered (from the last answer it gave),
/// and a to-device message (a room key, in real use) for it is kept by the sending node, across
/// a restart of the sender too, and delivered once the two meet again.
async fn to_device_waits_for_an_offline_node(backend: Backend) {
    let mut a = TestNode::start_federated(backend, Vec::new()).await;
    let mut b = TestNode::start_federated(backend, vec![a.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let mut bob_since = sync(&b, &bob, None).await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    // Alice learns Bob's keys while B is up; with B away she still gets them, from A's cache.
    let _bob_key = upload_keys(&b, &bob, 1).await;
    let online = query_device(&a, &alice, &bob, &bob.device_id).await;

    let b_addr = b.node().client_addr();
    b.node.take().expect("B running").shutdown().await;
    let offline = query(&a, &alice, &bob.user_id).await;
    assert_eq!(offline["failures"], json!({}), "{offline}");
    assert_eq!(
        offline["device_keys"][&bob.user_id][&bob.device_id], online,
        "{offline}"
    );
    let stranger = format!("@nobody:{}", b.server_name_offline());
    let unknown = query(&a, &alice, &stranger).await;
    assert!(
        unknown["failures"].get(b.server_name_offline()).is_some(),
        "{unknown}"
    );
    let (status, body) = a
        .put(
            &format!("{V3}/sendToDevice/m.grove.test/offline1"),
            Some(&alice.token),
            json!({ "messages": { &bob.user_id: { &bob.device_id: { "secret": "kept" } } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "sendToDevice: {body}");
    a.restart().await;
    b.restart_at(b_addr).await;

    let got = sync_until(
        &b,
        &bob,
        &mut bob_since,
        "to-device after restarts",
        |body| {
            body["to_device"]["events"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        },
    )
    .await;
    let events = got["to_device"]["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["sender"], alice.user_id.as_str());
    assert_eq!(events[0]["content"]["secret"], "kept");
    // Delivered once: nothing more arrives.
    let again = sync(&b, &bob, Some(&bob_since)).await;
    assert!(
        again["to_device"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn to_device_waits_for_an_offline_node_sqlite() {
    to_device_waits_for_an_offline_node(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn to_device_waits_for_an_offline_node_postgres() {
    to_device_waits_for_an_offline_node(Backend::Postgres).await;
}

/// A room joined through another node: the joiner's `/sync` carries the room's state (here
/// its encryption), which the join brought with it, so the client knows to encrypt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remote_join_syncs_the_rooms_state() {
    let b = TestNode::start_federated(Backend::Sqlite, Vec::new()).await;
    let a = TestNode::start_federated(Backend::Sqlite, vec![b.peer_address()]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let (status, created) = a
        .post(
            &format!("{V3}/createRoom"),
            Some(&alice.token),
            json!({ "preset": "trusted_private_chat", "is_direct": true,
                "initial_state": [{ "type": "m.room.encryption", "state_key": "",
                    "content": { "algorithm": "m.megolm.v1.aes-sha2" } }] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "createRoom: {created}");
    let room = created["room_id"].as_str().expect("room_id").to_owned();
    let invite = format!("{V3}/rooms/{}/invite", enc(&room));
    eventually("alice invites bob on B", async || {
        let (status, body) = a
            .post(
                &invite,
                Some(&alice.token),
                json!({ "user_id": bob.user_id }),
            )
            .await;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    let mut since = sync(&b, &bob, None).await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let (status, body) = b
        .post(
            &format!("{V3}/join/{}", enc(&room)),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "join: {body}");
    // The state before the timeline and the state events in it (the join brings the room's
    // recent history, its first events included when it is young).
    let state_types = |body: &Value| -> Vec<String> {
        let joined = &body["rooms"]["join"][&room];
        let state = joined["state"]["events"].as_array().into_iter().flatten();
        let timeline = joined["timeline"]["events"]
            .as_array()
            .into_iter()
            .flatten();
        state
            .chain(timeline.filter(|e| e["state_key"].is_string()))
            .filter_map(|e| e["type"].as_str().map(str::to_owned))
            .collect()
    };
    for response in [
        sync_until(&b, &bob, &mut since, "bob's room on B", |body| {
            body["rooms"]["join"].get(&room).is_some()
        })
        .await,
        sync(&b, &bob, None).await,
    ] {
        let types = state_types(&response);
        for wanted in ["m.room.create", "m.room.encryption", "m.room.power_levels"] {
            assert!(
                types.iter().any(|t| t == wanted),
                "{wanted} missing from the state of {room}: {}",
                response["rooms"]["join"][&room]
            );
        }
    }
}
