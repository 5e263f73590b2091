//! A LAN with no server and no configuration: three `grove` daemons in their own network
//! namespaces, A and B on one bridge, B and C on another. Nothing tells them about each other;
//! they find their neighbours by multicast beacons, A reaches C only through B, and a user on C
//! joins a room on A by its alias.
//!
//! The test builds the namespaces, veth pairs and bridges itself with iproute2 and removes them
//! when it ends (also on failure). It needs root, as CI has; elsewhere it fails and says why.
//! Addresses live only inside the test's own namespaces.

use std::{
    fs::File,
    future::Future,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// How long the daemons get to discover each other, peer and federate.
const CONVERGE: Duration = Duration::from_secs(90);

/// Runs `ip` with `args`; panics with the command and its error output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 is needed): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The namespaces, links and daemons of one test; torn down on drop.
struct Lan {
    prefix: String,
    namespaces: Vec<String>,
    /// Running daemons by node name.
    daemons: Vec<(String, Child)>,
    /// Each node's working directory (its data directory and log live inside).
    dirs: Vec<(String, tempfile::TempDir)>,
}

impl Lan {
    /// Builds `A ─ br1 ─ B ─ br2 ─ C`; the bridges live in a namespace of their own.
    fn build() -> Lan {
        // Interface names are at most 15 bytes; the pid keeps parallel runs apart.
        let prefix = format!("gl{}", std::process::id() % 100_000);
        let mut lan = Lan {
            namespaces: Vec::new(),
            prefix: prefix.clone(),
            daemons: Vec::new(),
            dirs: Vec::new(),
        };
        for name in ["a", "b", "c", "sw"] {
            let ns = format!("{prefix}{name}");
            ip(&["netns", "add", &ns]);
            lan.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        let sw = lan.ns("sw");
        for bridge in ["br1", "br2"] {
            ip(&["-n", &sw, "link", "add", bridge, "type", "bridge"]);
            ip(&["-n", &sw, "link", "set", bridge, "up"]);
        }
        // (node, its interface, bridge, address)
        let links = [
            ("a", "e0", "br1", "10.231.1.1/24"),
            ("b", "e0", "br1", "10.231.1.2/24"),
            ("b", "e1", "br2", "10.231.2.2/24"),
            ("c", "e0", "br2", "10.231.2.3/24"),
        ];
        for (i, (node, iface, bridge, addr)) in links.iter().enumerate() {
            let ns = lan.ns(node);
            let port = format!("p{i}");
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", iface, "netns",
                &ns,
            ]);
            ip(&["-n", &sw, "link", "set", &port, "master", bridge]);
            ip(&["-n", &sw, "link", "set", &port, "up"]);
            ip(&["-n", &ns, "addr", "add", addr, "dev", iface]);
            ip(&["-n", &ns, "link", "set", iface, "up"]);
        }
        lan
    }

    fn ns(&self, node: &str) -> String {
        format!("{}{node}", self.prefix)
    }

    /// Starts the `grove` daemon inside `node`'s namespace with no configuration: default data
    /// directory (in the node's working directory), client API on 127.0.0.1:8008, overlay and
    /// LAN discovery on. A node started again keeps its data directory.
    fn start(&mut self, node: &str) {
        if !self.dirs.iter().any(|(n, _)| n == node) {
            self.dirs
                .push((node.to_owned(), tempfile::tempdir().expect("temp dir")));
        }
        let dir = self
            .dirs
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, d)| d.path().to_owned())
            .expect("node directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("grove.log"))
            .expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node), env!("CARGO_BIN_EXE_grove")])
            .current_dir(&dir)
            .env("GROVE_LOG", "info,grove_overlay=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start grove");
        self.daemons.push((node.to_owned(), child));
    }

    /// Kills `node`'s daemon (as a power cut would) and waits for it to be gone.
    fn kill(&mut self, node: &str) {
        for (_, child) in self.daemons.iter_mut().filter(|(n, _)| n == node) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.daemons.retain(|(n, _)| n != node);
    }

    /// Prints each daemon's log, for a failing run.
    fn dump_logs(&self) {
        for (_, dir) in &self.dirs {
            let text = std::fs::read_to_string(dir.path().join("grove.log")).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            eprintln!("---- {}", dir.path().display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for (_, child) in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `work` on a thread that has entered the network namespace `ns`, so the sockets it opens
/// (an HTTP client's) live there.
fn in_namespace<F, Fut, T>(ns: &str, work: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let handle = File::open(&path).expect("namespace handle");
        nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter namespace");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work())
    })
    .join()
    .expect("namespace thread")
}

/// One call to the client API of the daemon in `ns`.
fn call(
    ns: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let url = format!("http://127.0.0.1:8008{path}");
    let token = token.map(str::to_owned);
    in_namespace(ns, move || async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let mut req = client.request(method, &url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (0, json!({ "error": e.to_string() })),
        }
    })
}

/// Retries `attempt` until it returns `Some` or `CONVERGE` passes.
fn eventually<T>(what: &str, mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + CONVERGE;
    loop {
        if let Some(value) = attempt() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Registers `localpart` on the daemon in `ns`; returns (user id, access token).
fn register(ns: &str, localpart: &str) -> (String, String) {
    let mut body = json!({ "username": localpart, "password": "lan party passphrase" });
    let (status, first) = call(
        ns,
        "POST",
        "/_matrix/client/v3/register",
        None,
        Some(body.clone()),
    );
    let done = if status == 401 {
        body["auth"] = json!({ "type": "m.login.dummy", "session": first["session"] });
        let (status, done) = call(ns, "POST", "/_matrix/client/v3/register", None, Some(body));
        assert_eq!(status, 200, "register {localpart}: {done}");
        done
    } else {
        assert_eq!(status, 200, "register {localpart}: {first}");
        first
    };
    (
        done["user_id"].as_str().expect("user_id").to_owned(),
        done["access_token"].as_str().expect("token").to_owned(),
    )
}

fn server_of(user_id: &str) -> &str {
    user_id.split_once(':').map_or("", |(_, s)| s)
}

#[test]
fn daemons_on_a_lan_find_each_other_and_share_a_room_two_bridges_apart() {
    let mut lan = Lan::build();
    for node in ["a", "b", "c"] {
        lan.start(node);
    }
    let (a, b, c) = (lan.ns("a"), lan.ns("b"), lan.ns("c"));
    for ns in [&a, &b, &c] {
        eventually("client API up", || {
            (call(ns, "GET", "/_matrix/client/versions", None, None).0 == 200).then_some(())
        });
    }
    let (alice, alice_token) = register(&a, "alice");
    let (carol, carol_token) = register(&c, "carol");
    let a_name = server_of(&alice).to_owned();
    assert_eq!(
        a_name.len(),
        64,
        "server name is the node key's hex: {a_name}"
    );

    let (status, created) = call(
        &a,
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice_token),
        Some(json!({ "preset": "public_chat", "room_alias_name": "lan", "name": "LAN" })),
    );
    assert_eq!(status, 200, "createRoom: {created}");
    let room = created["room_id"].as_str().expect("room_id").to_owned();
    let alias = format!("#lan:{a_name}");
    let joined = eventually("carol joins by alias", || {
        let (status, body) = call(
            &c,
            "POST",
            &format!("/_matrix/client/v3/join/{}", alias.replace('#', "%23")),
            Some(&carol_token),
            Some(json!({})),
        );
        (status == 200).then_some(body)
    });
    assert_eq!(joined["room_id"], room.as_str());

    let (status, _) = call(
        &c,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
        Some(&carol_token),
        Some(json!({ "msgtype": "m.text", "body": "hello from C" })),
    );
    assert_eq!(status, 200);
    let alice_sees = |body: &'static str| {
        let (a, room, alice_token, carol) =
            (a.clone(), room.clone(), alice_token.clone(), carol.clone());
        move || {
            let (status, page) = call(
                &a,
                "GET",
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=20"),
                Some(&alice_token),
                None,
            );
            let seen = page["chunk"].as_array().is_some_and(|chunk| {
                chunk
                    .iter()
                    .any(|e| e["sender"] == carol.as_str() && e["content"]["body"] == body)
            });
            (status == 200 && seen).then_some(())
        }
    };
    eventually("alice sees carol's message", alice_sees("hello from C"));

    // Without B, C has no way to A: its next message waits in C's queue for A ...
    lan.kill("b");
    let (status, _) = call(
        &c,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t2"),
        Some(&carol_token),
        Some(json!({ "msgtype": "m.text", "body": "sent while B was away" })),
    );
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        alice_sees("sent while B was away")().is_none(),
        "A and C are two bridges apart: nothing may pass while B is down"
    );
    // ... and arrives once B is back: the path through the middle node is the only one.
    lan.start("b");
    eventually(
        "the queued message arrives through B",
        alice_sees("sent while B was away"),
    );
}
