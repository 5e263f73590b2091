//! The measured node: started as a child process so its memory can be read on its own.

use std::{
    io::Read,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use grove::{Node, config::RegistrationMode};

/// How long a node may take to answer `versions` before the bench gives up on it.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Runs a node in this process until stdin closes (the bench dropped its end) or a signal.
pub(crate) async fn serve(
    data_dir: PathBuf,
    client_listen: SocketAddr,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    let mut builder = Node::builder()
        .data_dir(data_dir)
        .client_listen(client_listen)
        .registration(RegistrationMode::Open, Vec::new())
        // The measured node serves one client API; it federates with nobody.
        .overlay(false);
    if let Some(url) = database_url {
        builder = builder.database_url(url);
    }
    let node = builder.start().await?;
    // The parent holds our stdin; when it exits or drops it, we stop.
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = closed_tx.send(());
    });
    let _ = closed_rx.await;
    node.shutdown().await;
    Ok(())
}

/// What to start.
#[derive(Debug, Clone)]
pub(crate) enum NodeProgram {
    /// This binary's hidden `node` mode.
    BuiltIn,
    /// A `grove` daemon binary.
    Daemon(PathBuf),
}

/// A node running as a child process, killed when dropped.
pub(crate) struct ChildNode {
    child: Child,
    /// The client API base URL.
    pub(crate) url: String,
    /// From spawn to the first answered `versions`.
    pub(crate) startup: Duration,
    /// Whether closing stdin stops it (the built-in node) or it must be killed (the daemon).
    stops_on_stdin_close: bool,
}

impl ChildNode {
    /// Starts a node on `data_dir` and waits until it answers `versions`.
    pub(crate) async fn start(
        program: &NodeProgram,
        data_dir: &Path,
        database_url: Option<&str>,
        http: &reqwest::Client,
    ) -> anyhow::Result<ChildNode> {
        let addr = free_loopback_addr()?;
        let mut cmd = match program {
            NodeProgram::BuiltIn => {
                let mut cmd = Command::new(std::env::current_exe().context("own path")?);
                cmd.arg("node");
                cmd
            }
            NodeProgram::Daemon(path) => {
                // As users run it, overlay on, but on loopback and with LAN discovery off.
                let overlay = free_loopback_udp_addr()?;
                let mut cmd = Command::new(path);
                cmd.args(["--registration", "open", "--log", "warn"])
                    .args(["--overlay", "true", "--multicast", "false"])
                    .arg("--overlay-listen")
                    .arg(overlay.to_string());
                cmd
            }
        };
        cmd.arg("--data-dir")
            .arg(data_dir)
            .arg("--client-listen")
            .arg(addr.to_string());
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .env("GROVE_LOG", "warn");
        let url = format!("http://{addr}");
        let started = Instant::now();
        let child = cmd.spawn().context("spawning the node")?;
        // From here on, dropping the value (on any error too) kills the process.
        let mut node = ChildNode {
            child,
            url,
            startup: Duration::ZERO,
            stops_on_stdin_close: matches!(program, NodeProgram::BuiltIn),
        };
        let versions = format!("{}/_matrix/client/versions", node.url);
        loop {
            if let Ok(resp) = http.get(&versions).send().await
                && resp.status().is_success()
            {
                break;
            }
            if let Some(status) = node.child.try_wait().context("node process")? {
                bail!("the node exited during start-up ({status})");
            }
            if started.elapsed() > START_LIMIT {
                bail!(
                    "the node did not answer {versions} within {} s",
                    START_LIMIT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        node.startup = started.elapsed();
        Ok(node)
    }

    /// The node's resident memory now, in bytes.
    pub(crate) fn rss(&self) -> anyhow::Result<u64> {
        let status = Path::new("/proc")
            .join(self.child.id().to_string())
            .join("status");
        rss_of(&status)
    }

    /// The node's process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the node: closing stdin asks the built-in node to shut down cleanly; whatever
    /// still runs after a grace period (the daemon, which ignores stdin) is killed.
    pub(crate) async fn stop(mut self) {
        drop(self.child.stdin.take());
        if !self.stops_on_stdin_close {
            return; // Drop kills it.
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmRSS` from a `/proc/<pid>/status` file, in bytes.
fn rss_of(status: &Path) -> anyhow::Result<u64> {
    status_kib(status, "VmRSS:").map(|kib| kib * 1024)
}

/// A field given in kB (such as `VmRSS:` or `VmHWM:`) of a `/proc/<pid>/status` file.
fn status_kib(status: &Path, field: &str) -> anyhow::Result<u64> {
    let text =
        std::fs::read_to_string(status).with_context(|| format!("reading {}", status.display()))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} line (not Linux?)"))?;
    line.trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("unreadable {line:?}"))
}

/// The CPU time (user and system) process `pid` has used so far, from `/proc/<pid>/stat`.
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("unreadable {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("no field {i} in {path}"))
    };
    let total = ticks(11)? + ticks(12)?;
    // Linux reports these in USER_HZ, which is 100 on every architecture it runs on.
    Ok(Duration::from_millis(total * 10))
}

/// `VmHWM` (peak resident memory) of process `pid`, in bytes.
pub(crate) fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    status_kib(
        &Path::new("/proc").join(pid.to_string()).join("status"),
        "VmHWM:",
    )
    .map(|kib| kib * 1024)
}

/// The resident memory of process `pid` now, in bytes.
pub(crate) fn rss_of_pid(pid: u32) -> anyhow::Result<u64> {
    rss_of(&Path::new("/proc").join(pid.to_string()).join("status"))
}

/// The bytes of every file under `dir`.
pub(crate) fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// A loopback UDP address with a port free right now.
fn free_loopback_udp_addr() -> anyhow::Result<SocketAddr> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(socket.local_addr()?)
}

/// A loopback address with a port free right now (the node binds it a moment later).
fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// Which server a measurement runs against, as the command line says.
#[derive(Debug)]
pub(crate) struct Target {
    /// The daemon to start; the built-in node when `None`.
    pub(crate) grove: Option<PathBuf>,
    /// Database of the started node.
    pub(crate) database_url: Option<String>,
    /// A running homeserver to measure instead.
    pub(crate) url: Option<String>,
    /// The process ID of the server at `url`, for its CPU time and memory.
    pub(crate) pid: Option<u32>,
}

/// The server a measurement runs against: one it started (the built-in node or a daemon, in a
/// temporary data directory) or one already running at a URL.
pub(crate) struct Measured {
    /// Base URL of its client API, without a trailing slash.
    pub(crate) url: String,
    /// Its process, when known, for CPU time and memory.
    pub(crate) pid: Option<u32>,
    // Declared before the data directory, so a node still running is stopped before its
    // directory is removed.
    child: Option<ChildNode>,
    /// The data directory of a node started here (gone when this is dropped).
    pub(crate) data_dir: Option<tempfile::TempDir>,
}

impl Measured {
    /// The server at `target.url` (with its `pid` if given), or else a node started from
    /// `target.grove` (the built-in node when `None`) on `target.database_url` (SQLite in its
    /// data directory when `None`).
    pub(crate) async fn open(target: &Target, http: &reqwest::Client) -> anyhow::Result<Self> {
        if let Some(url) = &target.url {
            return Ok(Self {
                url: url.trim_end_matches('/').to_owned(),
                pid: target.pid,
                child: None,
                data_dir: None,
            });
        }
        let program = match &target.grove {
            Some(path) => NodeProgram::Daemon(path.clone()),
            None => NodeProgram::BuiltIn,
        };
        let dir = tempfile::tempdir().context("temp data directory")?;
        let child =
            ChildNode::start(&program, dir.path(), target.database_url.as_deref(), http).await?;
        Ok(Self {
            url: child.url.clone(),
            pid: Some(child.pid()),
            child: Some(child),
            data_dir: Some(dir),
        })
    }

    /// Stops the node started here, if any.
    pub(crate) async fn stop(self) {
        if let Some(child) = self.child {
            child.stop().await;
        }
    }
}
