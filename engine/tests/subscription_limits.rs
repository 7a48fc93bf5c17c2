//! A subscription's edges, found by a review: a timeout too long to add to the clock, a
//! blocking wait on a tokio worker, a store that fails under a live subscription, and a
//! filter that passes few events over a long backlog. Each test failed before its fix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrix::{
    AsyncStore, Durability, EventData, ExpectedVersion, Options, ReadFilter, Store, StoreError,
};
use orchestrix_log::fs::{StdFs, Vfs};
use orchestrix_log::testing::{FaultKind, FaultyFs};

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

fn ev(t: &str) -> EventData {
    EventData::new(t.to_owned(), vec![b'x'; 8])
}

/// "Wait as long as it takes" must not panic (it overflowed the clock), and returns the event
/// already there.
#[test]
fn a_timeout_too_long_for_the_clock_waits_without_a_deadline() {
    let dir = scratch();
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    store
        .append("s", ExpectedVersion::Any, vec![ev("E")])
        .unwrap();
    let mut sub = store.subscribe_all(0, ReadFilter::all());
    let got = sub.next_timeout(Duration::MAX).unwrap();
    assert_eq!(got.map(|e| e.position), Some(0));
}

/// On the only worker of a multi-thread runtime, a blocking subscription hands the worker's
/// other tasks to another thread while it waits: the async append it waits for goes on (it
/// ran only after the 3 s timeout).
#[test]
fn a_blocking_subscription_on_a_runtime_worker_lets_the_append_it_waits_for_run() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = scratch();
    let store = AsyncStore::new(Store::open_with(dir.path(), Options::test()).unwrap());
    let got = rt.block_on(async {
        let s2 = store.clone();
        let waiter = tokio::spawn(async move {
            let mut sub = s2.store().subscribe_all(0, ReadFilter::all());
            sub.next_timeout(Duration::from_secs(30))
                .unwrap()
                .map(|e| e.position)
        });
        let s3 = store.clone();
        let appender = tokio::spawn(async move {
            s3.append("x", ExpectedVersion::Any, vec![ev("E")])
                .await
                .unwrap();
        });
        let got = waiter.await.unwrap();
        appender.await.unwrap();
        got
    });
    assert_eq!(got, Some(0));
}

/// A store latched read-only by a failed write commits nothing more: a live subscription
/// delivers what was committed, then says `Poisoned` once and ends (it waited on silently).
#[test]
fn a_subscription_on_a_store_that_failed_says_so_and_ends() {
    let dir = scratch();
    let fs = Arc::new(FaultyFs::new(Arc::new(StdFs)));
    let vfs: Arc<dyn Vfs> = fs.clone();
    let (store, _) = Store::open_with_vfs(dir.path(), Options::test(), vfs).unwrap();
    store
        .append("s", ExpectedVersion::Any, vec![ev("E"), ev("E")])
        .unwrap();
    let mut sub = store.subscribe_all(0, ReadFilter::all());
    assert_eq!(
        sub.next_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap()
            .position,
        0
    );
    fs.arm(fs.ops_so_far(), FaultKind::Eio, true);
    assert!(store
        .append("s", ExpectedVersion::Any, vec![ev("E")])
        .is_err());
    let r = store.append("s", ExpectedVersion::Any, vec![ev("E")]);
    assert!(matches!(r, Err(StoreError::Poisoned)), "{r:?}");
    // What was committed before the failure is still delivered.
    assert_eq!(
        sub.next_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap()
            .position,
        1
    );
    let r = sub.next_timeout(Duration::from_secs(5));
    assert!(matches!(r, Err(StoreError::Poisoned)), "{r:?}");
    assert!(sub.is_ended());
    assert!(sub.next().is_none());
    // The tokio stream ends the same way.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = AsyncStore::new(store);
    let got: Vec<_> = rt.block_on(async {
        let mut stream = store.subscribe_all(0, ReadFilter::all()).unwrap();
        let mut got = Vec::new();
        while let Some(r) = std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
        })
        .await
        {
            got.push(r);
        }
        got
    });
    assert_eq!(got.len(), 3);
    assert!(got[..2].iter().all(Result::is_ok));
    assert!(matches!(got[2], Err(StoreError::Poisoned)), "{:?}", got[2]);
}

/// `next_timeout` waits at most about its timeout, also with a filter that passes nothing of
/// a long backlog (one call scanned all of it: 80-180 ms for a million events against a 10
/// ms timeout); and the subscription still finds the event after the backlog.
#[test]
fn a_selective_filter_over_a_backlog_keeps_the_timeout_and_misses_nothing() {
    let dir = scratch();
    let store = Store::open_with(
        dir.path(),
        Options {
            durability: Durability::Never,
            ..Options::default()
        },
    )
    .unwrap();
    for k in 0..4000u64 {
        store
            .append(
                &format!("s{}", k % 50),
                ExpectedVersion::Any,
                (0..250).map(|_| ev("E")).collect(),
            )
            .unwrap();
    }
    let filter = ReadFilter::types(["Wanted"]);
    // What one scan of the whole backlog takes on this machine, now.
    let started = Instant::now();
    store.scan_forwards(0, &filter, &mut |_| true).unwrap();
    let whole_scan = started.elapsed();
    let mut sub = store.subscribe_all(0, filter);
    let started = Instant::now();
    assert!(sub
        .next_timeout(Duration::from_millis(1))
        .unwrap()
        .is_none());
    let took = started.elapsed();
    assert!(
        took < whole_scan / 4,
        "next_timeout(1 ms) took {took:?}; a scan of the whole backlog {whole_scan:?}"
    );
    let wanted = store
        .append("t", ExpectedVersion::NoStream, vec![ev("Wanted")])
        .unwrap();
    let mut calls = 0;
    let found = loop {
        calls += 1;
        if let Some(e) = sub.next_timeout(Duration::from_millis(1)).unwrap() {
            break e;
        }
    };
    assert_eq!(found.position, wanted.first_position);
    assert_eq!(found.stream(), "t");
    assert!(calls > 1, "the backlog took {calls} call(s)");
}
