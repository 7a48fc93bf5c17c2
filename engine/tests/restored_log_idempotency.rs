//! Idempotency after the documented way to open a log restored from an older copy (delete
//! `index.redb`, reopen: docs/architecture.md).
//!
//! The group filter files (`ids/*.group`, one bloom filter over 8 sealed segments) outlived
//! that open although segments they named were gone; new segments that got the same first
//! positions were then looked up through the stale filter, which did not hold their ids: a
//! repeat of a stored append was written a second time (65 of 121), and an id stored in one
//! stream was accepted again in another (66 of 121). Found by a review.

use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store};
use uuid::Uuid;

fn ev(v4: bool) -> EventData {
    let e = EventData::new("E", vec![7u8; 100]);
    if v4 {
        e.with_id(Uuid::new_v4())
    } else {
        e
    }
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Appends single events to "s" until the log has `n` segments; returns them.
fn fill(s: &Store, dir: &std::path::Path, n: usize, v4: bool) -> Vec<EventData> {
    let mut out = Vec::new();
    while segments(dir) < n {
        let e = ev(v4);
        s.append("s", ExpectedVersion::Any, vec![e.clone()])
            .unwrap();
        out.push(e);
    }
    out
}

#[test]
fn repeats_are_recognised_after_restoring_an_older_log_v4_ids() {
    run(true);
}

#[test]
fn repeats_are_recognised_after_restoring_an_older_log_default_v7_ids() {
    run(false);
}

fn run(v4: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let backup = tempfile::tempdir().unwrap();
    {
        let s = Store::open_with(d, Options::test()).unwrap();
        fill(&s, d, 3, v4);
    }
    copy_dir(&d.join("log"), backup.path());
    {
        let s = Store::open_with(d, Options::test()).unwrap();
        fill(&s, d, 14, v4);
    }
    // Reopen once more so every sealed segment has its id file and the group filters exist.
    drop(Store::open_with(d, Options::test()).unwrap());
    let groups: Vec<_> = std::fs::read_dir(d.join("ids"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".group"))
        .collect();
    println!("group files before the restore: {groups:?}");
    assert!(!groups.is_empty());

    // Restore the older copy of the log, delete the index (the documented way to open it).
    std::fs::remove_dir_all(d.join("log")).unwrap();
    copy_dir(backup.path(), &d.join("log"));
    std::fs::remove_file(d.join("index.redb")).unwrap();

    let new_events;
    {
        let s = Store::open_with(d, Options::test()).unwrap();
        new_events = fill(&s, d, 14, v4);
    }
    let s = Store::open_with(d, Options::test()).unwrap();
    let before = s.committed_position();
    // Odd events: repeated in their stream. Even events: their ids reused in another stream.
    let mut rewritten = 0;
    let mut reused_elsewhere = 0;
    for (i, e) in new_events.iter().enumerate() {
        if i % 2 == 1 {
            let r = s
                .append("s", ExpectedVersion::Any, vec![e.clone()])
                .unwrap_or_else(|err| panic!("{err}"));
            if !r.already_stored {
                rewritten += 1;
            }
        } else if s
            .append("other", ExpectedVersion::Any, vec![e.clone()])
            .is_ok()
        {
            reused_elsewhere += 1;
        }
    }
    println!(
        "{} stored events tried (odd: repeated, even: reused in another stream); {rewritten} repeats written again; {reused_elsewhere} ids accepted again in another stream; committed {before} -> {}",
        new_events.len(),
        s.committed_position()
    );
    let all = s
        .read_all(0, Direction::Forwards, 1_000_000, &ReadFilter::all())
        .unwrap();
    let mut ids: Vec<Uuid> = all.iter().map(|e| e.id).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    println!("{} events stored, {} distinct ids", n, ids.len());
    assert_eq!(rewritten, 0, "repeats written as new events");
    assert_eq!(reused_elsewhere, 0, "stored ids reused in another stream");
    assert_eq!(s.committed_position(), before);
}
