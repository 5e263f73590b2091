//! Configuration: bad files and unusable ports give one clear line and a non-zero exit.

use std::process::Command;

use grove::Config;

#[track_caller]
fn check_invalid(toml: &str, expected: &str) {
    let err = Config::from_toml(toml).expect_err("config must be refused");
    assert!(
        err.contains(expected),
        "error {err:?} should mention {expected:?}"
    );
    assert!(!err.contains('\n'), "error must be one line: {err:?}");
}

#[test]
fn bad_config_files_are_refused() {
    check_invalid("no_such_key = 1", "no_such_key");
    check_invalid("[client]\nlisten = \"not an address\"", "listen");
    check_invalid("[registration]\nmode = \"sometimes\"", "sometimes");
    check_invalid("data_dir = [1, 2]", "data_dir");
    check_invalid("[client]\nmax_body_bytes = -5", "max_body_bytes");
    check_invalid("[overlay]\nlisten = \"nowhere\"", "listen");
    check_invalid("[overlay]\nmulticast = \"often\"", "multicast");
    check_invalid(
        "[overlay]\nstatic_peers = [\"zz@127.0.0.1:1\"]",
        "zz@127.0.0.1:1",
    );
    check_invalid("[overlay]\nstatic_peers = [\"no port\"]", "no port");
    check_invalid("[overlay]\nnetwork_id = \"\"", "network_id");
    check_invalid("[overlay]\ncolour = 1", "colour");
}

#[test]
fn overlay_section_is_read() {
    let key = "ab".repeat(32);
    let config = Config::from_toml(&format!(
        "[overlay]\nlisten = \"127.0.0.1:7000\"\nstatic_peers = [\"{key}@127.0.0.1:60615\", \"127.0.0.1:60616\"]\nmulticast = false\nnetwork_id = \"home\"\n"
    ))
    .expect("valid overlay config");
    assert_eq!(config.overlay.listen.port(), 7000);
    assert_eq!(config.overlay.static_peers.len(), 2);
    assert!(!config.overlay.multicast);
    assert_eq!(config.overlay.network_id.as_deref(), Some("home"));
    let peer = grove::config::parse_static_peer(&config.overlay.static_peers[0]).expect("peer");
    assert_eq!(peer.addr.port(), 60615);
    assert_eq!(peer.key.map(|k| k.to_hex()), Some(key));
    assert!(Config::default().overlay.enabled);
    assert_eq!(
        Config::default().overlay.listen.port(),
        grove::config::DEFAULT_OVERLAY_PORT
    );
}

#[test]
fn identity_section_is_read() {
    assert!(!Config::default().identity.split_home_key);
    let config = Config::from_toml("[identity]\nsplit_home_key = true\n").expect("valid");
    assert!(config.identity.split_home_key);
    check_invalid("[identity]\nsplit_home = true", "split_home");
}

#[test]
fn good_config_file_is_read() {
    let config = Config::from_toml(
        "data_dir = \"/tmp/x\"\n[client]\nlisten = \"127.0.0.1:9999\"\n[registration]\nmode = \"token\"\ntokens = [\"abc\"]\n",
    )
    .expect("valid config");
    assert_eq!(config.client.listen.port(), 9999);
    assert_eq!(config.registration.tokens, vec!["abc".to_owned()]);
}

fn run_grove(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_grove"))
        .args(args)
        .env_remove("GROVE_CONFIG")
        .output()
        .expect("grove runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn binary_exits_non_zero_on_bad_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("grove.toml");
    std::fs::write(&path, "colour = \"blue\"\n").expect("write config");
    let (code, stderr) = run_grove(&["--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stderr.contains("colour"), "stderr: {stderr}");

    let (code, stderr) = run_grove(&["--config", "/nonexistent/grove.toml"]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(
        stderr.contains("cannot read config file"),
        "stderr: {stderr}"
    );

    let (code, stderr) = run_grove(&["--registration", "sometimes"]);
    assert_ne!(code, 0, "stderr: {stderr}");

    let (code, stderr) = run_grove(&["--static-peer", "not-a-peer"]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stderr.contains("not-a-peer"), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn binary_exits_non_zero_when_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stderr) = run_grove(&[
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--client-listen",
        &addr,
    ]);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "stderr: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn binary_exits_non_zero_when_overlay_port_is_taken() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stderr) = run_grove(&[
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--client-listen",
        "127.0.0.1:0",
        "--overlay-listen",
        &addr,
        "--multicast",
        "false",
    ]);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("overlay on {addr}")),
        "stderr: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn federation_tls_section_is_checked() {
    check_invalid("[federation]\nlisten = \"nowhere\"", "listen");
    check_invalid("[federation]\ncolour = 1", "colour");
    // A hex-named node federates over the overlay and takes no TLS settings.
    check_invalid(
        "[federation]\nlisten = \"127.0.0.1:8448\"",
        "only for a node whose server_name is a DNS name",
    );
    // A DNS-named node that federates needs all three.
    check_invalid(
        "server_name = \"example.org\"\n",
        "set [federation] listen, tls_cert, tls_key",
    );
    check_invalid(
        "server_name = \"example.org\"\n[federation]\nlisten = \"0.0.0.0:8448\"\ntls_key = \"k.pem\"\n",
        "set [federation] tls_cert",
    );
    let config = Config::from_toml(
        "server_name = \"example.org\"\n[federation]\nlisten = \"0.0.0.0:8448\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntrusted_ca = [\"ca.pem\"]\n",
    )
    .expect("valid federation config");
    assert_eq!(config.federation.listen.map(|a| a.port()), Some(8448));
    assert_eq!(config.federation.trusted_ca.len(), 1);
    // Without the overlay there is no federation, and a DNS name needs nothing.
    Config::from_toml("server_name = \"example.org\"\n[overlay]\nenabled = false\n")
        .expect("local-only node");
}

#[test]
fn binary_names_a_missing_certificate_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stderr) = run_grove(&[
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--client-listen",
        "127.0.0.1:0",
        "--overlay-listen",
        "127.0.0.1:0",
        "--multicast",
        "false",
        "--server-name",
        "localhost:1",
        "--federation-listen",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/chain.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert!(
        stderr.contains("/nonexistent/chain.pem"),
        "stderr: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

/// A `grove` daemon started for a test, killed when dropped.
struct Daemon {
    child: std::process::Child,
    /// What it printed on stdout up to its client URL.
    stdout: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `grove` with `args` and waits until it prints its client URL.
fn start_grove(args: &[&str]) -> Daemon {
    start_grove_until(args, "client URL")
}

/// Starts `grove` with `args` and waits until it prints a line containing `marker`.
fn start_grove_until(args: &[&str], marker: &'static str) -> Daemon {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_grove"))
        .args(args)
        .env_remove("GROVE_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("grove runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            text.push_str(&line);
            text.push('\n');
            if line.contains(marker) {
                let _ = tx.send(text.clone());
            }
        }
    });
    let stdout = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("grove printed no {marker:?} line"));
    Daemon { child, stdout }
}

#[test]
fn a_bad_environment_variable_is_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_grove"))
        .env_remove("GROVE_CONFIG")
        .env("GROVE_CLIENT_LISTEN", "nowhere")
        .output()
        .expect("grove runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("GROVE_CLIENT_LISTEN"), "stderr: {stderr}");
    assert!(!stderr.contains("--client-listen"), "stderr: {stderr}");
    assert!(stderr.contains("nowhere"), "stderr: {stderr}");

    // The same value given as a flag is reported as the flag.
    let (code, stderr) = run_grove(&["--client-listen", "nowhere"]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stderr.contains("--client-listen"), "stderr: {stderr}");
}

#[test]
fn host_names_are_accepted_as_addresses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = start_grove(&[
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--client-listen",
        "localhost:0",
        "--overlay",
        "false",
    ]);
    assert!(
        daemon.stdout.contains("client URL:  http://127.0.0.1:"),
        "{}",
        daemon.stdout
    );
    let config = Config::from_toml("[client]\nlisten = \"localhost:8008\"\n").expect("host name");
    assert!(config.client.listen.ip().is_loopback());
}

#[test]
fn the_data_directory_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("grove-data");
    let daemon = start_grove(&[
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--client-listen",
        "127.0.0.1:0",
        "--overlay",
        "false",
    ]);
    let mode = |name: &str| {
        std::fs::metadata(dir.join(name))
            .map(|m| m.permissions().mode() & 0o777)
            .ok()
    };
    assert_eq!(mode(""), Some(0o700), "data directory");
    assert_eq!(mode("node.key"), Some(0o600), "node key");
    assert_eq!(mode("grove.db"), Some(0o600), "database");
    for name in ["grove.db-wal", "grove.db-shm"] {
        if let Some(mode) = mode(name) {
            assert_eq!(mode, 0o600, "{name}");
        }
    }
    drop(daemon);
}

#[test]
fn a_failed_start_leaves_no_data_directory_and_says_why_once() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("grove-data");
    let (code, stderr) = run_grove(&[
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--client-listen",
        "127.0.0.1:0",
        "--overlay-listen",
        &addr,
        "--multicast",
        "false",
    ]);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "stderr: {stderr}"
    );
    assert!(!dir.exists(), "a failed start created {}", dir.display());

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, stderr) = run_grove(&[
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--client-listen",
        &addr,
    ]);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "stderr: {stderr}"
    );
    assert!(!dir.exists(), "a failed start created {}", dir.display());
}

#[test]
fn a_database_that_refuses_is_reported_at_once_and_once() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("grove-data");
    let started = std::time::Instant::now();
    let (code, stderr) = run_grove(&[
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--client-listen",
        "127.0.0.1:0",
        "--overlay",
        "false",
        "--database-url",
        &format!("postgres://postgres@127.0.0.1:{port}/grove"),
    ]);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(stderr.matches("refused").count(), 1, "stderr: {stderr}");
    assert!(!dir.exists(), "a failed start created {}", dir.display());

    let (code, stderr) = run_grove(&[
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--client-listen",
        "127.0.0.1:0",
        "--overlay",
        "false",
        "--database-url",
        "mysql://nobody@127.0.0.1/grove",
    ]);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert_eq!(stderr.matches("mysql://").count(), 1, "stderr: {stderr}");
}

#[test]
fn the_overlay_address_printed_is_one_a_peer_can_dial() {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = start_grove_until(
        &[
            "--data-dir",
            dir.path().to_str().expect("utf-8 path"),
            "--client-listen",
            "127.0.0.1:0",
            "--overlay-listen",
            "0.0.0.0:0",
            "--multicast",
            "false",
        ],
        "overlay:",
    );
    let line = daemon
        .stdout
        .lines()
        .find(|l| l.contains("overlay:"))
        .unwrap_or_else(|| panic!("no overlay line: {}", daemon.stdout));
    assert!(!line.contains("0.0.0.0"), "{line}");
    assert!(line.contains("127.0.0.1:"), "{line}");
}
