//! Closing a store that is in use: what it finishes, what it waits for, and what it holds.
//!
//! - A subscription delivers every append acknowledged before the close, then ends (it ended
//!   at the first empty read after close began, while the writer was still draining and
//!   acknowledging appends it then never delivered).
//! - Close under `Interval` durability does not wait for the sync timer's next tick (it
//!   waited up to the whole interval: an hour, with `Interval(1 h)`).
//! - A subscription outliving its `Store` keeps the directory locked: a reopen meanwhile is
//!   refused as locked (it used to find the index held open, take it for damaged, delete it and
//!   rebuild it from the whole log), and once the subscription is dropped the store reopens
//!   with its index.

use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use orchestrix::{
    AsyncStore, Durability, EventData, ExpectedVersion, Options, ReadFilter, Store, StoreError,
};

fn ev() -> Vec<EventData> {
    vec![EventData::json("E", b"{}".to_vec())]
}

/// 8 writer threads append until the store closes; returns how many appends were acknowledged.
fn write_until_closed(store: &Arc<Store>) -> Vec<std::thread::JoinHandle<u64>> {
    (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut acked = 0u64;
                loop {
                    match store.append(&format!("w-{t}"), ExpectedVersion::Any, ev()) {
                        Ok(_) => acked += 1,
                        Err(StoreError::Closed) => return acked,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect()
}

#[test]
fn a_subscription_delivers_every_acknowledged_append_before_it_ends() {
    for round in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_with(dir.path(), Options::test()).unwrap());
        let all = store.subscribe_all(0, ReadFilter::all());
        let one = store.subscribe_stream("w-3", 0, ReadFilter::all()).unwrap();
        let all =
            std::thread::spawn(move || all.map(|e| e.unwrap().position).collect::<Vec<u64>>());
        let one = std::thread::spawn(move || {
            let versions: Vec<u64> = one.map(|e| e.unwrap().version).collect();
            assert!(versions.iter().enumerate().all(|(i, &v)| v == i as u64));
            versions.len() as u64
        });
        let writers = write_until_closed(&store);
        std::thread::sleep(Duration::from_millis(50 + 20 * round));
        store.close().unwrap();
        let acked: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        let total: u64 = acked.iter().sum();
        let all = all.join().unwrap();
        assert_eq!(store.committed_position(), total, "round {round}");
        assert_eq!(
            all,
            (0..total).collect::<Vec<u64>>(),
            "round {round}: the subscription to all did not deliver each acknowledged append once"
        );
        assert_eq!(one.join().unwrap(), acked[3], "round {round}: stream w-3");
    }
}

#[test]
fn the_tokio_stream_delivers_every_acknowledged_append_before_it_ends() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_with(dir.path(), Options::test()).unwrap());
        let mut stream = Box::pin(
            AsyncStore::from(store.clone())
                .subscribe_all(0, ReadFilter::all())
                .unwrap(),
        );
        let consumer = rt.spawn(async move {
            let mut seen = 0u64;
            while let Some(e) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
                assert_eq!(e.unwrap().position, seen);
                seen += 1;
            }
            seen
        });
        let writers = write_until_closed(&store);
        std::thread::sleep(Duration::from_millis(50 + 30 * round));
        store.close().unwrap();
        let total: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(rt.block_on(consumer).unwrap(), total, "round {round}");
    }
}

#[test]
fn close_does_not_wait_for_the_sync_timer() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        durability: Durability::Interval(Duration::from_secs(3600)),
        ..Options::test()
    };
    let store = Store::open_with(dir.path(), options.clone()).unwrap();
    store.append("s", ExpectedVersion::Any, ev()).unwrap();
    // Closed (and then dropped) on another thread; without the fix it would take an hour.
    let (done, finished) = channel();
    std::thread::spawn(move || {
        store.close().unwrap();
        drop(store);
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("close waited for the sync timer");
    // What close made durable is there.
    let store = Store::open_with(dir.path(), options).unwrap();
    assert_eq!(store.stream_head("s").unwrap(), Some(0));
    // The async API's close, too.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    drop(store);
    let (done, finished) = channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        rt.block_on(async {
            let store = AsyncStore::new(
                Store::open_with(
                    &path,
                    Options {
                        durability: Durability::Interval(Duration::from_secs(3600)),
                        ..Options::test()
                    },
                )
                .unwrap(),
            );
            store.close().await.unwrap();
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("AsyncStore::close waited for the sync timer");
}

#[test]
fn a_subscription_of_a_dropped_store_keeps_it_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    for i in 0..500 {
        store
            .append(&format!("s-{}", i % 10), ExpectedVersion::Any, ev())
            .unwrap();
    }
    let sub = store.subscribe_all(0, ReadFilter::all());
    store.close().unwrap();
    drop(store);
    match Store::open_with(dir.path(), Options::test()) {
        Err(e @ StoreError::Locked { .. }) => {
            assert!(e.to_string().contains("subscription"), "{e}")
        }
        Err(e) => panic!("reopen with a live subscription: {e}"),
        Ok(_) => panic!("reopened while a subscription of the old store holds its files"),
    }
    // The subscription still delivers what the store had, then ends.
    assert_eq!(sub.count(), 500);
    let (store, report) = Store::open_with_vfs(
        dir.path(),
        Options::test(),
        Arc::new(orchestrix_log::fs::StdFs),
    )
    .unwrap();
    assert!(!report.index_rebuilt, "the index was rebuilt");
    assert_eq!(store.committed_position(), 500);
}

#[test]
fn a_closed_store_writes_nothing_and_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), Options::test()).unwrap();
    store.append("s", ExpectedVersion::Any, ev()).unwrap();
    store.close().unwrap();
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, ev()),
        Err(StoreError::Closed)
    ));
    assert!(matches!(store.sync(), Err(StoreError::Closed)));
    let snapshot = orchestrix::snapshot::Snapshot {
        stream: "s".into(),
        version: 0,
        aggregate_type: "A".into(),
        state: b"state".to_vec(),
    };
    assert!(matches!(
        store.save_snapshot(&snapshot),
        Err(StoreError::Closed)
    ));
    assert_eq!(store.load_snapshot("s").unwrap(), None);
    let read = store
        .read_stream("s", 0, orchestrix::Direction::Forwards, 10)
        .unwrap();
    assert_eq!(read.len(), 1);
}

/// A second `close` while the first is running returns once the store is closed, not at once.
#[test]
fn a_second_close_waits_for_the_first() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_with(dir.path(), Options::test()).unwrap());
        let sub = store.subscribe_all(0, ReadFilter::all());
        let writers = write_until_closed(&store);
        std::thread::sleep(Duration::from_millis(30));
        let first = {
            let store = store.clone();
            std::thread::spawn(move || store.close().unwrap())
        };
        std::thread::sleep(Duration::from_millis(1));
        store.close().unwrap();
        assert!(
            sub.is_closed(),
            "the second close returned before the store closed"
        );
        first.join().unwrap();
        let total: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(store.committed_position(), total);
    }
}

/// Dropping a tokio subscription stream (waiting for new events) and then the store lets go of
/// the directory: it reopens.
#[test]
fn a_dropped_stream_lets_go_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let store = AsyncStore::new(Store::open_with(dir.path(), Options::test()).unwrap());
        if round == 0 {
            for i in 0..200 {
                store
                    .store()
                    .append(&format!("s-{}", i % 10), ExpectedVersion::Any, ev())
                    .unwrap();
            }
        }
        // A filter nothing passes: the stream's thread reads to the end and waits.
        let stream = store.subscribe_all(0, ReadFilter::types(["Nope"])).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        drop(stream);
        drop(store);
        // The stream's thread ends when woken: give it a moment, not the 100 ms wait slice
        // it would otherwise sleep out (60 ms leave room for a loaded machine's scheduling
        // and still catch a thread that waits its slice in most of the 20 rounds).
        let start = std::time::Instant::now();
        let reopened = loop {
            match Store::open_with(dir.path(), Options::test()) {
                Ok(s) => break s,
                Err(StoreError::Locked { .. }) if start.elapsed() < Duration::from_millis(60) => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("round {round}: {e} after {:?}", start.elapsed()),
            }
        };
        assert_eq!(reopened.committed_position(), 200);
    }
}
