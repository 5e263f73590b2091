//! The result table: each figure beside its target.

use std::time::Duration;

use crate::{measure::Plan, node::NodeProgram};

/// Targets for a node on a 2-core machine.
const TARGET_IDLE_RSS: u64 = 20 * 1024 * 1024;
const TARGET_SEND_P50: Duration = Duration::from_millis(1);
const TARGET_SYNC_P50: Duration = Duration::from_millis(2);
const TARGET_SENDS_PER_SEC: f64 = 2_000.0;
const TARGET_STARTUP: Duration = Duration::from_millis(200);

/// Everything measured so far.
pub(crate) struct Figures {
    setup: String,
    /// Start-up times of each fresh start.
    pub(crate) startups: Vec<Duration>,
    /// Resident memory after start, at rest.
    pub(crate) idle_rss: Result<u64, String>,
    /// Resident memory after the sends.
    pub(crate) loaded_rss: Result<u64, String>,
    /// Each send's latency, and the whole sequence's duration.
    pub(crate) sends: Option<(Vec<Duration>, Duration)>,
    /// Each send → waiting sync latency.
    pub(crate) sync_latencies: Option<Vec<Duration>>,
    messages: usize,
    failure: Option<String>,
}

impl Figures {
    /// Nothing measured yet.
    pub(crate) fn new(plan: &Plan, program: &NodeProgram) -> Figures {
        let backend = match (&plan.database_url, &plan.url) {
            (_, Some(_)) => "its own database",
            (Some(url), None) if url.starts_with("postgres") => "PostgreSQL",
            (Some(_), None) => "the given database",
            (None, None) => "SQLite",
        };
        let node = match (program, &plan.url) {
            (_, Some(url)) => format!("running server {url}"),
            (NodeProgram::BuiltIn, None) => "built-in node".to_owned(),
            (NodeProgram::Daemon(path), None) => format!("daemon {}", path.display()),
        };
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        Figures {
            setup: format!("{node} on {backend}, {cores} cores"),
            startups: Vec::new(),
            idle_rss: Err("not measured".to_owned()),
            loaded_rss: Err("not measured".to_owned()),
            sends: None,
            sync_latencies: None,
            messages: plan.messages,
            failure: None,
        }
    }

    /// Records why the run stopped early.
    pub(crate) fn fail(&mut self, why: String) {
        self.failure = Some(why);
    }

    /// What a row shows when its stage was not reached (the reason is printed once, below).
    fn missing(&self) -> String {
        "not measured".to_owned()
    }
}

/// The value at percentile `p` (0..=100) of `sorted`.
pub(crate) fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get((sorted.len() * p / 100).min(last)).copied()
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "meets" } else { "misses" }
}

/// Prints the table as Markdown.
pub(crate) fn print_table(f: &Figures) {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut row = |what: &str, value: String, target: String, judged: &str| {
        rows.push([what.to_owned(), value, target, judged.to_owned()]);
    };

    let mut startups = f.startups.clone();
    startups.sort();
    match percentile(&startups, 50) {
        Some(median) => row(
            &format!(
                "start-up to first `versions` (median of {})",
                startups.len()
            ),
            ms(median),
            format!("≤ {}", ms(TARGET_STARTUP)),
            verdict(median <= TARGET_STARTUP),
        ),
        None => row(
            "start-up to first `versions`",
            f.missing(),
            String::new(),
            "—",
        ),
    }
    match &f.idle_rss {
        Ok(bytes) => row(
            "idle RSS after start",
            mib(*bytes),
            format!("≤ {}", mib(TARGET_IDLE_RSS)),
            verdict(*bytes <= TARGET_IDLE_RSS),
        ),
        Err(why) => row("idle RSS after start", why.clone(), String::new(), "—"),
    }
    let loaded = format!("RSS after {} messages", f.messages);
    match &f.loaded_rss {
        Ok(bytes) => row(&loaded, mib(*bytes), "—".to_owned(), "—"),
        Err(why) if f.failure.is_none() => row(&loaded, why.clone(), "—".to_owned(), "—"),
        Err(_) => row(&loaded, f.missing(), "—".to_owned(), "—"),
    }
    match &f.sends {
        Some((latencies, total)) if !latencies.is_empty() => {
            let mut sorted = latencies.clone();
            sorted.sort();
            let p50 = percentile(&sorted, 50).unwrap_or_default();
            let p99 = percentile(&sorted, 99).unwrap_or_default();
            row(
                "send latency p50",
                ms(p50),
                format!("≤ {}", ms(TARGET_SEND_P50)),
                verdict(p50 <= TARGET_SEND_P50),
            );
            row("send latency p99", ms(p99), "—".to_owned(), "—");
            let per_sec = latencies.len() as f64 / total.as_secs_f64().max(f64::MIN_POSITIVE);
            row(
                "sequential sends per second",
                format!("{per_sec:.0}/s"),
                format!("≥ {TARGET_SENDS_PER_SEC:.0}/s"),
                verdict(per_sec >= TARGET_SENDS_PER_SEC),
            );
        }
        _ => {
            row("send latency p50 / p99", f.missing(), String::new(), "—");
            row(
                "sequential sends per second",
                f.missing(),
                String::new(),
                "—",
            );
        }
    }
    match &f.sync_latencies {
        Some(latencies) if !latencies.is_empty() => {
            let mut sorted = latencies.clone();
            sorted.sort();
            let p50 = percentile(&sorted, 50).unwrap_or_default();
            let p99 = percentile(&sorted, 99).unwrap_or_default();
            row(
                &format!("send → waiting /sync p50 ({} rounds)", sorted.len()),
                ms(p50),
                format!("≤ {}", ms(TARGET_SYNC_P50)),
                verdict(p50 <= TARGET_SYNC_P50),
            );
            row("send → waiting /sync p99", ms(p99), "—".to_owned(), "—");
        }
        _ => row(
            "send → waiting /sync p50 / p99",
            f.missing(),
            String::new(),
            "—",
        ),
    }

    println!("grove-bench: {}", f.setup);
    println!();
    println!("| measure | value | target | |");
    println!("|---|---|---|---|");
    for [what, value, target, judged] in rows {
        println!("| {what} | {value} | {target} | {judged} |");
    }
    if let Some(why) = &f.failure {
        println!();
        println!("stopped early: {why}");
    }
}
