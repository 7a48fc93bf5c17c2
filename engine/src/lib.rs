//! Orchestrix: an embedded event store for event-sourced applications.
//!
//! Open a directory with [`Store::open`], append events to streams with optimistic
//! concurrency ([`ExpectedVersion`]), read them back by stream or in global order, subscribe
//! to new ones, and keep snapshots beside them. See `docs/architecture.md` for the formats
//! and the commit protocol.
//!
//! ```
//! use orchestrix::{Direction, EventData, ExpectedVersion, ReadFilter, Store};
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path()).unwrap();
//! let r = store
//!     .append("cart-7", ExpectedVersion::NoStream, vec![EventData::json("ItemAdded", br#"{"sku":"A"}"#.to_vec())])
//!     .unwrap();
//! assert_eq!(r.first_position, 0);
//! let all = store.read_all(0, Direction::Forwards, 100, &ReadFilter::all()).unwrap();
//! assert_eq!(all.len(), 1);
//! ```
#![deny(clippy::unwrap_used)]

mod async_api;
mod block;
pub mod error;
pub mod event;
mod heads;
pub mod limits;
pub mod options;
mod recent;
pub mod sched;
pub mod snapshot;
mod store;
pub mod subscription;
mod writer;

pub use crate::async_api::AsyncStore;
pub use crate::error::{Result, StoreError};
pub use crate::event::{
    AppendResult, Direction, EventData, ExpectedVersion, ReadFilter, RecordedEvent,
};
pub use crate::options::{Durability, Options};
pub use crate::snapshot::Snapshot;
pub use crate::store::{OpenReport, Store, StoreInfo, SEGMENTS_HELD_MAX};
pub use crate::subscription::{Subscription, SubscriptionStream};
pub use orchestrix_log::LogError;

/// The README's Rust examples, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
