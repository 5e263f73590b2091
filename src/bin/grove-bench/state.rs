//! `grove-bench state`: one room with many state events (one per state key, as any member with
//! ordinary power may write). Reports the time to write them, the node's memory and data
//! directory size (database and its log included) afterwards, the time of the writer's initial
//! `/sync` (repeated), and the time of a new member's first `/sync` after joining.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::{
    client,
    node::{self, Measured, Target},
};

/// Repeats of the writer's initial sync.
const INITIAL_SYNCS: usize = 3;

/// What the state run does.
#[derive(Debug)]
pub(crate) struct StatePlan {
    /// State events written to the room.
    pub(crate) events: usize,
    /// The server measured.
    pub(crate) target: Target,
}

/// Runs the state measurement and prints its figures.
pub(crate) async fn run(plan: StatePlan) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("HTTP client")?;
    let measured = Measured::open(&plan.target, &http).await?;
    let (url, pid) = (measured.url.clone(), measured.pid);
    let run = format!("{:08x}", rand::random::<u32>());
    let alice = client::register_without_password(&http, &url, &format!("writer-{run}"))
        .await
        .context("registering the writer")?;
    let room = alice
        .create_room(json!({ "preset": "public_chat", "name": "state" }))
        .await?;
    let written = Instant::now();
    for i in 0..plan.events {
        alice
            .send_state(
                &room,
                "org.grove.bench.state",
                &format!("key-{i}"),
                &json!({ "value": i, "padding": "grove bench state event" }),
            )
            .await
            .with_context(|| format!("state event {i}"))?;
    }
    let write_time = written.elapsed();
    let mut initial = Vec::with_capacity(INITIAL_SYNCS);
    for _ in 0..INITIAL_SYNCS {
        let at = Instant::now();
        alice.sync(None, 0).await?;
        initial.push(at.elapsed());
    }
    let bob = client::register_without_password(&http, &url, &format!("member-{run}"))
        .await
        .context("registering the new member")?;
    let joined = Instant::now();
    bob.join(&room).await?;
    let join_time = joined.elapsed();
    let first = Instant::now();
    let answer = bob.sync(None, 0).await?;
    let first_sync = first.elapsed();
    let state_events = answer
        .pointer(&format!(
            "/rooms/join/{}/state/events",
            room.replace('~', "~0").replace('/', "~1")
        ))
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("state: one room, {} state events", plan.events);
    println!(
        "  writing them           {:.1} s ({:.0} events/s)",
        write_time.as_secs_f64(),
        plan.events as f64 / write_time.as_secs_f64().max(1e-9)
    );
    match pid {
        Some(pid) => println!(
            "  server RSS             {:.1} MiB (peak {:.1} MiB)",
            mib(node::rss_of_pid(pid)?),
            mib(node::peak_rss(pid)?)
        ),
        None => println!("  server RSS             not measured (no --pid)"),
    }
    match (&measured.data_dir, &plan.target.database_url) {
        (Some(dir), None) => println!(
            "  data directory         {:.1} MiB (database and log)",
            mib(node::dir_size(dir.path())?)
        ),
        _ => println!("  data directory         not measured (external database or server)"),
    }
    let initial: Vec<String> = initial
        .iter()
        .map(|d| format!("{:.0} ms", ms(*d)))
        .collect();
    println!("  writer initial sync    {}", initial.join(", "));
    println!("  new member join        {:.0} ms", ms(join_time));
    println!(
        "  new member first sync  {:.0} ms ({state_events} state events)",
        ms(first_sync)
    );
    measured.stop().await;
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
