//! A stock client against real nodes: runs the matrix-js-sdk suite in `tests/clients/`
//! (`node --test`, Rust crypto included) against two in-process nodes federated over loopback
//! QUIC, once per backend.
//!
//! The nodes serve on loopback ports; the suite reads the first from `GROVE_URL` and the second
//! (for scenarios across nodes) from `GROVE_URL_B`. Node's output is
//! printed when the suite fails, so the failing scenario and the client's log are in the test
//! output.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::support::{BACKENDS, TestNode};

/// The whole suite's time limit on one backend; a hung client must not hang CI.
const SUITE_LIMIT: Duration = Duration::from_secs(600);

/// What one run of the suite left behind.
struct SuiteRun {
    status: Option<ExitStatus>,
    output: String,
    elapsed: Duration,
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs `node --test` over the suite with `GROVE_URL` and `GROVE_URL_B` set, killing it past
/// [`SUITE_LIMIT`], and prints each test's result line to stderr under `label` as it comes. Blocking: call it from `spawn_blocking` so the nodes under test keep serving.
fn run_suite(label: &str, url: &str, url_b: &str) -> Result<SuiteRun, String> {
    let dir = clients_dir();
    let log = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
    // Both writers append, so neither overwrites what the other wrote.
    let append = || {
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .map_err(|e| format!("temp file: {e}"))
    };
    let err = append()?;
    let started = Instant::now();
    let mut child = Command::new("node")
        .args([
            "--test",
            "--test-concurrency=1",
            "--test-reporter=spec",
            "--test-force-exit",
        ])
        .arg(&dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("GROVE_URL", url)
        .env("GROVE_URL_B", url_b)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run `node` (Node.js 20 or newer must be on PATH): {e}"))?;
    // The spec reporter's lines go to the log, and each test's result line also straight to
    // stderr as it comes (past the test harness's capture), so a run shows every client test.
    let stdout = child.stdout.take().ok_or("node's stdout")?;
    let mut log_out = append()?;
    let label = label.to_owned();
    let relay = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log_out, "{line}");
            let trimmed = line.trim_start();
            if trimmed.starts_with('\u{2714}') || trimmed.starts_with('\u{2716}') {
                let _ = writeln!(std::io::stderr(), "clients ({label}): {trimmed}");
            }
        }
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > SUITE_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("waiting for node: {e}")),
        }
    };
    let _ = relay.join();
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    Ok(SuiteRun {
        status,
        output,
        elapsed: started.elapsed(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matrix_js_sdk_suite_passes() {
    let modules = clients_dir().join("node_modules/matrix-js-sdk");
    assert!(
        modules.is_dir(),
        "the client tests' packages are not installed ({} is missing): run \
         `npm ci --prefix tests/clients` (or scripts/test, which does it)",
        modules.display()
    );
    for backend in BACKENDS {
        let node = TestNode::start_federated(backend, Vec::new()).await;
        let other = TestNode::start_federated(backend, vec![node.peer_address()]).await;
        let url = node.url();
        let url_b = other.url();
        let label = format!("{backend:?}");
        let run = tokio::task::spawn_blocking(move || run_suite(&label, &url, &url_b))
            .await
            .expect("suite runner thread")
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        match run.status {
            Some(status) if status.success() => {
                println!(
                    "{backend:?}: matrix-js-sdk suite passed in {:.1} s\n{}",
                    run.elapsed.as_secs_f64(),
                    run.output
                );
            }
            Some(status) => panic!(
                "{backend:?}: matrix-js-sdk suite failed ({status}):\n{}",
                run.output
            ),
            None => panic!(
                "{backend:?}: matrix-js-sdk suite killed after {} s:\n{}",
                SUITE_LIMIT.as_secs(),
                run.output
            ),
        }
        for node in [node, other] {
            if let Some(node) = node.node {
                node.shutdown().await;
            }
        }
    }
}
