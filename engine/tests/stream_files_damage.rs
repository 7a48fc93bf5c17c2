//! The stream index files (one per sealed segment, under `streams/`) are derived data:
//! deleted, truncated or bit-flipped, they are rebuilt from their segments, and every stream
//! reads back whole, forwards and backwards. A damaged chunk found by a read (header intact,
//! so open kept the file) is rebuilt in place by that read. Losing the persistent index's rows
//! for the files (the index deleted) registers the files again without rewriting them.
//!
//! Two cases where the read must not depend on that rewrite:
//!
//! - after `close()`: a closed store writes nothing more (as `save_snapshot` holds to), yet
//!   such a read rewrote the file;
//! - when the file cannot be written (here a directory stands where its temporary copy goes,
//!   as for a full or read-only disk): the read failed with the write's error, although every
//!   event is in the log and the segment was just scanned to rebuild the file. The index is
//!   derived data: its damage costs time, not reads of the events.
//!
//! In both the read now takes the chunk from the scan of the segment, in memory.

use orchestrix::{Direction, EventData, ExpectedVersion, Options, Store};

const STREAMS: u32 = 5;
const EVENTS: u32 = 400;

/// Builds a store with many 4 KiB segments: stream `s-k` gets events `n` with `n % 5 == k`.
fn build(dir: &std::path::Path) {
    let s = Store::open_with(dir, Options::test()).unwrap();
    for n in 0..EVENTS {
        s.append(
            &format!("s-{}", n % STREAMS),
            ExpectedVersion::Any,
            vec![EventData::json("E", format!("{{\"n\":{n}}}").into_bytes())],
        )
        .unwrap();
    }
}

fn stream_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("streams"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "streams"))
        .collect();
    v.sort();
    v
}

/// Flips a bit of the last entry of every file (headers intact, so open keeps them).
fn damage_entries(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    stream_files(dir)
        .into_iter()
        .map(|f| {
            let mut b = std::fs::read(&f).unwrap();
            let last = b.len() - 1;
            b[last] ^= 0x01;
            std::fs::write(&f, &b).unwrap();
            (f, b)
        })
        .collect()
}

/// Every stream reads back whole in both directions, from its start and from its middle.
fn check_reads(s: &Store) {
    for k in 0..STREAMS {
        let stream = format!("s-{k}");
        let want: Vec<String> = (0..EVENTS)
            .filter(|n| n % STREAMS == k)
            .map(|n| format!("{{\"n\":{n}}}"))
            .collect();
        let data = |evs: Vec<orchestrix::RecordedEvent>| -> Vec<String> {
            evs.iter()
                .map(|e| String::from_utf8(e.data().to_vec()).unwrap())
                .collect()
        };
        let fwd = s
            .read_stream(&stream, 0, Direction::Forwards, 1000)
            .unwrap();
        assert_eq!(data(fwd), want, "{stream} forwards");
        let mid = s.read_stream(&stream, 37, Direction::Forwards, 10).unwrap();
        assert_eq!(data(mid), want[37..47].to_vec(), "{stream} from 37");
        let mut back = want.clone();
        back.reverse();
        let bwd = s
            .read_stream(&stream, u64::MAX, Direction::Backwards, 1000)
            .unwrap();
        assert_eq!(data(bwd), back, "{stream} backwards");
    }
}

fn check(dir: &std::path::Path) {
    let s = Store::open_with(dir, Options::test()).unwrap();
    let info = s.info().unwrap();
    assert!(info.stream_files > 3, "sealed segments have stream files");
    assert_eq!(
        info.stream_files,
        info.segments.len() - 1,
        "one file per sealed segment"
    );
    check_reads(&s);
    assert_eq!(s.verify().unwrap(), u64::from(EVENTS));
}

#[test]
fn deleted_stream_directory_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    std::fs::remove_dir_all(dir.path().join("streams")).unwrap();
    check(dir.path());
}

#[test]
fn truncated_stream_file_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let f = stream_files(dir.path())[0].clone();
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    check(dir.path());
}

#[test]
fn flipped_header_byte_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let f = stream_files(dir.path())[1].clone();
    let mut b = std::fs::read(&f).unwrap();
    b[20] ^= 0x10;
    std::fs::write(&f, &b).unwrap();
    check(dir.path());
}

#[test]
fn flipped_entry_byte_is_found_by_the_read_and_rebuilt_in_place() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let files = stream_files(dir.path());
    // Damage the entries of every file, so that every sealed batch read hits one.
    let mut damaged = Vec::new();
    for f in &files {
        let mut b = std::fs::read(f).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0x01;
        std::fs::write(f, &b).unwrap();
        damaged.push(b);
    }
    {
        let s = Store::open_with(dir.path(), Options::test()).unwrap();
        let e = s.verify().unwrap_err().to_string();
        assert!(
            e.contains("stream index file") && e.contains("damaged"),
            "{e}"
        );
        check_reads(&s);
        for (f, b) in files.iter().zip(&damaged) {
            assert_ne!(&std::fs::read(f).unwrap(), b, "{f:?} was rewritten");
        }
    }
    check(dir.path());
}

#[test]
fn lost_index_registers_the_files_again() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let before: Vec<Vec<u8>> = stream_files(dir.path())
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    std::fs::remove_file(dir.path().join("index.redb")).unwrap();
    check(dir.path());
    let after: Vec<Vec<u8>> = stream_files(dir.path())
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    assert_eq!(before, after, "the files are reused as they were");
}

#[test]
fn a_read_after_close_writes_no_stream_file() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    // Reopened once, so that every sealed segment's file is registered.
    drop(Store::open_with(dir.path(), Options::test()).unwrap());
    let damaged = damage_entries(dir.path());
    assert!(damaged.len() > 3);
    let s = Store::open_with(dir.path(), Options::test()).unwrap();
    s.close().unwrap();
    check_reads(&s);
    for (f, b) in &damaged {
        assert!(
            &std::fs::read(f).unwrap() == b,
            "{f:?} was written after close()"
        );
    }
    drop(s);
    // The next open still finds the damage, and reads rebuild the files.
    let s = Store::open_with(dir.path(), Options::test()).unwrap();
    check_reads(&s);
    assert_eq!(s.verify().unwrap(), u64::from(EVENTS));
}

#[test]
fn a_damaged_chunk_is_read_when_its_file_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    drop(Store::open_with(dir.path(), Options::test()).unwrap());
    let damaged = damage_entries(dir.path());
    // Every rebuild's temporary file is blocked.
    let blockers: Vec<std::path::PathBuf> = damaged
        .iter()
        .map(|(f, _)| {
            let mut tmp = f.clone().into_os_string();
            tmp.push(".tmp");
            tmp.into()
        })
        .collect();
    let s = Store::open_with(dir.path(), Options::test()).unwrap();
    for b in &blockers {
        std::fs::create_dir(b).unwrap();
    }
    check_reads(&s);
    // Once the files can be written, a read rebuilds them.
    for b in &blockers {
        std::fs::remove_dir(b).unwrap();
    }
    check_reads(&s);
    assert_eq!(s.verify().unwrap(), u64::from(EVENTS));
}
