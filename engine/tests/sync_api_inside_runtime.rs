//! The blocking `Store` API works on a thread that runs a tokio runtime.
//!
//! An application that calls `Store::append` or `Store::sync` from async code (a handler that
//! has a `Store` rather than an `AsyncStore`) blocks that thread for the call, as any
//! synchronous I/O does. It must not panic: tokio's `blocking_send`/`blocking_recv` panic on
//! such a thread, and the store waits for its writer (an OS thread of its own) without them.
//! On a current-thread runtime the blocked thread is the runtime's only one, so this also
//! checks that nothing the store waits for needs the runtime to make progress.

use orchestrix::{Direction, EventData, ExpectedVersion, Store};

fn exercise(store: &Store) {
    for i in 0..200u64 {
        let r = store
            .append(
                "acct",
                if i == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(i - 1)
                },
                vec![EventData::json(
                    "Deposited",
                    format!("{{\"n\":{i}}}").into_bytes(),
                )],
            )
            .unwrap_or_else(|e| panic!("append {i}: {e}"));
        assert_eq!(r.next_expected_version(), i);
    }
    store
        .append_multi(vec![
            (
                "a".into(),
                ExpectedVersion::NoStream,
                vec![EventData::json("A", b"{}".to_vec())],
            ),
            (
                "b".into(),
                ExpectedVersion::NoStream,
                vec![EventData::json("B", b"{}".to_vec())],
            ),
        ])
        .unwrap();
    store.sync().unwrap();
    let read = store
        .read_stream("acct", 0, Direction::Forwards, 1000)
        .unwrap();
    assert_eq!(read.len(), 200);
    assert_eq!(read.last().map(|e| e.version), Some(199));
    assert_eq!(store.stream_head("b").unwrap(), Some(0));
}

#[tokio::test(flavor = "current_thread")]
async fn blocking_api_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    exercise(&store);
    drop(store);
    // The events are there after reopening, still from inside the runtime.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.stream_head("acct").unwrap(), Some(199));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_api_on_a_multi_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    // Several tasks, each blocking its worker for its calls, on streams of their own.
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..50u64 {
                    store
                        .append(
                            &format!("task-{t}"),
                            ExpectedVersion::Any,
                            vec![EventData::json(
                                "Tick",
                                format!("{{\"i\":{i}}}").into_bytes(),
                            )],
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for t in 0..4 {
        assert_eq!(store.stream_head(&format!("task-{t}")).unwrap(), Some(49));
    }
    exercise(&store);
}
