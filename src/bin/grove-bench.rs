//! `grove-bench`: starts a node and measures it over real HTTP.
//!
//! The node runs as a child process (this same binary in its hidden `node` mode, or the `grove`
//! daemon given with `--grove`), so its memory is read from `/proc/<pid>/status` without the
//! benchmark's own client in the figure. The benchmark talks to it over keep-alive loopback
//! connections and prints one table: start-up time to the first answered `versions`, idle RSS,
//! RSS after the messages, send latency, send → waiting `/sync` latency and sequential sends per
//! second, each beside its target. A row that could not be measured says why. Timings are
//! reported, never asserted.
//!
//! ```sh
//! cargo run --release --bin grove-bench                      # SQLite in a temp data dir
//! cargo run --release --bin grove-bench -- --database-url postgres://postgres@127.0.0.1/EMPTY_DB
//! ```
//!
//! `grove-bench federation` measures federation instead: four nodes in this process, each with
//! its own temp data directory and SQLite, peered in a line A – B – C – D over the overlay on
//! loopback (static peers, no multicast). It prints send on A → waiting `/sync` on B (one hop)
//! and on D (three hops), p50 and p99; the time a user on B takes to join a room on A with 1,000
//! joined members (each a user registered on A and joined, so one `m.room.member` event each);
//! and the events per second B accepts from a burst of sequential sends on A.
//!
//! ```sh
//! cargo run --release --bin grove-bench -- federation   # --rounds 200 --members 1000 --messages 2000
//! ```
//!
//! `grove-bench fanout` has `--syncers` users long-poll `/sync` in one room while one sender
//! posts `--rate` messages a second for `--seconds`, and reports delivery latency (p50, p99),
//! missed deliveries, the node's CPU time per delivery and its RSS. `grove-bench state` writes
//! `--events` state events to one room and reports RSS, the data directory's size, the
//! writer's initial sync and a new member's first sync. Both start the node as a child process
//! (`--grove` for the daemon, run with the overlay on loopback and multicast off) or measure
//! `--url`, with `--pid` for its CPU and memory.
//!
//! `grove-bench sliding` puts one user in `--rooms` rooms and reports the first simplified
//! sliding sync response of Element X's room list (20 rooms, and every room), and send →
//! update in a waiting sliding sync at p50 and p99.
//!
//! ```sh
//! cargo build --release
//! target/release/grove-bench --grove target/release/grove sliding --rooms 1000
//! target/release/grove-bench --grove target/release/grove fanout --syncers 200 --rate 50
//! target/release/grove-bench --grove target/release/grove state --events 10000
//! ```

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

// A binary's root resolves modules beside itself (src/bin/); its own modules live in
// src/bin/grove-bench/ so they are not taken for binaries of their own.
#[path = "grove-bench/client.rs"]
mod client;
#[path = "grove-bench/fanout.rs"]
mod fanout;
#[path = "grove-bench/federation.rs"]
mod federation;
#[path = "grove-bench/measure.rs"]
mod measure;
#[path = "grove-bench/node.rs"]
mod node;
#[path = "grove-bench/report.rs"]
mod report;
#[path = "grove-bench/sliding.rs"]
mod sliding;
#[path = "grove-bench/state.rs"]
mod state;

/// Measures a Grove node: memory, latency, throughput, start-up.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Database for the measured node (default: SQLite in a fresh temp data directory), such
    /// as an empty PostgreSQL database. Its starts after the first are warm.
    #[arg(long)]
    database_url: Option<String>,
    /// Messages sent for throughput, send latency and the loaded RSS figure.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Rounds of send → waiting /sync.
    #[arg(long, default_value_t = 500)]
    sync_rounds: usize,
    /// Fresh starts for the start-up time (the median is shown).
    #[arg(long, default_value_t = 5)]
    starts: usize,
    /// Measure this `grove` daemon binary instead of this binary's built-in node.
    #[arg(long)]
    grove: Option<PathBuf>,
    /// Measure only the traffic figures of a homeserver already running at this base URL
    /// (open registration needed); start-up and memory are then not measured.
    #[arg(long, conflicts_with_all = ["grove", "database_url"])]
    url: Option<String>,
}

/// Other measurements, and the hidden mode in which this binary is the measured node.
#[derive(Debug, Subcommand)]
enum Mode {
    /// Four in-process nodes federating in a line A – B – C – D over the overlay on loopback
    /// (SQLite each): send → sync latency over one and three hops, join time for a room with
    /// many members, events per second accepted from one remote node.
    Federation {
        /// Measured send → waiting /sync rounds per path.
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        /// Members of the room on A that a user on B joins.
        #[arg(long, default_value_t = 1_000)]
        members: usize,
        /// Messages sent one after the other on A for the events-per-second figure.
        #[arg(long, default_value_t = 2_000)]
        messages: usize,
    },
    /// Many users long-polling `/sync` in one room while one sender posts at a fixed rate:
    /// delivery latency p50/p99, missed deliveries, the node's CPU per delivery and its RSS.
    Fanout {
        /// Users long-polling `/sync`.
        #[arg(long, default_value_t = 100)]
        syncers: usize,
        /// Messages per second from the sender.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Process ID of the server at `--url`, for its CPU time and memory.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// One room with many state events: RSS and data directory size afterwards, the writer's
    /// initial sync and a new member's first sync.
    State {
        /// State events written to the room.
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        /// Process ID of the server at `--url`, for its memory.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// One user in many rooms: the first simplified sliding sync response of Element X's room
    /// list, and send → update in a waiting sliding sync, p50/p99.
    Sliding {
        /// Rooms the user is in.
        #[arg(long, default_value_t = 1_000)]
        rooms: usize,
        /// Measured send → update rounds.
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        /// Process ID of the server at `--url`.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Runs a node until stdin closes or the process is killed (used by the benchmark itself).
    #[command(hide = true)]
    Node {
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Client API address.
        #[arg(long)]
        client_listen: std::net::SocketAddr,
        /// Database URL.
        #[arg(long)]
        database_url: Option<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The measuring client is one sequential caller: one thread, so that its own hand-offs
    // between threads do not take the measured node's cores. Nodes run as the daemon does.
    let mut builder = match args.mode {
        None => tokio::runtime::Builder::new_current_thread(),
        Some(_) => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("grove-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.mode {
        Some(Mode::Node {
            data_dir,
            client_listen,
            database_url,
        }) => runtime.block_on(node::serve(data_dir, client_listen, database_url)),
        Some(Mode::Federation {
            rounds,
            members,
            messages,
        }) => runtime.block_on(federation::run(federation::FedPlan {
            rounds,
            members,
            messages,
        })),
        Some(Mode::Fanout {
            syncers,
            rate,
            seconds,
            pid,
        }) => runtime.block_on(fanout::run(fanout::FanoutPlan {
            syncers,
            rate,
            duration: Duration::from_secs(seconds),
            target: node::Target {
                grove: args.grove,
                database_url: args.database_url,
                url: args.url,
                pid,
            },
        })),
        Some(Mode::State { events, pid }) => runtime.block_on(state::run(state::StatePlan {
            events,
            target: node::Target {
                grove: args.grove,
                database_url: args.database_url,
                url: args.url,
                pid,
            },
        })),
        Some(Mode::Sliding { rooms, rounds, pid }) => {
            runtime.block_on(sliding::run(sliding::SlidingPlan {
                rooms,
                rounds,
                target: node::Target {
                    grove: args.grove,
                    database_url: args.database_url,
                    url: args.url,
                    pid,
                },
            }))
        }
        None => {
            let plan = measure::Plan {
                database_url: args.database_url,
                messages: args.messages,
                sync_rounds: args.sync_rounds,
                starts: args.starts.max(1),
                grove: args.grove,
                url: args.url,
                settle: Duration::from_millis(500),
            };
            runtime.block_on(measure::run(plan))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grove-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
