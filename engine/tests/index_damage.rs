//! Pins "index deleted, truncated or corrupted" of RELIABILITY.md (the index is derived data:
//! losing it costs time, never events). A store with a few thousand events over many 4 KiB
//! segments is closed cleanly, then `index.redb` is damaged in six ways: deleted, truncated to
//! 0, truncated to half, overwritten with garbage, a middle range zeroed, and replaced by the
//! index of an older state of the same store (copied after a clean close at half the appends).
//! For each, reopen succeeds, every stream and `read_all` read back identical to before, stream
//! heads agree, `verify()` passes and appends continue at the right version and position.

use std::path::Path;

use orchestrix::{
    Direction, EventData, ExpectedVersion, Options, ReadFilter, RecordedEvent, Store,
};

const INDEX_FILE: &str = "index.redb";
const APPENDS: u64 = 1200;
const STREAMS: u64 = 23;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn append_range(store: &Store, range: std::ops::Range<u64>) {
    for k in range {
        let stream = format!(
            "{}-{}",
            ["order", "cart", "user"][(k % 3) as usize],
            k % STREAMS
        );
        let n = 1 + (k % 4) as usize;
        let events = (0..n)
            .map(|i| {
                EventData::json(
                    ["Placed", "Paid", "Shipped"][(k as usize + i) % 3],
                    format!("{{\"k\":{k},\"i\":{i}}}").into_bytes(),
                )
                .with_metadata("k", k.to_string())
            })
            .collect();
        let mut parts = vec![(stream, ExpectedVersion::Any, events)];
        if k.is_multiple_of(7) {
            parts.push((
                format!("audit-{}", k % 2),
                ExpectedVersion::Any,
                vec![EventData::new("Audit", vec![b'a'; 10])],
            ));
        }
        store.append_multi(parts).unwrap();
    }
}

struct Contents {
    all: Vec<RecordedEvent>,
    streams: Vec<(String, Vec<RecordedEvent>)>,
    heads: Vec<(String, u64)>,
}

fn contents(store: &Store) -> Contents {
    let all = store
        .read_all(0, Direction::Forwards, usize::MAX, &ReadFilter::all())
        .unwrap();
    let heads = store.list_streams(None);
    let streams = heads
        .iter()
        .map(|(s, _)| {
            (
                s.clone(),
                store
                    .read_stream(s, 0, Direction::Forwards, usize::MAX)
                    .unwrap(),
            )
        })
        .collect();
    Contents {
        all,
        streams,
        heads,
    }
}

fn damage(path: &Path, mode: &str, older: &Path) {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match mode {
        "deleted" => std::fs::remove_file(path).unwrap(),
        "truncated to 0" => std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(0)
            .unwrap(),
        "truncated to half" => std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len / 2)
            .unwrap(),
        "garbage" => {
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            std::fs::write(path, bytes).unwrap();
        }
        "middle zeroed" => {
            let mut bytes = std::fs::read(path).unwrap();
            let (a, b) = (bytes.len() / 3, 2 * bytes.len() / 3);
            bytes[a..b].fill(0);
            std::fs::write(path, bytes).unwrap();
        }
        "older index" => {
            std::fs::copy(older, path).unwrap();
        }
        _ => unreachable!(),
    }
}

/// Builds the store, damages its index as `mode` says, and checks everything.
fn damage_and_check(mode: &str) {
    let base = tempfile::tempdir().unwrap();
    let older = tempfile::tempdir().unwrap();
    let older_index = older.path().join(INDEX_FILE);
    {
        let store = Store::open_with(base.path(), Options::test()).unwrap();
        append_range(&store, 0..APPENDS / 2);
        store.close().unwrap();
    }
    std::fs::copy(base.path().join(INDEX_FILE), &older_index).unwrap();
    let before = {
        let store = Store::open_with(base.path(), Options::test()).unwrap();
        append_range(&store, APPENDS / 2..APPENDS);
        let live = contents(&store);
        store.close().unwrap();
        drop(store);
        // The reference is read after a clean reopen, when every batch is in the persistent
        // index: reads of the live store can skip versions while the indexer lags (see
        // read_stream_recent_gap.rs), which would make this test flaky for the wrong reason.
        let store = Store::open_with(base.path(), Options::test()).unwrap();
        let c = contents(&store);
        store.close().unwrap();
        assert!(
            live.all == c.all,
            "read_all of the live store differs from after reopen"
        );
        c
    };
    let segments = std::fs::read_dir(base.path().join("log")).map_or(0, |d| d.count());
    assert!(before.all.len() > 2000, "only {} events", before.all.len());
    assert!(segments > 20, "only {segments} segments");

    {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        damage(&dir.path().join(INDEX_FILE), mode, &older_index);
        let (store, report) = Store::open_with_vfs(
            dir.path(),
            Options::test(),
            std::sync::Arc::new(orchestrix_log::fs::StdFs),
        )
        .unwrap_or_else(|e| panic!("{mode}: reopen failed: {e}"));
        let after = contents(&store);
        assert_eq!(after.heads, before.heads, "{mode}: stream heads");
        assert_eq!(after.all.len(), before.all.len(), "{mode}: event count");
        assert!(after.all == before.all, "{mode}: read_all differs");
        for ((s, a), (_, b)) in after.streams.iter().zip(&before.streams) {
            assert!(a == b, "{mode}: stream {s} differs");
        }
        let backwards = store
            .read_all(
                u64::MAX,
                Direction::Backwards,
                usize::MAX,
                &ReadFilter::all(),
            )
            .unwrap();
        assert!(
            backwards.iter().rev().eq(before.all.iter()),
            "{mode}: read_all backwards differs"
        );
        let end = before.all.len() as u64;
        assert_eq!(store.committed_position(), end, "{mode}");
        assert_eq!(store.verify().unwrap(), end, "{mode}: verify");
        // Appends continue where the log ends, with the right versions.
        let (s, head) = before.heads[0].clone();
        let r = store
            .append(
                &s,
                ExpectedVersion::Exact(head),
                vec![EventData::new("After", vec![1])],
            )
            .unwrap_or_else(|e| panic!("{mode}: append after reopen: {e}"));
        assert_eq!(
            (r.first_position, r.streams[0].1),
            (end, head + 1),
            "{mode}"
        );
        // An idempotent repeat of an old event is still recognised through the rebuilt index.
        let old = &before.all[3];
        let repeat =
            EventData::new(old.event_type().to_owned(), old.data().to_vec()).with_id(old.id);
        let r = store
            .append(old.stream(), ExpectedVersion::Any, vec![repeat])
            .unwrap_or_else(|e| panic!("{mode}: repeat of an old event: {e}"));
        assert!(r.already_stored, "{mode}: old id not found after rebuild");
        assert_eq!(r.first_position, old.position, "{mode}");
        store.close().unwrap();
        drop(store);
        let store = Store::open_with(dir.path(), Options::test()).unwrap();
        assert_eq!(
            store.verify().unwrap(),
            end + 1,
            "{mode}: verify after second reopen"
        );
        eprintln!("{mode}: index_rebuilt={}", report.index_rebuilt);
    }
}

#[test]
fn deleted() {
    damage_and_check("deleted");
}

#[test]
fn truncated_to_zero() {
    damage_and_check("truncated to 0");
}

/// Currently fails: redb panics (`assertion failed: storage.raw_file_len()? >= header.layout().len()`
/// in `TransactionalMemory::new`) inside `orchestrix_index::Index::open`, so `Store::open`
/// panics instead of rebuilding the index.
#[test]
fn truncated_to_half() {
    damage_and_check("truncated to half");
}

#[test]
fn overwritten_with_garbage() {
    damage_and_check("garbage");
}

/// Currently fails: open succeeds without noticing the damage (the index is not checked on
/// open), then `read_stream` panics inside redb (`btree_iters.rs:751: entered unreachable
/// code`) via the stream index lookup.
#[test]
fn middle_zeroed() {
    damage_and_check("middle zeroed");
}

#[test]
fn replaced_by_an_older_index() {
    damage_and_check("older index");
}
