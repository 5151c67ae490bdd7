//! Groups that size themselves (`groups = 0`), in the simulator: a network that grows from one
//! node to a few hundred agrees on one structure, at the level the rule gives for its size,
//! every node's view is exactly its group under that structure, and names published while the
//! network was smaller (under other structures) are still found by lookups from anywhere.

use std::collections::BTreeSet;
use std::sync::Arc;

use quickstore_behaviours::sim::{SimConfig, Simulator};
use quickstore_behaviours::structure::{LevelRule, Structure};
use quickstore_behaviours::{Config, Event, FileTuple, LookupResult, SimId, Version};

const NODES: u32 = 300;
/// Joins are spread over this many ms.
const GROWTH_MS: u64 = 90_000;

fn config() -> Config {
    Config {
        groups: 0,
        structure_hold_ms: 5_000,
        structure_transition_ms: 30_000,
        ..Config::default()
    }
}

fn tuple(name: &str, holder: u32) -> FileTuple<SimId> {
    FileTuple {
        name: Arc::from(name),
        version: Version {
            lamport: 1,
            blake3: [7; 32],
        },
        size: 1,
        holders: vec![SimId(holder)],
        epoch: 0,
        deleted: false,
        auth: None,
    }
}

/// Node 0 founds the network, the others join through earlier ones over [`GROWTH_MS`]; every
/// 10th join a name is published by a node of its group under that node's structure (as a
/// put's home would): names of every stage of the growth. Returns the names published.
fn grow() -> (Simulator, Vec<(String, u32)>) {
    let mut sim = Simulator::new(SimConfig {
        nodes: NODES as usize,
        seed: 5,
        kelips: config(),
        threads: 1,
        ..SimConfig::default()
    });
    sim.start(0, &[]);
    let mut published = Vec::new();
    let mut started = vec![0u32];
    for i in 1..NODES {
        let at = u64::from(i) * GROWTH_MS / u64::from(NODES);
        sim.run_until(at);
        if i % 10 == 0 {
            let name = format!("name-{i}");
            let holder = started.iter().copied().find(|&n| {
                sim.node(n).is_some_and(|core| {
                    core.is_joined() && core.grouping().name_facts(&name).0 == core.group()
                })
            });
            if let Some(holder) = holder
                && sim.publish(holder, tuple(&name, holder))
            {
                published.push((name, holder));
            }
        }
        sim.start(i, &[started[(i as usize * 7) % started.len()]]);
        started.push(i);
    }
    (sim, published)
}

/// The one structure every running node holds (panics if they differ).
fn agreed(sim: &Simulator) -> Structure {
    let structures: BTreeSet<Structure> = (0..NODES)
        .filter_map(|i| sim.node(i)?.structure().map(|(s, _)| s))
        .collect();
    assert_eq!(structures.len(), 1, "{structures:?}");
    *structures.first().expect("one")
}

/// The smallest and largest estimate of N among the running nodes.
fn estimates(sim: &Simulator) -> (u64, u64) {
    let all: Vec<u64> = (0..NODES)
        .filter_map(|i| sim.node(i)?.structure().map(|(_, n)| n))
        .collect();
    let min = all.iter().copied().min().unwrap_or(0);
    (min, all.iter().copied().max().unwrap_or(0))
}

/// How many running nodes' views differ from their group among the running nodes; panics if
/// a view holds a member of another group.
fn wrong_views(sim: &Simulator) -> u32 {
    let mut wrong = 0;
    for i in (0..NODES).filter(|&i| sim.is_alive(i)) {
        let core = sim.node(i).expect("running");
        let truth: BTreeSet<SimId> = (0..NODES)
            .filter(|&j| j != i && sim.is_alive(j))
            .map(SimId)
            .filter(|id| core.grouping().id_facts(id).group == core.group())
            .collect();
        let view: BTreeSet<SimId> = core.view().iter().map(|m| m.entry.id).collect();
        let foreign = view
            .difference(&truth)
            .filter(|id| core.grouping().id_facts(*id).group != core.group());
        assert_eq!(
            foreign.count(),
            0,
            "node {i}: members of other groups in its view"
        );
        if view != truth {
            wrong += 1;
        }
    }
    wrong
}

/// Looks each name up from some running node; returns (found, unavailable, the others).
fn look_up(sim: &mut Simulator, names: &[String]) -> (usize, usize, Vec<String>) {
    let alive: Vec<u32> = (0..NODES).filter(|&i| sim.is_alive(i)).collect();
    let mut queries = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let from = alive[(k * 37 + 11) % alive.len()];
        if let Some(q) = sim.lookup(from, name) {
            queries.push(q);
        }
    }
    sim.run_until(sim.now() + 10_000);
    let (mut found, mut unavailable, mut missing) = (0, 0, Vec::new());
    for (_, _, event) in sim.take_events() {
        if let Event::Lookup(outcome) = event
            && queries.contains(&outcome.query)
        {
            match outcome.result {
                LookupResult::Found { .. } => found += 1,
                LookupResult::Unavailable { .. } => unavailable += 1,
                other => missing.push(format!("{}: {other:?}", outcome.name)),
            }
        }
    }
    (found, unavailable, missing)
}

const RULE: LevelRule = LevelRule {
    replication: 3,
    max_level: 10,
};

#[test]
fn a_growing_network_agrees_on_its_structure_and_keeps_finding_names() {
    let (mut sim, published) = grow();
    sim.run_until(GROWTH_MS + 60_000);
    let changes: Vec<_> = sim
        .take_events()
        .into_iter()
        .filter_map(|(_, _, e)| match e {
            Event::StructureChanged(c) => Some(c),
            _ => None,
        })
        .collect();
    let proposals = changes.iter().filter(|c| c.proposed).count();
    println!(
        "{} structure changes at nodes ({proposals} proposed), {} names published",
        changes.len(),
        published.len()
    );

    // One structure, at a level the rule keeps for this size.
    let structure = agreed(&sim);
    assert_eq!(
        RULE.next(structure.level, u64::from(NODES)),
        structure.level,
        "{structure:?} is not a level the rule keeps for {NODES} nodes"
    );
    assert!(structure.level >= 3, "{structure:?}: the network grew");
    println!("structure {structure:?}, estimates {:?}", estimates(&sim));

    // Every view is the node's group under that structure, exactly.
    let wrong = wrong_views(&sim);
    assert!(
        wrong <= NODES / 100,
        "{wrong} views differ from their group"
    );

    // Each node knows a contact of nearly every other group.
    let uncovered: usize = (0..NODES)
        .map(|i| {
            let core = sim.node(i).expect("running");
            assert_eq!(core.groups(), structure.groups());
            (0..core.groups())
                .filter(|&g| g != core.group() && core.contacts().of_group(g).is_empty())
                .count()
        })
        .sum();
    assert!(
        uncovered <= NODES as usize / 20,
        "{uncovered} groups without a contact"
    );

    // Names published under smaller structures are found (their tuple: the holder may now sit
    // in the sibling group, which the files layer's hand-off is for).
    let names: Vec<String> = published.iter().map(|(n, _)| n.clone()).collect();
    let (found, unavailable, missing) = look_up(&mut sim, &names);
    println!("lookups: {found} found, {unavailable} unavailable, missing {missing:?}");
    assert!(names.len() >= 20);
    assert_eq!(found + unavailable, names.len(), "{missing:?}");
}

#[test]
fn a_network_that_loses_most_of_its_nodes_merges_groups_and_keeps_its_names() {
    let (mut sim, published) = grow();
    sim.run_until(GROWTH_MS + 60_000);
    let before = agreed(&sim);
    // 80% of the nodes crash at once, the holders of the published names excepted.
    let holders: BTreeSet<u32> = published.iter().map(|(_, h)| *h).collect();
    let mut killed = 0;
    for i in (0..NODES).rev() {
        if killed < NODES * 4 / 5 && !holders.contains(&i) {
            sim.kill(i);
            killed += 1;
        }
    }
    let left = u64::from(NODES - killed);
    sim.run_until(sim.now() + 180_000);
    let after = agreed(&sim);
    println!(
        "{before:?} -> {after:?} with {left} nodes left, estimates {:?}",
        estimates(&sim)
    );
    assert!(after.level < before.level, "{before:?} -> {after:?}");
    assert_eq!(
        RULE.next(after.level, left),
        after.level,
        "{after:?} for {left} nodes"
    );
    let wrong = wrong_views(&sim);
    assert!(
        wrong <= NODES / 100,
        "{wrong} views differ from their group"
    );
    // Tuples of both halves of each merged group are known to the merged group.
    let names: Vec<String> = published.iter().map(|(n, _)| n.clone()).collect();
    let (found, unavailable, missing) = look_up(&mut sim, &names);
    println!("lookups: {found} found, {unavailable} unavailable, missing {missing:?}");
    assert_eq!(found + unavailable, names.len(), "{missing:?}");
    assert!(found > 0);
}

/// The scenario runner with `groups = 0`: 600 nodes join over 4 virtual minutes with 5% loss,
/// names go in after, lookups run throughout. The ground truth follows the structure most
/// nodes hold; at the end every view and contact table matches it and lookups succeed.
#[test]
fn a_scenario_grows_to_the_level_its_size_calls_for_with_lookups_succeeding() {
    let report = quickstore_behaviours::sim::scenario::Scenario {
        nodes: 600,
        files: 1200,
        seconds: 420,
        join_window_s: 240.0,
        loss: 0.05,
        kelips: Config {
            groups: 0,
            ..Config::default()
        },
        ..Default::default()
    }
    .run();
    let timeline: Vec<(u64, u64, u32, u64)> = report
        .structure_timeline
        .iter()
        .map(|s| (s.t_s, s.nodes, s.groups, s.group_median))
        .collect();
    println!(
        "groups {} after {} changes, lookups {} ({} one hop), {} B/node/s, timeline {timeline:?}",
        report.groups,
        report.structure_changes,
        report.lookup_success_ratio,
        report.lookup_one_hop_ratio,
        report.bytes_per_node_per_s
    );
    let level = report.groups.ilog2() as u8;
    assert_eq!(
        RULE.next(level, 600),
        level,
        "{} groups for 600 nodes",
        report.groups
    );
    assert!(
        report.structure_changes >= 4,
        "{}",
        report.structure_changes
    );
    assert_eq!(report.unconverged_views, 0);
    assert_eq!(report.uncovered_groups, 0);
    assert!(report.lookups > 1000);
    assert!(
        report.lookup_success_ratio >= 0.999,
        "{}",
        report.lookup_success_ratio
    );
    let last = report.structure_timeline.last().expect("samples");
    assert_eq!(last.nodes_elsewhere, 0, "one structure at the end");
}

/// Files while groups split: 300 nodes join over 3 minutes (1 → 16 groups) while names are
/// put through the files core from 30 s on. No acknowledged name is lost, gets succeed, and
/// at the end nearly every name is found: its set was moved into the group a split gave it
/// (fetched there, restored to R, the copies left behind dropped once confirmed).
#[test]
fn names_put_while_groups_split_move_with_them() {
    let report = quickstore_behaviours::sim::scenario::Scenario {
        nodes: 300,
        files: 600,
        seconds: 600,
        join_window_s: 180.0,
        puts_from_s: Some(30.0),
        kill_at_s: Some(400.0),
        final_sweep: true,
        kelips: Config {
            groups: 0,
            ..Config::default()
        },
        store: Some(quickstore_behaviours::sim::scenario::StoreScenario::default()),
        ..Default::default()
    }
    .run();
    let why = format!(
        "{} groups after {} changes; {} names acknowledged, {} lost; gets {} ({:.4}); final \
         sweep {} of {}",
        report.groups,
        report.structure_changes,
        report.names_acknowledged,
        report.names_lost,
        report.gets,
        report.get_success_ratio,
        report.final_found,
        report.final_lookups
    );
    eprintln!("{why}");
    assert!(report.structure_changes >= 3, "{why}");
    assert!(report.names_acknowledged >= 550, "{why}");
    assert_eq!(report.names_lost, 0, "{why}");
    assert!(report.get_success_ratio >= 0.99, "{why}");
    // The simulator places a put's homes by the structure most nodes hold; a put racing a
    // split can land on homes of another group, which refuse the tuple (a real node's put
    // reaches the name's group by lookup): a name or two of 600.
    assert!(report.final_found + 3 >= report.final_lookups, "{why}");
}
