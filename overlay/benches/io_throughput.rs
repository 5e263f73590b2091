//! IO benchmark with the shipped routing core: session goodput over one and three overlay hops
//! against plain quinn between two loopback sockets with the same TLS, round-trip times and the
//! latency each hop adds, and memory per idle peer link.
//!
//! Run with `cargo bench --workspace --bench io_throughput`. It prints a table; it asserts
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

/// Round trips timed per latency measurement.
const PINGS: usize = 2000;

/// Size of one ping.
const PING_LEN: usize = 64;

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

fn mbit_per_s(len: usize, d: Duration) -> f64 {
    (len as f64 * 8.0) / d.as_secs_f64() / 1e6
}

/// Plain quinn between two loopback sockets: goodput and round-trip times.
async fn plain_quinn() -> (f64, Rtts) {
    let server_id = Identity::new(&secret(200)).expect("identity");
    let client_id = Identity::new(&secret(201)).expect("identity");
    let server_cfg = tls::server_config(&server_id, &[ALPN.to_vec()]).expect("server config");
    let server =
        quinn::Endpoint::server(server_cfg, SocketAddr::from(([127, 0, 0, 1], 0))).expect("server");
    let addr = server.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            if let Ok(conn) = incoming.await {
                tokio::spawn(serve(conn));
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
    measure(&conn).await
}

/// Round-trip times of one connection, sorted.
struct Rtts(Vec<Duration>);

impl Rtts {
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0.get(i).copied().unwrap_or_default()
    }
}

/// Goodput (best of [`ROUNDS`]) and round-trip times on `conn`, whose far end runs [`serve`].
async fn measure(conn: &quinn::Connection) -> (f64, Rtts) {
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        best = best.min(push(conn, TRANSFER).await);
    }
    (mbit_per_s(TRANSFER, best), ping(conn).await)
}

/// Times [`PINGS`] round trips of a [`PING_LEN`]-byte message on one stream.
async fn ping(conn: &quinn::Connection) -> Rtts {
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    // The first byte tells the far end this stream echoes instead of sinking.
    send.write_all(&[0xEC]).await.expect("mode");
    let msg = [0x42u8; PING_LEN];
    let mut back = [0u8; PING_LEN];
    let mut rtts = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let start = Instant::now();
        send.write_all(&msg).await.expect("ping");
        recv.read_exact(&mut back).await.expect("pong");
        rtts.push(start.elapsed());
    }
    let _ = send.finish();
    rtts.sort_unstable();
    Rtts(rtts)
}

/// Serves both measurements: a stream that opens with 0xEC is echoed in [`PING_LEN`] pieces,
/// any other is read to its end and acknowledged with one byte.
async fn serve(conn: quinn::Connection) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            if recv.read_exact(&mut first).await.is_err() {
                return;
            }
            if first[0] == 0xEC {
                let mut buf = [0u8; PING_LEN];
                while recv.read_exact(&mut buf).await.is_ok() {
                    if send.write_all(&buf).await.is_err() {
                        return;
                    }
                }
                return;
            }
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(Some(_)) = recv.read(&mut buf).await {}
            let _ = send.write_all(&[1]).await;
            let _ = send.finish();
        });
    }
}

/// A line of `hops + 1` nodes; measures a session from the first to the last.
async fn session_over(hops: usize, first_seed: u8) -> (f64, Rtts) {
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..=hops {
        let mut cfg = config(first_seed + i as u8);
        if let Some(prev) = nodes.last() {
            cfg.static_peers.push(StaticPeer {
                addr: prev.handle.local_addr(),
                key: Some(prev.key()),
            });
        }
        nodes.push(TestNode::start(cfg));
    }
    for n in nodes.iter_mut().skip(1) {
        n.wait_for(Duration::from_secs(10), |e| {
            matches!(e, OverlayEvent::PeerUp { .. })
        })
        .await;
    }
    let last = nodes.last().expect("nodes");
    let mut listener = last.handle.listen(ALPN).expect("listen");
    tokio::spawn(async move {
        while let Some(incoming) = listener.accept().await {
            tokio::spawn(serve(incoming.connection));
        }
    });
    let (first, to) = (&nodes[0], last.key());
    let deadline = Instant::now() + Duration::from_secs(60);
    let conn = loop {
        match first.handle.open_session(to, ALPN).await {
            Ok(conn) => break conn,
            Err(e) if Instant::now() < deadline => {
                eprintln!("session over {hops} hops not yet: {e}");
            }
            Err(e) => panic!("no session over {hops} hops: {e}"),
        }
    };
    let result = measure(&conn).await;
    for (i, n) in nodes.iter().enumerate() {
        let m = n.handle.metrics();
        let dropped: Vec<&str> = m
            .lines()
            .filter(|l| l.starts_with("grove_overlay_drops_total"))
            .collect();
        if !dropped.is_empty() {
            eprintln!("drops on node {i} of {hops} hops: {dropped:?}");
        }
    }
    conn.close(0u32.into(), b"done");
    for n in &nodes {
        let _ = n.handle.shutdown().await;
    }
    result
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
        let (plain, plain_rtt) = plain_quinn().await;
        let (one, one_rtt) = session_over(1, 10).await;
        let (three, three_rtt) = session_over(3, 30).await;
        let memory = memory_per_idle_peer().await;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        // Two more hops, each crossed twice per round trip.
        let per_hop = |p: f64| (us(three_rtt.percentile(p)) - us(one_rtt.percentile(p))) / 4.0;
        println!("| measurement | value |");
        println!("|---|---|");
        println!("| plain quinn, loopback, one stream | {plain:.0} Mbit/s |");
        println!("| session over one overlay hop | {one:.0} Mbit/s |");
        println!("| ratio one hop (target >= 0.80) | {:.2} |", one / plain);
        println!("| session over three overlay hops | {three:.0} Mbit/s |");
        println!(
            "| ratio three hops (target >= 0.70) | {:.2} |",
            three / plain
        );
        for (name, r) in [
            ("plain quinn", &plain_rtt),
            ("one hop", &one_rtt),
            ("three hops", &three_rtt),
        ] {
            println!(
                "| round trip, {name}, p50 / p99 | {:.0} / {:.0} us |",
                us(r.percentile(0.5)),
                us(r.percentile(0.99))
            );
        }
        println!(
            "| latency added per extra hop, one way, p50 / p99 | {:.0} / {:.0} us |",
            per_hop(0.5),
            per_hop(0.99)
        );
        println!(
            "| memory per idle peer link end (incl. QUIC state, target <= 64 KiB) | {:.1} KiB |",
            memory as f64 / 1024.0
        );
    });
}
