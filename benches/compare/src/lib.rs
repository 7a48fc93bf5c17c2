//! The peer comparison harness of Orchestrix: the same workloads against Orchestrix and its
//! peers (PostgreSQL with the `events` schema, SQLite), alternating backends round by round in
//! one process run, with the machine's own limits measured beside them.
//!
//! The pieces: [`backend`] (the trait every store implements and the read-back tally),
//! [`backends`] (one module per store), [`workload`] (what is run and how it is checked),
//! [`report`] (the table and the JSON), [`reference`] (fdatasync latency and sequential write
//! bandwidth of the data directory's disk) and [`pg_server`] (a throwaway PostgreSQL cluster).
#![deny(clippy::unwrap_used)]

pub mod backend;
pub mod backends;
pub mod pg_server;
pub mod reference;
pub mod report;
pub mod stats;
pub mod workload;
