//! The site guess: which public IP this node is seen from, by a count of distinct witnesses.
//!
//! Peers outside the LAN report the address they see this node at (identify's observed
//! address); AutoNAT confirms one by dialing back. The site is the IP named by the most
//! distinct witnesses: one peer repeating itself counts once, so no single peer can move it.
//! Ties keep the current site. Bounded: [`MAX_SITES`] candidate IPs, [`MAX_WITNESSES`] per IP
//! (the candidate with the fewest witnesses, never the current site, is forgotten first).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use libp2p::PeerId;

/// Public IPs kept as candidate sites at most.
pub const MAX_SITES: usize = 8;
/// Distinct witnesses counted per candidate IP at most.
pub const MAX_WITNESSES: usize = 16;

/// Who says this node is seen at an IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Witness {
    /// A peer that reported the address it sees this node at.
    Peer(PeerId),
    /// AutoNAT (or a relay reservation) confirmed an address by reaching this node there.
    Confirmed,
}

/// Candidate sites and who named each.
#[derive(Debug, Default)]
pub struct SiteGuess {
    site: Option<IpAddr>,
    witnesses: BTreeMap<IpAddr, BTreeSet<Witness>>,
}

impl SiteGuess {
    /// The current guess.
    pub fn site(&self) -> Option<IpAddr> {
        self.site
    }

    /// `witness` sees this node at `ip`; returns whether the site changed.
    pub fn observe(&mut self, ip: IpAddr, witness: Witness) -> bool {
        let named = self.witnesses.entry(ip).or_default();
        if named.len() < MAX_WITNESSES {
            named.insert(witness);
        }
        if self.witnesses.len() > MAX_SITES {
            let weakest = self
                .witnesses
                .iter()
                .filter(|(candidate, _)| **candidate != ip && Some(**candidate) != self.site)
                .min_by_key(|(_, named)| named.len())
                .map(|(candidate, _)| *candidate);
            if let Some(weakest) = weakest {
                self.witnesses.remove(&weakest);
            }
        }
        let count = |ip: Option<IpAddr>| {
            ip.and_then(|ip| self.witnesses.get(&ip))
                .map_or(0, BTreeSet::len)
        };
        if self.site == Some(ip) || count(Some(ip)) <= count(self.site) {
            return false;
        }
        self.site = Some(ip);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, last])
    }

    #[test]
    fn the_first_witness_sets_the_site() {
        let mut guess = SiteGuess::default();
        assert!(guess.observe(ip(1), Witness::Peer(PeerId::random())));
        assert_eq!(guess.site(), Some(ip(1)));
    }

    #[test]
    fn one_peer_repeating_itself_cannot_move_the_site() {
        let mut guess = SiteGuess::default();
        guess.observe(ip(1), Witness::Peer(PeerId::random()));
        guess.observe(ip(1), Witness::Peer(PeerId::random()));
        let liar = Witness::Peer(PeerId::random());
        for _ in 0..100 {
            assert!(!guess.observe(ip(66), liar));
        }
        assert_eq!(guess.site(), Some(ip(1)));
    }

    #[test]
    fn more_distinct_witnesses_move_the_site_and_ties_keep_it() {
        let mut guess = SiteGuess::default();
        guess.observe(ip(1), Witness::Peer(PeerId::random()));
        assert!(
            !guess.observe(ip(2), Witness::Peer(PeerId::random())),
            "a tie"
        );
        assert!(guess.observe(ip(2), Witness::Confirmed));
        assert_eq!(guess.site(), Some(ip(2)));
    }

    #[test]
    fn candidates_and_witnesses_are_bounded_and_the_site_is_kept() {
        let mut guess = SiteGuess::default();
        for _ in 0..3 * MAX_WITNESSES {
            guess.observe(ip(1), Witness::Peer(PeerId::random()));
        }
        assert_eq!(guess.witnesses[&ip(1)].len(), MAX_WITNESSES);
        for last in 2..100 {
            guess.observe(ip(last), Witness::Peer(PeerId::random()));
        }
        assert_eq!(guess.witnesses.len(), MAX_SITES);
        assert_eq!(guess.site(), Some(ip(1)));
    }
}
