//! `scan_forwards` lends each event to the visitor: the events seen (and clones kept) are the
//! ones `read_all` returns, in order; stopping early and filtering return the position after
//! the last event examined, so a scan can resume there.

use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store};

#[test]
fn lent_events_match_read_all_and_scans_resume_where_they_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path(), Options::test()).unwrap();
    // Frames of 1 to 5 events, some with two streams, two event types: 4 KiB segments roll.
    for i in 0..60u32 {
        let events = |t: &str, n: u32| {
            (0..n)
                .map(|k| {
                    EventData::json(
                        t.to_owned(),
                        format!("{{\"i\":{i},\"k\":{k}}}").into_bytes(),
                    )
                    .with_metadata("k", k.to_string())
                })
                .collect::<Vec<_>>()
        };
        let n = i % 5 + 1;
        if i % 3 == 0 {
            s.append_multi(vec![
                (format!("a-{}", i % 4), ExpectedVersion::Any, events("A", n)),
                (format!("b-{}", i % 4), ExpectedVersion::Any, events("B", 2)),
            ])
            .unwrap();
        } else {
            s.append(
                &format!("a-{}", i % 4),
                ExpectedVersion::Any,
                events("A", n),
            )
            .unwrap();
        }
    }
    let all = s
        .read_all(0, Direction::Forwards, usize::MAX, &ReadFilter::all())
        .unwrap();
    assert!(all.len() > 200);

    let mut kept = Vec::new();
    let end = s
        .scan_forwards(0, &ReadFilter::all(), &mut |e| {
            kept.push(e.clone());
            true
        })
        .unwrap();
    assert_eq!(end, all.len() as u64);
    assert_eq!(kept, all);
    // Kept clones outlive the scan with their fields intact.
    for (e, r) in kept.iter().zip(&all) {
        assert_eq!(
            (e.stream(), e.version, e.data()),
            (r.stream(), r.version, r.data())
        );
        assert_eq!(
            e.metadata().collect::<Vec<_>>(),
            r.metadata().collect::<Vec<_>>()
        );
    }

    // Stop after 7 events: the scan resumes at the position after the seventh.
    let mut seen = Vec::new();
    let next = s
        .scan_forwards(0, &ReadFilter::all(), &mut |e| {
            seen.push(e.position);
            seen.len() < 7
        })
        .unwrap();
    assert_eq!(seen, (0..7).collect::<Vec<u64>>());
    assert_eq!(next, 7);
    let mut rest = Vec::new();
    s.scan_forwards(next, &ReadFilter::all(), &mut |e| {
        rest.push(e.position);
        true
    })
    .unwrap();
    assert_eq!(rest, (7..all.len() as u64).collect::<Vec<u64>>());

    // Filtered: only B events are lent, and the end is past every event examined.
    let b_positions: Vec<u64> = all
        .iter()
        .filter(|e| e.event_type() == "B")
        .map(|e| e.position)
        .collect();
    let mut bs = Vec::new();
    let end = s
        .scan_forwards(0, &ReadFilter::types(["B"]), &mut |e| {
            assert_eq!(e.event_type(), "B");
            bs.push(e.position);
            true
        })
        .unwrap();
    assert_eq!(bs, b_positions);
    assert_eq!(end, all.len() as u64);
}
