//! Criterion benchmark of the event-id index: the look-up every appended event costs when its
//! id is not time-ordered (a random, v4-like id: the range checks skip no sealed segment, so
//! every group filter, and every segment's filter outside a group, is probed). Run with
//! `cargo bench -p orchestrix-benches --bench ids`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orchestrix_index::ids::{IdIndex, IdMap};

/// A xorshift generator: random ids without a dependency.
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        for half in id.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            half.copy_from_slice(&self.0.to_le_bytes());
        }
        id
    }
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("id_lookup_random_absent");
    g.throughput(Throughput::Elements(1));
    for segments in [12u64, 50] {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = IdIndex::open(dir.path()).expect("open");
        let mut ids = Ids(0x9e37_79b9_7f4a_7c15);
        // 50,000 ids per segment: a store of 256-byte events holds ~800,000 per 256 MiB
        // segment; the filters' size, not the count, is what the probes feel.
        for s in 0..segments {
            let mut m = IdMap::default();
            for i in 0..50_000 {
                m.insert(ids.next(), s * 50_000 + i);
            }
            idx.write_segment(s * 50_000, &m).expect("write");
        }
        g.bench_with_input(BenchmarkId::from_parameter(segments), &segments, |b, _| {
            b.iter(|| idx.lookup(&ids.next()).expect("lookup"))
        });
    }
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
