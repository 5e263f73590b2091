//! Element X's engine against real nodes: runs the `matrix-sdk` + `matrix-sdk-ui` tests in
//! `tests/sdk/` (a crate of its own, outside the workspace: it brings its own ruma) against an
//! in-process node, once per backend, with the node's URL in `GROVE_URL`.
//!
//! The crate is built by the same `cargo` that runs this test, into the same target directory;
//! `scripts/test` builds it beforehand, so here it only runs. Its output is printed when it
//! fails.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::{BACKENDS, TestNode};

/// The whole crate's time limit on one backend (its build included, when not built yet).
const SUITE_LIMIT: Duration = Duration::from_secs(1_800);

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/Cargo.toml")
}

/// Runs `cargo test` over the sdk crate against `url`, killing it past [`SUITE_LIMIT`], and
/// returns whether it passed with what it printed. Blocking: call it from `spawn_blocking` so
/// the node under test keeps serving.
fn run_suite(url: &str) -> Result<(bool, String), String> {
    let log = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
    let out = log.reopen().map_err(|e| format!("temp file: {e}"))?;
    let err = log.reopen().map_err(|e| format!("temp file: {e}"))?;
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO"))
        .args(["test", "--locked", "--manifest-path"])
        .arg(manifest())
        .args(["--", "--test-threads=1"])
        .env("GROVE_URL", url)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > SUITE_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("waiting for cargo: {e}")),
        }
    };
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    Ok((status.is_some_and(|s| s.success()), output))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matrix_rust_sdk_suite_passes() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let url = node.url();
        let started = Instant::now();
        let (passed, output) = tokio::task::spawn_blocking(move || run_suite(&url))
            .await
            .expect("suite runner thread")
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        assert!(passed, "{backend:?}: matrix-sdk suite failed:\n{output}");
        println!(
            "{backend:?}: matrix-sdk suite passed in {:.1} s\n{output}",
            started.elapsed().as_secs_f64()
        );
        if let Some(node) = node.node {
            node.shutdown().await;
        }
    }
}
