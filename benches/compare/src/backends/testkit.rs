//! What every backend's tests check the same way: small events, the single-client append /
//! conflict / read sequence, and that reset and close leave nothing behind.

use std::path::Path;

use crate::backend::{AppendError, Backend, Client, Expected, NewEvent, Tally};

/// `n` events with 7 bytes of JSON data each.
pub fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|_| NewEvent::bench(br#"{"a":1}"#.to_vec()))
        .collect()
}

/// On an empty store: appends 1 then 3 events to stream `s`, checks that a stale `Exact(0)`
/// and a `NoStream` conflict, that the head is 3, and that the stream reads back as versions
/// 0..=3 with their data.
pub async fn append_conflict_and_read(c: &mut dyn Client) {
    assert_eq!(c.head("s").await.unwrap(), None);
    assert_eq!(
        c.append("s", Expected::NoStream, events(1)).await.unwrap(),
        0
    );
    assert_eq!(
        c.append("s", Expected::Exact(0), events(3)).await.unwrap(),
        3
    );
    assert!(matches!(
        c.append("s", Expected::Exact(0), events(1)).await,
        Err(AppendError::Conflict)
    ));
    assert!(matches!(
        c.append("s", Expected::NoStream, events(1)).await,
        Err(AppendError::Conflict)
    ));
    assert_eq!(c.head("s").await.unwrap(), Some(3));
    let read = c.read_stream("s", 100).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert!(read.iter().all(|e| e.data_len == 7));
}

/// Resets the store (it must then be empty), closes it, and checks that `base` is empty.
pub async fn reset_and_close(b: &mut dyn Backend, base: &Path) {
    b.reset().await.unwrap();
    assert_eq!(b.read_all(Tally::totals()).await.unwrap().events, 0);
    b.close().await.unwrap();
    assert_eq!(std::fs::read_dir(base).unwrap().count(), 0);
}
