//! `grove-bench sliding`: simplified sliding sync (MSC4186) for a user in many rooms. Reports
//! the first response of Element X's room list (a window of 20, one timeline event and the
//! room list's required state) and of a window over every room, and send → update in a waiting
//! sliding sync, p50 and p99.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::{
    client::{self, Session},
    node::Measured,
    report::{ms, percentile},
};

/// Repeats of each first response.
const FIRST_RESPONSES: usize = 5;
/// How long a waiting request may wait, in milliseconds.
const WAIT_MS: u64 = 30_000;
/// How long the waiting request is given to park before the send.
const PARK_DELAY: Duration = Duration::from_millis(20);

/// What the sliding run does.
#[derive(Debug)]
pub(crate) struct SlidingPlan {
    /// Rooms the user is in.
    pub(crate) rooms: usize,
    /// Measured send → update rounds.
    pub(crate) rounds: usize,
    /// The server measured.
    pub(crate) target: crate::node::Target,
}

/// Element X's room list request over `ranges`.
fn room_list(conn: &str, ranges: Value) -> Value {
    json!({
        "conn_id": conn,
        "lists": { "all_rooms": {
            "ranges": ranges,
            "timeline_limit": 1,
            "required_state": [
                ["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"],
                ["m.room.member", "$ME"], ["m.room.topic", ""], ["m.room.avatar", ""],
                ["m.room.canonical_alias", ""], ["m.room.power_levels", ""],
                ["m.call.member", "*"], ["m.room.join_rules", ""], ["m.room.tombstone", ""],
                ["m.room.create", ""], ["m.room.history_visibility", ""],
                ["m.space.parent", "*"], ["m.space.child", "*"]
            ],
        }},
        "extensions": {
            "account_data": { "enabled": true },
            "receipts": { "enabled": true, "rooms": ["*"] },
            "typing": { "enabled": true },
        },
    })
}

/// Runs the sliding measurement and prints its figures.
pub(crate) async fn run(plan: SlidingPlan) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("HTTP client")?;
    let measured = Measured::open(&plan.target, &http).await?;
    let url = measured.url.clone();
    let run = format!("{:08x}", rand::random::<u32>());
    let alice = client::register_without_password(&http, &url, &format!("slider-{run}"))
        .await
        .context("registering the user")?;
    let made = Instant::now();
    let mut rooms = Vec::with_capacity(plan.rooms);
    for i in 0..plan.rooms {
        let room = alice
            .create_room(json!({ "name": format!("room {i}") }))
            .await
            .with_context(|| format!("room {i}"))?;
        rooms.push(room);
    }
    let setup = made.elapsed();

    let window = room_list("first", json!([[0, 19]]));
    let whole = room_list("whole", json!([[0, plan.rooms.max(1) - 1]]));
    let first = timed(&alice, &window, plan.rooms).await?;
    let all = timed(&alice, &whole, plan.rooms).await?;
    let latencies = send_to_update(&alice, &rooms, plan.rounds, &run).await?;

    println!(
        "sliding sync: one user in {} rooms (made in {:.1} s)",
        plan.rooms,
        setup.as_secs_f64()
    );
    let list = |d: &[Duration]| d.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ");
    println!(
        "  first response, 20 rooms      {}   (target <= 50 ms)",
        list(&first)
    );
    println!("  first response, all {} rooms {}", plan.rooms, list(&all));
    let mut sorted = latencies.clone();
    sorted.sort();
    let p = |q| percentile(&sorted, q).map_or_else(|| "-".to_owned(), ms);
    println!(
        "  send -> update p50 {}  p99 {}   ({} rounds; target p50 <= 2 ms)",
        p(50),
        p(99),
        sorted.len()
    );
    measured.stop().await;
    Ok(())
}

/// First responses of `body` (a fresh connection each), checking the list's count.
async fn timed(alice: &Session, body: &Value, rooms: usize) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(FIRST_RESPONSES);
    for _ in 0..FIRST_RESPONSES {
        let at = Instant::now();
        let answer = alice.sliding_sync(None, 0, body).await?;
        out.push(at.elapsed());
        let count = answer
            .pointer("/lists/all_rooms/count")
            .and_then(Value::as_u64);
        if count != Some(rooms as u64) {
            anyhow::bail!("the list counted {count:?} rooms, not {rooms}");
        }
    }
    Ok(out)
}

/// A sliding sync waits on its own connection; the user sends into a room down the list; the
/// time is from just before the send to the answer carrying the room.
async fn send_to_update(
    alice: &Session,
    rooms: &[String],
    rounds: usize,
    run: &str,
) -> anyhow::Result<Vec<Duration>> {
    let waiter_http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("HTTP client")?;
    let waiter = alice.on(&waiter_http);
    let body = room_list("live", json!([[0, 19]]));
    let first = waiter.sliding_sync(None, 0, &body).await?;
    let mut pos = pos_of(&first)?;
    let mut latencies = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let Some(room) = rooms.get((round * 7919) % rooms.len().max(1)) else {
            anyhow::bail!("no rooms");
        };
        let task = {
            let waiter = waiter.clone();
            let body = body.clone();
            let pos = pos.clone();
            tokio::spawn(async move { waiter.sliding_sync(Some(&pos), WAIT_MS, &body).await })
        };
        tokio::time::sleep(PARK_DELAY).await;
        let sent = Instant::now();
        alice
            .send_text(room, &format!("s{run}-{round}"), "wake up")
            .await
            .with_context(|| format!("round {round}: send"))?;
        let answer = task.await.context("waiting task")??;
        if answer
            .pointer(&format!(
                "/rooms/{}",
                room.replace('~', "~0").replace('/', "~1")
            ))
            .is_none()
        {
            anyhow::bail!("round {round}: the answer did not carry {room}: {answer}");
        }
        latencies.push(sent.elapsed());
        pos = pos_of(&answer)?;
    }
    Ok(latencies)
}

fn pos_of(answer: &Value) -> anyhow::Result<String> {
    answer
        .get("pos")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("no pos in {answer}"))
}
