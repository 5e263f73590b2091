//! IO benchmark: session goodput over one overlay hop against plain quinn between two loopback
//! sockets with the same TLS, and memory per idle peer link.
//!
//! Run with `cargo bench -p grove-overlay --bench io_throughput`. It prints a table; it asserts
//! nothing about timings.

#![allow(missing_docs)]

#[path = "../tests/io_it/support.rs"]
#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use grove_overlay::driver::OverlayEvent;
use grove_overlay::driver::statics::StaticPeer;
use grove_overlay::tls::{self, Expect, Identity};

use support::{TestNode, config, secret};

/// Bytes moved per measurement.
const TRANSFER: usize = 64 * 1024 * 1024;

/// Rounds per measurement; the best round is reported (least disturbed by other load).
const ROUNDS: usize = 3;

/// Idle links set up for the memory measurement.
const IDLE_PEERS: usize = 40;

const ALPN: &[u8] = b"grove-bench/1";

/// Writes `len` bytes on a fresh stream of `conn` and waits for the reader's one-byte ack.
async fn push(conn: &quinn::Connection, len: usize) -> Duration {
    let chunk = vec![0x5a_u8; 64 * 1024];
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        send.write_all(&chunk[..n]).await.expect("write");
        left -= n;
    }
    send.finish().expect("finish");
    let mut ack = [0u8; 1];
    recv.read_exact(&mut ack).await.expect("ack");
    start.elapsed()
}

/// Reads streams to their end and acknowledges each with one byte.
async fn sink(conn: quinn::Connection) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(Some(_)) = recv.read(&mut buf).await {}
        let _ = send.write_all(&[1]).await;
        let _ = send.finish();
    }
}

fn mbit_per_s(len: usize, d: Duration) -> f64 {
    (len as f64 * 8.0) / d.as_secs_f64() / 1e6
}

async fn plain_quinn() -> f64 {
    let server_id = Identity::new(&secret(200)).expect("identity");
    let client_id = Identity::new(&secret(201)).expect("identity");
    let server_cfg = tls::server_config(&server_id, &[ALPN.to_vec()]).expect("server config");
    let server =
        quinn::Endpoint::server(server_cfg, SocketAddr::from(([127, 0, 0, 1], 0))).expect("server");
    let addr = server.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            if let Ok(conn) = incoming.await {
                tokio::spawn(sink(conn));
            }
        }
    });
    let client = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client");
    let cfg = tls::client_config(&client_id, Expect::Key(secret(200).public_key()), ALPN)
        .expect("client config");
    let conn = client
        .connect_with(cfg, addr, tls::server_name())
        .expect("connect")
        .await
        .expect("handshake");
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        best = best.min(push(&conn, TRANSFER).await);
    }
    mbit_per_s(TRANSFER, best)
}

async fn one_hop_session() -> f64 {
    let mut a = TestNode::start(config(210));
    let mut cfg = config(211);
    cfg.static_peers.push(StaticPeer {
        addr: a.handle.local_addr(),
        key: Some(a.key()),
    });
    let mut b = TestNode::start(cfg);
    a.wait_for(Duration::from_secs(10), |e| {
        matches!(e, OverlayEvent::PeerUp { .. })
    })
    .await;
    b.wait_for(Duration::from_secs(10), |e| {
        matches!(e, OverlayEvent::PeerUp { .. })
    })
    .await;
    let mut listener = b.handle.listen(ALPN).expect("listen");
    tokio::spawn(async move {
        while let Some(incoming) = listener.accept().await {
            tokio::spawn(sink(incoming.connection));
        }
    });
    let conn = a.handle.open_session(b.key(), ALPN).await.expect("session");
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        best = best.min(push(&conn, TRANSFER).await);
    }
    let drops = a.handle.metrics();
    let dropped: Vec<&str> = drops
        .lines()
        .filter(|l| l.starts_with("grove_overlay_drops_total"))
        .collect();
    if !dropped.is_empty() {
        println!("drops on the sender: {dropped:?}");
    }
    mbit_per_s(TRANSFER, best)
}

/// Resident set size of this process in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Memory added per link end when `IDLE_PEERS` nodes link to one hub and sit idle.
async fn memory_per_idle_peer() -> u64 {
    let mut hub = TestNode::start(config(220));
    let mut spokes = Vec::new();
    for i in 0..IDLE_PEERS {
        spokes.push(TestNode::start(config(221 + i as u8)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss();
    for s in &spokes {
        s.handle
            .add_static_peer(StaticPeer {
                addr: hub.handle.local_addr(),
                key: Some(hub.key()),
            })
            .await
            .expect("add");
    }
    for _ in 0..IDLE_PEERS {
        hub.wait_for(Duration::from_secs(30), |e| {
            matches!(e, OverlayEvent::PeerUp { .. })
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss();
    // Each link has two ends in this process: the hub's and the spoke's.
    after.saturating_sub(before) / (2 * IDLE_PEERS as u64)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let plain = plain_quinn().await;
        let session = one_hop_session().await;
        let memory = memory_per_idle_peer().await;
        println!("| measurement | value |");
        println!("|---|---|");
        println!("| plain quinn, loopback, one stream | {plain:.0} Mbit/s |");
        println!("| session over one overlay hop | {session:.0} Mbit/s |");
        println!("| ratio (target >= 0.80) | {:.2} |", session / plain);
        println!(
            "| memory per idle peer link end (incl. QUIC state, target <= 64 KiB) | {:.1} KiB |",
            memory as f64 / 1024.0
        );
    });
}
