//! The self-sizing rule (`quickstore_behaviours::structure`) alone, on a network that grows
//! from 1 to N nodes, holds, and shrinks by 90%: how many groups, how big against √N, how many
//! changes and how long the network disagrees on its structure.
//!
//! Nodes are SHA-1s of their index, so groups are as uneven as real ones. Every virtual second
//! each node counts the live members of its group under its own structure (an exact view; real
//! views lag by `t_fail`), feeds the rule, and hears the structure of `--fanout` random nodes
//! (gossip) with their estimates of N. Each phase prints its figures; one line per minute shows the state.
//!
//! ```text
//! cargo run --release --example structure_ramp -- --nodes 10000 --minutes 30
//! ```

use std::collections::HashMap;

use quickstore_behaviours::structure::{LevelRule, MAX_LEVEL, Structure, StructureState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha1::{Digest, Sha1};

struct Args {
    nodes: usize,
    minutes: u64,
    fanout: usize,
    hold_s: u64,
    seed: u64,
}

fn args() -> Args {
    let mut out = Args {
        nodes: 10_000,
        minutes: 30,
        fanout: 3,
        hold_s: 10,
        seed: 1,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse::<u64>().ok());
        let Some(value) = value else {
            eprintln!(
                "usage: structure_ramp [--nodes N] [--minutes M] [--fanout F] [--hold-s S] [--seed S]"
            );
            std::process::exit(2);
        };
        match pair[0].as_str() {
            "--nodes" => out.nodes = value as usize,
            "--minutes" => out.minutes = value,
            "--fanout" => out.fanout = value as usize,
            "--hold-s" => out.hold_s = value,
            "--seed" => out.seed = value,
            other => {
                eprintln!("unknown flag {other}");
                std::process::exit(2);
            }
        }
    }
    out
}

/// What one phase saw.
#[derive(Default)]
struct PhaseFigures {
    changes_proposed: u64,
    changes_adopted: u64,
    seconds_split: u64,
    seconds: u64,
    worst_ratio_low: f64,
    worst_ratio_high: f64,
    smallest_group: usize,
}

fn main() {
    let args = args();
    let rule = LevelRule {
        replication: 3,
        max_level: MAX_LEVEL,
    };
    let digests: Vec<[u8; 20]> = (0..args.nodes as u64)
        .map(|i| Sha1::digest(i.to_be_bytes()).into())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let hold_ms = args.hold_s * 1000;
    let transition_ms = 60_000;
    let mut states: Vec<Option<StructureState>> = (0..args.nodes).map(|_| None).collect();
    let phase_s = args.minutes * 60;
    let phases = ["grow", "hold", "shrink", "hold small"];
    let shrink_to = args.nodes / 10;
    // Up nodes: indices 0..up (growth adds the next, shrink removes random ones).
    let mut up: Vec<usize> = Vec::new();
    let mut next_join = 0usize;
    println!("phase       t_s   nodes  levels(count)          group min/median/max  sqrt(N)");
    for (p, phase) in phases.iter().enumerate() {
        let mut figures = PhaseFigures {
            worst_ratio_low: f64::INFINITY,
            smallest_group: usize::MAX,
            ..Default::default()
        };
        for second in 0..phase_s {
            let t = p as u64 * phase_s + second;
            let now = t * 1000;
            // Joins spread over the growth phase; departures over the shrink phase.
            let target = match *phase {
                "grow" => ((second + 1) * args.nodes as u64 / phase_s) as usize,
                "shrink" => {
                    args.nodes - ((second + 1) * (args.nodes - shrink_to) as u64 / phase_s) as usize
                }
                _ => up.len(),
            };
            while up.len() < target && next_join < args.nodes {
                // A joiner takes the structure of the node it joins through.
                let start = up
                    .get(rng.random_range(0..up.len().max(1)))
                    .and_then(|&j| states[j].as_ref())
                    .map_or(Structure::SINGLE, |s| s.current());
                states[next_join] = Some(StructureState::new(rule, start, hold_ms, transition_ms));
                up.push(next_join);
                next_join += 1;
            }
            while up.len() > target {
                let gone = up.swap_remove(rng.random_range(0..up.len()));
                states[gone] = None;
            }
            // Group sizes under every structure in use.
            let mut sizes: HashMap<(u8, u32), usize> = HashMap::new();
            let levels: Vec<u8> = {
                let mut l: Vec<u8> = up
                    .iter()
                    .filter_map(|&i| states[i].as_ref().map(|s| s.current().level))
                    .collect();
                l.sort_unstable();
                l.dedup();
                l
            };
            for &i in &up {
                for &level in &levels {
                    let group = Structure { epoch: 0, level }.group_of(&digests[i]);
                    *sizes.entry((level, group)).or_default() += 1;
                }
            }
            // Each node observes its group and hears `fanout` others.
            let heard: Vec<Vec<(Structure, u64)>> = up
                .iter()
                .map(|_| {
                    (0..args.fanout)
                        .filter_map(|_| {
                            let j = up[rng.random_range(0..up.len())];
                            states[j].as_ref().map(|s| (s.current(), s.estimate()))
                        })
                        .collect()
                })
                .collect();
            for (k, &i) in up.iter().enumerate() {
                let Some(state) = states[i].as_mut() else {
                    continue;
                };
                let level = state.current().level;
                let live = sizes[&(level, state.current().group_of(&digests[i]))] as u64;
                if state.observe(now, live).is_some() {
                    figures.changes_proposed += 1;
                }
                for (structure, estimate) in &heard[k] {
                    let estimate = (*estimate > 0).then_some(*estimate);
                    if state.heard(now, *structure, estimate, true).is_some() {
                        figures.changes_adopted += 1;
                    }
                }
            }
            // Figures for this second.
            let mut by_structure: HashMap<Structure, usize> = HashMap::new();
            for &i in &up {
                if let Some(s) = states[i].as_ref() {
                    *by_structure.entry(s.current()).or_default() += 1;
                }
            }
            figures.seconds += 1;
            if by_structure.len() > 1 {
                figures.seconds_split += 1;
            }
            let (&major, _) = by_structure
                .iter()
                .max_by_key(|(s, n)| (**n, **s))
                .expect("nodes up");
            let mut group_sizes: Vec<usize> = (0..major.groups())
                .map(|g| sizes.get(&(major.level, g)).copied().unwrap_or(0))
                .collect();
            group_sizes.sort_unstable();
            let n = up.len();
            let root = (n as f64).sqrt();
            let median = group_sizes[group_sizes.len() / 2];
            // Steady: once the network has held for a minute.
            if (*phase == "hold" || *phase == "hold small") && second >= 60 {
                let ratio = median as f64 / root;
                figures.worst_ratio_low = figures.worst_ratio_low.min(ratio);
                figures.worst_ratio_high = figures.worst_ratio_high.max(ratio);
            }
            if n >= 3 {
                figures.smallest_group = figures.smallest_group.min(group_sizes[0]);
            }
            if t % 60 == 59 || t == 0 {
                let mut levels: Vec<String> = by_structure
                    .iter()
                    .map(|(s, c)| format!("{}@e{}:{c}", s.level, s.epoch))
                    .collect();
                levels.sort();
                println!(
                    "{phase:<10} {t:>5} {n:>7}  {:<22} {:>4}/{:>4}/{:>4}          {root:>6.1}",
                    levels.join(" "),
                    group_sizes[0],
                    median,
                    group_sizes[group_sizes.len() - 1]
                );
            }
        }
        println!(
            "== {phase}: changes proposed {} adopted {}; seconds with more than one structure {} of {}; smallest group {}; median group / sqrt(N) in steady state {}",
            figures.changes_proposed,
            figures.changes_adopted,
            figures.seconds_split,
            figures.seconds,
            figures.smallest_group,
            if figures.worst_ratio_high > 0.0 {
                format!(
                    "{:.2} .. {:.2}",
                    figures.worst_ratio_low, figures.worst_ratio_high
                )
            } else {
                "-".into()
            }
        );
    }
}
