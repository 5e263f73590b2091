//! `grove-bench fanout`: many users long-polling `/sync` in one room while one sender posts at
//! a fixed rate. Reports, per delivery (one message reaching one syncer), the latency from the
//! start of its send to the sync answer that carried it (p50, p99, max), the deliveries that
//! never came, the node's CPU time per delivery and its memory.
//!
//! The node is a child process (the built-in node, or the `grove` daemon given with
//! `--grove`), or any homeserver at `--url`, whose CPU and memory are read only when its
//! `--pid` is given. The client is a multi-threaded tokio runtime with one keep-alive
//! connection per syncer; its own CPU time is reported beside the node's, so a client that
//! became the bottleneck shows.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::{Value, json};

use crate::{
    client::{self, Session},
    node::{self, Measured, Target},
};

/// How long a syncer's long-poll may park.
const SYNC_TIMEOUT_MS: u64 = 30_000;
/// After the last send, how long deliveries are still awaited before the rest count as missed.
const GRACE: Duration = Duration::from_secs(5);
/// Timeline events a sync answer may carry per room: enough that a syncer that fell behind
/// still gets every message rather than a gap.
const FILTER: &str = r#"{"room":{"timeline":{"limit":500}}}"#;

/// What the fanout run does.
#[derive(Debug)]
pub(crate) struct FanoutPlan {
    /// Users long-polling `/sync`.
    pub(crate) syncers: usize,
    /// Messages per second from the sender.
    pub(crate) rate: f64,
    /// How long the sender sends.
    pub(crate) duration: Duration,
    /// The server measured.
    pub(crate) target: Target,
}

/// Runs the fanout measurement and prints its figures.
pub(crate) async fn run(plan: FanoutPlan) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("HTTP client")?;
    let measured = Measured::open(&plan.target, &http).await?;
    let (url, pid) = (measured.url.clone(), measured.pid);

    let run = format!("{:08x}", rand::random::<u32>());
    let sender = client::register_without_password(&http, &url, &format!("sender-{run}"))
        .await
        .context("registering the sender")?;
    let room = sender
        .create_room(json!({ "preset": "public_chat", "name": "fanout" }))
        .await?;
    let mut syncers = Vec::with_capacity(plan.syncers);
    for i in 0..plan.syncers {
        let user = client::register_without_password(&http, &url, &format!("syncer{i}-{run}"))
            .await
            .with_context(|| format!("registering syncer {i}"))?;
        user.join(&room).await?;
        syncers.push(user);
    }
    // Each syncer starts from a token taken after every join, so only messages arrive.
    let mut tokens = Vec::with_capacity(syncers.len());
    for user in &syncers {
        let first = user.sync_filtered(None, 0, Some(FILTER)).await?;
        tokens.push(client::next_batch(&first)?);
    }

    let messages = (plan.rate * plan.duration.as_secs_f64()).round() as usize;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(syncers.len());
    for (user, token) in syncers.into_iter().zip(tokens) {
        // A connection pool per syncer: its parked long-poll holds one connection of its own.
        let own = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .context("HTTP client")?;
        let user = user.on(&own);
        let (stop, room, run) = (stop.clone(), room.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            listen(user, token, &room, &run, messages, started, stop).await
        }));
    }

    let (cpu_before, own_before) = (
        pid.map(node::cpu_time).transpose()?,
        node::cpu_time(std::process::id())?,
    );
    let interval = Duration::from_secs_f64(1.0 / plan.rate.max(0.001));
    let mut sent_at = vec![Duration::ZERO; messages];
    let mut send_errors = 0usize;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let send_started = Instant::now();
    for (seq, at) in sent_at.iter_mut().enumerate() {
        ticker.tick().await;
        *at = started.elapsed();
        let body = format!("fanout-{run}-{seq}");
        if sender
            .send_text(&room, &format!("f{run}-{seq}"), &body)
            .await
            .is_err()
        {
            send_errors += 1;
        }
    }
    let send_time = send_started.elapsed();
    // Wait for stragglers, then stop the syncers.
    let wait_until = Instant::now() + GRACE;
    while Instant::now() < wait_until && !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let cpu_after = pid.map(node::cpu_time).transpose()?;
    let own_after = node::cpu_time(std::process::id())?;
    // Wake syncers still parked: one more message ends their long-polls.
    let _ = sender.send_text(&room, &format!("f{run}-end"), "end").await;
    let mut received: Vec<Vec<Option<Duration>>> = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(Ok(got)) => received.push(got),
            Ok(Err(e)) => eprintln!("grove-bench: a syncer failed: {e:#}"),
            Err(e) => eprintln!("grove-bench: a syncer panicked: {e}"),
        }
    }

    let mut latencies = Vec::new();
    let mut missed = 0usize;
    for got in &received {
        for (seq, at) in got.iter().enumerate() {
            match (at, sent_at.get(seq)) {
                (Some(at), Some(sent)) => latencies.push(at.saturating_sub(*sent)),
                _ => missed += 1,
            }
        }
    }
    missed += (plan.syncers - received.len()) * messages;
    latencies.sort();
    let deliveries = latencies.len();
    let pct = |p: f64| -> String {
        if latencies.is_empty() {
            return "-".to_owned();
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).map_or("-".to_owned(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1000.0)
        })
    };
    println!(
        "fanout: {} syncers, {} msg/s for {:?}",
        plan.syncers, plan.rate, plan.duration
    );
    println!(
        "  messages sent          {messages} in {:.1} s ({send_errors} failed)",
        send_time.as_secs_f64()
    );
    println!(
        "  deliveries             {deliveries} of {}",
        messages * plan.syncers
    );
    println!("  missed                 {missed}");
    println!("  latency p50            {}", pct(0.50));
    println!("  latency p99            {}", pct(0.99));
    println!("  latency max            {}", pct(1.0));
    match (cpu_before, cpu_after) {
        (Some(before), Some(after)) if deliveries > 0 => {
            let cpu = after.saturating_sub(before);
            println!(
                "  server CPU             {:.2} s, {:.1} µs per delivery",
                cpu.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / deliveries as f64
            );
        }
        _ => println!("  server CPU             not measured (no --pid)"),
    }
    println!(
        "  client CPU             {:.2} s",
        own_after.saturating_sub(own_before).as_secs_f64()
    );
    match pid {
        Some(pid) => println!(
            "  server RSS             {:.1} MiB (peak {:.1} MiB)",
            mib(node::rss_of_pid(pid)?),
            mib(node::peak_rss(pid)?)
        ),
        None => println!("  server RSS             not measured (no --pid)"),
    }
    measured.stop().await;
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One syncer: long-polls until told to stop, noting when each message of this run first
/// arrived (as time since `started`).
async fn listen(
    user: Session,
    mut token: String,
    room: &str,
    run: &str,
    messages: usize,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Option<Duration>>> {
    let prefix = format!("fanout-{run}-");
    let mut got: Vec<Option<Duration>> = vec![None; messages];
    let mut remaining = messages;
    while remaining > 0 && !stop.load(Ordering::Relaxed) {
        let answer = user
            .sync_filtered(Some(&token), SYNC_TIMEOUT_MS, Some(FILTER))
            .await?;
        let now = started.elapsed();
        token = client::next_batch(&answer)?;
        let events = answer
            .pointer("/rooms/join")
            .and_then(|join| join.get(room))
            .and_then(|r| r.pointer("/timeline/events"))
            .and_then(Value::as_array);
        for event in events.into_iter().flatten() {
            let seq = event
                .pointer("/content/body")
                .and_then(Value::as_str)
                .and_then(|b| b.strip_prefix(&prefix))
                .and_then(|s| s.parse::<usize>().ok());
            if let Some(slot) = seq.and_then(|s| got.get_mut(s))
                && slot.is_none()
            {
                *slot = Some(now);
                remaining -= 1;
            }
        }
    }
    Ok(got)
}
