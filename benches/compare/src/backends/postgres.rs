//! PostgreSQL with the `events` schema of DESIGN.md (the Python library's tables), default
//! durability, one connection per writer or reader (tokio-postgres).
//!
//! The server is a throwaway cluster started for the run ([`crate::pg_server`]), or the one
//! `ORCHESTRIX_PG_URL` names. Either way the tables live in a schema of their own,
//! `orchestrix_compare_<pid>_<random>`, dropped at the end, so an existing `events` table is
//! never touched.
//!
//! An append is one statement, so one transaction: it reads the stream's head
//! (`max(version)`, an index-only lookup on the `(aggregate_id, version)` unique index),
//! inserts the events (a multi-row insert from arrays) only if the head is the expected one,
//! and reports a conflict when it inserted nothing. A writer that raced past the check is
//! stopped by the unique constraint itself: its insert of an existing version fails with a
//! unique violation on `events_aggregate_version_unique`, also reported as a conflict. This
//! costs one round trip, where `BEGIN; SELECT max(version); INSERT; COMMIT` costs four.

use std::time::SystemTime;

use anyhow::{bail, Context};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls, Statement};

use crate::backend::{
    AppendError, Backend, BulkPart, Client, Expected, NewEvent, ReadEvent, Tally,
};
use crate::backends::Setup;
use crate::pg_server::{PgServer, SETTINGS, WAL_WARMUP_SQL};

/// The environment variable naming an existing server to use instead of a throwaway one.
pub const PG_URL_VAR: &str = "ORCHESTRIX_PG_URL";

/// The tables and indexes exactly as DESIGN.md has them.
pub const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS events (
    id BIGSERIAL PRIMARY KEY, aggregate_id TEXT NOT NULL, version INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE, event_type TEXT NOT NULL, event_source TEXT NOT NULL,
    event_subject TEXT, event_data JSONB NOT NULL, event_time TIMESTAMPTZ NOT NULL,
    spec_version TEXT, data_content_type TEXT, data_schema TEXT,
    correlation_id TEXT, causation_id TEXT, created_at TIMESTAMPTZ DEFAULT NOW(),
    CONSTRAINT events_aggregate_version_unique UNIQUE (aggregate_id, version));
CREATE INDEX IF NOT EXISTS idx_events_aggregate_id ON events(aggregate_id);
CREATE INDEX IF NOT EXISTS idx_events_type ON events(event_type);
CREATE INDEX IF NOT EXISTS idx_events_time ON events(event_time DESC);
CREATE TABLE IF NOT EXISTS snapshots (
    aggregate_id TEXT PRIMARY KEY, aggregate_type TEXT NOT NULL, version INTEGER NOT NULL,
    state JSONB NOT NULL, created_at TIMESTAMPTZ DEFAULT NOW());
";

/// The name of the unique constraint whose violation is an expected-version conflict.
pub const VERSION_CONSTRAINT: &str = "events_aggregate_version_unique";

/// The append: the check against the head and the insert in one statement.
/// $1 stream, $2 source, $3 expected last version (-1: no stream), $4..$7 per event: id,
/// type, JSON data, time.
const APPEND_SQL: &str = "
INSERT INTO events (aggregate_id, version, event_id, event_type, event_source, event_data,
                    event_time, spec_version, data_content_type)
SELECT $1, h.v + t.n, t.id, t.ty, $2, t.data::jsonb, t.time, '1.0', 'application/json'
FROM (SELECT coalesce(max(version), -1) AS v FROM events WHERE aggregate_id = $1) AS h,
     unnest($4::text[], $5::text[], $6::text[], $7::timestamptz[])
         WITH ORDINALITY AS t(id, ty, data, time, n)
WHERE h.v = $3::int4";

const HEAD_SQL: &str = "SELECT max(version) FROM events WHERE aggregate_id = $1";

/// The columns a reader rebuilds an event from.
const EVENT_COLUMNS: &str = "id, aggregate_id, version, event_id, event_type, event_source, \
     event_subject, event_data::text, event_time, data_content_type, correlation_id, causation_id";

/// Rows per page of the global read.
const READ_ALL_PAGE: i64 = 10_000;

const SOURCE: &str = "orchestrix-compare";

/// The PostgreSQL backend.
pub struct Postgres {
    /// The throwaway server, if this run started one (stopped when dropped).
    server: Option<PgServer>,
    /// Connection settings of the clients (with the schema as search path).
    config: Config,
    admin: tokio_postgres::Client,
    schema: String,
    acknowledges: String,
}

async fn connect(config: &Config) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        // Ends when the client is dropped; an error here also fails the client's next call.
        let _ = connection.await;
    });
    Ok(client)
}

/// Escapes a value for COPY's text format.
pub fn copy_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn version_i32(v: u64) -> anyhow::Result<i32> {
    i32::try_from(v).with_context(|| format!("version {v} does not fit PostgreSQL's INTEGER"))
}

fn version_u64(v: i32) -> anyhow::Result<u64> {
    u64::try_from(v).with_context(|| format!("negative version {v} in the table"))
}

fn position_u64(id: i64) -> anyhow::Result<u64> {
    u64::try_from(id).with_context(|| format!("negative id {id} in the table"))
}

/// An event as a reader decodes it from a row (every column, as an application would).
#[allow(dead_code)]
struct Row {
    id: i64,
    stream: String,
    version: i32,
    event_id: String,
    event_type: String,
    source: String,
    subject: Option<String>,
    data: String,
    time: SystemTime,
    content_type: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
}

impl Row {
    fn decode(r: &tokio_postgres::Row) -> anyhow::Result<Row> {
        Ok(Row {
            id: r.try_get(0)?,
            stream: r.try_get(1)?,
            version: r.try_get(2)?,
            event_id: r.try_get(3)?,
            event_type: r.try_get(4)?,
            source: r.try_get(5)?,
            subject: r.try_get(6)?,
            data: r.try_get(7)?,
            time: r.try_get(8)?,
            content_type: r.try_get(9)?,
            correlation_id: r.try_get(10)?,
            causation_id: r.try_get(11)?,
        })
    }
}

impl Postgres {
    /// Connects to `ORCHESTRIX_PG_URL` or starts a throwaway server under the base directory,
    /// and creates the tables in a schema of their own.
    pub async fn open(setup: &Setup) -> anyhow::Result<Self> {
        let (server, url) = match std::env::var(PG_URL_VAR) {
            Ok(url) if !url.is_empty() => (None, url),
            _ => {
                let base = setup.base_dir.clone();
                let server = tokio::task::spawn_blocking(move || PgServer::start(&base))
                    .await?
                    .context("starting a throwaway PostgreSQL server")?;
                let url = server.url();
                (Some(server), url)
            }
        };
        let mut config: Config = url
            .parse()
            .with_context(|| format!("parsing the PostgreSQL connection string {url:?}"))?;
        config.application_name("orchestrix-compare");
        let admin = connect(&config).await?;
        let schema = format!(
            "orchestrix_compare_{}_{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        if server.is_some() {
            admin
                .batch_execute(WAL_WARMUP_SQL)
                .await
                .context("warming the throwaway server's WAL")?;
        }
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; SET search_path TO {schema}; {SCHEMA_SQL}"
            ))
            .await
            .context("creating the events schema")?;
        let mut options = config.get_options().unwrap_or_default().to_string();
        options.push_str(&format!(" -c search_path={schema}"));
        config.options(options.trim());

        let mut settings = Vec::new();
        for name in [
            "server_version",
            "synchronous_commit",
            "fsync",
            "wal_sync_method",
        ] {
            let row = admin
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .with_context(|| format!("SHOW {name}"))?;
            settings.push(row.try_get::<_, String>(0)?);
        }
        let where_ = match &server {
            Some(_) => format!(
                "throwaway server on 127.0.0.1 with {}",
                SETTINGS
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!("the server at {PG_URL_VAR}"),
        };
        let acknowledges = format!(
            "WAL flush at commit (synchronous_commit={}, fsync={}, wal_sync_method={}); \
             PostgreSQL {}, {where_}; one statement per append (check + multi-row insert)",
            settings[1],
            settings[2],
            settings[3],
            settings[0].split_whitespace().next().unwrap_or(""),
        );
        Ok(Postgres {
            server,
            config,
            admin,
            schema,
            acknowledges,
        })
    }
}

#[async_trait]
impl Backend for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn acknowledges(&self) -> String {
        self.acknowledges.clone()
    }

    async fn reset(&mut self) -> anyhow::Result<()> {
        self.admin
            .batch_execute("TRUNCATE events, snapshots RESTART IDENTITY")
            .await
            .context("emptying the events table")?;
        if self.server.is_some() {
            // Before the timed run rather than in it (or in another backend's): the dirty
            // pages written, the WAL files retired for reuse.
            self.admin
                .batch_execute("CHECKPOINT")
                .await
                .context("checkpointing the throwaway server")?;
        }
        Ok(())
    }

    async fn client(&self) -> anyhow::Result<Box<dyn Client>> {
        let client = connect(&self.config).await?;
        let append = client
            .prepare(APPEND_SQL)
            .await
            .context("preparing the append")?;
        let head = client
            .prepare(HEAD_SQL)
            .await
            .context("preparing the head query")?;
        let read = client
            .prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_id = $1 AND version >= $2 \
                 ORDER BY version LIMIT $3"
            ))
            .await
            .context("preparing the stream read")?;
        Ok(Box::new(PgClient {
            client,
            append,
            head,
            read,
        }))
    }

    async fn bulk_append(&self, parts: Vec<BulkPart>) -> anyhow::Result<()> {
        // COPY is PostgreSQL's fastest way in; one COPY is one transaction.
        let mut buf =
            String::with_capacity(parts.iter().map(|p| p.events.len()).sum::<usize>() * 400);
        for p in &parts {
            for (i, e) in p.events.iter().enumerate() {
                copy_escape(&p.stream, &mut buf);
                buf.push('\t');
                buf.push_str(&version_i32(p.first_version + i as u64)?.to_string());
                buf.push('\t');
                copy_escape(&e.id.to_string(), &mut buf);
                buf.push('\t');
                copy_escape(e.event_type, &mut buf);
                buf.push('\t');
                copy_escape(SOURCE, &mut buf);
                buf.push('\t');
                copy_escape(e.data_str()?, &mut buf);
                buf.push('\t');
                buf.push_str(&e.time_rfc3339());
                buf.push_str("\t1.0\tapplication/json\n");
            }
        }
        let sink = self
            .admin
            .copy_in::<_, Bytes>(
                "COPY events (aggregate_id, version, event_id, event_type, event_source, \
                 event_data, event_time, spec_version, data_content_type) FROM STDIN",
            )
            .await
            .context("starting COPY")?;
        let mut sink = std::pin::pin!(sink);
        sink.send(Bytes::from(buf))
            .await
            .context("sending COPY data")?;
        sink.as_mut().finish().await.context("finishing COPY")?;
        Ok(())
    }

    async fn after_bulk_load(&self) -> anyhow::Result<()> {
        // What one does after a bulk load: statistics for the planner, the visibility map.
        self.admin
            .batch_execute("VACUUM ANALYZE events")
            .await
            .context("VACUUM ANALYZE events")
    }

    async fn read_all(&self, mut tally: Tally) -> anyhow::Result<Tally> {
        let page = self
            .admin
            .prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .await
            .context("preparing the global read")?;
        let mut after: i64 = 0;
        loop {
            let rows = self
                .admin
                .query(&page, &[&after, &READ_ALL_PAGE])
                .await
                .context("reading events in global order")?;
            for r in &rows {
                let row = Row::decode(r)?;
                tally.see(
                    position_u64(row.id)?,
                    &row.stream,
                    version_u64(row.version)?,
                    row.data.len(),
                )?;
                after = row.id;
            }
            if (rows.len() as i64) < READ_ALL_PAGE {
                return Ok(tally);
            }
        }
    }

    async fn close(&mut self) -> anyhow::Result<()> {
        let dropped = self
            .admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await
            .context("dropping the harness's schema");
        if let Some(mut server) = self.server.take() {
            tokio::task::spawn_blocking(move || server.stop()).await??;
        }
        dropped
    }
}

/// One connection with its prepared statements.
struct PgClient {
    client: tokio_postgres::Client,
    append: Statement,
    head: Statement,
    read: Statement,
}

/// Whether an error is the unique violation of a version already taken.
fn is_version_conflict(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error().and_then(|d| d.constraint()) == Some(VERSION_CONSTRAINT)
}

#[async_trait]
impl Client for PgClient {
    async fn append(
        &mut self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<u64, AppendError> {
        let head: i32 = match expected {
            Expected::NoStream => -1,
            Expected::Exact(v) => version_i32(v)?,
        };
        let n = events.len() as u64;
        let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
        let data = events
            .iter()
            .map(NewEvent::data_str)
            .collect::<anyhow::Result<Vec<&str>>>()?;
        let times: Vec<SystemTime> = events.iter().map(|e| e.time).collect();
        match self
            .client
            .execute(
                &self.append,
                &[&stream, &SOURCE, &head, &ids, &types, &data, &times],
            )
            .await
        {
            Ok(0) => Err(AppendError::Conflict),
            Ok(k) if k == n => Ok(expected.first_version() + n - 1),
            Ok(k) => Err(AppendError::Other(anyhow::anyhow!(
                "append to {stream:?} inserted {k} rows of {n}"
            ))),
            Err(e) if is_version_conflict(&e) => Err(AppendError::Conflict),
            Err(e) => Err(AppendError::Other(
                anyhow::Error::new(e).context(format!("append to {stream:?}")),
            )),
        }
    }

    async fn read_stream(&mut self, stream: &str, max: usize) -> anyhow::Result<Vec<ReadEvent>> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(&self.read, &[&stream, &0i32, &limit])
            .await
            .with_context(|| format!("reading {stream:?}"))?;
        rows.iter()
            .map(|r| {
                let row = Row::decode(r)?;
                if row.stream != stream {
                    bail!("a read of {stream:?} returned an event of {:?}", row.stream);
                }
                Ok(ReadEvent {
                    position: position_u64(row.id)?,
                    version: version_u64(row.version)?,
                    data_len: row.data.len(),
                })
            })
            .collect()
    }

    async fn head(&mut self, stream: &str) -> anyhow::Result<Option<u64>> {
        let row = self
            .client
            .query_one(&self.head, &[&stream])
            .await
            .with_context(|| format!("reading the head of {stream:?}"))?;
        row.try_get::<_, Option<i32>>(0)?
            .map(version_u64)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::testkit::events;
    use std::collections::HashMap;
    use std::time::Duration;

    #[test]
    fn copy_text_is_escaped() {
        let mut s = String::new();
        copy_escape("a\\b\tc\nd\re", &mut s);
        assert_eq!(s, "a\\\\b\\tc\\nd\\re");
    }

    /// The backend on a real server (ORCHESTRIX_PG_URL or a throwaway one), or `None` to skip
    /// when there is none here; under CI=true a missing server fails the test.
    async fn backend() -> Option<Postgres> {
        let setup = Setup {
            base_dir: std::env::temp_dir(),
        };
        match Postgres::open(&setup).await {
            Ok(b) => Some(b),
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipping the PostgreSQL test: {e:#}");
                None
            }
            Err(e) => panic!("PostgreSQL is required under CI=true: {e:#}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_conflict_and_read_back_on_a_real_server() {
        let Some(mut b) = backend().await else {
            return;
        };
        let mut c = b.client().await.unwrap();
        assert_eq!(c.head("s").await.unwrap(), None);
        assert_eq!(
            c.append("s", Expected::NoStream, events(1)).await.unwrap(),
            0
        );
        assert_eq!(
            c.append("s", Expected::Exact(0), events(3)).await.unwrap(),
            3
        );
        // The check in the statement: a stale expectation inserts nothing.
        assert!(matches!(
            c.append("s", Expected::Exact(0), events(1)).await,
            Err(AppendError::Conflict)
        ));
        assert!(matches!(
            c.append("s", Expected::NoStream, events(1)).await,
            Err(AppendError::Conflict)
        ));
        assert!(matches!(
            c.append("s", Expected::Exact(7), events(1)).await,
            Err(AppendError::Conflict)
        ));
        assert_eq!(c.head("s").await.unwrap(), Some(3));

        // The backstop: another transaction inserts version 4 and has not committed, so our
        // append still sees head 3, inserts version 4, waits on the unique index, and fails
        // with the unique violation once the other commits.
        let raw = connect(&b.config).await.unwrap();
        raw.batch_execute(
            "BEGIN; INSERT INTO events (aggregate_id, version, event_id, event_type, \
             event_source, event_data, event_time) VALUES ('s', 4, 'other', 'T', 'test', '{}', now())",
        )
        .await
        .unwrap();
        let mut racer = b.client().await.unwrap();
        let race =
            tokio::spawn(async move { racer.append("s", Expected::Exact(3), events(1)).await });
        let mut waited = 0;
        loop {
            let row = b
                .admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                     AND datname = current_database() AND query LIKE '%INSERT INTO events%unnest%'",
                    &[],
                )
                .await
                .unwrap();
            if row.get::<_, i64>(0) == 1 {
                break;
            }
            waited += 1;
            assert!(waited < 500, "the racing append never waited on the lock");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        raw.batch_execute("COMMIT").await.unwrap();
        assert!(matches!(race.await.unwrap(), Err(AppendError::Conflict)));
        assert_eq!(c.head("s").await.unwrap(), Some(4));

        let read = c.read_stream("s", 100).await.unwrap();
        assert_eq!(
            read.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert!(read.windows(2).all(|w| w[0].position < w[1].position));
        // JSONB prints its canonical form: `{"a": 1}`.
        assert_eq!(read[0].data_len, 8);
        assert_eq!(c.read_stream("s", 2).await.unwrap().len(), 2);

        b.bulk_append(vec![BulkPart {
            stream: "t\tab".into(),
            first_version: 0,
            events: events(3),
        }])
        .await
        .unwrap();
        b.after_bulk_load().await.unwrap();
        let tally = b.read_all(Tally::per_stream()).await.unwrap();
        let want: HashMap<String, u64> = [("s".to_string(), 4), ("t\tab".to_string(), 2)].into();
        tally.check_against(&want).unwrap();

        drop((c, raw));
        b.reset().await.unwrap();
        assert_eq!(b.read_all(Tally::totals()).await.unwrap().events, 0);
        b.close().await.unwrap();
    }
}
