//! End-to-end encryption's plumbing across implementations: device keys uploaded on one side
//! are found by `keys/query` on the other (signatures intact), a one-time key is claimed
//! across, and to-device messages reach the other side's `/sync`.

use std::collections::BTreeMap;

use grove_server::storage::Backend;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, PublicKeyMap, sign_json, verify_json},
};
use serde_json::{Value, json};

use crate::api::Api;
use crate::harness::{grove, shared};
use crate::support::{TestUser, eventually};
use crate::unique;

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
        Base64::<Standard>::new(self.pair.public_key().to_vec()).encode()
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

/// Uploads signed device keys and two signed one-time keys for `user`'s device.
async fn upload_keys(api: &Api, user: &TestUser) -> DeviceKey {
    let key = DeviceKey::new(&user.device_id);
    let device_keys = key.sign(
        user,
        json!({
            "user_id": user.user_id,
            "device_id": user.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", user.device_id): DeviceKey::new("c").public(),
                format!("ed25519:{}", user.device_id): key.public(),
            },
        }),
    );
    let mut one_time = serde_json::Map::new();
    for n in 0..2 {
        let otk = key.sign(user, json!({ "key": DeviceKey::new("o").public() }));
        one_time.insert(format!("signed_curve25519:AAAA{n:02}"), otk);
    }
    let body = api
        .post_ok(
            "/keys/upload",
            user,
            json!({ "device_keys": device_keys, "one_time_keys": one_time }),
        )
        .await;
    assert_eq!(
        body["one_time_key_counts"]["signed_curve25519"], 2,
        "{body}"
    );
    key
}

/// `other`'s device keys as `user` finds them through `api`, their signature checked against
/// `key`.
async fn query_device(api: &Api, user: &TestUser, other: &TestUser, key: &DeviceKey) -> Value {
    let body = eventually(
        &format!(
            "{} finds {}'s device on {}",
            user.user_id,
            other.user_id,
            api.server_name()
        ),
        async || {
            let body = api
                .post_ok(
                    "/keys/query",
                    user,
                    json!({ "device_keys": { &other.user_id: [] } }),
                )
                .await;
            if body["device_keys"][&other.user_id][&other.device_id].is_object() {
                Ok(body)
            } else {
                Err(body.to_string())
            }
        },
    )
    .await;
    assert_eq!(body["failures"], json!({}), "{body}");
    let device = body["device_keys"][&other.user_id][&other.device_id].clone();
    let key_id = format!("ed25519:{}", other.device_id);
    assert_eq!(device["keys"][&key_id], key.public(), "{device}");
    let keys: PublicKeyMap = BTreeMap::from([(
        other.user_id.clone(),
        BTreeMap::from([(key_id, Base64::new(key.pair.public_key().to_vec()))]),
    )]);
    let mut signed = canonical(device.clone());
    // A server may add `unsigned` (the device's display name); it is outside the signature.
    signed.remove("unsigned");
    verify_json(&keys, &signed).unwrap_or_else(|e| panic!("signature on {device}: {e}"));
    device
}

/// Claims one of `other`'s one-time keys through `api` and checks it is signed by `key`.
async fn claim(api: &Api, user: &TestUser, other: &TestUser) {
    let body = api
        .post_ok(
            "/keys/claim",
            user,
            json!({ "one_time_keys": { &other.user_id: { &other.device_id: "signed_curve25519" } } }),
        )
        .await;
    assert_eq!(body["failures"], json!({}), "{body}");
    let keys = body["one_time_keys"][&other.user_id][&other.device_id]
        .as_object()
        .unwrap_or_else(|| panic!("no one-time key of {}: {body}", other.user_id));
    assert_eq!(keys.len(), 1, "{body}");
    assert!(
        keys.keys().all(|id| id.starts_with("signed_curve25519:")),
        "{body}"
    );
}

/// Sends a to-device message from `from` to `to`'s device through `api`, and waits for it in
/// `to`'s `/sync` through `to_api`.
async fn to_device(api: &Api, from: &TestUser, to_api: &Api, to: &TestUser, text: &str) {
    let since = crate::next_batch(&to_api.sync_now(to, None).await);
    let txn: u64 = rand::random();
    api.put_ok(
        &format!("/sendToDevice/m.grove.interop/{txn}"),
        from,
        json!({ "messages": { &to.user_id: { &to.device_id: { "text": text } } } }),
    )
    .await;
    eventually(
        &format!("{text} in {}'s to-device messages", to.user_id),
        async || {
            let synced = to_api.sync_now(to, Some(&since)).await;
            let events = synced["to_device"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let found = events.iter().any(|e| {
                e["type"] == "m.grove.interop"
                    && e["sender"] == from.user_id.as_str()
                    && e["content"]["text"] == text
            });
            if found {
                Ok(())
            } else {
                Err(synced["to_device"].to_string())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_and_to_device_cross_both_ways() {
    let shared = shared().await;
    let node = grove(shared, Backend::Sqlite).await;
    let (g, s) = (Api::of(&node), shared.synapse.api());
    let sam = s.register(&unique("sam")).await;
    let gus = g.register("gus").await;
    let sam_key = upload_keys(&s, &sam).await;
    let gus_key = upload_keys(&g, &gus).await;

    query_device(&g, &gus, &sam, &sam_key).await;
    query_device(&s, &sam, &gus, &gus_key).await;
    claim(&g, &gus, &sam).await;
    claim(&s, &sam, &gus).await;

    to_device(&g, &gus, &s, &sam, "from Grove").await;
    to_device(&s, &sam, &g, &gus, "from Synapse").await;
}
