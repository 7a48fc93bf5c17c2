//! The compared stores, one module each.
//!
//! Adding a store: write a module implementing [`crate::backend::Backend`], declare it here
//! (behind its cargo feature if it has one, as SierraDB and UmaDB do:
//! `#[cfg(feature = "sierradb")] pub mod sierradb;`), add its name to [`NAMES`] and an arm to
//! [`open`] under the same `cfg`. Nothing else changes.

use std::path::PathBuf;

use anyhow::bail;

use crate::backend::Backend;

pub mod orchestrix;
pub mod postgres;
#[cfg(feature = "sierradb")]
pub mod sierradb;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(feature = "umadb")]
pub mod umadb;

/// Names of the backends this build has, in the order they run in a round (the peers behind
/// cargo features `sierradb` and `umadb` only when built with them).
pub const NAMES: &[&str] = &[
    "orchestrix",
    "postgres",
    "sqlite",
    #[cfg(feature = "sierradb")]
    "sierradb",
    #[cfg(feature = "umadb")]
    "umadb",
];

/// What a backend needs to know to start.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Directory under which each backend makes its own data directory.
    pub base_dir: PathBuf,
}

/// Opens the backend called `name` with an empty store.
pub async fn open(name: &str, setup: &Setup) -> anyhow::Result<Box<dyn Backend>> {
    Ok(match name {
        "orchestrix" => Box::new(orchestrix::Orchestrix::open(setup).await?),
        "postgres" => Box::new(postgres::Postgres::open(setup).await?),
        "sqlite" => Box::new(sqlite::Sqlite::open(setup).await?),
        #[cfg(feature = "sierradb")]
        "sierradb" => Box::new(sierradb::SierraDb::open(setup).await?),
        #[cfg(feature = "umadb")]
        "umadb" => Box::new(umadb::UmaDb::open(setup).await?),
        other => bail!(
            "unknown backend {other:?} (this build has: {})",
            NAMES.join(", ")
        ),
    })
}
