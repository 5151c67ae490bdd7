//! The core as a state machine, driven by hand: bad input is refused with a reason and leaves
//! the state untouched; stamps about oneself, tombstones and timers behave as DESIGN.md says.

use std::sync::Arc;

use quickstore_behaviours::digest::{DigestItem, HeartbeatDigest};
use quickstore_behaviours::id::id_facts;
use quickstore_behaviours::message::{GroupGossip, Hello, HelloKind};
use quickstore_behaviours::{
    AddressRecord, Beat, Config, Entry, Envelope, Event, Kelips, Message, NetworkId, Output,
    Refusal, SimId,
};

const GROUPS: u32 = 4;

fn config() -> Config {
    Config {
        groups: GROUPS,
        gossip_period_ms: 100,
        heartbeat_period_ms: 100,
        t_fail_ms: 1000,
        t_contact_ms: 3000,
        ..Config::default()
    }
}

fn node(id: SimId) -> Kelips<SimId> {
    let mut node = Kelips::new(id, 1, AddressRecord::default(), config(), 7, 0).unwrap();
    node.join(0, Vec::new());
    node
}

/// Ids in group 0, and one in another group.
fn ids() -> (Vec<SimId>, SimId) {
    let same: Vec<SimId> = (0..)
        .map(SimId)
        .filter(|id| id_facts(id, GROUPS).group == 0)
        .take(3)
        .collect();
    let other = (0..)
        .map(SimId)
        .find(|id| id_facts(id, GROUPS).group != 0)
        .unwrap();
    (same, other)
}

fn entry(id: SimId, incarnation: u64, heartbeat: u64) -> Entry<SimId> {
    Entry {
        id,
        incarnation,
        heartbeat,
        address: AddressRecord::new(vec![1; 150]).unwrap(),
        free_space: 0,
    }
}

fn envelope(node: &Kelips<SimId>, message: Message<SimId>) -> Envelope<SimId> {
    Envelope {
        network: node.network(),
        message,
        structure: None,
    }
}

fn group_gossip(
    node: &Kelips<SimId>,
    digest: Vec<DigestItem>,
    entries: Vec<Entry<SimId>>,
) -> Envelope<SimId> {
    let digest = HeartbeatDigest::from_sorted(digest).unwrap();
    let gossip = GroupGossip {
        digest,
        entries,
        news: Vec::new(),
    };
    envelope(node, Message::Group(Arc::new(gossip)))
}

fn events(node: &mut Kelips<SimId>) -> Vec<Event<SimId>> {
    std::iter::from_fn(|| node.poll_output())
        .filter_map(|output| match output {
            Output::Event(event) => Some(event),
            Output::Send { .. } => None,
        })
        .collect()
}

#[test]
fn another_network_is_refused_with_both_ids_and_changes_nothing() {
    let (same, _) = ids();
    let mut a = node(same[0]);
    let foreign = NetworkId::new("other", GROUPS);
    let mut message = group_gossip(&a, Vec::new(), vec![entry(same[1], 1, 5)]);
    message.network = foreign;
    let refusal = a.handle_message(10, same[1], message).unwrap_err();
    assert_eq!(
        refusal,
        Refusal::WrongNetwork {
            expected: a.network(),
            got: foreign
        }
    );
    assert!(refusal.to_string().contains("wrong network"));
    assert!(a.view().is_empty());
    // Another k is another network too.
    assert_ne!(
        NetworkId::new("quickstore", GROUPS),
        NetworkId::new("quickstore", 5)
    );
}

#[test]
fn group_messages_from_another_group_and_forged_senders_are_refused() {
    let (same, other) = ids();
    let mut a = node(same[0]);
    let message = group_gossip(&a, Vec::new(), vec![entry(other, 1, 1)]);
    let refusal = a.handle_message(10, other, message).unwrap_err();
    assert!(matches!(refusal, Refusal::WrongGroup { expected: 0, .. }));
    // A member relaying an entry that does not hash to the group: the entry is dropped.
    let message = group_gossip(
        &a,
        Vec::new(),
        vec![entry(other, 1, 1), entry(same[2], 1, 1)],
    );
    a.handle_message(10, same[1], message).unwrap();
    assert!(a.view().get(&other).is_none());
    assert!(a.view().get(&same[2]).is_some());
    assert_eq!(a.stats().refused_items, 1);
    // A hello whose sender entry names someone else.
    let hello = Hello {
        kind: HelloKind::Contact,
        sender: entry(same[2], 1, 1),
        group_entries: Vec::new(),
        contacts: Vec::new(),
        wanted_groups: Vec::new(),
        ask: Vec::new(),
    };
    let refusal = a
        .handle_message(10, other, envelope(&a, Message::Hello(hello)))
        .unwrap_err();
    assert_eq!(refusal, Refusal::ForgedSender);
}

#[test]
fn implausible_heartbeat_jumps_are_refused() {
    let (same, _) = ids();
    let mut a = node(same[0]);
    a.handle_message(
        0,
        same[1],
        group_gossip(&a, Vec::new(), vec![entry(same[1], 1, 10)]),
    )
    .unwrap();
    let short = id_facts(&same[1], GROUPS).short;
    let jump = |heartbeat| {
        vec![DigestItem {
            short,
            beat: Beat::new(1, heartbeat),
        }]
    };
    // A jump of a million beats in one step cannot be true.
    a.handle_message(10, same[1], group_gossip(&a, jump(1_000_000), Vec::new()))
        .unwrap();
    assert_eq!(a.view().get(&same[1]).unwrap().entry.heartbeat, 10);
    a.handle_message(20, same[1], group_gossip(&a, jump(12), Vec::new()))
        .unwrap();
    assert_eq!(a.view().get(&same[1]).unwrap().entry.heartbeat, 12);
}

#[test]
fn a_node_hearing_its_own_stamp_ahead_jumps_above_it() {
    let (same, _) = ids();
    let mut a = node(same[0]);
    let ahead = entry(same[0], 4, 9);
    a.handle_message(0, same[1], group_gossip(&a, Vec::new(), vec![ahead]))
        .unwrap();
    assert!(a.beat() > Beat::new(4, 9));
    assert!(events(&mut a).contains(&Event::IncarnationChanged(4)));
}

#[test]
fn failed_members_are_removed_after_cleanup_and_stale_stamps_never_bring_them_back() {
    let (same, _) = ids();
    let mut a = node(same[0]);
    a.handle_message(
        0,
        same[1],
        group_gossip(&a, Vec::new(), vec![entry(same[1], 1, 3)]),
    )
    .unwrap();
    events(&mut a);
    let t_fail = config().t_fail_ms;
    let mut now = 0;
    while now <= 2 * t_fail + 200 {
        now += 50;
        a.handle_tick(now);
    }
    let seen = events(&mut a);
    assert!(seen.contains(&Event::MemberFailed(same[1])), "{seen:?}");
    assert!(seen.contains(&Event::MemberRemoved(same[1])), "{seen:?}");
    assert!(a.view().get(&same[1]).is_none());
    // The same or a slightly newer stamp of the dead node, relayed late: refused.
    for heartbeat in [3, 4] {
        let stale = group_gossip(&a, Vec::new(), vec![entry(same[1], 1, heartbeat)]);
        a.handle_message(now, same[2], stale).unwrap();
        assert!(a.view().get(&same[1]).is_none());
    }
    // A new incarnation (the node restarted) is welcome.
    let restarted = group_gossip(&a, Vec::new(), vec![entry(same[1], 2, 0)]);
    a.handle_message(now, same[2], restarted).unwrap();
    assert!(a.view().is_live(&same[1]));
}

#[test]
fn timers_are_inputs_and_the_deadline_moves_forward() {
    let (same, _) = ids();
    let mut a = node(same[0]);
    let first = a.next_deadline();
    assert!(first < config().gossip_period_ms.max(config().heartbeat_period_ms) * 2);
    a.handle_tick(first);
    assert!(a.next_deadline() > first);
    let beat = a.beat();
    a.handle_tick(first + 10 * config().heartbeat_period_ms);
    assert!(a.beat().heartbeat > beat.heartbeat);
}

/// The targets of the group gossip among a node's pending outputs.
fn group_targets(node: &mut Kelips<SimId>) -> Vec<SimId> {
    std::iter::from_fn(|| node.poll_output())
        .filter_map(|output| match output {
            Output::Send { to, envelope } if matches!(envelope.message, Message::Group(_)) => {
                Some(to)
            }
            _ => None,
        })
        .collect()
}

/// A member whose connection is refused is no gossip target until its stamp rises again, and
/// the round's gossip sent to it goes to another member instead.
#[test]
fn gossip_to_an_unreachable_member_goes_to_another_until_it_beats_again() {
    let members: Vec<SimId> = (0..)
        .map(SimId)
        .filter(|id| id_facts(id, GROUPS).group == 0)
        .take(8)
        .collect();
    let mut a = node(members[0]);
    let others = members[1..].to_vec();
    let mut heartbeat = 1;
    let mut beat_all = |a: &mut Kelips<SimId>, now: u64, skip: Option<SimId>| {
        heartbeat += 1;
        let entries = others
            .iter()
            .filter(|&&id| Some(id) != skip)
            .map(|&id| entry(id, 1, heartbeat))
            .collect();
        let sender = *others.iter().find(|&&id| Some(id) != skip).unwrap();
        a.handle_message(now, sender, group_gossip(a, Vec::new(), entries))
            .unwrap();
    };
    beat_all(&mut a, 0, None);
    group_targets(&mut a);
    let period = config().gossip_period_ms;
    let mut now = 0;
    let targets = loop {
        now += period;
        a.handle_tick(now);
        let targets = group_targets(&mut a);
        if !targets.is_empty() {
            break targets;
        }
    };
    let refused = targets[0];
    a.handle_unreachable(now + 1, &refused);
    let instead = group_targets(&mut a);
    assert_eq!(instead.len(), 1, "{instead:?}");
    assert!(
        !targets.contains(&instead[0]),
        "{targets:?} then {instead:?}"
    );

    // While its stamp stands still it is skipped, though the others keep beating.
    for _ in 0..20 {
        now += period;
        beat_all(&mut a, now, Some(refused));
        a.handle_tick(now);
        assert!(!group_targets(&mut a).contains(&refused));
    }
    // Once it beats again it is a target like any other.
    let mut chosen = false;
    for _ in 0..40 {
        now += period;
        beat_all(&mut a, now, None);
        a.handle_tick(now);
        chosen |= group_targets(&mut a).contains(&refused);
    }
    assert!(chosen);
}

/// Full entries of `from` in the group messages `node` sends.
fn sent_entries(node: &mut Kelips<SimId>, of: SimId) -> Vec<Entry<SimId>> {
    std::iter::from_fn(|| node.poll_output())
        .filter_map(|output| match output {
            Output::Send { envelope, .. } => match envelope.message {
                Message::Group(gossip) => Some(gossip.entries.clone()),
                _ => None,
            },
            Output::Event(_) => None,
        })
        .flatten()
        .filter(|e| e.id == of)
        .collect()
}

#[test]
fn a_change_of_free_space_is_gossiped_and_drift_is_not() {
    let (same, _) = ids();
    let mut a = node(same[0]);
    let mut now = 10;
    let mut beat = 5;
    // Rounds of a, with member b beating so that a keeps gossiping to it; returns a's own
    // full entries in what it sent.
    let mut run = |a: &mut Kelips<SimId>, rounds: u64| {
        let mut entries = Vec::new();
        for _ in 0..rounds {
            now += 100;
            beat += 1;
            let alive = group_gossip(a, Vec::new(), vec![entry(same[1], 1, beat)]);
            a.handle_message(now, same[1], alive).unwrap();
            a.handle_tick(now);
            entries.extend(sent_entries(a, same[0]));
        }
        entries
    };
    // Past the fresh rounds of the start, the own entry is no longer sent in full.
    run(&mut a, 20);
    assert!(run(&mut a, 3).is_empty());
    // 10 GiB free: news; the member hears the new value in a full entry.
    let stamp = a.own_entry().beat();
    a.set_free_space(10 << 30);
    assert!(
        a.own_entry().beat() > stamp,
        "the stamp rises with the news"
    );
    let sent = run(&mut a, 3);
    assert!(
        sent.iter().any(|e| e.free_space == 10 << 30),
        "the new free space is not gossiped: {sent:?}"
    );
    run(&mut a, 20);
    // A drift of 1 MiB is not news; a drop to a third is.
    a.set_free_space((10 << 30) - (1 << 20));
    assert!(run(&mut a, 3).is_empty());
    a.set_free_space(3 << 30);
    assert!(run(&mut a, 3).iter().any(|e| e.free_space == 3 << 30));

    // A member passes such news on: b hears a (whose free space changes in round 23) and
    // a third member c, and gossips a's entry to c only when it changed.
    let mut b = node(same[1]);
    let mut from_a = entry(same[0], 1, 5);
    let mut relayed = Vec::new();
    let mut at = 10;
    for round in 0..26u64 {
        at += 100;
        from_a.heartbeat += 1;
        if round == 23 {
            from_a.free_space = 1 << 30;
        }
        let heard = vec![from_a.clone(), entry(same[2], 1, 5 + round)];
        b.handle_message(at, same[0], group_gossip(&b, Vec::new(), heard))
            .unwrap();
        b.handle_tick(at);
        let sent = sent_entries(&mut b, same[0]);
        if (20..23).contains(&round) {
            assert!(sent.is_empty(), "b relays a's unchanged entry: {sent:?}");
        }
        if round >= 23 {
            relayed.extend(sent);
        }
    }
    assert!(
        relayed.iter().any(|e| e.free_space == 1 << 30),
        "a member does not pass on a change of free space"
    );
}

#[test]
fn a_name_whose_holders_are_all_down_is_unavailable_not_not_found() {
    use quickstore_behaviours::id::name_facts;
    use quickstore_behaviours::{FileTuple, LookupResult, Version};
    let (same, _) = ids();
    let mut alone = node(same[0]);
    let name = (0..)
        .map(|i| format!("f{i}"))
        .find(|n| name_facts(n, GROUPS).0 == 0)
        .unwrap();
    // Its holders are not in this node's view (down, or gone).
    let tuple = FileTuple {
        name: name.as_str().into(),
        version: Version {
            lamport: 1,
            blake3: [1; 32],
        },
        size: 1,
        holders: vec![same[1], same[2]],
        epoch: 0,
        deleted: false,
        auth: None,
    };
    alone.publish(tuple).unwrap();
    let query = alone.lookup(10, &name).unwrap();
    let outcome = events(&mut alone)
        .into_iter()
        .find_map(|e| match e {
            Event::Lookup(outcome) if outcome.query == query => Some(outcome),
            _ => None,
        })
        .expect("answered locally");
    match outcome.result {
        LookupResult::Unavailable { tuple } => assert_eq!(tuple.holders.len(), 2),
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[test]
fn where_writes_are_signed_tuples_that_fail_their_signature_or_owner_are_dropped() {
    use libp2p::identity::ed25519;
    use quickstore_behaviours::auth::{SignedVersion, WritePolicy, sign_version};
    use quickstore_behaviours::id::name_facts;
    use quickstore_behaviours::message::SyncPush;
    use quickstore_behaviours::{FileTuple, Version};
    let (same, _) = ids();
    let signed = Config {
        writes: WritePolicy::Signed,
        ..config()
    };
    let mut holder = Kelips::new(same[0], 1, AddressRecord::default(), signed, 7, 0).unwrap();
    holder.join(0, Vec::new());
    let name = (0..)
        .map(|i| format!("a/{i}"))
        .find(|n| name_facts(n, GROUPS).0 == 0)
        .unwrap();
    let version = |lamport: u64, key: Option<&ed25519::Keypair>| {
        let mut tuple = FileTuple {
            name: name.as_str().into(),
            version: Version {
                lamport,
                blake3: [lamport as u8; 32],
            },
            size: lamport,
            holders: vec![same[0]],
            epoch: 0,
            deleted: false,
            auth: None,
        };
        if let Some(key) = key {
            let owner = key.public().to_bytes();
            let auth = sign_version(key, SignedVersion::from(&tuple), &owner, None);
            tuple.auth = Some(Arc::new(auth));
        }
        tuple
    };
    let (a, b) = (ed25519::Keypair::generate(), ed25519::Keypair::generate());
    // A name from before signed writes is kept; a signed version claims it.
    holder.publish(version(1, None)).unwrap();
    holder.publish(version(2, Some(&a))).unwrap();
    assert_eq!(holder.stats().unauthorized_tuples, 0);
    // A member pushes B's newer version, an unsigned one and one whose signature was
    // moved to another counter: all three are dropped, and A's version stays.
    let mut moved = version(4, Some(&a));
    moved.version.lamport = 5;
    let push = SyncPush {
        tuples: vec![
            Arc::new(version(3, Some(&b))),
            Arc::new(version(4, None)),
            Arc::new(moved),
        ],
    };
    let _ = holder.handle_message(1, same[1], envelope(&holder, Message::SyncPush(push)));
    assert_eq!(holder.stats().unauthorized_tuples, 3);
    holder.lookup(2, &name).unwrap();
    let found = events(&mut holder).into_iter().find_map(|e| match e {
        Event::Lookup(outcome) => Some(outcome.result),
        _ => None,
    });
    match found {
        Some(quickstore_behaviours::LookupResult::Found { tuple, .. }) => {
            assert_eq!(tuple.version.lamport, 2)
        }
        other => panic!("expected A's version, got {other:?}"),
    }
    // A's own newer version is taken.
    let _ = holder.handle_message(
        3,
        same[1],
        envelope(
            &holder,
            Message::SyncPush(SyncPush {
                tuples: vec![Arc::new(version(6, Some(&a)))],
            }),
        ),
    );
    assert_eq!(holder.stats().unauthorized_tuples, 3);
}

#[test]
fn the_only_member_of_a_group_answers_not_found_for_a_name_it_does_not_know() {
    use quickstore_behaviours::LookupResult;
    use quickstore_behaviours::id::name_facts;
    let (same, _) = ids();
    let mut alone = node(same[0]);
    let name = (0..)
        .map(|i| format!("missing{i}"))
        .find(|n| name_facts(n, GROUPS).0 == 0)
        .unwrap();
    let query = alone.lookup(10, &name).unwrap();
    let result = events(&mut alone).into_iter().find_map(|e| match e {
        Event::Lookup(outcome) if outcome.query == query => Some(outcome.result),
        _ => None,
    });
    assert!(
        matches!(result, Some(LookupResult::NotFound)),
        "expected not found, got {result:?}"
    );
}
