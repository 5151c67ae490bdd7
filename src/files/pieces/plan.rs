//! [`PiecePlan`]: which piece each source fetches next, as a state machine with no I/O.
//!
//! Rules (one test each below):
//! * A source asks for work when it has room; it gets the first piece nobody fetches, so fast
//!   sources take more pieces than slow ones without being measured.
//! * Once every missing piece is being fetched, an idle source (one fetching no missing
//!   piece) steals: it fetches again the piece that has waited longest at another source (at
//!   most [`MAX_FETCHERS`] fetch one piece). The first verified copy counts; a late one is
//!   dropped. Stealing only when idle keeps the copies fetched twice to about one per source
//!   at the end of a fetch (with two requests in flight per source, stealing whenever there
//!   was room fetched up to two pieces per source twice).
//! * A source whose piece fails verification is bad: it gets no more work, and its pieces go
//!   back to the pool. A source whose stream fails is lost, the same way.
//! * Pieces already verified (a resumed get) are never fetched.

use super::verified::Piece;

/// Sources fetching one piece at once at most (the first, and one stealing it).
pub const MAX_FETCHERS: usize = 2;

/// A source's index in the plan.
pub type SourceId = usize;

/// Where one piece stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PieceState {
    /// Not verified yet; fetched by these sources, each with the order it was asked in.
    Missing { fetchers: Vec<(SourceId, u64)> },
    /// Verified and written.
    Done,
}

/// What a source did, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceTally {
    /// Verified bytes it delivered first.
    pub bytes: u64,
    /// Pieces it delivered first.
    pub pieces: u32,
    /// Pieces it delivered after another source had.
    pub late: u32,
    /// Why it gets no more work: a bad piece (`bad: …`) or a failed stream.
    pub dropped: Option<String>,
    /// It served a piece that failed verification.
    pub bad: bool,
    /// It answered that it does not hold the blob.
    pub missing: bool,
}

/// How a delivered piece counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The first verified copy: it counts.
    First,
    /// Another source delivered it first.
    Late,
}

/// The plan of one fetch.
#[derive(Debug, Clone)]
pub struct PiecePlan {
    pieces: Vec<Piece>,
    state: Vec<PieceState>,
    sources: Vec<SourceTally>,
    missing: usize,
    asked: u64,
}

impl PiecePlan {
    /// A plan for `pieces` from `sources` sources; `done(piece)` says which are verified
    /// already.
    pub fn new(pieces: Vec<Piece>, sources: usize, done: impl Fn(Piece) -> bool) -> Self {
        let state: Vec<PieceState> = pieces
            .iter()
            .map(|&p| {
                if done(p) {
                    PieceState::Done
                } else {
                    PieceState::Missing {
                        fetchers: Vec::new(),
                    }
                }
            })
            .collect();
        let missing = state.iter().filter(|s| **s != PieceState::Done).count();
        Self {
            pieces,
            state,
            sources: vec![SourceTally::default(); sources],
            missing,
            asked: 0,
        }
    }

    /// The piece at `index`.
    pub fn piece(&self, index: usize) -> Piece {
        self.pieces[index]
    }

    /// Every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// Whether the piece at `index` is verified.
    pub fn is_done(&self, index: usize) -> bool {
        self.state[index] == PieceState::Done
    }

    /// Bytes verified before this fetch started or since.
    pub fn done_bytes(&self) -> u64 {
        self.pieces
            .iter()
            .zip(&self.state)
            .filter(|(_, s)| **s == PieceState::Done)
            .map(|(p, _)| p.len())
            .sum()
    }

    /// Sources still given work.
    pub fn live_sources(&self) -> usize {
        self.sources.iter().filter(|s| s.dropped.is_none()).count()
    }

    /// What each source did.
    pub fn tallies(&self) -> &[SourceTally] {
        &self.sources
    }

    /// The next piece for `source` to fetch, or `None` when there is nothing it should take
    /// now (everything is fetched by others already, or it was dropped).
    pub fn assign(&mut self, source: SourceId) -> Option<usize> {
        if self.sources[source].dropped.is_some() {
            return None;
        }
        let fresh = self
            .state
            .iter()
            .position(|s| matches!(s, PieceState::Missing { fetchers } if fetchers.is_empty()));
        let chosen = match fresh {
            Some(fresh) => fresh,
            None if self.fetches_any(source) => return None,
            None => self.oldest_to_steal(source)?,
        };
        self.asked += 1;
        if let PieceState::Missing { fetchers } = &mut self.state[chosen] {
            fetchers.push((source, self.asked));
        }
        Some(chosen)
    }

    /// Whether `source` fetches a missing piece now.
    fn fetches_any(&self, source: SourceId) -> bool {
        self.state.iter().any(|s| {
            matches!(s, PieceState::Missing { fetchers } if fetchers.iter().any(|(f, _)| *f == source))
        })
    }

    /// The missing piece that has waited longest at another source, which `source` may fetch
    /// too.
    fn oldest_to_steal(&self, source: SourceId) -> Option<usize> {
        self.state
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                PieceState::Missing { fetchers }
                    if fetchers.len() < MAX_FETCHERS
                        && fetchers.iter().all(|(f, _)| *f != source) =>
                {
                    fetchers
                        .iter()
                        .map(|(_, asked)| *asked)
                        .min()
                        .map(|a| (a, i))
                }
                _ => None,
            })
            .min()
            .map(|(_, i)| i)
    }

    /// `source` delivered the piece at `index`, verified.
    pub fn delivered(&mut self, index: usize, source: SourceId) -> Delivery {
        let len = self.pieces[index].len();
        let tally = &mut self.sources[source];
        if self.state[index] == PieceState::Done {
            tally.late += 1;
            return Delivery::Late;
        }
        tally.bytes += len;
        tally.pieces += 1;
        self.state[index] = PieceState::Done;
        self.missing -= 1;
        Delivery::First
    }

    /// `source` served a piece that failed verification: it is dropped as bad.
    pub fn rejected(&mut self, source: SourceId, why: &str) {
        self.sources[source].bad = true;
        self.drop_source(source, format!("bad: {why}"));
    }

    /// `source` cannot serve any more (its stream failed, or it lacks the blob).
    pub fn lost(&mut self, source: SourceId, why: &str) {
        self.drop_source(source, why.to_string());
    }

    /// `source` does not hold the blob: it is dropped.
    pub fn lacks(&mut self, source: SourceId) {
        self.sources[source].missing = true;
        self.drop_source(source, "no longer has the bytes".to_string());
    }

    fn drop_source(&mut self, source: SourceId, why: String) {
        let tally = &mut self.sources[source];
        if tally.dropped.is_none() {
            tally.dropped = Some(why);
        }
        for state in &mut self.state {
            if let PieceState::Missing { fetchers } = state {
                fetchers.retain(|(f, _)| *f != source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(pieces: u64, sources: usize) -> PiecePlan {
        let pieces = (0..pieces)
            .map(|i| Piece {
                start: i * 100,
                end: (i + 1) * 100,
            })
            .collect();
        PiecePlan::new(pieces, sources, |_| false)
    }

    #[test]
    fn sources_take_the_first_pieces_nobody_fetches_in_order() {
        let mut plan = plan(4, 2);
        assert_eq!(plan.assign(0), Some(0));
        assert_eq!(plan.assign(1), Some(1));
        assert_eq!(plan.assign(0), Some(2));
        assert_eq!(plan.delivered(1, 1), Delivery::First);
        assert_eq!(plan.assign(1), Some(3));
    }

    #[test]
    fn a_fast_source_takes_more_pieces_than_a_slow_one() {
        // Source 0 delivers every time it is asked; source 1 never does.
        let mut plan = plan(10, 2);
        let slow = plan.assign(1);
        while let Some(i) = plan.assign(0) {
            if plan.delivered(i, 0) == Delivery::First && plan.is_complete() {
                break;
            }
        }
        assert!(plan.is_complete());
        assert_eq!(
            plan.tallies()[0].pieces,
            10,
            "the fast source stole the slow one's piece"
        );
        assert_eq!(slow.map(|i| plan.delivered(i, 1)), Some(Delivery::Late));
        assert_eq!(plan.tallies()[1].late, 1);
        assert_eq!(plan.tallies()[1].bytes, 0);
    }

    #[test]
    fn once_all_are_fetched_an_idle_source_steals_the_oldest_and_at_most_two_fetch_one() {
        let mut plan = plan(3, 3);
        assert_eq!(plan.assign(0), Some(0));
        assert_eq!(plan.assign(0), Some(1));
        assert_eq!(plan.assign(0), Some(2));
        // Source 1 steals piece 0, the one asked first; source 2 the next.
        assert_eq!(plan.assign(1), Some(0));
        assert_eq!(plan.assign(2), Some(1));
        // Both fetch a piece now: they steal no more until it is in.
        assert_eq!(plan.assign(1), None);
        assert_eq!(plan.delivered(0, 1), Delivery::First);
        assert_eq!(plan.assign(1), Some(2));
        // Every missing piece has two fetchers now: no third.
        assert_eq!(plan.delivered(1, 2), Delivery::First);
        assert_eq!(plan.assign(2), None);
        assert_eq!(plan.delivered(0, 0), Delivery::Late);
    }

    #[test]
    fn a_source_still_fetching_steals_nothing() {
        let mut plan = plan(2, 2);
        assert_eq!(plan.assign(0), Some(0));
        assert_eq!(plan.assign(1), Some(1));
        // Both have room for a second request, and none is idle: nothing is fetched twice.
        assert_eq!(plan.assign(0), None);
        assert_eq!(plan.assign(1), None);
        assert_eq!(plan.delivered(1, 1), Delivery::First);
        assert_eq!(plan.assign(1), Some(0));
    }

    #[test]
    fn a_bad_source_gets_no_more_work_and_its_pieces_go_back() {
        let mut plan = plan(2, 2);
        assert_eq!(plan.assign(0), Some(0));
        assert_eq!(plan.assign(0), Some(1));
        plan.rejected(0, "piece 0 fails its hash");
        assert!(plan.tallies()[0].bad);
        assert_eq!(plan.assign(0), None);
        assert_eq!(plan.live_sources(), 1);
        assert_eq!(plan.assign(1), Some(0));
        assert_eq!(plan.assign(1), Some(1));
    }

    #[test]
    fn a_lost_source_gives_its_pieces_back_without_being_called_bad() {
        let mut plan = plan(1, 2);
        assert_eq!(plan.assign(0), Some(0));
        plan.lost(0, "stream reset");
        assert!(!plan.tallies()[0].bad);
        assert_eq!(plan.assign(1), Some(0));
        assert_eq!(plan.delivered(0, 1), Delivery::First);
        assert!(plan.is_complete());
    }

    #[test]
    fn pieces_verified_before_are_never_fetched() {
        let pieces = (0..4)
            .map(|i| Piece {
                start: i * 100,
                end: (i + 1) * 100,
            })
            .collect();
        let mut plan = PiecePlan::new(pieces, 1, |p| p.start < 200);
        assert_eq!(plan.done_bytes(), 200);
        assert_eq!(plan.assign(0), Some(2));
        assert_eq!(plan.assign(0), Some(3));
        assert_eq!(plan.assign(0), None);
        plan.delivered(2, 0);
        plan.delivered(3, 0);
        assert!(plan.is_complete());
        assert_eq!(plan.tallies()[0].bytes, 200);
    }
}
