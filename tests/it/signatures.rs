//! `keys/signatures/upload` with real ed25519 keys: signatures by the key the spec allows are
//! verified and stored; missing, forged, misdirected or mismatched ones are reported in
//! `failures` and never stored.

use ed25519_dalek::{Signer, SigningKey};
use reqwest::StatusCode;
use ruma::{
    CanonicalJsonValue,
    serde::{Base64, base64::Standard},
};
use serde_json::{Value, json};

use crate::support::{BACKENDS, TestNode, TestUser};

const V3: &str = "/_matrix/client/v3";

fn b64(bytes: &[u8]) -> String {
    Base64::<Standard, _>::new(bytes.to_vec()).encode()
}

fn public(key: &SigningKey) -> String {
    b64(key.verifying_key().as_bytes())
}

/// `key`'s signature of `object` (without `signatures` and `unsigned`), in canonical JSON.
fn sign(key: &SigningKey, object: &Value) -> String {
    let mut object = object.clone();
    if let Value::Object(map) = &mut object {
        map.remove("signatures");
        map.remove("unsigned");
    }
    let canonical = CanonicalJsonValue::try_from(object)
        .expect("canonical")
        .to_string();
    b64(&key.sign(canonical.as_bytes()).to_bytes())
}

/// `object` with `signer`'s signature by `key` named `key_id` added.
fn signed_by(object: &Value, signer: &str, key_id: &str, key: &SigningKey) -> Value {
    let signature = sign(key, object);
    let mut object = object.clone();
    object["signatures"] = json!({ signer: { key_id: signature } });
    object
}

fn cross_key(user: &TestUser, usage: &str, key: &SigningKey) -> Value {
    json!({ "user_id": user.user_id, "usage": [usage],
        "keys": { format!("ed25519:{}", public(key)): public(key) } })
}

fn device_keys(user: &TestUser, key: &SigningKey) -> Value {
    let unsigned = json!({
        "user_id": user.user_id,
        "device_id": user.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", user.device_id): b64(&[7; 32]),
            format!("ed25519:{}", user.device_id): public(key),
        },
    });
    let key_id = format!("ed25519:{}", user.device_id);
    signed_by(&unsigned, &user.user_id, &key_id, key)
}

/// A user's keys: device, master, self-signing, user-signing.
struct Keys {
    device: SigningKey,
    master: SigningKey,
    self_signing: SigningKey,
    user_signing: SigningKey,
}

impl Keys {
    fn new(seed: u8) -> Keys {
        Keys {
            device: SigningKey::from_bytes(&[seed; 32]),
            master: SigningKey::from_bytes(&[seed + 1; 32]),
            self_signing: SigningKey::from_bytes(&[seed + 2; 32]),
            user_signing: SigningKey::from_bytes(&[seed + 3; 32]),
        }
    }

    /// Uploads the device keys and the three cross-signing keys of `user`.
    async fn upload(&self, node: &TestNode, user: &TestUser) {
        let (status, body) = node
            .post(
                &format!("{V3}/keys/upload"),
                Some(&user.token),
                json!({ "device_keys": device_keys(user, &self.device) }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = node
            .post(
                &format!("{V3}/keys/device_signing/upload"),
                Some(&user.token),
                json!({
                    "master_key": cross_key(user, "master", &self.master),
                    "self_signing_key": cross_key(user, "self_signing", &self.self_signing),
                    "user_signing_key": cross_key(user, "user_signing", &self.user_signing),
                }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

async fn upload_signatures(node: &TestNode, user: &TestUser, body: Value) -> Value {
    let (status, resp) = node
        .post(
            &format!("{V3}/keys/signatures/upload"),
            Some(&user.token),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["failures"].clone()
}

async fn query(node: &TestNode, by: &TestUser, of: &TestUser) -> Value {
    let (status, resp) = node
        .post(
            &format!("{V3}/keys/query"),
            Some(&by.token),
            json!({ "device_keys": { &of.user_id: [] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp
}

#[tokio::test]
async fn uploaded_signatures_are_verified() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let bob = node.register("bob").await;
        let a = Keys::new(10);
        let b = Keys::new(20);
        a.upload(&node, &alice).await;
        b.upload(&node, &bob).await;
        let a_device = device_keys(&alice, &a.device);
        let a_master = cross_key(&alice, "master", &a.master);
        let b_master = cross_key(&bob, "master", &b.master);
        let ssk_id = format!("ed25519:{}", public(&a.self_signing));
        let usk_id = format!("ed25519:{}", public(&a.user_signing));
        let device_id = format!("ed25519:{}", alice.device_id);

        // Forged, misdirected and mismatched signatures, each reported, none stored.
        let forger = SigningKey::from_bytes(&[99; 32]);
        let mut altered = a_device.clone();
        altered["keys"]["curve25519:EXTRA"] = json!(b64(&[1; 32]));
        let failures = upload_signatures(
            &node,
            &alice,
            json!({
                &alice.user_id: {
                    &alice.device_id: signed_by(&a_device, &alice.user_id, &ssk_id, &forger),
                    "NOSUCHDEVICE": signed_by(&a_device, &alice.user_id, &ssk_id,
                        &a.self_signing),
                },
                &bob.user_id: {
                    // Another user's device is not Alice's to sign.
                    &bob.device_id: signed_by(&device_keys(&bob, &b.device), &alice.user_id,
                        &usk_id, &a.user_signing),
                    // Bob's master key signed with a key that is not Alice's user-signing key.
                    public(&b.master): signed_by(&b_master, &alice.user_id, &ssk_id,
                        &a.self_signing),
                },
            }),
        )
        .await;
        assert_eq!(
            code_of(&failures, &alice.user_id, &alice.device_id),
            "M_INVALID_SIGNATURE",
            "{failures}"
        );
        assert_eq!(
            code_of(&failures, &alice.user_id, "NOSUCHDEVICE"),
            "M_NOT_FOUND",
            "{failures}"
        );
        assert_eq!(
            code_of(&failures, &bob.user_id, &bob.device_id),
            "M_NOT_FOUND",
            "{failures}"
        );
        assert_eq!(
            code_of(&failures, &bob.user_id, &public(&b.master)),
            "M_INVALID_SIGNATURE",
            "{failures}"
        );
        let failures = upload_signatures(
            &node,
            &alice,
            json!({ &alice.user_id: {
                &alice.device_id: signed_by(&altered, &alice.user_id, &ssk_id, &a.self_signing),
            } }),
        )
        .await;
        assert_eq!(
            code_of(&failures, &alice.user_id, &alice.device_id),
            "M_INVALID_SIGNATURE",
            "an object other than the stored key: {failures}"
        );
        let seen = query(&node, &bob, &alice).await;
        let device_sigs =
            &seen["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id];
        assert!(device_sigs.get(&ssk_id).is_none(), "{seen}");

        // The real thing: the self-signing key signs the device, the device signs the master
        // key, and the user-signing key signs Bob's master key.
        let failures = upload_signatures(
            &node,
            &alice,
            json!({
                &alice.user_id: {
                    &alice.device_id: signed_by(&a_device, &alice.user_id, &ssk_id,
                        &a.self_signing),
                    public(&a.master): signed_by(&a_master, &alice.user_id, &device_id,
                        &a.device),
                },
                &bob.user_id: {
                    public(&b.master): signed_by(&b_master, &alice.user_id, &usk_id,
                        &a.user_signing),
                },
            }),
        )
        .await;
        assert_eq!(failures, json!({}));
        let seen = query(&node, &bob, &alice).await;
        assert_eq!(
            seen["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id]
                [&ssk_id],
            sign(&a.self_signing, &a_device)
        );
        assert_eq!(
            seen["master_keys"][&alice.user_id]["signatures"][&alice.user_id][&device_id],
            sign(&a.device, &a_master)
        );
        let seen = query(&node, &alice, &bob).await;
        assert_eq!(
            seen["master_keys"][&bob.user_id]["signatures"][&alice.user_id][&usk_id],
            sign(&a.user_signing, &b_master)
        );
    }
}

fn code_of(failures: &Value, user: &str, key: &str) -> Value {
    failures[user][key]["errcode"].clone()
}
