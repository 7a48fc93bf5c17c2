//! Pins the real-disk half of the "disk full (ENOSPC)" row of RELIABILITY.md: in 5 rounds a
//! small tmpfs (sizes from 256 KiB up; a size too small for the store to even open is skipped
//! in favour of a larger one) is mounted, a store with `Options::test()` is opened on it and
//! filled with varying 200-2000 byte events on a few streams (Exact expected versions) until an
//! append fails. The first failure must be a clear "No space left on device" error, every later
//! append must fail too (the store is latched: Poisoned or ENOSPC), and after closing the store
//! and freeing space (remounting the tmpfs at 32 MiB) reopen succeeds, every acknowledged event
//! is back at its stream, version and position with the same id, positions are gapless,
//! `verify()` passes and new appends succeed. The tmpfs is always unmounted (lazily) by a guard,
//! even on panic. Without the right to mount, the test is skipped, or fails when `CI=true`.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::{
    chain, check_acknowledged, filled_event, has_os_error, may_mount, Acked, Rng, TmpfsMount,
};

use orchestrix::{Direction, EventData, ExpectedVersion, Options, Store, StoreError};
use uuid::Uuid;

/// Candidate tmpfs sizes in KiB, smallest first; the first 5 on which the store opens are used.
const SIZES_KIB: &[u64] = &[256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096];
const ROUNDS: usize = 5;
const STREAMS: usize = 3;
/// A bound on appends per round: the disk must fill long before this.
const APPENDS_MAX: usize = 50_000;

/// Whether an error (or any error in its source chain) is ENOSPC.
fn is_enospc(e: &StoreError) -> bool {
    has_os_error(e, 28) || chain(e).contains("No space left")
}

fn expected(head: Option<u64>) -> ExpectedVersion {
    head.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
}

/// Outcome of one round, for the summary.
struct RoundReport {
    size_kib: u64,
    acked_appends: usize,
    acked_events: usize,
    first_error: String,
}

/// One round at `size_kib`; `None` if the store could not even be opened (ENOSPC at open).
fn round(size_kib: u64, seed: u64) -> Option<RoundReport> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mnt");
    // Declared after `tmp`, so dropped (unmounted) before the temp dir is removed.
    let mount = TmpfsMount::mount(&mnt, size_kib).expect("mount tmpfs");
    let dir = mnt.join("store");

    let store = match Store::open_with(&dir, Options::test()) {
        Ok(s) => s,
        Err(e) => {
            assert!(
                is_enospc(&e),
                "{size_kib} KiB: open failed with a non-ENOSPC error: {e:?}"
            );
            eprintln!(
                "{size_kib} KiB: store does not fit, open failed: {}",
                chain(&e)
            );
            return None;
        }
    };

    let mut rng = Rng(seed);
    let streams: Vec<String> = (0..STREAMS).map(|i| format!("disk-{i}")).collect();
    let mut heads: Vec<Option<u64>> = vec![None; STREAMS];
    let mut acked: Vec<Acked> = Vec::new();
    let mut acked_appends = 0usize;
    let mut attempted_after: HashMap<Uuid, ()> = HashMap::new();

    // Fill the disk.
    let first_error = loop {
        assert!(
            acked_appends < APPENDS_MAX,
            "{size_kib} KiB: the disk never filled after {APPENDS_MAX} appends"
        );
        let s = rng.below(STREAMS as u64) as usize;
        let n = 1 + rng.below(3);
        let next_version = heads[s].map_or(0, |h| h + 1);
        let events: Vec<EventData> = (0..n)
            .map(|i| filled_event(&mut rng, &streams[s], next_version + i))
            .collect();
        let sent: Vec<(Uuid, Vec<u8>)> = events.iter().map(|e| (e.id, e.data.clone())).collect();
        match store.append(&streams[s], expected(heads[s]), events) {
            Ok(r) => {
                assert!(
                    !r.already_stored,
                    "{size_kib} KiB: fresh ids already stored"
                );
                assert_eq!(
                    r.streams,
                    vec![(streams[s].clone(), next_version, next_version + n - 1)],
                    "{size_kib} KiB: append result"
                );
                let expected_pos = acked.len() as u64;
                assert_eq!(
                    r.first_position, expected_pos,
                    "{size_kib} KiB: acknowledged position"
                );
                acked.extend(Acked::of(&streams[s], next_version, r.first_position, sent));
                heads[s] = Some(next_version + n - 1);
                acked_appends += 1;
            }
            Err(e) => {
                for (id, _) in &sent {
                    attempted_after.insert(*id, ());
                }
                eprintln!(
                    "{size_kib} KiB: append #{} ({n} events, stream {}) failed after {acked_appends} acknowledged appends / {} events: {}",
                    acked_appends + 1,
                    streams[s],
                    acked.len(),
                    chain(&e)
                );
                // A bare Poisoned as the *first* failure hides the cause (checked at the end,
                // after the recovery checks of this round have run); anything else is wrong.
                assert!(
                    is_enospc(&e) || matches!(e, StoreError::Poisoned),
                    "{size_kib} KiB: the first failed append is not a clear ENOSPC error: {e:?}"
                );
                break chain(&e);
            }
        }
    };

    // Latched: every later append fails, even small ones with correct expected versions.
    for k in 0..6 {
        let s = k % STREAMS;
        let data = if k % 2 == 0 {
            b"tiny".to_vec()
        } else {
            vec![b'z'; 1500]
        };
        let e = EventData::new("AfterFull", data);
        attempted_after.insert(e.id, ());
        match store.append(&streams[s], expected(heads[s]), vec![e]) {
            Ok(r) => panic!(
                "{size_kib} KiB: append {k} after the disk-full failure was acknowledged: {r:?}"
            ),
            Err(e) => {
                assert!(
                    matches!(e, StoreError::Poisoned) || is_enospc(&e),
                    "{size_kib} KiB: later append {k} failed with an unexpected error: {e:?}"
                );
                if k == 0 {
                    eprintln!("{size_kib} KiB: later appends fail: {}", chain(&e));
                }
            }
        }
    }
    assert_eq!(
        store.committed_position(),
        acked.len() as u64,
        "{size_kib} KiB: committed position before close"
    );

    // Close (its final sync may fail on the full disk: only report it), then free space.
    if let Err(e) = store.close() {
        eprintln!("{size_kib} KiB: close on the full disk: {}", chain(&e));
    }
    drop(store);
    // Generous: with 4 KiB test segments every sealed segment also has an id file and a
    // stream index file of one tmpfs page each, so the derived files take about twice the
    // log's size, which reopen writes.
    mount.remount("32m");

    let store = Store::open_with(&dir, Options::test())
        .unwrap_or_else(|e| panic!("{size_kib} KiB: reopen after freeing space failed: {e:?}"));
    let all = check_acknowledged(&format!("{size_kib} KiB"), &store, &acked, |id| {
        attempted_after.contains_key(id)
    });
    if all.len() > acked.len() {
        eprintln!(
            "{size_kib} KiB: {} unacknowledged event(s) of the failed append survived",
            all.len() - acked.len()
        );
    }
    // By stream: every acknowledged version, in order, and the heads agree.
    for (s, name) in streams.iter().enumerate() {
        let evs = store
            .read_stream(name, 0, Direction::Forwards, usize::MAX)
            .expect("read_stream after reopen");
        let want: Vec<&Acked> = acked.iter().filter(|a| &a.stream == name).collect();
        assert!(
            evs.len() >= want.len(),
            "{size_kib} KiB: {name} lost events"
        );
        for (e, a) in evs.iter().zip(&want) {
            assert_eq!(
                (e.version, e.position, e.id),
                (a.version, a.position, a.id),
                "{size_kib} KiB: {name}"
            );
        }
        let head = store.stream_head(name).expect("stream_head");
        assert_eq!(
            head,
            evs.last().map(|e| e.version),
            "{size_kib} KiB: head of {name}"
        );
        heads[s] = head;
    }
    assert_eq!(
        store.committed_position(),
        all.len() as u64,
        "{size_kib} KiB: committed position after reopen"
    );
    assert_eq!(
        store.verify().expect("verify after reopen"),
        all.len() as u64,
        "{size_kib} KiB: verify"
    );

    // Writable again, with space: on every stream, across a few segment rolls.
    for k in 0..12 {
        let s = k % STREAMS;
        let next_version = heads[s].map_or(0, |h| h + 1);
        let e = filled_event(&mut rng, &streams[s], next_version);
        let r = store
            .append(&streams[s], expected(heads[s]), vec![e])
            .unwrap_or_else(|e| {
                panic!("{size_kib} KiB: append {k} after freeing space failed: {e:?}")
            });
        assert_eq!(r.first_position, all.len() as u64 + k as u64);
        heads[s] = Some(next_version);
    }
    assert_eq!(
        store.verify().expect("verify after new appends"),
        all.len() as u64 + 12
    );
    store.close().expect("close after new appends");
    drop(store);
    drop(mount);

    Some(RoundReport {
        size_kib,
        acked_appends,
        acked_events: acked.len(),
        first_error,
    })
}

#[test]
fn fill_real_tmpfs_then_recover() {
    if !may_mount("enospc_real_disk", "mount rights") {
        return;
    }
    let started = Instant::now();
    let mut reports = Vec::new();
    for (i, &size) in SIZES_KIB.iter().enumerate() {
        if reports.len() == ROUNDS {
            break;
        }
        if let Some(r) = round(size, 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1)) {
            reports.push(r);
        }
    }
    let unclear: Vec<String> = reports
        .iter()
        .filter(|r| !r.first_error.contains("No space left"))
        .map(|r| format!("{} KiB: {:?}", r.size_kib, r.first_error))
        .collect();
    for r in &reports {
        eprintln!(
            "round {} KiB: {} appends / {} events acknowledged; first error: {}",
            r.size_kib, r.acked_appends, r.acked_events, r.first_error
        );
    }
    eprintln!("{} rounds in {:?}", reports.len(), started.elapsed());
    assert_eq!(
        reports.len(),
        ROUNDS,
        "only {} of {ROUNDS} rounds could open a store on tmpfs sizes {SIZES_KIB:?} KiB",
        reports.len()
    );
    assert!(
        unclear.is_empty(),
        "the first failed append of a round did not say the disk is full (recovery itself \
         passed): {unclear:?}"
    );
}
