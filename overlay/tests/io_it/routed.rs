//! Networks of real nodes with the shipped routing core over loopback QUIC: every node reaches
//! every other by key through several hops, a long stream crosses three hops intact, and the
//! network routes around a node that leaves and reaches it again when it returns.

use std::net::SocketAddr;
use std::time::Duration;

use grove_overlay::driver::statics::StaticPeer;
use grove_overlay::tls::keys::NodeKey;
use sha2::{Digest, Sha256};

use crate::support::{TestNode, config, subscribe};

/// Patience for a whole network to converge; loopback needs far less.
const CONVERGE: Duration = Duration::from_secs(90);

/// One attempt to open a session and hear the echo.
const ATTEMPT: Duration = Duration::from_secs(5);

const ALPN: &[u8] = b"grove-echo/1";

/// Deterministic bytes, different at every offset within a 251-byte cycle.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A running network: the nodes, indexed as in the topology, with an echo service on each.
struct Net {
    nodes: Vec<Option<TestNode>>,
    seeds: Vec<u8>,
    addrs: Vec<SocketAddr>,
    edges: Vec<(usize, usize)>,
}

impl Net {
    /// Starts `n` nodes (seeds from `first_seed`) linked along `edges`: the later node of each
    /// edge dials the earlier one.
    async fn start(first_seed: u8, n: usize, edges: &[(usize, usize)]) -> Self {
        subscribe();
        let seeds: Vec<u8> = (0..n).map(|i| first_seed + i as u8).collect();
        let mut net = Net {
            nodes: Vec::new(),
            seeds,
            addrs: Vec::new(),
            edges: edges.to_vec(),
        };
        for i in 0..n {
            let node = net.start_node(i, config(net.seeds[i]));
            net.addrs.push(node.handle.local_addr());
            net.nodes.push(Some(node));
        }
        net
    }

    fn start_node(&self, i: usize, mut cfg: grove_overlay::driver::Config) -> TestNode {
        for &(a, b) in &self.edges {
            let other = match (a, b) {
                (a, b) if b == i && a < i => a,
                (a, b) if a == i && b < i => b,
                _ => continue,
            };
            cfg.static_peers.push(StaticPeer {
                addr: self.addrs[other],
                key: Some(self.key(other)),
            });
        }
        let node = TestNode::start(cfg);
        spawn_echo(&node);
        node
    }

    fn key(&self, i: usize) -> NodeKey {
        crate::support::secret(self.seeds[i]).public_key()
    }

    fn node(&self, i: usize) -> &TestNode {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Stops node `i`.
    async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.handle.shutdown().await.expect("shutdown");
        }
    }

    /// Starts node `i` again on its old address with its old key.
    fn restart(&mut self, i: usize) {
        let mut cfg = config(self.seeds[i]);
        cfg.bind = self.addrs[i];
        let node = self.start_node(i, cfg);
        self.nodes[i] = Some(node);
    }

    /// Waits until every running node has echoed a session from every other running node.
    async fn all_reach_all(&self) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect();
        let mut pending = Vec::new();
        for &i in &running {
            for &j in &running {
                if i != j {
                    pending.push((i, j));
                }
            }
        }
        let deadline = tokio::time::Instant::now() + CONVERGE;
        while !pending.is_empty() {
            let mut attempts = tokio::task::JoinSet::new();
            for &(i, j) in &pending {
                let (from, to) = (self.node(i).handle.clone(), self.key(j));
                attempts.spawn(async move { ((i, j), echo(&from, to, 64).await) });
            }
            let mut failed = Vec::new();
            while let Some(result) = attempts.join_next().await {
                let (pair, ok) = result.expect("attempt task");
                if !ok {
                    failed.push(pair);
                }
            }
            failed.sort_unstable();
            pending = failed;
            assert!(
                tokio::time::Instant::now() < deadline || pending.is_empty(),
                "pairs still unreachable after {CONVERGE:?}: {pending:?}"
            );
        }
    }
}

/// Serves the echo protocol on `node`: every stream of every session is sent back as read.
fn spawn_echo(node: &TestNode) {
    let mut listener = node.handle.listen(ALPN).expect("listen");
    tokio::spawn(async move {
        while let Some(incoming) = listener.accept().await {
            tokio::spawn(async move {
                let conn = incoming.connection;
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut recv, &mut send).await;
                        let _ = send.finish();
                    });
                }
            });
        }
    });
}

/// Opens a session to `to`, sends `len` bytes and checks the echo; `false` on any failure
/// within [`ATTEMPT`] (the caller retries while the network converges).
async fn echo(from: &grove_overlay::driver::OverlayHandle, to: NodeKey, len: usize) -> bool {
    let run = async {
        let conn = from.open_session(to, ALPN).await.ok()?;
        let ok = echo_on(&conn, len).await;
        conn.close(0u32.into(), b"done");
        Some(ok)
    };
    matches!(tokio::time::timeout(ATTEMPT, run).await, Ok(Some(true)))
}

/// Sends `len` bytes on a new stream of `conn` and checks the echo.
async fn echo_on(conn: &quinn::Connection, len: usize) -> bool {
    let run = async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        let data = pattern(len);
        let writer = async {
            send.write_all(&data).await.ok()?;
            send.finish().ok()
        };
        let (written, back) = tokio::join!(writer, recv.read_to_end(len + 1));
        written?;
        Some(back.ok()? == data)
    };
    matches!(tokio::time::timeout(ATTEMPT, run).await, Ok(Some(true)))
}

/// Edges of a line of `n` nodes.
fn line(n: usize) -> Vec<(usize, usize)> {
    (1..n).map(|i| (i - 1, i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_of_five_every_node_reaches_every_other() {
    let net = Net::start(100, 5, &line(5)).await;
    net.all_reach_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_of_six_every_node_reaches_every_other() {
    let mut edges = line(6);
    edges.push((0, 5));
    let net = Net::start(110, 6, &edges).await;
    net.all_reach_all().await;
}

/// A 3 × 4 grid: every inner node has two ways around it.
fn grid() -> Vec<(usize, usize)> {
    let (w, h) = (4, 3);
    let mut edges = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if x > 0 {
                edges.push((i - 1, i));
            }
            if y > 0 {
                edges.push((i - w, i));
            }
        }
    }
    edges
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_of_twelve_routes_around_a_node_that_leaves_and_reaches_it_again() {
    let mut net = Net::start(120, 12, &grid()).await;
    net.all_reach_all().await;
    // A session across node 5, which sits inside the grid at (1, 1): 4 - 5 - 6 is the only
    // two-hop path between its ends.
    let held = net
        .node(4)
        .handle
        .open_session(net.key(6), ALPN)
        .await
        .expect("session 4 -> 6");
    assert!(echo_on(&held, 4096).await, "held session echoes");
    net.stop(5).await;
    net.all_reach_all().await;
    // The session opened before the leave goes on around the gap.
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !echo_on(&held, 4096).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held session never recovered"
        );
    }
    net.restart(5);
    net.all_reach_all().await;
    assert!(
        echo_on(&held, 4096).await,
        "held session echoes after the return"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_carries_ten_megabytes_over_three_hops() {
    let net = Net::start(140, 4, &line(4)).await;
    let (a, d) = (net.node(0), net.key(3));
    // Wait until the far end answers at all, then move the bulk.
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !echo(&a.handle, d, 64).await {
        assert!(tokio::time::Instant::now() < deadline, "A never reached D");
    }
    let conn = a.handle.open_session(d, ALPN).await.expect("session");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let len = 10 * 1024 * 1024;
    let data = pattern(len);
    let writer = async {
        send.write_all(&data).await.expect("write");
        send.finish().expect("finish");
    };
    let (_, back) = tokio::join!(writer, recv.read_to_end(len + 1));
    let back = back.expect("echo");
    assert_eq!(back.len(), len);
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    let hops = net.node(1).handle.metrics();
    assert!(hops.contains("grove_overlay_frames_in_total"), "{hops}");
}
