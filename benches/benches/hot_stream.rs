//! One hot stream in the active segment: 8 writer threads append single events to the same
//! stream (`Durability::Never`, default 256 MiB segments, so every batch stays in the
//! in-memory recent index), then the stream is read at its tail and from its start, appends
//! to another stream are timed while a reader polls the hot stream's tail, and a stream
//! subscription catches up from version 0. These grow with the stream's batches in memory
//! when a read copies them all; a read that looks up only its page does not.
//!
//! Run with `cargo bench -p orchestrix-benches --bench hot_stream` (`ORCHESTRIX_HOT_EVENTS=N`
//! sets the stream's length, 200,000 by default).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use orchestrix::{Direction, Durability, EventData, ExpectedVersion, Options, Store};

const WRITERS: u64 = 8;

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let events: u64 = std::env::var("ORCHESTRIX_HOT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        durability: Durability::Never,
        ..Options::default()
    };
    let store = Arc::new(Store::open_with(dir.path(), opts).expect("open"));
    let per_writer = events / WRITERS;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..per_writer {
                    store
                        .append(
                            "hot",
                            ExpectedVersion::Any,
                            vec![EventData::new("E", vec![w as u8; 20])],
                        )
                        .expect("append");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let total = per_writer * WRITERS;
    let rounds = 100u32;
    let t = Instant::now();
    for _ in 0..rounds {
        let v = store
            .read_stream("hot", u64::MAX, Direction::Backwards, 1)
            .expect("read");
        assert_eq!(v.len(), 1);
    }
    let tail = t.elapsed() / rounds;
    let t = Instant::now();
    for _ in 0..rounds {
        let v = store
            .read_stream("hot", 0, Direction::Forwards, 10)
            .expect("read");
        assert_eq!(v.len(), 10);
    }
    let head = t.elapsed() / rounds;
    println!(
        "hot stream of {total} events: read of its last event {:.1} us, of its first 10 {:.1} us",
        us(tail),
        us(head)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                store
                    .read_stream("hot", u64::MAX, Direction::Backwards, 1)
                    .expect("read");
            }
        })
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    for _ in 0..2000 {
        let t = Instant::now();
        store
            .append(
                "other",
                ExpectedVersion::Any,
                vec![EventData::new("E", vec![1])],
            )
            .expect("append");
        hist.saturating_record(t.elapsed().as_nanos() as u64);
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    println!(
        "appends to another stream while a reader polls the hot stream's tail: p50 {:.1} us  p99 {:.1} us  max {:.1} us",
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
        hist.max() as f64 / 1e3
    );

    let t = Instant::now();
    let mut sub = store
        .subscribe_stream("hot", 0, orchestrix::ReadFilter::all())
        .expect("subscribe");
    for v in 0..total {
        let e = sub
            .next_timeout(Duration::from_secs(10))
            .expect("subscription")
            .expect("an event");
        assert_eq!(e.version, v);
    }
    println!(
        "stream subscription catch-up of {total} events: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}
