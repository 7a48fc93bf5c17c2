//! Criterion benchmarks of the engine: append latency (durable), read_stream of a 100-event
//! stream, and a read_all scan. Run with `cargo bench -p orchestrix-benches`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use orchestrix::{Direction, Durability, EventData, ExpectedVersion, Options, ReadFilter, Store};
use orchestrix_benches::payload;

fn append_one_durable(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let data = payload();
    let mut v: Option<u64> = None;
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_event_fsync_always", |b| {
        b.iter(|| {
            let expected = v.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            let r = store
                .append("bench", expected, vec![EventData::json("E", data.clone())])
                .expect("append");
            v = Some(r.next_expected_version());
        })
    });
    g.finish();
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        durability: Durability::Never,
        ..Options::default()
    };
    let store = Store::open_with(dir.path(), opts).expect("open");
    let data = payload();
    // 100 streams of 100 events, appended one event at a time, interleaved.
    for v in 0..100u64 {
        for s in 0..100 {
            let expected = if v == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(v - 1)
            };
            store
                .append(
                    &format!("s-{s}"),
                    expected,
                    vec![EventData::json("E", data.clone())],
                )
                .expect("append");
        }
    }
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(100));
    let mut k = 0;
    g.bench_function("read_stream_100_events", |b| {
        b.iter(|| {
            k = (k + 1) % 100;
            let e = store
                .read_stream(&format!("s-{k}"), 0, Direction::Forwards, 100)
                .expect("read");
            assert_eq!(e.len(), 100);
        })
    });
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("read_all_scan_10k", |b| {
        b.iter_batched(
            || (),
            |_| {
                let mut n = 0u64;
                store
                    .scan_forwards(0, &ReadFilter::all(), &mut |_| {
                        n += 1;
                        true
                    })
                    .expect("scan");
                assert_eq!(n, 10_000);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, append_one_durable, reads);
criterion_main!(benches);
