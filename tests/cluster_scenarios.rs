//! Simulated clusters, written as scenarios: each runs the real Kelips core on many simulated
//! nodes (virtual time, seeded loss) and checks what DESIGN.md §1 promises.

use quickstore_behaviours::Config;
use quickstore_behaviours::sim::report::Report;
use quickstore_behaviours::sim::scenario::Scenario;

fn scenario(nodes: usize, groups: u32) -> Scenario {
    Scenario {
        nodes,
        kelips: Config {
            groups,
            ..Config::default()
        },
        ..Scenario::default()
    }
}

fn summary(report: &Report) -> String {
    let mut value = serde_json::to_value(report).expect("report serializes");
    if let Some(fields) = value.as_object_mut() {
        fields.remove("traffic_by_kind");
    }
    value.to_string()
}

/// 1000 nodes, k = 32, 5% loss; half of them killed at once at 60 s.
#[test]
fn a_thousand_nodes_converge_detect_a_mass_failure_and_recover() {
    let run = Scenario {
        files: 3000,
        seconds: 140,
        loss: 0.05,
        kill_fraction: 0.5,
        final_sweep: true,
        ..scenario(1000, 32)
    };
    let report = run.run();
    let why = summary(&report);
    let t_fail = report.t_fail_s;

    // Convergence: every node knows ≥ 99% of its group and has a live contact per group.
    let converged = report.converged_s.expect("never converged");
    assert!(converged <= 40.0, "converged late: {why}");
    assert_eq!(report.isolated_nodes, 0, "{why}");

    // Failure detection: nobody alive is suspected; every dead node is removed everywhere
    // within 2·t_fail + the time a heartbeat takes to reach its whole group (measured on live
    // nodes: its p99 bounds the removals' p99, its maximum their maximum) + one period, and
    // t_fail after it was detected; nothing comes back.
    assert_eq!(report.false_positives, 0, "false positives: {why}");
    assert_eq!(
        report.removals_missing, 0,
        "dead nodes still in views: {why}"
    );
    let period = report.gossip_period_s;
    let bound = 2.0 * t_fail + report.dissemination_max_s + period;
    assert!(
        report.removal_max_s <= bound,
        "removal took {} s, bound {bound} s: {why}",
        report.removal_max_s
    );
    let bound_p99 = 2.0 * t_fail + report.dissemination_p99_s + period;
    assert!(
        report.removal_p99_s <= bound_p99,
        "removal p99 {} s, bound {bound_p99} s: {why}",
        report.removal_p99_s
    );
    let after_detection = report.detection_p99_s + t_fail + period;
    assert!(
        report.removal_p99_s <= after_detection,
        "removal p99 {} s, detection p99 + t_fail + period {after_detection} s: {why}",
        report.removal_p99_s
    );
    assert_eq!(report.resurrections, 0, "{why}");

    // After the kill the survivors converge again, dead contacts included.
    assert!(report.reconverged_after_kill_s.is_some(), "{why}");
    assert_eq!(report.unconverged_views, 0, "{why}");
    assert_eq!(report.uncovered_groups, 0, "{why}");
    assert_eq!(report.dead_contacts_left, 0, "{why}");

    // With the fallbacks, every name that still has a live holder resolves.
    assert!(report.final_lookups > 1000, "{why}");
    assert_eq!(report.final_found, report.final_lookups, "{why}");
}

/// With converged views and no failures, lookups take one hop.
#[test]
fn converged_views_answer_lookups_in_one_hop() {
    let run = Scenario {
        files: 2000,
        seconds: 90,
        lookups_per_s: 50.0,
        ..scenario(1000, 32)
    };
    let report = run.run();
    let why = summary(&report);
    assert!(report.lookups > 1000, "{why}");
    assert_eq!(report.lookup_success_ratio, 1.0, "{why}");
    assert!(report.lookup_one_hop_ratio >= 0.99, "{why}");
}

/// A partition longer than 2·t_fail: both sides drop each other; once it ends, rejoins to
/// remembered peers merge the halves again.
#[test]
fn a_partition_longer_than_cleanup_heals_after_it_ends() {
    let t_cleanup = 2 * Config::default().t_fail_ms / 1000;
    let (start, end) = (30, 30 + 2 * t_cleanup);
    let run = Scenario {
        files: 500,
        seconds: end + 60,
        loss: 0.02,
        partition: Some((start, end)),
        ..scenario(300, 16)
    };
    let report = run.run();
    let why = summary(&report);
    let healed = report.healed_after_s.expect("never healed");
    let rejoin = Config::default().rejoin_period_ms as f64 / 1000.0;
    assert!(healed <= 2.0 * rejoin, "healed after {healed} s: {why}");
    assert_eq!(report.unconverged_views, 0, "{why}");
    assert_eq!(report.uncovered_groups, 0, "{why}");
    assert_eq!(report.isolated_nodes, 0, "{why}");
}

/// Same seed, same trace, whether the nodes of a millisecond run in parallel or one by one;
/// another seed, another trace.
#[test]
fn runs_are_deterministic_per_seed() {
    let run = Scenario {
        files: 200,
        seconds: 40,
        loss: 0.05,
        kill_fraction: 0.3,
        threads: 2,
        parallel_min_nodes: 2,
        ..scenario(150, 8)
    };
    let first = run.run();
    let second = Scenario {
        threads: 1,
        ..run.clone()
    }
    .run();
    assert_eq!(first.trace, second.trace);
    let strip = |r: &Report| {
        let mut r = r.clone();
        r.wall_s = 0.0;
        summary(&r)
    };
    assert_eq!(strip(&first), strip(&second));
    let other = Scenario { seed: 2, ..run }.run();
    assert_ne!(first.trace, other.trace);
}
