//! Topologies for the simulator: generated in-tree from a seed, or read from an edge list.

use std::path::PathBuf;

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::sim::SimError;

/// Which graph to simulate.
#[derive(Debug, Clone, PartialEq)]
pub enum TopologySpec {
    /// `n` nodes in a line.
    Line(usize),
    /// `n` nodes in a cycle.
    Ring(usize),
    /// A `w` × `h` grid with 4-neighbour links.
    Grid(usize, usize),
    /// `n` points in the unit square linked when closer than `radius`.
    RandomGeometric(usize, f64),
    /// Preferential attachment: `n` nodes, each new one linking to `m` existing ones.
    ScaleFree(usize, usize),
    /// Shaped like the Yggdrasil crawl: most nodes have one to three links, one in ten has
    /// five or ten, all by preferential attachment, and one node in a thousand is a
    /// well-linked public hub every newcomer may also peer with.
    YggLike(usize),
    /// An edge list file (`# nodes N edges E` header, then `a b` per line).
    File(PathBuf),
}

/// An undirected graph.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Short name for reports.
    pub name: String,
    /// Node count.
    pub nodes: usize,
    /// Edges, each once, `a < b`, no self-loops.
    pub edges: Vec<(usize, usize)>,
}

impl Topology {
    /// Builds the graph `spec` describes; generated graphs use `seed`.
    pub fn build(spec: &TopologySpec, seed: u64) -> Result<Topology, SimError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7090_1091);
        let (name, nodes, mut edges) = match spec {
            TopologySpec::Line(n) => (
                format!("line-{n}"),
                *n,
                (1..*n).map(|i| (i - 1, i)).collect(),
            ),
            TopologySpec::Ring(n) => {
                let mut e: Vec<_> = (1..*n).map(|i| (i - 1, i)).collect();
                if *n > 2 {
                    e.push((0, n - 1));
                }
                (format!("ring-{n}"), *n, e)
            }
            TopologySpec::Grid(w, h) => {
                let mut e = Vec::new();
                for y in 0..*h {
                    for x in 0..*w {
                        let i = y * w + x;
                        if x + 1 < *w {
                            e.push((i, i + 1));
                        }
                        if y + 1 < *h {
                            e.push((i, i + w));
                        }
                    }
                }
                (format!("grid-{w}x{h}"), w * h, e)
            }
            TopologySpec::RandomGeometric(n, r) => {
                let pts: Vec<(f64, f64)> = (0..*n).map(|_| (rng.r#gen(), rng.r#gen())).collect();
                let mut e = Vec::new();
                for i in 0..*n {
                    for j in i + 1..*n {
                        let (dx, dy) = (pts[i].0 - pts[j].0, pts[i].1 - pts[j].1);
                        if dx * dx + dy * dy < r * r {
                            e.push((i, j));
                        }
                    }
                }
                (format!("geometric-{n}"), *n, e)
            }
            TopologySpec::ScaleFree(n, m) => {
                let mut e = Vec::new();
                // Endpoint list: picking uniformly from it picks nodes by degree.
                let mut ends: Vec<usize> = Vec::new();
                let seed_nodes = (*m + 1).min(*n);
                for i in 0..seed_nodes {
                    for j in i + 1..seed_nodes {
                        e.push((i, j));
                        ends.extend([i, j]);
                    }
                }
                for v in seed_nodes..*n {
                    let mut chosen: Vec<usize> = Vec::new();
                    let mut tries = 0;
                    while chosen.len() < *m && tries < 100 * m {
                        tries += 1;
                        let pick = ends[rng.gen_range(0..ends.len())];
                        if !chosen.contains(&pick) {
                            chosen.push(pick);
                        }
                    }
                    for u in chosen {
                        e.push((u, v));
                        ends.extend([u, v]);
                    }
                }
                (format!("scalefree-{n}"), *n, e)
            }
            TopologySpec::YggLike(n) => {
                let n = *n;
                let hubs = (n / 1000).max(2).min(n);
                let mut e = Vec::new();
                let mut ends: Vec<usize> = Vec::new();
                for i in 0..hubs {
                    for j in i + 1..hubs {
                        e.push((i, j));
                        ends.extend([i, j]);
                    }
                }
                for v in hubs..n {
                    let m = match rng.gen_range(0..20) {
                        0..5 => 1,
                        5..12 => 2,
                        12..16 => 3,
                        16..18 => 5,
                        _ => 10,
                    };
                    let mut chosen: Vec<usize> = Vec::new();
                    // A third of newcomers peer with a public hub first, as Yggdrasil users do.
                    if rng.gen_range(0..3) == 0 {
                        chosen.push(rng.gen_range(0..hubs));
                    }
                    let mut tries = 0;
                    while chosen.len() < m.min(v) && tries < 100 * m {
                        tries += 1;
                        let pick = ends[rng.gen_range(0..ends.len())];
                        if !chosen.contains(&pick) {
                            chosen.push(pick);
                        }
                    }
                    for u in chosen {
                        e.push((u, v));
                        ends.extend([u, v]);
                    }
                }
                (format!("ygglike-{n}"), n, e)
            }
            TopologySpec::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| SimError::Io(path.clone(), e.to_string()))?;
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "file".to_owned());
                let mut nodes = 0usize;
                let mut e = Vec::new();
                for (ln, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    if let Some(rest) = line.strip_prefix('#') {
                        let words: Vec<&str> = rest.split_whitespace().collect();
                        if let Some(i) = words.iter().position(|w| *w == "nodes")
                            && let Some(n) = words.get(i + 1).and_then(|w| w.parse().ok())
                        {
                            nodes = n;
                        }
                        continue;
                    }
                    let mut it = line.split_whitespace().map(str::parse::<usize>);
                    match (it.next(), it.next()) {
                        (Some(Ok(a)), Some(Ok(b))) => {
                            nodes = nodes.max(a + 1).max(b + 1);
                            e.push((a, b));
                        }
                        _ => return Err(SimError::Parse(path.clone(), ln + 1)),
                    }
                }
                (name, nodes, e)
            }
        };
        for e in &mut edges {
            if e.0 > e.1 {
                *e = (e.1, e.0);
            }
        }
        edges.retain(|(a, b)| a != b);
        edges.sort_unstable();
        edges.dedup();
        Ok(Topology { name, nodes, edges })
    }
}
