//! `overlay-sim`: runs the overlay simulator over generated topologies and the shared edge
//! lists, one row per topology.
//!
//! Usage: `overlay-sim [--topologies DIR] [--seed N] [--pairs N] [--only SUBSTRING]
//! [--generated-only] [--files-only] [--json]`. `DIR` defaults to `../shared/topologies`
//! relative to the repository root.

use std::path::PathBuf;
use std::process::ExitCode;

use grove_overlay::sim::{self, Report, SimOptions, TopologySpec};

struct Args {
    dir: PathBuf,
    seed: u64,
    pairs: usize,
    only: Option<String>,
    generated: bool,
    files: bool,
    json: bool,
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
    };
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
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
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
    if args.generated {
        specs.extend([
            TopologySpec::Line(100),
            TopologySpec::Ring(100),
            TopologySpec::Grid(20, 20),
            TopologySpec::RandomGeometric(300, 0.11),
            TopologySpec::ScaleFree(1000, 2),
        ]);
    }
    if args.files {
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
    let opts = SimOptions {
        pairs: args.pairs,
        ..SimOptions::default()
    };
    if !args.json {
        println!(
            "| topology | nodes | edges | stretch mean | stretch p95 | first-packet stretch | reach % | cold conv s | reconv s | reach after leave % | idle B/node/s | state B/node | wall s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    let mut failed = false;
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
            Ok(r) => print_row(&r),
            Err(e) => {
                eprintln!("overlay-sim: {name}: {e}");
                failed = true;
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
        "| {} | {} | {} | {:.3} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {:.1} | {:.0} | {:.1} |",
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
        r.wall.as_secs_f64(),
    );
}
