//! The files core in the simulator: names put through it, copies kept under churn, pauses
//! and loss, measured against the ground truth of the simulated disks (`sim::store`).

use quickstore_behaviours::Config;
use quickstore_behaviours::sim::report::Report;
use quickstore_behaviours::sim::scenario::{Scenario, StoreScenario};

fn summary(report: &Report) -> String {
    let mut value = serde_json::to_value(report).expect("report serializes");
    if let Some(fields) = value.as_object_mut() {
        fields.remove("traffic_by_kind");
    }
    value.to_string()
}

/// N nodes in k groups under churn (sessions of median `session_s`, 10% of departures for
/// good), 5% loss and 2% of the nodes paused 30 s once; F = 2N names put in the first half.
fn churn(nodes: usize, groups: u32, seconds: u64, session_s: f64) -> Scenario {
    Scenario {
        nodes,
        files: 2 * nodes,
        seconds,
        loss: 0.05,
        kelips: Config {
            groups,
            ..Config::default()
        },
        store: Some(StoreScenario {
            session_median_s: Some(session_s),
            return_fraction: 0.9,
            pause_fraction: 0.02,
            pause_s: 30.0,
            ..StoreScenario::default()
        }),
        ..Scenario::default()
    }
}

/// The promises of issue 14 at N = 1,000: no acknowledged name lost, no holder set
/// published smaller than the copies that exist, gets succeed, copies are restored.
#[test]
fn a_thousand_nodes_keep_every_acknowledged_name_under_churn_loss_and_pauses() {
    let report = churn(1000, 32, 600, 1800.0).run();
    let why = summary(&report);
    eprintln!("{why}");
    assert!(report.departures >= 100, "too little churn: {why}");
    assert!(report.pauses >= 10, "{why}");
    assert!(report.names_acknowledged >= 1000, "{why}");
    assert_eq!(report.names_lost, 0, "{why}");
    assert_eq!(report.holder_set_shrinks, 0, "{why}");
    assert!(report.gets > 5000, "{why}");
    assert!(report.get_success_ratio >= 0.999, "{why}");
    assert!(report.restores > 0, "{why}");
}

/// A group losing all but one member at once loses the names the survivor did not hold:
/// they are reported as unavoidable (every holder died within one repair window), never as
/// names lost to a repair fault; no holder set shrinks.
#[test]
fn a_group_reduced_to_one_member_loses_only_what_no_repair_could_save() {
    let run = Scenario {
        store: Some(StoreScenario {
            session_median_s: None,
            group_failure_at_s: Some(150),
            ..StoreScenario::default()
        }),
        ..churn(300, 10, 240, 1800.0)
    };
    let report = run.run();
    let why = summary(&report);
    assert!(report.names_lost_all_holders_died > 0, "{why}");
    assert_eq!(report.names_lost, 0, "{why}");
    assert_eq!(report.holder_set_shrinks, 0, "{why}");
}

/// Same seed, same trace and the same file metrics whether the nodes of a window run in
/// parallel or one by one.
#[test]
fn store_runs_are_deterministic_per_seed() {
    let run = Scenario {
        threads: 2,
        parallel_min_nodes: 2,
        kill_fraction: 0.2,
        ..churn(150, 8, 200, 300.0)
    };
    let first = run.run();
    let second = Scenario {
        threads: 1,
        ..run.clone()
    }
    .run();
    let strip = |r: &Report| {
        let mut r = r.clone();
        r.wall_s = 0.0;
        summary(&r)
    };
    assert!(first.names_acknowledged > 0 && first.gets > 0 && first.departures > 0);
    assert_eq!(first.trace, second.trace);
    assert_eq!(strip(&first), strip(&second));
    let other = Scenario { seed: 2, ..run }.run();
    assert_ne!(first.trace, other.trace);
}

/// Not a check: a short, hard churn run whose report is printed (`--ignored --nocapture`).
#[test]
#[ignore]
fn print_hard_churn() {
    let report = churn(300, 10, 600, 300.0).run();
    eprintln!("{}", summary(&report));
}
