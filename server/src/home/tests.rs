//! Replica documents: what signs, what verifies, and what is refused.

use serde_json::{Value, json};

use super::*;

const NOW: u64 = 1_800_000_000_000;

fn replica() -> (NodeKey, Replica) {
    let node = NodeKey::generate()
        .and_then(NodeKey::with_replica_key_id)
        .expect("node key");
    let replica = Replica::for_node(&node);
    (node, replica)
}

fn first(home: &HomeKey) -> ReplicaDocument {
    ReplicaDocument::first(home, replica().1, NOW).expect("first document")
}

/// Re-signs an edited body with `home`, bypassing the checks `sign` makes, as a forger with
/// the key (or without it, for another key) could.
fn resign(home: &HomeKey, value: &Value) -> Value {
    let mut body = value.clone();
    if let Some(object) = body.as_object_mut() {
        object.remove("signature");
    }
    // A body canonical JSON cannot carry (an integer past 2^53) keeps its old signature: it is
    // refused before any signature is checked.
    let Ok(canonical) = CanonicalJsonValue::try_from(body.clone()) else {
        return value.clone();
    };
    let mut message = DOCUMENT_CONTEXT.to_vec();
    message.extend_from_slice(canonical.to_string().as_bytes());
    let signature = STANDARD_NO_PAD.encode(home.signing.sign(&message).to_bytes());
    body["signature"] = json!(signature);
    body
}

#[track_caller]
fn refused(value: &Value) -> DocumentError {
    match ReplicaDocument::from_value(value) {
        Ok(_) => panic!("accepted: {value}"),
        Err(e) => e,
    }
}

#[test]
fn a_signed_document_verifies_and_round_trips() {
    let home = HomeKey::generate();
    let doc = first(&home);
    assert_eq!(doc.server_name(), home.server_name().as_str());
    assert_eq!(doc.version(), NOW, "the first version is the clock");
    let parsed = ReplicaDocument::parse(doc.to_json_string().as_bytes()).expect("parses");
    assert_eq!(parsed, doc);
    assert!(doc.replicas()[0].key_id.starts_with("ed25519:"));
}

#[test]
fn every_change_makes_a_newer_version() {
    let home = HomeKey::generate();
    let doc = first(&home);
    let (_, second) = replica();
    let grown = doc.with_replica(&home, second.clone(), NOW).expect("grown");
    assert_eq!(grown.version(), doc.version() + 1);
    assert_eq!(grown.replicas().len(), 2);
    grown.newer_than(Some(doc.version())).expect("newer");
    assert!(matches!(
        doc.newer_than(Some(grown.version())),
        Err(DocumentError::NotNewer { .. })
    ));
    assert!(matches!(
        doc.newer_than(Some(doc.version())),
        Err(DocumentError::NotNewer { .. })
    ));

    let shrunk = grown
        .without_replica(&home, &second.node_key, NOW + 5)
        .expect("revoked");
    assert_eq!(shrunk.version(), NOW + 5, "the clock wins when it is ahead");
    assert_eq!(shrunk.replicas().len(), 1);
    assert_eq!(shrunk.revoked()[0].key, second.key);
    assert_eq!(shrunk.revoked()[0].expired_ts, NOW + 5);
    assert!(matches!(
        shrunk.without_replica(&home, &second.node_key, NOW),
        Err(DocumentError::UnknownReplica(_))
    ));
    let last = shrunk.replicas()[0].node_key.clone();
    assert!(matches!(
        shrunk.without_replica(&home, &last, NOW),
        Err(DocumentError::LastReplica(_))
    ));
    // Another home's key cannot issue this home's next document.
    assert!(matches!(
        shrunk.with_replica(&HomeKey::generate(), replica().1, NOW),
        Err(DocumentError::OtherHome { .. })
    ));
}

#[test]
fn forged_documents_are_refused() {
    let home = HomeKey::generate();
    let doc = first(&home).to_json();

    // Edited after signing.
    let mut edited = doc.clone();
    edited["version"] = json!(NOW + 1);
    assert!(matches!(refused(&edited), DocumentError::BadSignature));
    let mut added = doc.clone();
    added["replicas"]
        .as_array_mut()
        .expect("replicas")
        .push(serde_json::to_value(replica().1).expect("json"));
    assert!(matches!(refused(&added), DocumentError::BadSignature));

    // Signed by another key: the name says whose signature counts.
    let other = HomeKey::generate();
    assert!(matches!(
        refused(&resign(&other, &doc)),
        DocumentError::BadSignature
    ));
    // Named after the other key but listing this home's data: a different home, and only
    // its own key's signature passes.
    let mut renamed = doc.clone();
    renamed["server_name"] = json!(other.server_name().as_str());
    assert!(matches!(refused(&renamed), DocumentError::BadSignature));
    ReplicaDocument::from_value(&resign(&other, &renamed)).expect("the other home's own");

    // The signature of the same body without the context is not a document signature.
    let mut bare = doc.clone();
    let mut body = doc.clone();
    body.as_object_mut().expect("object").remove("signature");
    let canonical = CanonicalJsonValue::try_from(body).expect("canonical");
    let signature = home.signing.sign(canonical.to_string().as_bytes());
    bare["signature"] = json!(STANDARD_NO_PAD.encode(signature.to_bytes()));
    assert!(matches!(refused(&bare), DocumentError::BadSignature));

    // Garbage signatures.
    for garbage in [json!(""), json!("!!"), json!(42), json!("AAAA")] {
        let mut bad = doc.clone();
        bad["signature"] = garbage;
        refused(&bad);
    }
}

/// One change made to a document.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn malformed_and_oversized_documents_are_refused() {
    let home = HomeKey::generate();
    let doc = first(&home).to_json();
    let (_, r) = replica();

    // Each edit is re-signed by the rightful key: the checks hold whoever signed.
    let cases: Vec<(&str, Edit)> = vec![
        ("unknown field", Box::new(|d| d["extra"] = json!(1))),
        ("version 0", Box::new(|d| d["version"] = json!(0))),
        (
            "version past 2^53",
            Box::new(|d| d["version"] = json!(1u64 << 60)),
        ),
        ("no replicas", Box::new(|d| d["replicas"] = json!([]))),
        (
            "DNS name",
            Box::new(|d| d["server_name"] = json!("example.org")),
        ),
        (
            "bad key ID",
            Box::new(|d| d["replicas"][0]["key_id"] = json!("ed25519:a b")),
        ),
        (
            "key ID of another algorithm",
            Box::new(|d| d["replicas"][0]["key_id"] = json!("curve25519:abc")),
        ),
        (
            "short key",
            Box::new(|d| d["replicas"][0]["key"] = json!("AAAA")),
        ),
        (
            "upper-case node key",
            Box::new(|d| {
                let upper = d["replicas"][0]["node_key"]
                    .as_str()
                    .expect("hex")
                    .to_ascii_uppercase();
                d["replicas"][0]["node_key"] = json!(upper);
            }),
        ),
        (
            "same node twice",
            Box::new(|d| {
                let again = d["replicas"][0].clone();
                d["replicas"].as_array_mut().expect("list").push(again);
            }),
        ),
        (
            "same key ID twice",
            Box::new(move |d| {
                let mut second = serde_json::to_value(&r).expect("json");
                second["key_id"] = d["replicas"][0]["key_id"].clone();
                d["replicas"].as_array_mut().expect("list").push(second);
            }),
        ),
        (
            "a replica key also revoked",
            Box::new(|d| {
                let key = d["replicas"][0]["key"].clone();
                d["revoked"] = json!([{ "key_id": "ed25519:old", "key": key, "expired_ts": 1 }]);
            }),
        ),
        (
            "too many replicas",
            Box::new(|d| {
                let many: Vec<Value> = (0..=MAX_REPLICAS)
                    .map(|_| serde_json::to_value(replica().1).expect("json"))
                    .collect();
                d["replicas"] = json!(many);
            }),
        ),
    ];
    for (what, edit) in cases {
        let mut bad = doc.clone();
        edit(&mut bad);
        let bad = resign(&home, &bad);
        let err = refused(&bad);
        assert!(
            !matches!(err, DocumentError::BadSignature) || what == "DNS name",
            "{what}: refused for its signature, not its content: {err}"
        );
    }

    let huge = vec![b' '; MAX_DOCUMENT_BYTES + 1];
    assert!(matches!(
        ReplicaDocument::parse(&huge),
        Err(DocumentError::TooLarge(_))
    ));
    assert!(matches!(
        ReplicaDocument::parse(b"\xff\x00not json"),
        Err(DocumentError::Malformed(_))
    ));
}

#[test]
fn revoking_past_the_bound_forgets_the_oldest() {
    let home = HomeKey::generate();
    let mut doc = first(&home);
    for i in 0..=MAX_REVOKED as u64 {
        let (_, r) = replica();
        let node = r.node_key.clone();
        doc = doc.with_replica(&home, r, NOW + i).expect("add");
        doc = doc.without_replica(&home, &node, NOW + i).expect("revoke");
    }
    assert_eq!(doc.revoked().len(), MAX_REVOKED);
    assert_eq!(
        doc.revoked()[0].expired_ts,
        NOW + 1,
        "the first revoked is gone"
    );
    // A full document still fits the size bound.
    assert!(doc.to_json_string().len() <= MAX_DOCUMENT_BYTES);
}

#[test]
fn a_full_document_fits_the_size_bound() {
    let home = HomeKey::generate();
    let mut doc = first(&home);
    for _ in 1..MAX_REPLICAS {
        doc = doc.with_replica(&home, replica().1, NOW).expect("add");
    }
    assert_eq!(doc.replicas().len(), MAX_REPLICAS);
    assert!(
        doc.to_json_string().len() <= MAX_DOCUMENT_BYTES,
        "{} bytes",
        doc.to_json_string().len()
    );
}
