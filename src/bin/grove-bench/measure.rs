//! The measurements, in order: start-up, idle memory, sends, memory after them, send → sync.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::json;

use crate::{
    client::{self, Session},
    node::{ChildNode, NodeProgram},
    report::{Figures, print_table},
};

/// How long a waiting `/sync` may park before the server should answer it empty.
const SYNC_TIMEOUT_MS: u64 = 30_000;
/// Time given to a just-issued `/sync` to reach the server and park before the send.
const PARK_DELAY: Duration = Duration::from_millis(5);
/// Most `/sync` answers one round may need before its event shows up.
const SYNCS_PER_ROUND: usize = 10;

/// What to measure, and how much.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Database of the measured node; SQLite in its data directory when `None`.
    pub(crate) database_url: Option<String>,
    /// Messages sent sequentially.
    pub(crate) messages: usize,
    /// Send → waiting sync rounds.
    pub(crate) sync_rounds: usize,
    /// Fresh starts measured.
    pub(crate) starts: usize,
    /// A daemon binary to measure instead of the built-in node.
    pub(crate) grove: Option<PathBuf>,
    /// A running homeserver to measure instead of starting one.
    pub(crate) url: Option<String>,
    /// Pause before reading idle memory.
    pub(crate) settle: Duration,
}

/// Runs every measurement it can and prints the table; a failed stage leaves its rows and the
/// later ones marked with the reason.
pub(crate) async fn run(plan: Plan) -> anyhow::Result<()> {
    let program = match &plan.grove {
        Some(path) => NodeProgram::Daemon(path.clone()),
        None => NodeProgram::BuiltIn,
    };
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("HTTP client")?;
    let mut figures = Figures::new(&plan, &program);

    if let Some(url) = &plan.url {
        let url = url.trim_end_matches('/');
        figures.idle_rss = Err("not measured (external server)".to_owned());
        figures.loaded_rss = Err("not measured (external server)".to_owned());
        if let Err(e) = traffic(&plan, url, None, &http, &mut figures).await {
            figures.fail(format!("{e:#}"));
        }
        print_table(&figures);
        return Ok(());
    }

    // Start-up: on SQLite a fresh data directory each time (key, database and migrations
    // included). A given database belongs to one node key, so those starts share one data
    // directory and all but the first are warm. The last node stays up for the rest.
    let mut node = None;
    let mut data_dir = None;
    for _ in 0..plan.starts {
        if let Some(previous) = node.take() {
            ChildNode::stop(previous).await;
        }
        if data_dir.is_none() || plan.database_url.is_none() {
            data_dir = Some(tempfile::tempdir().context("temp data directory")?);
        }
        let Some(dir) = &data_dir else {
            continue;
        };
        match ChildNode::start(&program, dir.path(), plan.database_url.as_deref(), &http).await {
            Ok(started) => {
                figures.startups.push(started.startup);
                node = Some(started);
            }
            Err(e) => {
                figures.fail(format!("start-up: {e:#}"));
                print_table(&figures);
                return Ok(());
            }
        }
    }
    let Some(node) = node else {
        figures.fail("no node was started".to_owned());
        print_table(&figures);
        return Ok(());
    };
    tokio::time::sleep(plan.settle).await;
    figures.idle_rss = node.rss().map_err(|e| format!("{e:#}"));

    if let Err(e) = traffic(&plan, &node.url, Some(&node), &http, &mut figures).await {
        figures.fail(format!("{e:#}"));
    }
    node.stop().await;
    print_table(&figures);
    Ok(())
}

/// Registers two users in one room and measures sends, then send → sync. `node` is the child
/// process whose memory is read, when the bench started it.
async fn traffic(
    plan: &Plan,
    url: &str,
    node: Option<&ChildNode>,
    http: &reqwest::Client,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    // Distinct names per run, so a reused PostgreSQL database does not refuse them.
    let run = format!("{:08x}", rand::random::<u32>());
    let alice = client::register(http, url, &format!("alice-{run}"))
        .await
        .context("registering the sender")?;
    let bob = client::register(http, url, &format!("bob-{run}"))
        .await
        .context("registering the receiver")?;
    let room_id = alice
        .create_room(json!({ "preset": "public_chat", "name": "bench" }))
        .await?;
    bob.join(&room_id).await?;

    // Sequential sends over one keep-alive connection.
    let mut latencies = Vec::with_capacity(plan.messages);
    let started = Instant::now();
    for i in 0..plan.messages {
        let sent = Instant::now();
        alice
            .send_text(&room_id, &format!("s{run}-{i}"), &format!("message {i}"))
            .await
            .with_context(|| format!("send {i}"))?;
        latencies.push(sent.elapsed());
    }
    figures.sends = Some((latencies, started.elapsed()));
    if let Some(node) = node {
        figures.loaded_rss = node.rss().map_err(|e| format!("{e:#}"));
    }

    figures.sync_latencies =
        Some(send_to_sync(plan.sync_rounds, &alice, &bob, &room_id, &run).await?);
    Ok(())
}

/// Bob waits in a long-poll on his own connection; Alice sends; the time is from just before
/// the send to Bob's answer carrying the event.
pub(crate) async fn send_to_sync(
    rounds: usize,
    alice: &Session,
    bob: &Session,
    room_id: &str,
    run: &str,
) -> anyhow::Result<Vec<Duration>> {
    let bob_http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("HTTP client")?;
    let bob = bob.on(&bob_http);
    let first = bob.sync(None, 0).await.context("bob's first sync")?;
    let mut since = client::next_batch(&first)?;
    let mut latencies = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let waiter = {
            let bob = bob.clone();
            let since = since.clone();
            tokio::spawn(async move { bob.sync(Some(&since), SYNC_TIMEOUT_MS).await })
        };
        tokio::time::sleep(PARK_DELAY).await;
        let sent = Instant::now();
        let event_id = alice
            .send_text(room_id, &format!("w{run}-{round}"), "wake up")
            .await
            .with_context(|| format!("round {round}: send"))?;
        let mut answer = waiter
            .await
            .context("sync task")?
            .with_context(|| format!("round {round}: sync"))?;
        let mut syncs = 1;
        while !client::has_event(&answer, room_id, &event_id) {
            if syncs >= SYNCS_PER_ROUND {
                anyhow::bail!("round {round}: {syncs} syncs answered without event {event_id}");
            }
            since = client::next_batch(&answer)?;
            answer = bob.sync(Some(&since), SYNC_TIMEOUT_MS).await?;
            syncs += 1;
        }
        latencies.push(sent.elapsed());
        since = client::next_batch(&answer)?;
    }
    Ok(latencies)
}
