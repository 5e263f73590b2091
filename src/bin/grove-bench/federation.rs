//! `grove-bench federation`: four nodes in this process, federating over the overlay on
//! loopback, measured over real HTTP to their client APIs.
//!
//! The nodes form a line A – B – C – D (each one a static peer of the next only, multicast off),
//! each with its own temp data directory and SQLite. Measured: send on A → waiting `/sync` on B
//! (one overlay hop) and on D (three hops, the session routed through B and C); how long a user
//! on B takes to join a room on A holding many members' state; and how fast B accepts a burst of
//! messages sent on A.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use grove::{Node, config::RegistrationMode};
use serde_json::{Value, json};

use crate::{
    client::{self, Session},
    measure::send_to_sync,
    report::{ms, percentile, verdict},
};

/// Targets on a 2-core machine.
const TARGET_ONE_HOP_P50: Duration = Duration::from_millis(10);
const TARGET_THREE_HOPS_P50: Duration = Duration::from_millis(20);
/// Send → sync rounds run before the measured ones (sessions opened, caches warm).
const WARM_ROUNDS: usize = 5;
/// How long a federated join may keep failing while the overlay finds its routes.
const JOIN_PATIENCE: Duration = Duration::from_secs(120);
/// How long the burst may take to reach B in full.
const BURST_PATIENCE: Duration = Duration::from_secs(600);
/// Members registered from one loopback address: each takes two register requests (the
/// user-interactive auth round and the real one), under the burst of 60.
const MEMBERS_PER_ADDRESS: usize = 25;
/// Long-poll length of the burst waiter's syncs.
const SYNC_TIMEOUT_MS: u64 = 30_000;

/// What to measure, and how much.
#[derive(Debug)]
pub(crate) struct FedPlan {
    /// Send → waiting sync rounds, per path.
    pub(crate) rounds: usize,
    /// Members of the room joined over federation.
    pub(crate) members: usize,
    /// Messages of the burst sent from A to B.
    pub(crate) messages: usize,
}

/// A node of the line with its data directory (removed when dropped, after the node stops).
struct LineNode {
    node: Node,
    _dir: tempfile::TempDir,
}

impl LineNode {
    async fn start(peers: &[String]) -> anyhow::Result<LineNode> {
        let dir = tempfile::tempdir().context("temp data directory")?;
        let mut builder = Node::builder()
            .data_dir(dir.path())
            .client_listen(loopback())
            .registration(RegistrationMode::Open, Vec::new())
            .overlay(true)
            .overlay_listen(loopback())
            .multicast(false);
        for peer in peers {
            builder = builder.static_peer(peer.clone());
        }
        let node = builder.start().await.context("starting a node")?;
        Ok(LineNode { node, _dir: dir })
    }

    fn peer_address(&self) -> anyhow::Result<String> {
        self.node.peer_address().context("the node runs no overlay")
    }

    fn url(&self) -> &str {
        self.node.client_url()
    }

    fn name(&self) -> String {
        self.node.server_name().to_string()
    }
}

fn loopback() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

/// How the big room was filled.
struct JoinFigure {
    members_on_a: usize,
    members_seen_on_b: usize,
    setup: Duration,
    join: Duration,
}

/// The burst from A to B.
struct BurstFigure {
    sent: usize,
    /// Messages B held when the last send on A was answered.
    arrived_by_then: usize,
    arrived: usize,
    /// From the first send to the last send's answer on A.
    sending: Duration,
    /// From the first send to the last message in B's `/sync`.
    all_arrived: Duration,
}

/// Everything measured; a stage that failed holds its reason.
struct FedFigures {
    same_node: Result<Vec<Duration>, String>,
    one_hop: Result<Vec<Duration>, String>,
    three_hops: Result<Vec<Duration>, String>,
    join: Result<JoinFigure, String>,
    burst: Result<BurstFigure, String>,
}

/// Starts the line, runs each stage (a failed stage does not stop the next) and prints the
/// table.
pub(crate) async fn run(plan: FedPlan) -> anyhow::Result<()> {
    // The nodes run in this process: their errors go to stderr (`GROVE_LOG` overrides).
    let filter = tracing_subscriber::EnvFilter::try_from_env("GROVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let started = Instant::now();
    // D first, so each node starts knowing a running next one.
    let d = LineNode::start(&[]).await?;
    let c = LineNode::start(&[d.peer_address()?]).await?;
    let b = LineNode::start(&[c.peer_address()?]).await?;
    let a = LineNode::start(&[b.peer_address()?]).await?;
    eprintln!(
        "grove-bench: four nodes up in {} (A {}, B {}, C {}, D {})",
        ms(started.elapsed()),
        short(&a.name()),
        short(&b.name()),
        short(&c.name()),
        short(&d.name())
    );

    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("HTTP client")?;
    let run = format!("{:08x}", rand::random::<u32>());
    let alice = client::register(&http, a.url(), &format!("alice-{run}")).await?;
    let bob = client::register(&http, b.url(), &format!("bob-{run}")).await?;
    let dave = client::register(&http, d.url(), &format!("dave-{run}")).await?;

    let one_hop_room = shared_room(&alice, &bob, &a.name()).await;
    // The same path without federation (sender and reader both on A, in a room no other node
    // is in, so no backlog for B builds up), to set the hops apart.
    let same_node = match alice.create_room(json!({ "preset": "private_chat" })).await {
        Ok(room) => latencies(plan.rounds, &alice, &alice, &room, &format!("{run}-a")).await,
        Err(e) => Err(format!("{e:#}")),
    };
    let one_hop = match &one_hop_room {
        Ok(room) => latencies(plan.rounds, &alice, &bob, room, &format!("{run}-b")).await,
        Err(e) => Err(e.clone()),
    };
    eprintln!("grove-bench: one hop measured");
    let three_hops = match shared_room(&alice, &dave, &a.name()).await {
        Ok(room) => latencies(plan.rounds, &alice, &dave, &room, &format!("{run}-d")).await,
        Err(e) => Err(e),
    };
    eprintln!("grove-bench: three hops measured");
    let burst = match &one_hop_room {
        Ok(room) => burst(plan.messages, &alice, &bob, room, &run)
            .await
            .map_err(|e| format!("{e:#}")),
        Err(e) => Err(e.clone()),
    };
    eprintln!("grove-bench: burst measured");
    let join = big_join(plan.members, &http, &a, &alice, &bob, &run)
        .await
        .map_err(|e| format!("{e:#}"));

    print_table(
        &plan,
        &FedFigures {
            same_node,
            one_hop,
            three_hops,
            join,
            burst,
        },
    );
    for node in [a, b, c, d] {
        node.node.shutdown().await;
    }
    Ok(())
}

fn short(name: &str) -> &str {
    name.get(..8).unwrap_or(name)
}

/// A public room created by `creator` on A and joined by `joiner` on another node.
async fn shared_room(creator: &Session, joiner: &Session, a_name: &str) -> Result<String, String> {
    let room = creator
        .create_room(json!({ "preset": "public_chat" }))
        .await
        .map_err(|e| format!("{e:#}"))?;
    join_patiently(joiner, &room, a_name)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(room)
}

/// Joins through `via`, retrying while the overlay may still be finding the route.
async fn join_patiently(user: &Session, room: &str, via: &str) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + JOIN_PATIENCE;
    loop {
        let started = Instant::now();
        match user.join_via(room, via).await {
            Ok(()) => return Ok(started.elapsed()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("joining for {} s", JOIN_PATIENCE.as_secs())));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Warm-up rounds, then the measured send → waiting sync rounds.
async fn latencies(
    rounds: usize,
    sender: &Session,
    receiver: &Session,
    room: &str,
    run: &str,
) -> Result<Vec<Duration>, String> {
    send_to_sync(WARM_ROUNDS, sender, receiver, room, &format!("{run}-warm"))
        .await
        .map_err(|e| format!("warm-up: {e:#}"))?;
    send_to_sync(rounds, sender, receiver, room, run)
        .await
        .map_err(|e| format!("{e:#}"))
}

/// Alice on A sends `count` messages one after the other; a waiter on B long-polls `/sync`
/// until the last one shows, then `/messages` on B counts how many of them B holds.
async fn burst(
    count: usize,
    alice: &Session,
    bob: &Session,
    room: &str,
    run: &str,
) -> anyhow::Result<BurstFigure> {
    if count == 0 {
        bail!("no messages asked for");
    }
    let bob_http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("HTTP client")?;
    let bob = bob.on(&bob_http);
    let body_of = |i: usize| format!("burst-{run}-{i}");
    let last = body_of(count - 1);
    let first = bob.sync(None, 0).await.context("bob's first sync")?;
    let mut since = client::next_batch(&first)?;
    let start = Instant::now();
    let waiter = {
        let bob = bob.clone();
        let room = room.to_owned();
        tokio::spawn(async move {
            loop {
                if start.elapsed() > BURST_PATIENCE {
                    bail!("the last message did not reach B within {BURST_PATIENCE:?}");
                }
                let answer = bob.sync(Some(&since), SYNC_TIMEOUT_MS).await?;
                if client::has_body(&answer, &room, &last) {
                    return Ok(start.elapsed());
                }
                since = client::next_batch(&answer)?;
            }
        })
    };
    for i in 0..count {
        alice
            .send_text(room, &format!("b{run}-{i}"), &body_of(i))
            .await
            .with_context(|| format!("burst send {i}"))?;
    }
    let sending = start.elapsed();
    let arrived_by_then = count_bodies(&bob, room, &format!("burst-{run}-"), count).await?;
    let all_arrived = waiter.await.context("waiter task")??;
    let arrived = count_bodies(&bob, room, &format!("burst-{run}-"), count).await?;
    Ok(BurstFigure {
        sent: count,
        arrived_by_then,
        arrived,
        sending,
        all_arrived,
    })
}

/// Distinct messages whose body starts with `prefix` in `room`, read backwards with
/// `/messages` until `expected` are found or the history ends.
async fn count_bodies(
    user: &Session,
    room: &str,
    prefix: &str,
    expected: usize,
) -> anyhow::Result<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut from: Option<String> = None;
    // Enough pages for the burst and the rounds before it, with room to spare.
    for _ in 0..(expected / 100 + 50) {
        let page = user.messages_back(room, from.as_deref(), 100).await?;
        let chunk = page
            .get("chunk")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for event in chunk {
            if let Some(body) = event.pointer("/content/body").and_then(Value::as_str)
                && body.starts_with(prefix)
            {
                seen.insert(body.to_owned());
            }
        }
        let end = page.get("end").and_then(Value::as_str).map(str::to_owned);
        if chunk.is_empty() || end.is_none() || seen.len() >= expected {
            break;
        }
        from = end;
    }
    Ok(seen.len())
}

/// A room on A filled with `members` local users (each registered and joined through the
/// client API, so the room holds one `m.room.member` join per user), then joined by Bob on B.
async fn big_join(
    members: usize,
    http: &reqwest::Client,
    a: &LineNode,
    alice: &Session,
    bob: &Session,
    run: &str,
) -> anyhow::Result<JoinFigure> {
    let setup_started = Instant::now();
    let room = alice
        .create_room(json!({ "preset": "public_chat" }))
        .await
        .context("creating the big room")?;
    // One at a time: concurrent writers on one SQLite database can be refused with "database
    // is locked" (an internal error to the client), which would end the set-up.
    // Registration is rate-limited per client address (a burst of 60, then one a second), so
    // each batch of members registers from its own loopback address.
    let mut from = http.clone();
    for i in 0..members {
        if i % MEMBERS_PER_ADDRESS == 0 {
            let batch = i / MEMBERS_PER_ADDRESS;
            let address = std::net::Ipv4Addr::new(
                127,
                0,
                u8::try_from(batch / 200).context("too many members")?,
                u8::try_from(batch % 200 + 2).context("too many members")?,
            );
            from = reqwest::Client::builder()
                .tcp_nodelay(true)
                .local_address(std::net::IpAddr::V4(address))
                .build()
                .context("HTTP client")?;
        }
        let user = client::register_without_password(&from, a.url(), &format!("m{i}-{run}"))
            .await
            .with_context(|| format!("registering member {i}"))?;
        user.join(&room)
            .await
            .with_context(|| format!("joining member {i}"))?;
        if (i + 1) % 250 == 0 {
            eprintln!("grove-bench: {} members in the big room", i + 1);
        }
    }
    let setup = setup_started.elapsed();
    let members_on_a = joined_count(alice, &room).await?;
    let join = join_patiently(bob, &room, &a.name()).await?;
    let members_seen_on_b = joined_count(bob, &room).await?;
    Ok(JoinFigure {
        members_on_a,
        members_seen_on_b,
        setup,
        join,
    })
}

/// The number of joined members `user`'s node reports for `room`.
async fn joined_count(user: &Session, room: &str) -> anyhow::Result<usize> {
    let answer = user.joined_members(room).await?;
    Ok(answer
        .get("joined")
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len))
}

fn per_sec(n: usize, d: Duration) -> String {
    format!("{:.0}/s", n as f64 / d.as_secs_f64().max(f64::MIN_POSITIVE))
}

/// Prints the table as Markdown, with the reason of each stage that failed below it.
fn print_table(plan: &FedPlan, f: &FedFigures) {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut row = |what: String, value: String, target: String, judged: &str| {
        rows.push([what, value, target, judged.to_owned()]);
    };
    for (path, figure, target) in [
        ("same node, A → A (no federation)", &f.same_node, None),
        ("one hop, A → B", &f.one_hop, Some(TARGET_ONE_HOP_P50)),
        (
            "three hops, A → B → C → D",
            &f.three_hops,
            Some(TARGET_THREE_HOPS_P50),
        ),
    ] {
        match figure {
            Ok(latencies) if !latencies.is_empty() => {
                let mut sorted = latencies.clone();
                sorted.sort();
                let p50 = percentile(&sorted, 50).unwrap_or_default();
                let p99 = percentile(&sorted, 99).unwrap_or_default();
                let (target, judged) = match target {
                    Some(t) => (format!("≤ {}", ms(t)), verdict(p50 <= t)),
                    None => ("—".to_owned(), "—"),
                };
                row(
                    format!(
                        "send → waiting /sync, {path}, p50 ({} rounds)",
                        sorted.len()
                    ),
                    ms(p50),
                    target,
                    judged,
                );
                row(
                    format!("send → waiting /sync, {path}, p99"),
                    ms(p99),
                    "—".to_owned(),
                    "—",
                );
            }
            Ok(_) => row(
                format!("send → waiting /sync, {path}"),
                "no rounds".to_owned(),
                String::new(),
                "—",
            ),
            Err(why) => {
                row(
                    format!("send → waiting /sync, {path}"),
                    "failed".to_owned(),
                    String::new(),
                    "—",
                );
                failures.push(format!("{path}: {why}"));
            }
        }
    }
    match &f.join {
        Ok(j) => {
            row(
                format!(
                    "join from B, room on A with {} joined members",
                    j.members_on_a
                ),
                ms(j.join),
                "—".to_owned(),
                "—",
            );
            row(
                "members B sees after its join".to_owned(),
                j.members_seen_on_b.to_string(),
                format!("{}", j.members_on_a + 1),
                verdict(j.members_seen_on_b == j.members_on_a + 1),
            );
            row(
                format!("set-up: {} users registered on A and joined", plan.members),
                ms(j.setup),
                "—".to_owned(),
                "—",
            );
        }
        Err(why) => {
            row(
                format!("join from B, room on A with {} members", plan.members),
                "failed".to_owned(),
                String::new(),
                "—",
            );
            failures.push(format!("join: {why}"));
        }
    }
    match &f.burst {
        Ok(burst) => {
            row(
                format!(
                    "events/s accepted by B from A ({} sequential sends on A)",
                    burst.sent
                ),
                per_sec(burst.sent, burst.all_arrived),
                "—".to_owned(),
                "—",
            );
            row(
                "burst: sends/s on A (the pace B is offered)".to_owned(),
                per_sec(burst.sent, burst.sending),
                "—".to_owned(),
                "—",
            );
            row(
                "burst: last send on A → last message in B's /sync".to_owned(),
                ms(burst.all_arrived.saturating_sub(burst.sending)),
                "—".to_owned(),
                "—",
            );
            row(
                "burst: messages in B when A's sends ended".to_owned(),
                burst.arrived_by_then.to_string(),
                "—".to_owned(),
                "—",
            );
            row(
                "burst: B's intake after A's sends ended".to_owned(),
                per_sec(
                    burst.sent.saturating_sub(burst.arrived_by_then),
                    burst.all_arrived.saturating_sub(burst.sending),
                ),
                "—".to_owned(),
                "—",
            );
            row(
                "burst: messages B holds (/messages)".to_owned(),
                burst.arrived.to_string(),
                burst.sent.to_string(),
                verdict(burst.arrived == burst.sent),
            );
        }
        Err(why) => {
            row(
                "events/s accepted by B from A".to_owned(),
                "failed".to_owned(),
                String::new(),
                "—",
            );
            failures.push(format!("burst: {why}"));
        }
    }

    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "grove-bench federation: four in-process nodes in a line over loopback QUIC, \
         SQLite each, {cores} cores"
    );
    println!();
    println!("| measure | value | target | |");
    println!("|---|---|---|---|");
    for [what, value, target, judged] in rows {
        println!("| {what} | {value} | {target} | {judged} |");
    }
    for why in failures {
        println!();
        println!("failed: {why}");
    }
}
