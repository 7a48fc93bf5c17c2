//! A full disk (ENOSPC) at any operation is a clear error that latches the writer; once
//! space is freed, reopening loses nothing acknowledged and appends work again.
//!
//! A full file system fails writes (often after a short write), but also file creation when
//! a segment rolls. This runs the fault workload once per counted operation with that
//! operation failing with ENOSPC, transiently and sticky (sticky runs also make the failing
//! write land half its buffer, like a short write on a full disk). "Freeing space" is
//! reopening with a file system that no longer fails: open must succeed with every
//! acknowledged frame, new appends must be acknowledged and read back, and a second reopen
//! must hold the old prefix and the new frames. The matrix's real-device fill (a small tmpfs
//! or loop device filled to the brim) needs mount privileges and is not run here.

mod common;

use common::*;
use orchestrix_log::testing::FaultKind;

#[test]
fn disk_full_at_every_operation_recovers_after_space_is_freed() {
    let total = fault_workload_ops();
    let scratch = tempfile::tempdir().unwrap();
    parallel_chunks(total as usize, |range| {
        for n in range {
            for (sticky, partial) in [(false, false), (true, true)] {
                let dir = scratch.path().join(format!("{n}-{sticky}"));
                let what = format!("ENOSPC at op {n}, sticky {sticky}");
                let (_, mut reopened) =
                    fault_case(&dir, n as u64, FaultKind::Enospc, sticky, partial, total);
                let kept = reopened.frames.clone();

                // Space is back: appends succeed and are acknowledged.
                let fresh: Vec<Attempt> = (0..3).map(|i| attempt(1_000_000 + i, 2, 64)).collect();
                let mut position = reopened.report.next_position;
                for a in &fresh {
                    let loc = append_commit(&mut reopened.writer, a)
                        .unwrap_or_else(|e| panic!("{what}: append after freeing space: {e}"));
                    let (header, payload) = reopened.reader.read_frame(loc).unwrap();
                    assert_eq!(
                        (header.first_position, &payload[..]),
                        (position, &a.payload[..]),
                        "{what}"
                    );
                    position += u64::from(a.event_count());
                }
                drop(reopened);

                let again = open_collect(no_sync_fs(), &dir).unwrap();
                assert_eq!(again.frames.len(), kept.len() + fresh.len(), "{what}");
                assert_eq!(again.frames[..kept.len()], kept[..], "{what}: old prefix");
                for (f, a) in again.frames[kept.len()..].iter().zip(&fresh) {
                    assert_eq!(f.payload, a.payload, "{what}: new frames");
                }
                assert!(again.report.truncated.is_none(), "{what}");
            }
        }
    });
}
