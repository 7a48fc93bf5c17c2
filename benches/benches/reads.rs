//! Read-path figures with percentiles (criterion reports means; the targets are p99s):
//! read_stream of a 100-event stream from a warm cache over a store of 1,000,000 events in
//! 10,000 streams, the memory floor under it (the same bytes read and checksummed at random
//! places, nothing else), a full read_all scan, and open time. Run with
//! `cargo bench -p orchestrix-benches --bench reads`. With `ORCHESTRIX_READS_STORE=DIR` the
//! store is kept in DIR and reused by later runs (for profiling the reads alone). With
//! `ORCHESTRIX_READS_MULTI=1` a new store is loaded by appends of 1,000 streams x 10 events
//! instead of one stream per append (each append a unit of 1,000 frames; before units it was
//! one frame of 10,000 events that every read of one of its streams decoded whole, see
//! `docs/benchmarks.md`).
//! `ORCHESTRIX_READS_SAMPLES=N` changes the number of timed reads (20,000).

use std::time::Instant;

use hdrhistogram::Histogram;
use orchestrix::{Direction, Durability, EventData, ExpectedVersion, Options, ReadFilter, Store};
use orchestrix_benches::payload;

const STREAMS: usize = 10_000;
const EVENTS_PER_STREAM: usize = 100;
const SAMPLES: usize = 20_000;
/// Events read by each direction of the paged `read_all`.
const PAGED_EVENTS: usize = 200_000;
/// Streams per append with `ORCHESTRIX_READS_MULTI`.
const MULTI_STREAMS: usize = 1_000;

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let kept = std::env::var_os("ORCHESTRIX_READS_STORE").map(std::path::PathBuf::from);
    let reuse = kept.as_ref().is_some_and(|d| d.join("index.redb").exists());
    let dir = kept.unwrap_or_else(|| tmp.path().to_path_buf());
    let opts = Options {
        durability: Durability::Never,
        ..Options::default()
    };
    let data = payload();
    if !reuse {
        let store = Store::open_with(&dir, opts.clone()).expect("open");
        // Each stream gets its 100 events in 10 appends of 10, interleaved with the other
        // streams, so a stream's events are spread over the log as in a live system (with
        // ORCHESTRIX_READS_MULTI, 1,000 streams' 10 events per append).
        let t = Instant::now();
        let multi = std::env::var_os("ORCHESTRIX_READS_MULTI").is_some();
        for round in 0..10u64 {
            let expected = if round == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(round * 10 - 1)
            };
            if multi {
                for g in 0..STREAMS / MULTI_STREAMS {
                    let parts = (g * MULTI_STREAMS..(g + 1) * MULTI_STREAMS)
                        .map(|s| {
                            let events = (0..10)
                                .map(|_| EventData::json("E", data.clone()))
                                .collect();
                            (format!("stream-{s}"), expected, events)
                        })
                        .collect();
                    store.append_multi(parts).expect("append");
                }
                continue;
            }
            for s in 0..STREAMS {
                let events = (0..10)
                    .map(|_| EventData::json("E", data.clone()))
                    .collect();
                store
                    .append(&format!("stream-{s}"), expected, events)
                    .expect("append");
            }
        }
        println!(
            "loaded {} events in {:.1} s",
            STREAMS * EVENTS_PER_STREAM,
            t.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    let store = Store::open_with(&dir, opts).expect("reopen");
    println!(
        "open after clean shutdown: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    // Warm the cache, then sample.
    let samples: usize = std::env::var("ORCHESTRIX_READS_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SAMPLES);
    for s in 0..STREAMS.min(samples) {
        let _ = store.read_stream(&format!("stream-{s}"), 0, Direction::Forwards, 100);
    }
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let name = format!("stream-{}", x % STREAMS as u64);
        let t = Instant::now();
        let e = store
            .read_stream(&name, 0, Direction::Forwards, 100)
            .expect("read");
        let ns = t.elapsed().as_nanos() as u64;
        assert_eq!(e.len(), EVENTS_PER_STREAM);
        h.record(ns).expect("record");
    }
    println!(
        "read_stream 100 events (warm, 1 reader, {samples} samples): p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
        h.max() as f64 / 1e3
    );

    memory_floor(&dir, samples, x);

    for round in 0..3 {
        let t = Instant::now();
        let mut n = 0u64;
        store
            .scan_forwards(0, &ReadFilter::all(), &mut |_| {
                n += 1;
                true
            })
            .expect("scan");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "read_all scan round {round}: {n} events in {:.2} s = {:.0} events/s",
            secs,
            n as f64 / secs
        );
    }
    read_all_pages(&store);
    println!("{}", memory_line());
}

/// `read_all` in pages of 1,000 events, forwards from the start and backwards from the end
/// (a console listing the newest events first pages this way), over the first / last
/// [`PAGED_EVENTS`] events.
fn read_all_pages(store: &Store) {
    const PAGE: usize = 1000;
    for direction in [Direction::Forwards, Direction::Backwards] {
        let t = Instant::now();
        let mut n = 0usize;
        let mut from = match direction {
            Direction::Forwards => 0,
            Direction::Backwards => u64::MAX,
        };
        while n < PAGED_EVENTS {
            let page = store
                .read_all(from, direction, PAGE, &ReadFilter::all())
                .expect("read_all");
            let Some(last) = page.last() else {
                break;
            };
            n += page.len();
            from = match direction {
                Direction::Forwards => last.position + 1,
                Direction::Backwards if last.position == 0 => break,
                Direction::Backwards => last.position - 1,
            };
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "read_all {direction:?} in pages of {PAGE}: {n} events in {:.3} s = {:.0} events/s",
            secs,
            n as f64 / secs
        );
    }
}

/// What the bytes of one stream read cost alone: ten ranges the size of the average frame
/// (one append of 10 events) at random places of the store's segment files, each first
/// touched (as the read path's prefetch does) and then checksummed, as a read must before
/// decoding. The floor under `read_stream` when a stream's frames are spread over a store much
/// larger than the processor's caches; everything else a read does comes on top.
fn memory_floor(dir: &std::path::Path, samples: usize, mut x: u64) {
    let mut maps = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir.join("log"))
        .expect("log dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    entries.sort();
    for path in entries {
        let file = std::fs::File::open(&path).expect("segment");
        // SAFETY: nothing writes to the store while this runs (it is only read), and no other
        // process knows its temporary directory.
        let map = unsafe { memmap2::Mmap::map(&file) }.expect("map");
        maps.push(map);
    }
    let total: usize = maps.iter().map(|m| m.len()).sum();
    let frame = total / (STREAMS * EVENTS_PER_STREAM / 10);
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let mut crc = 0u32;
    for _ in 0..samples {
        let mut ranges = [(0usize, 0usize); 10];
        for r in &mut ranges {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let m = (x % maps.len() as u64) as usize;
            let room = maps[m].len().saturating_sub(frame).max(1);
            *r = (m, (x >> 20) as usize % room);
        }
        let t = Instant::now();
        let mut touched = 0u8;
        for &(m, at) in &ranges {
            touched ^= maps[m][at];
        }
        for &(m, at) in &ranges {
            let end = (at + frame).min(maps[m].len());
            crc ^= crc32fast::hash(&maps[m][at..end]);
        }
        h.record(t.elapsed().as_nanos() as u64).expect("record");
        std::hint::black_box(touched);
    }
    std::hint::black_box(crc);
    println!(
        "memory floor of a 100-event read (10 random ranges of {frame} bytes, touched and checksummed, {samples} samples): p50 {:.1} us  p99 {:.1} us",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
    );
}

/// The process's resident memory from `/proc/self/status`: anonymous (heap) and file-backed
/// (pages of mapped files: the segments read through their maps, redb's file), in MiB.
fn memory_line() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or("?".into(), |kb| format!("{:.1}", kb as f64 / 1024.0))
    };
    format!(
        "resident memory: {} MiB ({} MiB anonymous, {} MiB mapped files); peak {} MiB",
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("VmHWM:")
    )
}
