//! `overlay-sim`: runs the overlay simulator over generated topologies and the shared edge
//! lists, one row per topology.
//!
//! Usage: `overlay-sim [--topologies DIR] [--seed N] [--pairs N] [--setups N] [--only SUBSTRING]
//! [--generated-only] [--files-only] [--json] [--no-leave] [--traffic] [--flows F]
//! [--replace-every SECS] [--churn SHARE] [--traffic-secs SECS] [--idle-secs SECS] [--big N] [--search-width W]
//! [--search-fanout F] [--search-slack S] [--records] [--publishers N] [--lookups N]
//! [--record-churn SHARE]`. `--records` adds the records scenario (publish, look up, churn
//! `SHARE` of the nodes, look up again) and its table. `DIR` defaults to
//! `../shared/topologies` relative to the repository root. `--big N` runs only the generated
//! scale-free and Yggdrasil-like graphs of `N` nodes.

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use grove_overlay::sim::{self, RecordOptions, Report, SimOptions, TopologySpec, TrafficOptions};

struct Args {
    dir: PathBuf,
    seed: u64,
    pairs: usize,
    only: Option<String>,
    generated: bool,
    files: bool,
    json: bool,
    setups: usize,
    leave: bool,
    traffic: Option<TrafficOptions>,
    records: Option<RecordOptions>,
    big: Option<usize>,
    idle: Option<u64>,
    width: Option<u8>,
    fanout: Option<u8>,
    slack: Option<u8>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        dir: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/topologies"
        )),
        seed: 1,
        pairs: 200,
        only: None,
        generated: true,
        files: true,
        json: false,
        setups: 50,
        leave: true,
        traffic: None,
        records: None,
        big: None,
        idle: None,
        width: None,
        fanout: None,
        slack: None,
    };
    let mut traffic = TrafficOptions::default();
    let mut want_traffic = false;
    let mut records = RecordOptions::default();
    let mut want_records = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--topologies" => a.dir = PathBuf::from(value("--topologies")?),
            "--seed" => {
                a.seed = value("--seed")?
                    .parse()
                    .map_err(|_| "bad --seed".to_owned())?
            }
            "--pairs" => {
                a.pairs = value("--pairs")?
                    .parse()
                    .map_err(|_| "bad --pairs".to_owned())?
            }
            "--only" => a.only = Some(value("--only")?),
            "--generated-only" => a.files = false,
            "--files-only" => a.generated = false,
            "--json" => a.json = true,
            "--no-leave" => a.leave = false,
            "--setups" => a.setups = number(&value("--setups")?, "--setups")?,
            "--traffic" => want_traffic = true,
            "--flows" => traffic.flows_per_node = number(&value("--flows")?, "--flows")?,
            "--replace-every" => {
                traffic.replace_every =
                    Duration::from_secs(number(&value("--replace-every")?, "--replace-every")?)
            }
            "--traffic-secs" => {
                traffic.duration =
                    Duration::from_secs(number(&value("--traffic-secs")?, "--traffic-secs")?)
            }
            "--churn" => {
                traffic.churn_per_minute = value("--churn")?
                    .parse()
                    .map_err(|_| "bad --churn".to_owned())?
            }
            "--search-width" => {
                a.width = Some(number(&value("--search-width")?, "--search-width")?)
            }
            "--search-fanout" => {
                a.fanout = Some(number(&value("--search-fanout")?, "--search-fanout")?)
            }
            "--search-slack" => {
                a.slack = Some(number(&value("--search-slack")?, "--search-slack")?)
            }
            "--idle-secs" => a.idle = Some(number(&value("--idle-secs")?, "--idle-secs")?),
            "--big" => a.big = Some(number(&value("--big")?, "--big")?),
            "--records" => want_records = true,
            "--publishers" => records.publishers = number(&value("--publishers")?, "--publishers")?,
            "--lookups" => records.lookups = number(&value("--lookups")?, "--lookups")?,
            "--record-churn" => {
                records.churn = number(&value("--record-churn")?, "--record-churn")?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if want_traffic {
        a.traffic = Some(traffic);
    }
    if want_records {
        a.records = Some(records);
    }
    Ok(a)
}

fn number<T: std::str::FromStr>(v: &str, name: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("bad {name}"))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("overlay-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let mut specs: Vec<TopologySpec> = Vec::new();
    if let Some(n) = args.big {
        specs.extend([TopologySpec::ScaleFree(n, 2), TopologySpec::YggLike(n)]);
    } else if args.generated {
        specs.extend([
            TopologySpec::Line(100),
            TopologySpec::Ring(100),
            TopologySpec::Grid(20, 20),
            TopologySpec::RandomGeometric(300, 0.11),
            TopologySpec::ScaleFree(1000, 2),
        ]);
    }
    if args.files && args.big.is_none() {
        match std::fs::read_dir(&args.dir) {
            Ok(rd) => {
                let mut files: Vec<PathBuf> = rd
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "edges"))
                    .collect();
                files.sort();
                specs.extend(files.into_iter().map(TopologySpec::File));
            }
            Err(e) => eprintln!(
                "overlay-sim: no shared topologies at {}: {e}",
                args.dir.display()
            ),
        }
    }
    let mut opts = SimOptions {
        pairs: args.pairs,
        setups: args.setups,
        leave: args.leave,
        traffic: args.traffic.clone(),
        records: args.records.clone(),
        ..SimOptions::default()
    };
    if let Some(secs) = args.idle {
        opts.idle_window = Duration::from_secs(secs);
    }
    let c = &mut opts.config;
    c.search_width = args.width.unwrap_or(c.search_width);
    c.search_fanout = args.fanout.unwrap_or(c.search_fanout);
    c.search_slack = args.slack.unwrap_or(c.search_slack);
    if !args.json {
        println!(
            "| topology | nodes | edges | stretch mean | stretch p95 | first-packet stretch | reach % | cold conv s | reconv s | reach after leave % | idle B/node/s | state B/node | set-up KB mean / p95 | set-up frames mean / p95 | touched mean / p95 | wall s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    let mut failed = false;
    let mut traffic_rows = Vec::new();
    for spec in specs {
        let name = match &spec {
            TopologySpec::File(p) => p.display().to_string(),
            other => format!("{other:?}"),
        };
        if args
            .only
            .as_ref()
            .is_some_and(|o| !name.contains(o.as_str()))
        {
            continue;
        }
        match sim::run_with(&spec, args.seed, &opts) {
            Ok(r) if args.json => println!("{}", serde_json::to_string(&r).unwrap_or_default()),
            Ok(r) => {
                print_row(&r);
                traffic_rows.push(r);
            }
            Err(e) => {
                eprintln!("overlay-sim: {name}: {e}");
                failed = true;
            }
        }
    }
    if traffic_rows.iter().any(|r| r.traffic.is_some()) {
        println!();
        println!(
            "| topology | nodes | protocol B/node/s | of which set-up | datagrams | delivery % | between churn % | stretch mean / p95 | restarts | wall s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for r in &traffic_rows {
            if let Some(t) = &r.traffic {
                println!(
                    "| {} | {} | {:.1} | {:.1} | {} | {:.3} | {:.3} | {:.3} / {:.2} | {} | {:.1} |",
                    r.name,
                    r.nodes,
                    t.protocol_bytes_per_node_sec,
                    t.setup_bytes_per_node_sec,
                    t.datagrams,
                    t.delivery,
                    t.delivery_between_churn,
                    t.stretch_mean,
                    t.stretch_p95,
                    t.restarts,
                    t.wall.as_secs_f64(),
                );
            }
        }
        for r in &traffic_rows {
            if let Some(t) = &r.traffic {
                let kinds: Vec<String> = t
                    .protocol_by_kind
                    .iter()
                    .map(|(k, b)| format!("{k} {b:.1}"))
                    .collect();
                println!(
                    "\n{}: protocol B/node/s by kind: {}",
                    r.name,
                    kinds.join(", ")
                );
            }
        }
    }
    if traffic_rows.iter().any(|r| r.records.is_some()) {
        println!();
        println!(
            "| topology | nodes | records | B/publish | lookup ok % | hops mean / p95 | B/lookup | churned | reconv s | ok after churn % | hops after | B/lookup after | copies/record |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &traffic_rows {
            if let Some(t) = &r.records {
                println!(
                    "| {} | {} | {} | {:.0} | {:.1} | {:.1} / {:.0} | {:.0} | {} | {} | {:.1} | {:.1} / {:.0} | {:.0} | {:.2} |",
                    r.name,
                    r.nodes,
                    t.publishers,
                    t.bytes_per_publish,
                    t.converged.success,
                    t.converged.hops_mean,
                    t.converged.hops_p95,
                    t.converged.bytes_per_lookup,
                    t.churned,
                    secs(t.reconvergence),
                    t.after_churn.success,
                    t.after_churn.hops_mean,
                    t.after_churn.hops_p95,
                    t.after_churn.bytes_per_lookup,
                    t.copies_per_record,
                );
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn secs(d: Option<std::time::Duration>) -> String {
    d.map_or_else(|| "none".to_owned(), |d| format!("{:.2}", d.as_secs_f64()))
}

fn print_row(r: &Report) {
    println!(
        "| {} | {} | {} | {:.3} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {:.1} | {:.0} | {:.1} / {:.1} | {:.0} / {:.0} | {:.0} / {:.0} | {:.1} |",
        r.name,
        r.nodes,
        r.edges,
        r.stretch_mean,
        r.stretch_p95,
        r.first_stretch_mean,
        r.reachability,
        secs(r.cold_convergence),
        secs(r.reconvergence),
        r.reachability_after_leave
            .map_or_else(|| "n/a".to_owned(), |p| format!("{p:.1}")),
        r.idle_bytes_per_node_sec,
        r.state_bytes_per_node,
        r.setup.bytes_mean / 1000.0,
        r.setup.bytes_p95 / 1000.0,
        r.setup.frames_mean,
        r.setup.frames_p95,
        r.setup.touched_mean,
        r.setup.touched_p95,
        r.wall.as_secs_f64(),
    );
}
