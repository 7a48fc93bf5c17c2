//! The log agrees with a plain vector of frames under random appends, commits, syncs, scans,
//! process crashes and power losses.
//!
//! The model keeps the attempted frames in order and two marks into them: how many are
//! committed (readers must see exactly those, no more) and how many are durable (a power loss
//! must keep at least those). A process crash (reopen on the live file system) must recover
//! at least the committed frames; a power loss (`SimFs::crash`) at least the durable ones;
//! both may keep a longer prefix of what was attempted, because a roll or a `sync` writes
//! frames that were not committed yet. After any recovery the recovered frames are the new
//! model, all of it committed and durable. Proptest shrinks any disagreement to a minimal
//! sequence of operations.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use orchestrix_log::record::FramePayload;
use orchestrix_log::testing::SimFs;
use orchestrix_log::FrameLocation;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append { events: u32, data_len: usize },
    Commit { sync: bool },
    Sync,
    Scan,
    Reopen,
    Crash { seed: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u32..=5, 0usize..200).prop_map(|(events, data_len)| Op::Append { events, data_len }),
        4 => any::<bool>().prop_map(|sync| Op::Commit { sync }),
        1 => Just(Op::Sync),
        3 => Just(Op::Scan),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

struct Model {
    attempts: Vec<Attempt>,
    /// Where each attempt was placed, as `append` reported it.
    locations: Vec<FrameLocation>,
    committed: usize,
    durable: usize,
}

impl Model {
    fn positions(&self, n: usize) -> u64 {
        self.attempts[..n]
            .iter()
            .map(|a| u64::from(a.event_count()))
            .sum()
    }

    /// Adopts what recovery found, after checking it against the model.
    fn recovered(&mut self, opened: &Opened, at_least: usize) -> Result<(), TestCaseError> {
        check_prefix(&opened.frames, &self.attempts, at_least).map_err(TestCaseError::fail)?;
        let n = opened.frames.len();
        prop_assert_eq!(
            &opened.frames.iter().map(|f| f.loc).collect::<Vec<_>>()[..],
            &self.locations[..n]
        );
        check_segments(&opened.reader, &opened.frames).map_err(TestCaseError::fail)?;
        self.attempts.truncate(n);
        self.locations.truncate(n);
        self.committed = n;
        self.durable = n;
        prop_assert_eq!(opened.report.next_position, self.positions(n));
        Ok(())
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = Path::new("/model/log");
    let mut sim = Arc::new(SimFs::new());
    let mut opened =
        open_collect(sim.clone(), dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut model = Model {
        attempts: Vec::new(),
        locations: Vec::new(),
        committed: 0,
        durable: 0,
    };
    let mut next_id = 0u64;
    for op in ops {
        match op {
            Op::Append { events, data_len } => {
                let a = attempt(next_id, events, data_len);
                next_id += 1;
                let loc = append(&mut opened.writer, &a).unwrap();
                model.attempts.push(a);
                model.locations.push(loc);
                prop_assert_eq!(
                    opened.writer.next_position(),
                    model.positions(model.attempts.len())
                );
            }
            Op::Commit { sync } => {
                opened.writer.commit(sync).unwrap();
                model.committed = model.attempts.len();
                if sync {
                    model.durable = model.attempts.len();
                }
            }
            Op::Sync => {
                opened.writer.sync().unwrap();
                model.durable = model.attempts.len();
            }
            Op::Scan => {
                let found = scan_all(&opened.reader);
                prop_assert_eq!(
                    found.len(),
                    model.committed,
                    "readers see committed frames only"
                );
                check_prefix(&found, &model.attempts, model.committed)
                    .map_err(TestCaseError::fail)?;
                prop_assert_eq!(
                    opened.reader.committed_position(),
                    model.positions(model.committed)
                );
                for (f, loc) in found.iter().zip(&model.locations) {
                    prop_assert_eq!(f.loc, *loc);
                    let (header, payload) = opened.reader.read_frame(*loc).unwrap();
                    prop_assert_eq!(header, f.header);
                    let decoded = FramePayload::decode(&payload, header.event_count).unwrap();
                    prop_assert_eq!(decoded.event_count(), header.event_count as usize);
                }
            }
            Op::Reopen => {
                drop(opened);
                opened = open_collect(sim.clone(), dir)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let at_least = model.committed;
                model.recovered(&opened, at_least)?;
            }
            Op::Crash { seed } => {
                drop(opened);
                sim = Arc::new(sim.crash(seed));
                opened = open_collect(sim.clone(), dir)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let at_least = model.durable;
                model.recovered(&opened, at_least)?;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_vector_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
