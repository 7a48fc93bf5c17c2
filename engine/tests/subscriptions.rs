//! Subscriptions catch up from any position and then follow live appends, with no gap and no
//! duplicate across the hand-over, for the blocking iterator and the tokio `Stream` alike;
//! filters apply, and iteration ends when the store closes.

use std::sync::Arc;
use std::time::Duration;

use orchestrix::{AsyncStore, EventData, ExpectedVersion, Options, ReadFilter, Store};

fn ev(t: &str) -> EventData {
    EventData::json(t.to_owned(), b"{}".to_vec())
}

#[test]
fn blocking_subscription_catch_up_then_live() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_with(dir.path(), Options::test()).unwrap());
    for i in 0..300 {
        store
            .append(
                &format!("s-{}", i % 3),
                ExpectedVersion::Any,
                vec![ev(if i % 2 == 0 { "Even" } else { "Odd" })],
            )
            .unwrap();
    }
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 300..900 {
                store
                    .append(
                        &format!("s-{}", i % 3),
                        ExpectedVersion::Any,
                        vec![ev(if i % 2 == 0 { "Even" } else { "Odd" })],
                    )
                    .unwrap();
            }
        })
    };
    let mut all = store.subscribe_all(100, ReadFilter::all());
    let mut evens = store.subscribe_all(0, ReadFilter::types(["Even"]));
    let mut s1 = store.subscribe_stream("s-1", 0, ReadFilter::all()).unwrap();
    // Stream subscriptions take the same filters: s-1 holds append i = 3v + 1 at version v,
    // typed "Even" when i is, so when v is odd.
    let mut s1_even = store
        .subscribe_stream("s-1", 0, ReadFilter::types(["Even"]))
        .unwrap();
    let mut s1_other_prefix = store
        .subscribe_stream("s-1", 0, ReadFilter::stream_prefix("t-"))
        .unwrap();
    for want in 100..900u64 {
        let e = all
            .next_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("event in time");
        assert_eq!(e.position, want);
    }
    for k in 0..450u64 {
        let e = evens
            .next_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("event in time");
        assert_eq!(e.position, 2 * k);
        assert_eq!(e.event_type(), "Even");
    }
    for v in 0..300u64 {
        let e = s1
            .next_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("event in time");
        assert_eq!((e.stream(), e.version), ("s-1", v));
    }
    for k in 0..150u64 {
        let e = s1_even
            .next_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("event in time");
        assert_eq!((e.version, e.event_type()), (2 * k + 1, "Even"));
    }
    writer.join().unwrap();
    assert!(all
        .next_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());
    store.close().unwrap();
    assert!(all.next().is_none(), "iteration ends when the store closes");
    assert!(s1_even.next().is_none());
    assert!(
        s1_other_prefix.next().is_none(),
        "the prefix passes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_stream_catch_up_then_live() {
    use std::future::poll_fn;
    use std::pin::Pin;
    let dir = tempfile::tempdir().unwrap();
    let store = AsyncStore::new(Store::open_with(dir.path(), Options::test()).unwrap());
    for _ in 0..50 {
        store
            .append("a", ExpectedVersion::Any, vec![ev("E")])
            .await
            .unwrap();
    }
    let mut sub = store.subscribe_all(0, ReadFilter::all()).unwrap();
    let producer = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..150 {
                store
                    .append("a", ExpectedVersion::Any, vec![ev("E")])
                    .await
                    .unwrap();
            }
        })
    };
    for want in 0..200u64 {
        let next = tokio::time::timeout(
            Duration::from_secs(10),
            poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut sub), cx)),
        )
        .await
        .expect("in time")
        .expect("not ended")
        .unwrap();
        assert_eq!(next.position, want);
        assert_eq!(next.version, want);
    }
    producer.await.unwrap();
    let head = store.stream_head("a").await.unwrap();
    assert_eq!(head, Some(199));
    let r = store
        .read_stream("a", 190, orchestrix::Direction::Forwards, 100)
        .await
        .unwrap();
    assert_eq!(r.len(), 10);
}
