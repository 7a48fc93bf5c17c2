//! Regression test for a `read_stream` gap: when the persistent stream index holds more than
//! 64 batches of a stream past `from_version` and the newest batches are still only in the
//! in-memory "recent" index (the indexer has not applied them yet), `Inner::stream_batches`
//! returns the first 64 index batches plus ALL recent batches, and `read_stream` (which jumps
//! `next` to each batch's version) silently skips every version in between. Found by
//! `concurrent_writers.rs` (read_stream returned versions 0..=63 and 4799 of 4800).

use orchestrix::{Direction, EventData, ExpectedVersion, Options, Store};

#[test]
fn read_stream_has_no_gap_while_the_indexer_lags() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), Options::test()).unwrap();
        for v in 0..100u64 {
            let x = v
                .checked_sub(1)
                .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            store
                .append("s", x, vec![EventData::new("E", vec![1])])
                .unwrap();
        }
        store.close().unwrap();
    }
    // Now the 100 batches are in the persistent index. Each new append is read back at once,
    // usually before the indexer has moved it from the recent index to the persistent one.
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    let mut gaps = Vec::new();
    for v in 100..300u64 {
        store
            .append(
                "s",
                ExpectedVersion::Exact(v - 1),
                vec![EventData::new("E", vec![2])],
            )
            .unwrap();
        let got = store
            .read_stream("s", 0, Direction::Forwards, usize::MAX)
            .unwrap();
        if got.len() as u64 != v + 1 {
            gaps.push((v, got.len()));
        }
    }
    assert!(
        gaps.is_empty(),
        "read_stream returned fewer events than the head implies (head, events read): {:?}",
        &gaps[..gaps.len().min(10)]
    );
}
