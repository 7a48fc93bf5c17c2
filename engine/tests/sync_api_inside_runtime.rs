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

/// On a multi-thread runtime's worker, a blocking append waits behind async appends of the
/// same runtime that wait for room in the writer's queue (one slot here): they must be able
/// to run meanwhile, on another thread, or neither would ever finish (with a single worker,
/// parking it left them nowhere to run).
#[test]
fn blocking_append_behind_async_appends_on_a_single_worker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let heads = rt.block_on(async move {
            let options = orchestrix::Options {
                queue_depth: 1,
                ..orchestrix::Options::default()
            };
            let store = orchestrix::AsyncStore::new(Store::open_with(&path, options).unwrap());
            let inner = store.clone();
            // Spawned, so that it runs on the worker rather than in block_on's thread.
            tokio::spawn(async move {
                let tasks: Vec<_> = (0..16)
                    .map(|t| {
                        let s = inner.clone();
                        tokio::spawn(async move {
                            for _ in 0..50 {
                                let e = vec![EventData::json("E", vec![b'x'; 2000])];
                                s.append(&format!("a-{t}"), ExpectedVersion::Any, e)
                                    .await
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                tokio::task::yield_now().await;
                let e = vec![EventData::json("E", b"{}".to_vec())];
                inner
                    .store()
                    .append("sync", ExpectedVersion::Any, e)
                    .unwrap();
                for t in tasks {
                    t.await.unwrap();
                }
                // Closed on the worker too (a close there waits for the writer).
                inner.store().close().unwrap();
                (0..16)
                    .map(|t| inner.store().stream_head(&format!("a-{t}")).unwrap())
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap()
        });
        let _ = done.send(heads);
    });
    let heads = finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the blocking append or close on the worker never finished");
    assert!(heads.iter().all(|h| *h == Some(49)), "{heads:?}");
}
