//! Node links shared by the transfers running on them, as TCP flows share a bottleneck.
//!
//! Every node has an upload and a download rate. A transfer (a *flow*) from `a` to `b` runs
//! at the smaller of its equal shares of `a`'s upload and `b`'s download, and the shares are
//! worked out again whenever a flow starts or ends on either link: a transfer that began on
//! a busy link speeds up when the others finish. (Until 2026-12-07 a transfer kept the share
//! it got when it started, so capacity freed by finished transfers went unused and large
//! copies begun on a busy link stayed slow to the end.) Shares are equal per link, not
//! max-min fair: the share a flow cannot use because its other end is slower is not handed
//! to the other flows of the link.
//!
//! A flow may come from several senders at once (*legs*), as a restore pulls pieces from
//! every holder: each leg is a flow of its own on its sender's upload and on the receiver's
//! download, and the flow's rate is the sum of its legs' rates, as if the pieces were
//! handed to whichever sender is free (ideal work stealing). A sender that dies drops its
//! leg and the others carry on; the flow is cut only when its receiver or its last sender
//! dies.
//!
//! A flow's end is when its last byte arrives plus a fixed latency (its round trips). When
//! a start or end changes the rate of other flows, [`Links`] returns their new ends so the
//! caller can move what it scheduled at them.

use std::collections::BTreeMap;

use crate::Millis;

/// A transfer's handle.
pub type FlowId = u64;

/// The slowest rate a flow is given, bytes per ms (a guard against zero rates).
const MIN_RATE: f64 = 1.0;

#[derive(Debug, Clone)]
struct Flow {
    /// The sending nodes (legs); none for bytes from outside the simulation (a put's
    /// client).
    from: Vec<u32>,
    to: u32,
    /// Bytes still to send at `since`.
    left: f64,
    /// Bytes per ms since `since`.
    rate: f64,
    since: Millis,
    latency_ms: Millis,
    end: Millis,
}

impl Flow {
    fn advance(&mut self, now: Millis) {
        let elapsed = now.saturating_sub(self.since) as f64;
        self.left = (self.left - self.rate * elapsed).max(0.0);
        self.since = now;
    }

    fn end_at(&self) -> Millis {
        self.since + (self.left / self.rate).ceil() as Millis + self.latency_ms
    }
}

/// The links of every node slot and the flows on them.
#[derive(Debug, Clone)]
pub struct Links {
    /// Bytes per ms, by node.
    up: Vec<f64>,
    down: Vec<f64>,
    on_up: Vec<Vec<FlowId>>,
    on_down: Vec<Vec<FlowId>>,
    flows: BTreeMap<FlowId, Flow>,
    next: FlowId,
}

impl Links {
    /// Links with these rates (bytes per ms), one entry per node slot.
    pub fn new(up: Vec<f64>, down: Vec<f64>) -> Self {
        let slots = up.len().max(down.len());
        Self {
            up,
            down,
            on_up: vec![Vec::new(); slots],
            on_down: vec![Vec::new(); slots],
            flows: BTreeMap::new(),
            next: 0,
        }
    }

    /// Flows running now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// When flow `id` ends as things stand.
    #[cfg(test)]
    pub fn end_of(&self, id: FlowId) -> Option<Millis> {
        self.flows.get(&id).map(|f| f.end)
    }

    /// Starts sending `bytes` from the nodes `from` at once (none: from outside) to `to` at
    /// `now`; the flow ends `latency_ms` after its last byte. Returns its id and end, and the
    /// flows whose end moved, with their new ends.
    pub fn start(
        &mut self,
        from: &[u32],
        to: u32,
        bytes: u64,
        latency_ms: Millis,
        now: Millis,
    ) -> (FlowId, Millis, Vec<(FlowId, Millis)>) {
        let id = self.next;
        self.next += 1;
        self.flows.insert(
            id,
            Flow {
                from: from.to_vec(),
                to,
                left: bytes as f64,
                rate: MIN_RATE,
                since: now,
                latency_ms,
                end: now,
            },
        );
        for &f in from {
            self.on_up[f as usize].push(id);
        }
        // One share of the download per leg (one per flow from outside).
        for _ in 0..from.len().max(1) {
            self.on_down[to as usize].push(id);
        }
        let mut moved = self.reshare(from, to, now);
        moved.retain(|(flow, _)| *flow != id);
        let end = self.flows.get(&id).map_or(now, |f| f.end);
        (id, end, moved)
    }

    /// Flow `id` ends (or is cut) at `now`; returns the flows whose end moved.
    pub fn finish(&mut self, id: FlowId, now: Millis) -> Vec<(FlowId, Millis)> {
        let Some(flow) = self.flows.remove(&id) else {
            return Vec::new();
        };
        for &f in &flow.from {
            self.on_up[f as usize].retain(|x| *x != id);
        }
        self.on_down[flow.to as usize].retain(|x| *x != id);
        self.reshare(&flow.from, flow.to, now)
    }

    /// Node `i` died at `now`: cuts every flow to it and every flow whose only sender it
    /// was, and drops its leg of the others; returns the flows cut and the flows whose end
    /// moved.
    pub fn cut_node(&mut self, i: u32, now: Millis) -> (Vec<FlowId>, Vec<(FlowId, Millis)>) {
        let mut moved = BTreeMap::new();
        let mut cut: Vec<FlowId> = self.on_down[i as usize].clone();
        let legs: Vec<FlowId> = self.on_up[i as usize].clone();
        for id in legs {
            let Some(flow) = self.flows.get_mut(&id) else {
                continue;
            };
            if flow.from.len() <= 1 || flow.to == i {
                cut.push(id);
                continue;
            }
            // The other senders carry on without this one.
            flow.from.retain(|f| *f != i);
            let (from, to) = (flow.from.clone(), flow.to);
            self.on_up[i as usize].retain(|x| *x != id);
            let on_down = &mut self.on_down[to as usize];
            if let Some(at) = on_down.iter().position(|x| *x == id) {
                on_down.remove(at);
            }
            let mut senders = from;
            senders.push(i);
            for (flow, end) in self.reshare(&senders, to, now) {
                moved.insert(flow, end);
            }
        }
        cut.sort_unstable();
        cut.dedup();
        for id in &cut {
            for (flow, end) in self.finish(*id, now) {
                moved.insert(flow, end);
            }
        }
        moved.retain(|flow, _| self.flows.contains_key(flow));
        (cut, moved.into_iter().collect())
    }

    /// Works out again the rate of every flow on the uploads of `from` and `to`'s download.
    fn reshare(&mut self, from: &[u32], to: u32, now: Millis) -> Vec<(FlowId, Millis)> {
        let mut ids: Vec<FlowId> = from
            .iter()
            .flat_map(|&f| self.on_up[f as usize].iter().copied())
            .collect();
        ids.extend(self.on_down[to as usize].iter().copied());
        ids.sort_unstable();
        ids.dedup();
        let mut moved = Vec::new();
        for id in ids {
            let rate = self.rate_of(id);
            let Some(flow) = self.flows.get_mut(&id) else {
                continue;
            };
            flow.advance(now);
            flow.rate = rate;
            let end = flow.end_at();
            if end != flow.end {
                flow.end = end;
                moved.push((id, end));
            }
        }
        moved
    }

    /// For each leg the equal share of each end's link, the smaller of the two; summed
    /// over the legs.
    fn rate_of(&self, id: FlowId) -> f64 {
        let Some(flow) = self.flows.get(&id) else {
            return MIN_RATE;
        };
        let to = flow.to as usize;
        let down = self.down[to] / self.on_down[to].len().max(1) as f64;
        let rate = if flow.from.is_empty() {
            down
        } else {
            flow.from
                .iter()
                .map(|&f| {
                    let f = f as usize;
                    (self.up[f] / self.on_up[f].len().max(1) as f64).min(down)
                })
                .sum()
        };
        rate.max(MIN_RATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node 0 uploads 100 bytes/ms, nodes 1 and 2 download 1,000.
    fn links() -> Links {
        Links::new(vec![100.0, 1000.0, 1000.0], vec![1000.0, 1000.0, 1000.0])
    }

    #[test]
    fn a_lone_transfer_takes_its_size_over_the_slower_end_plus_latency() {
        let mut links = links();
        let (_, end, moved) = links.start(&[0], 1, 10_000, 8, 0);
        assert_eq!(end, 100 + 8);
        assert!(moved.is_empty());
    }

    #[test]
    fn a_transfer_speeds_up_when_the_other_on_its_link_ends() {
        let mut links = links();
        let (a, end_a, _) = links.start(&[0], 1, 10_000, 0, 0);
        assert_eq!(end_a, 100);
        // At 50 ms half of `a` is sent; `b` joins and both get 50 bytes/ms.
        let (b, end_b, moved) = links.start(&[0], 2, 10_000, 0, 50);
        assert_eq!(moved, vec![(a, 150)]);
        assert_eq!(end_b, 250);
        // `a` ends at 150 ms: `b` has 5,000 bytes left and the whole link again.
        let moved = links.finish(a, 150);
        assert_eq!(moved, vec![(b, 200)]);
    }

    #[test]
    fn the_slower_end_bounds_a_flow_and_its_download_is_shared_too() {
        // Node 1 downloads 1,000 bytes/ms from two fast senders: 500 each.
        let mut links = Links::new(vec![1000.0, 1000.0, 1000.0], vec![1000.0, 1000.0, 1000.0]);
        let (a, end_a, _) = links.start(&[0], 1, 50_000, 0, 0);
        assert_eq!(end_a, 50);
        let (_, end_b, moved) = links.start(&[2], 1, 50_000, 0, 0);
        assert_eq!(end_b, 100);
        assert_eq!(moved, vec![(a, 100)]);
    }

    #[test]
    fn bytes_from_outside_use_only_the_download() {
        let mut links = links();
        let (_, end, _) = links.start(&[], 0, 10_000, 0, 0);
        assert_eq!(end, 10);
    }

    #[test]
    fn a_dead_node_frees_its_partners_links() {
        let mut links = links();
        let (a, ..) = links.start(&[0], 1, 10_000, 0, 0);
        let (b, ..) = links.start(&[0], 2, 10_000, 0, 0);
        assert_eq!(links.end_of(a), Some(200));
        // Node 2 dies at 100 ms: `a` has 5,000 bytes left at the full 100 bytes/ms.
        let (cut, moved) = links.cut_node(2, 100);
        assert_eq!(cut, vec![b]);
        assert_eq!(moved, vec![(a, 150)]);
        assert_eq!(links.end_of(b), None);
        assert_eq!(links.len(), 1);
    }

    #[test]
    fn a_flow_from_several_senders_runs_at_the_sum_of_its_legs() {
        // Node 2 downloads 1,000 bytes/ms; nodes 0 and 1 upload 100 each: 200 together.
        let mut links = Links::new(vec![100.0, 100.0, 0.0], vec![1000.0, 1000.0, 1000.0]);
        let (_, end, _) = links.start(&[0, 1], 2, 20_000, 0, 0);
        assert_eq!(end, 100);
    }

    #[test]
    fn a_dead_sender_drops_its_leg_and_the_others_finish_the_flow() {
        let mut links = Links::new(vec![100.0, 100.0, 0.0], vec![1000.0, 1000.0, 1000.0]);
        let (a, ..) = links.start(&[0, 1], 2, 20_000, 0, 0);
        // At 50 ms 10,000 bytes are left; node 0 dies and node 1 sends them at 100 a ms.
        let (cut, moved) = links.cut_node(0, 50);
        assert!(cut.is_empty());
        assert_eq!(moved, vec![(a, 150)]);
        // Its last sender dies: the flow is cut.
        let (cut, _) = links.cut_node(1, 100);
        assert_eq!(cut, vec![a]);
        assert_eq!(links.len(), 0);
    }

    #[test]
    fn each_leg_takes_a_share_of_the_receivers_download() {
        // Node 3 downloads 300 bytes/ms: a two-leg flow and a one-leg flow share it 2:1.
        let mut links = Links::new(vec![1000.0; 4], vec![1000.0, 1000.0, 1000.0, 300.0]);
        let (a, ..) = links.start(&[0, 1], 3, 20_000, 0, 0);
        let (b, end_b, _) = links.start(&[2], 3, 10_000, 0, 0);
        assert_eq!(links.end_of(a), Some(100));
        assert_eq!(end_b, 100);
        let _ = b;
    }
}
