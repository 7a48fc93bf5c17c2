//! SQLite (bundled by rusqlite) with the equivalent of the `events` table, WAL journal,
//! `synchronous=FULL`, one connection per writer or reader, `busy_timeout` set.
//!
//! An append is `BEGIN IMMEDIATE` (the write lock first, so the check cannot go stale), the
//! head check, one insert per event from a cached prepared statement, `COMMIT`. SQLite's API
//! blocks, so each call runs on tokio's blocking pool with the client's own connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use rusqlite::{params, Connection, TransactionBehavior};

use crate::backend::{
    AppendError, Backend, BulkPart, Client, Expected, NewEvent, ReadEvent, Tally,
};
use crate::backends::Setup;

/// The `events` and `snapshots` tables of DESIGN.md in SQLite's types: `INTEGER PRIMARY KEY`
/// (the rowid) for `BIGSERIAL`, `TEXT` for `JSONB` (stored as is, like Orchestrix stores
/// data) and for `TIMESTAMPTZ` (RFC 3339).
pub const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, aggregate_id TEXT NOT NULL, version INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE, event_type TEXT NOT NULL, event_source TEXT NOT NULL,
    event_subject TEXT, event_data TEXT NOT NULL, event_time TEXT NOT NULL,
    spec_version TEXT, data_content_type TEXT, data_schema TEXT,
    correlation_id TEXT, causation_id TEXT, created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT events_aggregate_version_unique UNIQUE (aggregate_id, version));
CREATE INDEX IF NOT EXISTS idx_events_aggregate_id ON events(aggregate_id);
CREATE INDEX IF NOT EXISTS idx_events_type ON events(event_type);
CREATE INDEX IF NOT EXISTS idx_events_time ON events(event_time DESC);
CREATE TABLE IF NOT EXISTS snapshots (
    aggregate_id TEXT PRIMARY KEY, aggregate_type TEXT NOT NULL, version INTEGER NOT NULL,
    state TEXT NOT NULL, created_at TEXT DEFAULT CURRENT_TIMESTAMP);
";

const INSERT_SQL: &str = "INSERT INTO events (aggregate_id, version, event_id, event_type, \
     event_source, event_data, event_time, spec_version, data_content_type) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '1.0', 'application/json')";

const HEAD_SQL: &str = "SELECT max(version) FROM events WHERE aggregate_id = ?1";

const EVENT_COLUMNS: &str = "id, aggregate_id, version, event_id, event_type, event_source, \
     event_subject, event_data, event_time, data_content_type, correlation_id, causation_id";

/// How long a connection waits for another's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

const SOURCE: &str = "orchestrix-compare";

/// Opens a connection with the harness's settings (WAL, `synchronous=FULL`, busy timeout).
pub fn open_connection(path: &Path) -> anyhow::Result<Connection> {
    let c = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    c.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("SQLite refused WAL mode (journal_mode is {mode})");
    }
    c.pragma_update(None, "synchronous", "FULL")?;
    Ok(c)
}

/// The SQLite backend.
pub struct Sqlite {
    base: PathBuf,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Sqlite {
    /// Creates an empty database in a new directory under the setup's base directory.
    pub async fn open(setup: &Setup) -> anyhow::Result<Self> {
        let mut b = Sqlite {
            base: setup.base_dir.clone(),
            dir: None,
            path: PathBuf::new(),
        };
        b.reset().await?;
        Ok(b)
    }

    /// Runs `f` with a fresh connection on the blocking pool.
    async fn with_connection<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || f(&mut open_connection(&path)?)).await?
    }
}

/// Whether an error is the unique violation of a version already taken.
fn is_version_conflict(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(msg)) => {
            f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && msg.contains("events.aggregate_id, events.version")
        }
        _ => false,
    }
}

fn insert(
    tx: &rusqlite::Transaction<'_>,
    stream: &str,
    first_version: u64,
    events: &[NewEvent],
) -> Result<(), AppendError> {
    let mut stmt = tx
        .prepare_cached(INSERT_SQL)
        .map_err(|e| AppendError::Other(e.into()))?;
    for (i, e) in events.iter().enumerate() {
        let version = i64::try_from(first_version + i as u64)
            .map_err(|_| AppendError::Other(anyhow::anyhow!("version out of range")))?;
        let r = stmt.execute(params![
            stream,
            version,
            e.id.to_string(),
            e.event_type,
            SOURCE,
            e.data_str()?,
            e.time_rfc3339(),
        ]);
        match r {
            Ok(_) => {}
            Err(err) if is_version_conflict(&err) => return Err(AppendError::Conflict),
            Err(err) => {
                return Err(AppendError::Other(
                    anyhow::Error::new(err).context(format!("insert into {stream:?}")),
                ))
            }
        }
    }
    Ok(())
}

fn head_of(c: &Connection, stream: &str) -> rusqlite::Result<Option<u64>> {
    let v: Option<i64> = c
        .prepare_cached(HEAD_SQL)?
        .query_row([stream], |r| r.get(0))?;
    Ok(v.and_then(|v| u64::try_from(v).ok()))
}

fn append_blocking(
    c: &mut Connection,
    stream: &str,
    expected: Expected,
    events: &[NewEvent],
) -> Result<u64, AppendError> {
    let other = |e: rusqlite::Error| AppendError::Other(e.into());
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(other)?;
    let head = head_of(&tx, stream).map_err(other)?;
    if Expected::from_head(head) != expected {
        return Err(AppendError::Conflict); // dropping `tx` rolls back
    }
    let first = expected.first_version();
    insert(&tx, stream, first, events)?;
    tx.commit().map_err(other)?;
    Ok(first + events.len() as u64 - 1)
}

/// An event as a reader decodes it from a row (every column, as an application would).
#[allow(dead_code)]
struct Row {
    id: i64,
    stream: String,
    version: i64,
    event_id: String,
    event_type: String,
    source: String,
    subject: Option<String>,
    data: String,
    time: String,
    content_type: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
}

impl Row {
    fn decode(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            id: r.get(0)?,
            stream: r.get(1)?,
            version: r.get(2)?,
            event_id: r.get(3)?,
            event_type: r.get(4)?,
            source: r.get(5)?,
            subject: r.get(6)?,
            data: r.get(7)?,
            time: r.get(8)?,
            content_type: r.get(9)?,
            correlation_id: r.get(10)?,
            causation_id: r.get(11)?,
        })
    }

    fn position_version(&self) -> anyhow::Result<(u64, u64)> {
        Ok((
            u64::try_from(self.id).context("negative id")?,
            u64::try_from(self.version).context("negative version")?,
        ))
    }
}

#[async_trait]
impl Backend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn acknowledges(&self) -> String {
        format!(
            "WAL fsync at commit (journal_mode=WAL, synchronous=FULL); SQLite {} (bundled), \
             BEGIN IMMEDIATE per append, busy_timeout {} s",
            rusqlite::version(),
            BUSY_TIMEOUT.as_secs()
        )
    }

    async fn reset(&mut self) -> anyhow::Result<()> {
        let old = self.dir.take();
        let base = self.base.clone();
        let (dir, path) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            if let Some(old) = old {
                let p = old.path().to_path_buf();
                old.close()
                    .with_context(|| format!("removing {}", p.display()))?;
            }
            let dir = tempfile::Builder::new()
                .prefix("orchestrix-compare-sqlite-")
                .tempdir_in(&base)
                .with_context(|| format!("creating a directory in {}", base.display()))?;
            let path = dir.path().join("events.db");
            open_connection(&path)?
                .execute_batch(SCHEMA_SQL)
                .context("creating the events table")?;
            Ok((dir, path))
        })
        .await??;
        self.dir = Some(dir);
        self.path = path;
        Ok(())
    }

    async fn client(&self) -> anyhow::Result<Box<dyn Client>> {
        let path = self.path.clone();
        let conn = tokio::task::spawn_blocking(move || open_connection(&path)).await??;
        Ok(Box::new(SqliteClient { conn: Some(conn) }))
    }

    async fn bulk_append(&self, parts: Vec<BulkPart>) -> anyhow::Result<()> {
        self.with_connection(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for p in &parts {
                insert(&tx, &p.stream, p.first_version, &p.events).map_err(|e| match e {
                    AppendError::Conflict => {
                        anyhow::anyhow!("bulk append to {:?}: conflict", p.stream)
                    }
                    AppendError::Other(e) => e,
                })?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
        .context("bulk append")
    }

    async fn after_bulk_load(&self) -> anyhow::Result<()> {
        self.with_connection(|c| {
            c.execute_batch("ANALYZE")?;
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
        .context("ANALYZE and checkpoint after the load")
    }

    async fn read_all(&self, mut tally: Tally) -> anyhow::Result<Tally> {
        self.with_connection(move |c| {
            let mut stmt = c.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY id"))?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let row = Row::decode(r)?;
                let (position, version) = row.position_version()?;
                tally.see(position, &row.stream, version, row.data.len())?;
            }
            Ok(tally)
        })
        .await
        .context("reading events in global order")
    }

    async fn close(&mut self) -> anyhow::Result<()> {
        if let Some(dir) = self.dir.take() {
            let p = dir.path().to_path_buf();
            tokio::task::spawn_blocking(move || dir.close())
                .await?
                .with_context(|| format!("removing {}", p.display()))?;
        }
        Ok(())
    }
}

/// One connection, moved to the blocking pool for each call and back.
struct SqliteClient {
    conn: Option<Connection>,
}

impl SqliteClient {
    async fn call<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let mut conn = self
            .conn
            .take()
            .context("the connection was lost by an earlier failed call")?;
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut conn);
            (conn, out)
        })
        .await?;
        self.conn = Some(conn);
        Ok(out)
    }
}

#[async_trait]
impl Client for SqliteClient {
    async fn append(
        &mut self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<u64, AppendError> {
        let s = stream.to_string();
        self.call(move |c| append_blocking(c, &s, expected, &events))
            .await?
    }

    async fn read_stream(&mut self, stream: &str, max: usize) -> anyhow::Result<Vec<ReadEvent>> {
        let s = stream.to_string();
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        self.call(move |c| -> anyhow::Result<Vec<ReadEvent>> {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_id = ?1 AND version >= ?2 \
                 ORDER BY version LIMIT ?3"
            ))?;
            let mut rows = stmt.query(params![s, 0i64, limit])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let row = Row::decode(r)?;
                if row.stream != s {
                    bail!("a read of {s:?} returned an event of {:?}", row.stream);
                }
                let (position, version) = row.position_version()?;
                out.push(ReadEvent {
                    position,
                    version,
                    data_len: row.data.len(),
                });
            }
            Ok(out)
        })
        .await?
        .with_context(|| format!("reading {stream:?}"))
    }

    async fn head(&mut self, stream: &str) -> anyhow::Result<Option<u64>> {
        let s = stream.to_string();
        self.call(move |c| head_of(c, &s))
            .await?
            .with_context(|| format!("reading the head of {stream:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Tally;
    use crate::backends::testkit::{self, events};
    use std::collections::HashMap;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn append_read_and_conflict_roundtrip() {
        let base = tempfile::tempdir().unwrap();
        let setup = Setup {
            base_dir: base.path().to_path_buf(),
        };
        let mut b = Sqlite::open(&setup).await.unwrap();
        let mut c = b.client().await.unwrap();
        testkit::append_conflict_and_read(c.as_mut()).await;
        assert_eq!(c.read_stream("s", 2).await.unwrap().len(), 2);

        b.bulk_append(vec![BulkPart {
            stream: "t".into(),
            first_version: 0,
            events: events(5),
        }])
        .await
        .unwrap();
        b.after_bulk_load().await.unwrap();
        let tally = b.read_all(Tally::per_stream()).await.unwrap();
        let want: HashMap<String, u64> = [("s".to_string(), 3), ("t".to_string(), 4)].into();
        tally.check_against(&want).unwrap();

        drop(c);
        testkit::reset_and_close(&mut b, base.path()).await;
    }
}
