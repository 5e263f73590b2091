//! Homes: the home key beside the node key, replica documents served by the key server, and
//! custody of the home key (export, import, passphrase, revocation), through the embedding
//! API and through the `grove` binary.

use std::{path::Path, process::Command, sync::Arc};

use grove::{
    Custody, IdentityError,
    identity::{file::FileError, passphrase::PassphraseError},
};
use grove_server::{
    NodeKey,
    home::{self, DocumentError, HomeKey, Replica, ReplicaDocument},
    storage::Backend,
    testing::TestDb,
};
use ruma::ServerName;

use crate::support::{BACKENDS, TestNode, subscribe};

/// Five random-looking words: strong enough for a home.
const STRONG: &str = "orbit velvet gravel tundra pickle";

fn custody(dir: &Path, database_url: Option<&str>) -> Custody {
    Custody::new(&grove::Config {
        data_dir: dir.to_owned(),
        database_url: database_url.map(str::to_owned),
        ..grove::Config::default()
    })
}

fn key_file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .expect("key file")
        .trim()
        .to_owned()
}

fn public_hex(seed_hex: &str) -> String {
    let seed: [u8; 32] = hex::decode(seed_hex)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    hex::encode(HomeKey::from_seed(seed).public_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_node_is_the_single_replica_of_its_home_and_serves_its_document() {
    let a = TestNode::start_federated(Backend::Sqlite, Vec::new()).await;
    let b = TestNode::start_federated(Backend::Sqlite, vec![a.peer_address()]).await;
    // Without the switch the home key is the node key: the name is still the overlay key.
    let home = key_file(a.dir.path(), "home.key");
    assert_eq!(home, key_file(a.dir.path(), "node.key"));
    assert_eq!(a.server_name(), public_hex(&home));
    let info = a.node().identity().await.expect("identity");
    let doc = info.document.expect("a document is held");
    assert_eq!(doc.replicas().len(), 1);
    assert_eq!(doc.replicas()[0].node_key, a.server_name());
    assert_eq!(
        doc.replicas()[0].key_id,
        format!("ed25519:{}", &a.server_name()[..8])
    );

    // The home revokes a replica it had: its key becomes an old key of the home.
    let home_key = HomeKey::load(&a.dir.path().join("home.key"))
        .expect("read")
        .expect("home key");
    let gone = Replica::for_node(
        &NodeKey::generate()
            .and_then(NodeKey::with_replica_key_id)
            .expect("key"),
    );
    let now = doc.issued_ts();
    let doc = doc
        .with_replica(&home_key, gone.clone(), now)
        .and_then(|d| d.without_replica(&home_key, &gone.node_key, now + 1))
        .expect("revoked");
    assert!(
        home::store(&a.node().homeserver().storage, &doc)
            .await
            .expect("stored")
    );

    // B reads A's key document over the overlay: the document rides along, checkable by
    // anyone against A's name, and the revoked key is an old key.
    let a_name = ServerName::parse(a.server_name()).expect("name");
    let client = grove_federation::client::Client::new(
        b.node().overlay().expect("overlay").clone(),
        Arc::new(NodeKey::generate().expect("key")),
        ServerName::parse(b.server_name()).expect("name"),
    );
    let keys = crate::support::eventually("A's key document", async || {
        client
            .get_public(&a_name, "/_matrix/key/v2/server", 64 * 1024)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let served =
        ReplicaDocument::from_value(&keys["org.grove.replica_document"]).expect("a valid document");
    assert_eq!(served, doc);
    assert_eq!(served.server_name(), a.server_name());
    let own = &served.replicas()[0];
    assert_eq!(keys["verify_keys"][&own.key_id]["key"], own.key.as_str());
    assert_eq!(
        keys["old_verify_keys"][&gone.key_id]["expired_ts"],
        now + 1,
        "{keys}"
    );
    // An older document is not taken over the newer one.
    let older = ReplicaDocument::first(&home_key, gone, now).expect("document");
    assert!(
        !home::store(&a.node().homeserver().storage, &older)
            .await
            .expect("store")
    );
}

#[tokio::test]
async fn a_data_directory_made_before_homes_keeps_its_server_name() {
    let seed = [7u8; 32];
    let old_name = hex::encode(HomeKey::from_seed(seed).public_bytes());
    let node = TestNode::start_with_config(Backend::Sqlite, |config| {
        std::fs::write(
            config.data_dir.join("node.key"),
            format!("{}\n", hex::encode(seed)),
        )
        .expect("old node key");
    })
    .await;
    assert_eq!(node.server_name(), old_name);
    assert_eq!(key_file(node.dir.path(), "home.key"), hex::encode(seed));
    let info = node.node().identity().await.expect("identity");
    assert_eq!(info.node_key, old_name);
    let doc = info.document.expect("document");
    assert_eq!(doc.replicas()[0].node_key, old_name);
}

#[tokio::test]
async fn with_the_switch_a_fresh_directory_gets_a_home_key_of_its_own() {
    let node = TestNode::start_with_config(Backend::Sqlite, |config| {
        config.identity.split_home_key = true;
    })
    .await;
    let home = key_file(node.dir.path(), "home.key");
    let this = key_file(node.dir.path(), "node.key");
    assert_ne!(home, this);
    assert_eq!(node.server_name(), public_hex(&home));
    let info = node.node().identity().await.expect("identity");
    assert_eq!(info.node_key, public_hex(&this));
    let doc = info.document.expect("document");
    assert_eq!(doc.replicas()[0].node_key, public_hex(&this));
}

#[tokio::test]
async fn export_then_import_makes_another_replica_of_the_home() {
    for backend in BACKENDS {
        subscribe();
        let a = TestNode::start(backend).await;
        let a_custody = custody(a.dir.path(), Some(&a.db.url));
        let exported = a_custody.export(STRONG).await.expect("export");
        let a_doc = a_custody
            .show()
            .await
            .expect("show")
            .document
            .expect("document");

        // B: a fresh directory and database become a second replica of A's home.
        let b_dir = tempfile::tempdir().expect("dir");
        let b_db = TestDb::new(backend).await;
        let b = custody(b_dir.path(), Some(&b_db.url));
        let info = b.import(exported.clone(), STRONG).await.expect("import");
        assert_eq!(info.server_name.as_str(), a.server_name());
        assert_ne!(
            info.node_key,
            a.server_name(),
            "B has a node key of its own"
        );
        let doc = info.document.expect("document");
        assert!(doc.version() > a_doc.version(), "{backend:?}");
        assert_eq!(doc.replicas().len(), 2);
        assert!(doc.replica(&info.node_key).is_some());
        assert!(doc.replica(&a.server_name()).is_some());
        // Importing again changes nothing.
        let again = b.import(exported.clone(), STRONG).await.expect("again");
        assert_eq!(again.document.expect("document"), doc);

        // B revokes A: a newer document, A's key revoked; unknown and last replicas refused.
        let revoked = b.revoke(&a.server_name()).await.expect("revoke");
        let revoked = revoked.document.expect("document");
        assert!(revoked.version() > doc.version());
        assert_eq!(revoked.replicas().len(), 1);
        assert_eq!(
            revoked.revoked()[0].key_id,
            format!("ed25519:{}", &a.server_name()[..8])
        );
        assert!(matches!(
            b.revoke(&"ab".repeat(32)).await,
            Err(IdentityError::Document(DocumentError::UnknownReplica(_)))
        ));
        assert!(matches!(
            b.revoke(&info.node_key).await,
            Err(IdentityError::Document(DocumentError::LastReplica(_)))
        ));

        // A data directory serving another home refuses the import.
        let c = TestNode::start(backend).await;
        let err = custody(c.dir.path(), Some(&c.db.url))
            .import(exported.clone(), STRONG)
            .await
            .expect_err("another home");
        assert!(
            matches!(err, IdentityError::OtherHome { .. }),
            "{backend:?}: {err}"
        );
    }
}

#[tokio::test]
async fn a_bad_export_file_or_passphrase_is_refused_with_its_reason() {
    let a = TestNode::start(Backend::Sqlite).await;
    let exported = custody(a.dir.path(), Some(&a.db.url))
        .export(STRONG)
        .await
        .expect("export");
    let dir = tempfile::tempdir().expect("dir");
    let b = custody(dir.path(), None);
    let refused = async |bytes: Vec<u8>, passphrase: &str| match b.import(bytes, passphrase).await {
        Err(IdentityError::File(e)) => e,
        other => panic!("not refused for its file: {other:?}"),
    };
    assert!(matches!(
        refused(exported.clone(), "orbit velvet gravel tundra pickles").await,
        FileError::WrongPassphrase
    ));
    for at in [0, 9, 40, exported.len() / 2, exported.len() - 1] {
        let mut flipped = exported.clone();
        flipped[at] ^= 0x20;
        assert!(
            matches!(refused(flipped, STRONG).await, FileError::Corrupt(_)),
            "byte {at} flipped"
        );
    }
    for len in [0, 5, 60, exported.len() - 1] {
        assert!(
            matches!(
                refused(exported[..len].to_vec(), STRONG).await,
                FileError::Corrupt(_)
            ),
            "cut at {len}"
        );
    }
    // Nothing was written by the refused imports.
    assert!(!dir.path().join("home.key").exists());
    b.import(exported, STRONG).await.expect("the good file");
}

#[tokio::test]
async fn a_passphrase_gives_the_same_home_on_every_device() {
    subscribe();
    let first = tempfile::tempdir().expect("dir");
    let second = tempfile::tempdir().expect("dir");
    let one = custody(first.path(), None)
        .from_passphrase(STRONG)
        .await
        .expect("derived");
    // Typed with other spacing on another device.
    let two = custody(second.path(), None)
        .from_passphrase("  orbit velvet\tgravel tundra   pickle ")
        .await
        .expect("derived again");
    assert_eq!(one.server_name, two.server_name);
    assert_ne!(one.node_key, two.node_key);
    assert_eq!(
        public_hex(&key_file(first.path(), "home.key")),
        one.server_name.as_str()
    );

    let weak = tempfile::tempdir().expect("dir");
    assert!(matches!(
        custody(weak.path(), None)
            .from_passphrase("correct horse battery staple")
            .await,
        Err(IdentityError::Passphrase(PassphraseError::Weak { .. }))
    ));
    assert!(!weak.path().join("home.key").exists());

    // The derived home starts and serves under that name.
    let node = grove::Node::builder()
        .data_dir(first.path())
        .client_listen("127.0.0.1:0".parse().expect("addr"))
        .overlay(false)
        .start()
        .await
        .expect("starts");
    assert_eq!(node.server_name().as_str(), one.server_name.as_str());
    node.shutdown().await;
}

/// Runs the `grove` binary with `args` and the passphrase, returning (success, stdout,
/// stderr).
fn grove(args: &[&str], passphrase: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_grove"));
    command.args(args).env("GROVE_LOG", "off");
    for (var, _) in std::env::vars() {
        if var.starts_with("GROVE_") && var != "GROVE_LOG" {
            command.env_remove(var);
        }
    }
    if let Some(passphrase) = passphrase {
        command.env("GROVE_PASSPHRASE", passphrase);
    }
    let out = command.output().expect("grove runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn fails_with(outcome: (bool, String, String), reason: &str) {
    let (ok, _, stderr) = outcome;
    assert!(!ok, "succeeded");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains(reason), "{stderr:?} lacks {reason:?}");
}

fn line_value(stdout: &str, label: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {label:?} in {stdout}"))
}

#[test]
fn the_identity_commands_work_from_the_command_line() {
    let root = tempfile::tempdir().expect("dir");
    let d1 = root.path().join("d1");
    let d2 = root.path().join("d2");
    let file = root.path().join("home.grove");
    let d1s = d1.to_str().expect("utf-8");
    let d2s = d2.to_str().expect("utf-8");
    let files = file.to_str().expect("utf-8");

    let (ok, out, err) = grove(
        &["--data-dir", d1s, "identity", "from-passphrase"],
        Some(STRONG),
    );
    assert!(ok, "{err}");
    let name = line_value(&out, "server name:");
    assert_eq!(name.len(), 64);
    let (ok, shown, err) = grove(&["--data-dir", d1s, "identity", "show"], None);
    assert!(ok, "{err}");
    assert_eq!(line_value(&shown, "server name:"), name);
    assert!(shown.contains("(this node)"), "{shown}");

    let (ok, _, err) = grove(
        &["--data-dir", d1s, "identity", "export", files],
        Some(STRONG),
    );
    assert!(ok, "{err}");
    fails_with(
        grove(
            &["--data-dir", d1s, "identity", "export", files],
            Some(STRONG),
        ),
        "exists",
    );
    fails_with(
        grove(
            &["--data-dir", d2s, "identity", "import", files],
            Some("wrong wrong wrong wrong wrong"),
        ),
        "wrong passphrase",
    );
    let mut damaged = std::fs::read(&file).expect("file");
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    let damaged_file = root.path().join("damaged.grove");
    std::fs::write(&damaged_file, &damaged).expect("write");
    fails_with(
        grove(
            &[
                "--data-dir",
                d2s,
                "identity",
                "import",
                damaged_file.to_str().expect("utf-8"),
            ],
            Some(STRONG),
        ),
        "corrupt",
    );
    let (ok, out, err) = grove(
        &["--data-dir", d2s, "identity", "import", files],
        Some(STRONG),
    );
    assert!(ok, "{err}");
    assert_eq!(line_value(&out, "server name:"), name);
    assert_eq!(out.matches("replica:").count(), 2, "{out}");
    let d2_node = line_value(&out, "this node:");

    // D1 does not know of D2 (no replication yet): revoking it there is an unknown key.
    fails_with(
        grove(&["--data-dir", d1s, "identity", "revoke", &d2_node], None),
        "not a replica",
    );
    let d1_node = line_value(&shown, "this node:");
    let (ok, out, err) = grove(&["--data-dir", d2s, "identity", "revoke", &d1_node], None);
    assert!(ok, "{err}");
    assert!(out.contains("revoked:"), "{out}");

    fails_with(
        grove(
            &[
                "--data-dir",
                root.path().join("d3").to_str().expect("utf-8"),
                "identity",
                "from-passphrase",
            ],
            Some("correct horse battery staple"),
        ),
        "too weak",
    );
    // A directory serving another home (made before homes: a node key only).
    let d4 = root.path().join("d4");
    std::fs::create_dir(&d4).expect("dir");
    std::fs::write(d4.join("node.key"), hex::encode([9u8; 32])).expect("key");
    fails_with(
        grove(
            &[
                "--data-dir",
                d4.to_str().expect("utf-8"),
                "identity",
                "import",
                files,
            ],
            Some(STRONG),
        ),
        "already serves",
    );
    fails_with(
        grove(
            &[
                "--data-dir",
                root.path().join("d5").to_str().expect("utf-8"),
                "identity",
                "show",
            ],
            None,
        ),
        "no identity",
    );
}
