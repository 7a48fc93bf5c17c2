//! `read_all` backwards returns exactly the forward order reversed, from any position, with
//! any limit and filter: over frames found through the sparse frame index (one indexed frame
//! per 32 KiB, the others found by scanning forwards from it, which a backward read does once
//! per indexed frame), across segment rolls, and over frames still only in the recent index.

use orchestrix::{Direction, Durability, EventData, ExpectedVersion, Options, ReadFilter, Store};

fn options() -> Options {
    Options {
        durability: Durability::Never,
        // Rolls every ~256 KiB: several indexed regions per segment, several segments.
        segment_size_bytes_max: 256 * 1024,
        ..Options::default()
    }
}

/// Appends `n` one-event frames and `n / 10` ten-event frames, alternating types and streams.
fn fill(store: &Store, n: usize, tag: &str) {
    for i in 0..n {
        let ty = if i % 3 == 0 { "Odd" } else { "Even" };
        let data = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 200));
        store
            .append(
                &format!("{tag}-{}", i % 7),
                ExpectedVersion::Any,
                vec![EventData::json(ty, data.into_bytes())],
            )
            .unwrap();
        if i % 10 == 0 {
            let events = (0..10)
                .map(|j| EventData::json("Batch", format!("{{\"j\":{j}}}").into_bytes()))
                .collect();
            store
                .append(&format!("batch-{tag}"), ExpectedVersion::Any, events)
                .unwrap();
        }
    }
}

fn positions(events: &[orchestrix::RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

fn check(store: &Store, filters: &[ReadFilter]) {
    for filter in filters {
        let all = store
            .read_all(0, Direction::Forwards, usize::MAX, filter)
            .unwrap();
        let forwards = positions(&all);
        let by_position: std::collections::HashMap<u64, &orchestrix::RecordedEvent> =
            all.iter().map(|e| (e.position, e)).collect();
        let end = all.last().map_or(0, |e| e.position + 1);
        let mut starts: Vec<u64> = (0..end).step_by(997).collect();
        starts.extend([0, end.saturating_sub(1), end, end + 5, u64::MAX]);
        for &from in &starts {
            for limit in [1usize, 3, 64, 1000, usize::MAX] {
                let got = store
                    .read_all(from, Direction::Backwards, limit, filter)
                    .unwrap();
                let want: Vec<u64> = forwards
                    .iter()
                    .rev()
                    .copied()
                    .filter(|&p| p <= from)
                    .take(limit)
                    .collect();
                assert_eq!(
                    positions(&got),
                    want,
                    "from {from} limit {limit} filter {filter:?}"
                );
                // The events themselves, not only their positions.
                for e in &got {
                    assert_eq!(
                        by_position.get(&e.position),
                        Some(&e),
                        "event at {}",
                        e.position
                    );
                }
            }
        }
        // Paging backwards from the end meets every event once.
        let mut paged = Vec::new();
        let mut from = u64::MAX;
        loop {
            let page = store
                .read_all(from, Direction::Backwards, 250, filter)
                .unwrap();
            let Some(last) = page.last() else { break };
            let next = last.position.checked_sub(1);
            paged.extend(positions(&page));
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        paged.reverse();
        assert_eq!(paged, forwards, "paged backwards, filter {filter:?}");
    }
}

#[test]
fn backwards_is_forwards_reversed() {
    let dir = tempfile::tempdir().unwrap();
    let filters = [
        ReadFilter::all(),
        ReadFilter::types(["Odd"]),
        ReadFilter::stream_prefix("batch-"),
    ];
    {
        let store = Store::open_with(dir.path(), options()).unwrap();
        fill(&store, 3000, "a");
        // Before the indexer has caught up, part of the log is found in the recent index.
        check(&store, &filters);
    }
    // Reopened: the log is indexed; new appends are in the recent index again.
    let store = Store::open_with(dir.path(), options()).unwrap();
    fill(&store, 500, "b");
    check(&store, &filters);
    let segments = std::fs::read_dir(dir.path().join("log")).unwrap().count();
    assert!(segments > 3, "only {segments} segment files: no rolls");
}
