//! Subscriptions: catch up from the log, then follow it live.
//!
//! A subscription keeps only its next position (or version) and one page of events. It reads
//! everything, old and new, from the log in order, so the hand-over from catch-up to live
//! cannot skip or repeat an event; and since it pulls a page at a time, a slow subscriber
//! holds the same memory as a fast one (backpressure by construction).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::{Result, StoreError};
use crate::event::{Direction, ReadFilter, RecordedEvent};
use crate::store::Inner;

/// Events read per page.
const PAGE_EVENTS: usize = 512;
/// How long one wait for new events lasts before the subscription looks around again.
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// Events one page's scan examines at most: with a filter that passes few of them, a
/// subscription catching up looks at its deadline and at a dropped stream this often (a
/// few milliseconds of scanning).
const SCAN_EVENTS_MAX: u64 = 16_384;

enum Target {
    All {
        next_position: u64,
        filter: ReadFilter,
    },
    Stream {
        stream: String,
        next_version: u64,
        filter: ReadFilter,
    },
}

/// A blocking subscription; iterate it to receive events in order. Iteration ends when the
/// store closes.
pub struct Subscription {
    inner: Arc<Inner>,
    target: Target,
    page: VecDeque<RecordedEvent>,
    /// Set once the store has closed and everything it committed was delivered.
    ended: bool,
    /// Set when whoever reads this subscription has gone (a dropped [`SubscriptionStream`]):
    /// the wait for new events ends at once.
    cancel: Arc<AtomicBool>,
}

impl Subscription {
    fn new(inner: Arc<Inner>, target: Target) -> Self {
        Subscription {
            inner,
            target,
            page: VecDeque::new(),
            ended: false,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn all(inner: Arc<Inner>, from_position: u64, filter: ReadFilter) -> Self {
        let target = Target::All {
            next_position: from_position,
            filter,
        };
        Self::new(inner, target)
    }

    pub(crate) fn stream(
        inner: Arc<Inner>,
        stream: String,
        from_version: u64,
        filter: ReadFilter,
    ) -> Self {
        let target = Target::Stream {
            stream,
            next_version: from_version,
            filter,
        };
        Self::new(inner, target)
    }

    /// Reads the next page; returns whether it found anything, or examined events without
    /// finding any and has more to examine.
    fn fill(&mut self) -> Result<Fill> {
        match &mut self.target {
            Target::All {
                next_position,
                filter,
            } => {
                let mut page = Vec::new();
                let from = *next_position;
                let next =
                    self.inner
                        .scan_forwards_within(from, SCAN_EVENTS_MAX, filter, &mut |e| {
                            page.push(e.clone());
                            page.len() < PAGE_EVENTS
                        })?;
                // Filtered-out events still advance the position.
                *next_position = next.max(*next_position);
                if !page.is_empty() {
                    self.page.extend(page);
                    return Ok(Fill::Found);
                }
                Ok(if *next_position > from {
                    Fill::Skipped
                } else {
                    Fill::Nothing
                })
            }
            Target::Stream {
                stream,
                next_version,
                filter,
            } => {
                let page = self.inner.read_stream(
                    stream,
                    *next_version,
                    Direction::Forwards,
                    PAGE_EVENTS,
                )?;
                let Some(last) = page.last() else {
                    return Ok(Fill::Nothing);
                };
                *next_version = last.version + 1;
                let before = self.page.len();
                if filter.passes_stream(stream.as_bytes()) {
                    self.page.extend(
                        page.into_iter()
                            .filter(|e| filter.passes_type(e.event_type().as_bytes())),
                    );
                }
                Ok(if self.page.len() > before {
                    Fill::Found
                } else {
                    Fill::Skipped
                })
            }
        }
    }

    /// The next event, waiting at most about `timeout` for one (a timeout too long for the
    /// clock waits without a deadline). `Ok(None)` means none arrived in time, or the
    /// subscription has ended: see [`Subscription::is_ended`]. A store that failed (latched
    /// read-only) ends its subscriptions: once what it committed is delivered, one call
    /// returns [`StoreError::Poisoned`] and the subscription has ended.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<RecordedEvent>> {
        match self.poll_next(timeout)? {
            Next::Event(e) => Ok(Some(e)),
            Next::Timeout | Next::Ended => Ok(None),
        }
    }

    fn poll_next(&mut self, timeout: Duration) -> Result<Next> {
        // `None`: no deadline (a timeout too long to add to the clock).
        let deadline = std::time::Instant::now().checked_add(timeout);
        loop {
            if let Some(e) = self.page.pop_front() {
                return Ok(Next::Event(e));
            }
            if self.ended {
                return Ok(Next::Ended);
            }
            // Looked at before reading, like `closed`: a store that failed commits nothing
            // more, so once a read after seeing it finds nothing, nothing is left to deliver.
            let poisoned = self.inner.poisoned.load(Ordering::Acquire);
            // Looked at before reading: the store sets it only once its last appends are
            // published, so a read after seeing it finds every one of them.
            let closed = self.is_closed();
            // The position the waiting below compares with, as published with the stream
            // heads (after the log's committed position moves): taken from the log, a new
            // stream's first events could be committed, missed by `fill` (its head not set
            // yet), and then not wake the wait either.
            let seen = self.inner.published_position();
            let fill = self.fill()?;
            let left = || {
                deadline.map_or(WAIT_SLICE, |d| {
                    d.saturating_duration_since(std::time::Instant::now())
                })
            };
            match fill {
                Fill::Found => continue,
                // Events the filter turned down, and maybe more to examine: not caught up.
                Fill::Skipped if left().is_zero() || self.cancel.load(Ordering::Acquire) => {
                    return Ok(Next::Timeout)
                }
                Fill::Skipped => continue,
                Fill::Nothing => {}
            }
            if closed {
                self.ended = true;
                return Ok(Next::Ended);
            }
            if poisoned {
                // Said once; the subscription has ended after it.
                self.ended = true;
                return Err(StoreError::Poisoned);
            }
            if self.is_closed() {
                // Closed since the read: read once more.
                continue;
            }
            let left = left();
            if left.is_zero() || self.cancel.load(Ordering::Acquire) {
                return Ok(Next::Timeout);
            }
            // On a worker of a multi-thread runtime, its other tasks (the appends this waits
            // for, say) go to another thread meanwhile.
            let inner = &self.inner;
            let cancel = &self.cancel;
            crate::block::blocking(|| {
                inner.wait_for_commit(seen, left.min(WAIT_SLICE), Some(cancel))
            });
        }
    }

    /// Whether the store has closed. Events it committed may still be waiting to be taken:
    /// [`Subscription::is_ended`] says when there are none left.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Whether the subscription has ended: the store has closed and every event it committed
    /// (that passes the filter) has been delivered.
    pub fn is_ended(&self) -> bool {
        self.ended
    }
}

/// What reading a page found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Events for the caller.
    Found,
    /// Events, none passing the filter (the scan stops after [`SCAN_EVENTS_MAX`]).
    Skipped,
    /// No events.
    Nothing,
}

/// What waiting for the next event found.
enum Next {
    Event(RecordedEvent),
    Timeout,
    Ended,
}

impl Iterator for Subscription {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.poll_next(WAIT_SLICE) {
                Ok(Next::Event(e)) => return Some(Ok(e)),
                Ok(Next::Ended) => return None,
                Ok(Next::Timeout) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A subscription as a tokio `Stream`. A dedicated thread pulls events and hands them over
/// through a bounded channel, so the runtime never blocks and a slow consumer holds the
/// producer back instead of buffering without bound.
pub struct SubscriptionStream {
    rx: mpsc::Receiver<Result<RecordedEvent>>,
    /// Tells the pulling thread that the stream is gone.
    cancel: Arc<AtomicBool>,
    inner: Arc<Inner>,
}

impl Drop for SubscriptionStream {
    /// Wakes the pulling thread if it waits for new events, so that it ends (and lets go of
    /// the store) now rather than at the end of its wait. One in the middle of reading a page
    /// ends when the page is read.
    fn drop(&mut self) {
        self.rx.close();
        self.cancel.store(true, Ordering::Release);
        self.inner.notify_waiters();
    }
}

/// Events buffered between the pulling thread and the async consumer.
const STREAM_BUFFER_EVENTS: usize = 256;

impl SubscriptionStream {
    pub(crate) fn spawn(mut sub: Subscription) -> Result<Self> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_EVENTS);
        let cancel = sub.cancel.clone();
        let inner = sub.inner.clone();
        std::thread::Builder::new()
            .name("orchestrix-subscription".into())
            .spawn(move || loop {
                if tx.is_closed() {
                    return;
                }
                match sub.poll_next(WAIT_SLICE) {
                    Ok(Next::Event(e)) => {
                        if tx.blocking_send(Ok(e)).is_err() {
                            return;
                        }
                    }
                    Ok(Next::Ended) => return,
                    Ok(Next::Timeout) => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            })
            .map_err(|source| crate::StoreError::Io {
                path: "<subscription thread>".into(),
                source,
            })?;
        Ok(SubscriptionStream { rx, cancel, inner })
    }
}

impl futures_core::Stream for SubscriptionStream {
    type Item = Result<RecordedEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
