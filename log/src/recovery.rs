//! Recovery: what to do about a damaged frame found while scanning the log on open.
//!
//! The decision is a pure function of a few facts, so that a test can enumerate every
//! combination (TigerBeetle's journal does the same). Only an unacknowledged tail is ever
//! truncated; everything else is reported as corruption with segment and offset.

/// The facts about a damaged frame that decide its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefectFacts {
    /// The damage is in the last (active) segment. Sealed segments were fsynced whole.
    pub in_last_segment: bool,
    /// The damage lies below the durable watermark recorded by the index checkpoint.
    pub below_checkpoint: bool,
    /// A valid frame after the damage records a durable position beyond the damaged frame,
    /// which proves the damaged frame had been fsynced (and maybe acknowledged).
    pub proven_durable_by_later_frame: bool,
}

/// What recovery does with a damaged frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A torn, never-acknowledged tail: truncate the segment at the damage and go on.
    TruncateTornTail,
    /// Corruption of durable data: refuse to open, naming segment and offset.
    Corrupted(&'static str),
}

/// The recovery decision table.
pub fn decide(f: DefectFacts) -> Verdict {
    match f {
        // Case 1: a sealed segment was fsynced in full before the next one was created.
        DefectFacts {
            in_last_segment: false,
            ..
        } => Verdict::Corrupted("damage inside a sealed segment"),
        // Case 2: the index checkpoint recorded this region as durable.
        DefectFacts {
            below_checkpoint: true,
            ..
        } => Verdict::Corrupted("damage below the durable watermark"),
        // Case 3: a later frame was written after this one had been fsynced.
        DefectFacts {
            proven_durable_by_later_frame: true,
            ..
        } => Verdict::Corrupted("damage before a frame that proves it durable"),
        // Case 4: nothing proves the frame was ever durable: it is a torn, unacknowledged tail.
        DefectFacts {
            in_last_segment: true,
            below_checkpoint: false,
            proven_durable_by_later_frame: false,
        } => Verdict::TruncateTornTail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_has_exactly_the_expected_verdict() {
        for bits in 0..8u8 {
            let f = DefectFacts {
                in_last_segment: bits & 1 != 0,
                below_checkpoint: bits & 2 != 0,
                proven_durable_by_later_frame: bits & 4 != 0,
            };
            let truncate =
                f.in_last_segment && !f.below_checkpoint && !f.proven_durable_by_later_frame;
            assert_eq!(
                decide(f) == Verdict::TruncateTornTail,
                truncate,
                "{f:?} -> {:?}",
                decide(f)
            );
        }
    }
}
