//! UmaDB (a DCB event store, a gRPC server), driven with its async client `umadb-client`
//! 0.7.8. Built only with the cargo feature `umadb`.
//!
//! The backend starts its own server: `umadb --listen 127.0.0.1:<free port> --db-path
//! <new directory>/uma.db`, waits until it answers, and on reset, close or drop stops it
//! (SIGTERM, then SIGKILL after 5 s) and removes the directory. The binary is `$UMADB_BIN`,
//! else `umadb` on the `PATH`, else `~/.cargo/bin/umadb`. The server fsyncs before it
//! acknowledges: its writer commits the appends waiting for it as one group (dirty pages,
//! fdatasync, header page, fdatasync).
//!
//! UmaDB has no streams, only events with tags and one global order of positions. A stream is
//! the tag `stream:<name>`. Each event carries its stream version in its metadata
//! (`version`), and the read-back checks those versions as it does for the other stores. The
//! expected-version check is UmaDB's own append condition: fail if any event tagged
//! `stream:<name>` is after the global position of the stream's last event (`after: None`
//! when the stream must not exist). A client therefore keeps, per stream, the last version it
//! knows and that event's position: from its own acknowledged appends, or from `head`, which
//! reads the stream's last event from the server (backwards, limit 1). A failed condition is
//! `DcbError::IntegrityError`, counted as a conflict. (If a client is asked for a version it
//! does not know, it reads the head from the server; a head other than the expected one is
//! a conflict without an append. The harness's writers never get there: they only expect
//! versions their client has seen.)

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use umadb_client::{AsyncUmaDbClient, UmaDbClient};
use umadb_dcb::{
    DcbAppendCondition, DcbError, DcbEvent, DcbEventStoreAsync, DcbQuery, DcbQueryItem,
    DcbSequencedEvent,
};

use crate::backend::{
    AppendError, Backend, BulkPart, Client, Expected, NewEvent, ReadEvent, Tally,
};
use crate::backends::Setup;
use crate::pg_server::find_on_path;

/// The server version the client crate is pinned to.
pub const VERSION: &str = "0.7.8";
/// The tag prefix that makes an event part of a stream.
pub const STREAM_TAG: &str = "stream:";
/// The metadata key holding an event's version in its stream.
pub const VERSION_KEY: &str = "version";
/// Events per append in the bulk load (a gRPC message stays well under 4 MB).
const BULK_EVENTS_PER_APPEND: usize = 1000;
/// How long the server may take to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long it may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's page cache (`--page-cache-max-mb`; its default, 0, is none), as large as
/// PostgreSQL's `shared_buffers` here. With the full run's read store (1,000,000 events), stream
/// reads measured about 3 times as fast with it as without; a 256 MB cache, smaller than the
/// store, slowed the full read down (see the README).
pub const PAGE_CACHE_MB: u32 = 1024;

/// Where the `umadb` binary is.
pub fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("UMADB_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("UMADB_BIN is {}, which is not a file", p.display());
        }
        return Ok(p);
    }
    if let Some(p) = find_on_path("umadb") {
        return Ok(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cargo/bin/umadb");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "UmaDB's server `umadb` was not found (looked at $UMADB_BIN, the PATH and \
         ~/.cargo/bin); install it with `cargo install umadb --version {VERSION} --locked`"
    )
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// The last lines of a file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An error of the client, shortened: a failed condition's message embeds the whole event.
fn short(e: &DcbError) -> String {
    let s = e.to_string();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

fn dcb(e: DcbError, what: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", short(&e))
}

/// A running server and its directory; stopped and removed when dropped.
struct Server {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    url: String,
    log: PathBuf,
}

impl Server {
    /// Starts a server on a new database in a new directory under `base`.
    fn start(bin: &Path, base: &Path) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix("orchestrix-compare-uma-")
            .tempdir_in(base)
            .with_context(|| format!("creating a directory in {}", base.display()))?;
        let port = free_port()?;
        let log = dir.path().join("umadb.log");
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--db-path")
            .arg(dir.path().join("uma.db"))
            .arg("--page-cache-max-mb")
            .arg(PAGE_CACHE_MB.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // Settings come from the command line only, not from the caller's environment.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("UMADB_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Server {
            child: Some(child),
            dir: Some(dir),
            url: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    /// Waits until the server answers; returns a connected client.
    async fn wait_ready(&mut self) -> anyhow::Result<AsyncUmaDbClient> {
        let started = Instant::now();
        loop {
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "the UmaDB server exited at start ({status}):\n{}",
                        tail(&self.log, 20)
                    );
                }
            }
            let err = match UmaDbClient::new(self.url.clone()).connect_async().await {
                Ok(c) => match c.head().await {
                    Ok(_) => return Ok(c),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "the UmaDB server did not answer at {} within {} s ({}):\n{}",
                    self.url,
                    START_TIMEOUT.as_secs(),
                    short(&err),
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL) and removes its directory.
    fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let asked = Instant::now();
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if asked.elapsed() > STOP_TIMEOUT {
                    let _ = child.kill();
                    child.wait()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if let Some(dir) = self.dir.take() {
            let p = dir.path().to_path_buf();
            dir.close()
                .with_context(|| format!("removing {}", p.display()))?;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("error: stopping the UmaDB server: {e:#}");
        }
    }
}

/// The UmaDB backend.
pub struct UmaDb {
    base: PathBuf,
    bin: PathBuf,
    version: String,
    server: Option<Server>,
    conn: Option<Arc<AsyncUmaDbClient>>,
}

impl UmaDb {
    /// Starts a server with an empty database in a new directory under the setup's base
    /// directory.
    pub async fn open(setup: &Setup) -> anyhow::Result<Self> {
        let bin = find_binary()?;
        let b2 = bin.clone();
        let out = tokio::task::spawn_blocking(move || Command::new(&b2).arg("--version").output())
            .await?
            .with_context(|| format!("running {} --version", bin.display()))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut b = UmaDb {
            base: setup.base_dir.clone(),
            bin,
            version,
            server: None,
            conn: None,
        };
        b.reset().await?;
        Ok(b)
    }

    fn conn(&self) -> anyhow::Result<&Arc<AsyncUmaDbClient>> {
        self.conn.as_ref().context("the UmaDB server is stopped")
    }

    async fn shut(&mut self) -> anyhow::Result<()> {
        self.conn = None;
        if let Some(mut server) = self.server.take() {
            tokio::task::spawn_blocking(move || server.stop()).await??;
        }
        Ok(())
    }
}

fn stream_tag(stream: &str) -> String {
    format!("{STREAM_TAG}{stream}")
}

fn stream_query(stream: &str) -> DcbQuery {
    DcbQuery::new().item(DcbQueryItem::new().tags([stream_tag(stream)]))
}

/// The events of one append, `first` being the first one's version.
fn dcb_events(stream: &str, first: u64, events: Vec<NewEvent>) -> Vec<DcbEvent> {
    let tag = stream_tag(stream);
    events
        .into_iter()
        .zip(first..)
        .map(|(e, v)| {
            let time = e.time_rfc3339();
            DcbEvent::new()
                .event_type(e.event_type)
                .tags([tag.clone()])
                .data(e.data)
                .uuid(e.id)
                .metadata_entry(VERSION_KEY, v.to_string())
                .metadata_entry("time", time)
        })
        .collect()
}

/// An event's stream version (from its metadata).
fn version_of(e: &DcbSequencedEvent) -> anyhow::Result<u64> {
    let (_, v) = e
        .event
        .metadata
        .iter()
        .find(|(k, _)| k == VERSION_KEY)
        .with_context(|| format!("the event at position {} has no version", e.position))?;
    v.parse()
        .with_context(|| format!("the event at position {} has version {v:?}", e.position))
}

/// An event's stream (from its tag).
fn stream_of(e: &DcbSequencedEvent) -> anyhow::Result<&str> {
    e.event
        .tags
        .iter()
        .find_map(|t| t.strip_prefix(STREAM_TAG))
        .with_context(|| format!("the event at position {} has no stream tag", e.position))
}

#[async_trait]
impl Backend for UmaDb {
    fn name(&self) -> &'static str {
        "umadb"
    }

    fn acknowledges(&self) -> String {
        format!(
            "fsync before the ack: its writer commits waiting appends as a group (pages, \
             fdatasync, header, fdatasync); server {} on 127.0.0.1 over gRPC, page cache \
             {PAGE_CACHE_MB} MB; umadb-client {VERSION}, one HTTP/2 connection shared by all \
             clients; expected version = DCB condition on the tag stream:<id> after the \
             stream's last position",
            if self.version.is_empty() {
                "umadb (version unknown)"
            } else {
                &self.version
            },
        )
    }

    async fn reset(&mut self) -> anyhow::Result<()> {
        self.shut().await?;
        let (bin, base) = (self.bin.clone(), self.base.clone());
        let mut server = tokio::task::spawn_blocking(move || Server::start(&bin, &base)).await??;
        // From here on, dropping `server` stops it.
        let conn = server.wait_ready().await?;
        self.server = Some(server);
        self.conn = Some(Arc::new(conn));
        Ok(())
    }

    async fn client(&self) -> anyhow::Result<Box<dyn Client>> {
        // One HTTP/2 connection for all: it measured faster than a connection per client
        // (see the README).
        Ok(Box::new(UmaClient {
            conn: self.conn()?.clone(),
            heads: HashMap::new(),
        }))
    }

    async fn bulk_append(&self, parts: Vec<BulkPart>) -> anyhow::Result<()> {
        // Unconditional appends of many streams' events (up to 1,000 events each), all at
        // once: the writer commits them in groups.
        let mut set = tokio::task::JoinSet::new();
        let mut batch: Vec<DcbEvent> = Vec::new();
        let mut flush = |batch: &mut Vec<DcbEvent>| -> anyhow::Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            let events = std::mem::take(batch);
            let conn = self.conn()?.clone();
            set.spawn(async move {
                conn.append(events, None, None)
                    .await
                    .map_err(|e| dcb(e, "bulk append"))
            });
            Ok(())
        };
        for p in parts {
            if batch.len() + p.events.len() > BULK_EVENTS_PER_APPEND {
                flush(&mut batch)?;
            }
            batch.extend(dcb_events(&p.stream, p.first_version, p.events));
        }
        flush(&mut batch)?;
        while let Some(r) = set.join_next().await {
            r??;
        }
        Ok(())
    }

    async fn read_all(&self, mut tally: Tally) -> anyhow::Result<Tally> {
        use futures_util::StreamExt;
        let mut resp = self
            .conn()?
            .read(None, None, false, None)
            .await
            .map_err(|e| dcb(e, "reading all events"))?;
        loop {
            let batch = resp
                .next_batch()
                .await
                .map_err(|e| dcb(e, "reading all events"))?;
            if batch.is_empty() {
                // An empty batch may still not be the end: ask the stream itself.
                match resp.next().await {
                    None => break,
                    Some(e) => {
                        let e = e.map_err(|e| dcb(e, "reading all events"))?;
                        see(&mut tally, &e)?;
                    }
                }
                continue;
            }
            for e in &batch {
                see(&mut tally, e)?;
            }
        }
        Ok(tally)
    }

    async fn close(&mut self) -> anyhow::Result<()> {
        self.shut().await
    }
}

fn see(tally: &mut Tally, e: &DcbSequencedEvent) -> anyhow::Result<()> {
    tally.see(
        e.position,
        stream_of(e)?,
        version_of(e)?,
        e.event.data.len(),
    )?;
    Ok(())
}

/// A connection (its own or the shared one) and what it knows of streams' heads.
struct UmaClient {
    conn: Arc<AsyncUmaDbClient>,
    /// Per stream: its last version and that event's global position, as last seen.
    heads: HashMap<String, (u64, u64)>,
}

impl UmaClient {
    /// Reads the stream's last event from the server: its version and position.
    async fn fetch_head(&mut self, stream: &str) -> anyhow::Result<Option<(u64, u64)>> {
        let (events, _) = self
            .conn
            .read_with_head(Some(stream_query(stream)), None, true, Some(1))
            .await
            .map_err(|e| dcb(e, format_args!("reading the head of {stream:?}")))?;
        let head = match events.first() {
            Some(e) => Some((version_of(e)?, e.position)),
            None => None,
        };
        match head {
            Some(h) => {
                self.heads.insert(stream.to_string(), h);
            }
            None => {
                self.heads.remove(stream);
            }
        }
        Ok(head)
    }
}

#[async_trait]
impl Client for UmaClient {
    async fn append(
        &mut self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<u64, AppendError> {
        let after = match expected {
            Expected::NoStream => None,
            Expected::Exact(v) => match self.heads.get(stream) {
                Some(&(known, position)) if known == v => Some(position),
                _ => match self.fetch_head(stream).await? {
                    Some((known, position)) if known == v => Some(position),
                    _ => return Err(AppendError::Conflict),
                },
            },
        };
        let n = events.len() as u64;
        let Some(last) = expected.first_version().checked_add(n.saturating_sub(1)) else {
            return Err(AppendError::Other(anyhow::anyhow!("version out of range")));
        };
        let events = dcb_events(stream, expected.first_version(), events);
        let condition = DcbAppendCondition::new(stream_query(stream)).after(after);
        match self.conn.append(events, Some(condition), None).await {
            Ok(position) => {
                self.heads.insert(stream.to_string(), (last, position));
                Ok(last)
            }
            Err(DcbError::IntegrityError(_)) => Err(AppendError::Conflict),
            Err(e) => Err(AppendError::Other(dcb(
                e,
                format_args!("append to {stream:?}"),
            ))),
        }
    }

    async fn read_stream(&mut self, stream: &str, max: usize) -> anyhow::Result<Vec<ReadEvent>> {
        let limit = u32::try_from(max).unwrap_or(u32::MAX);
        let (events, _) = self
            .conn
            .read_with_head(Some(stream_query(stream)), None, false, Some(limit))
            .await
            .map_err(|e| dcb(e, format_args!("reading {stream:?}")))?;
        events
            .iter()
            .map(|e| {
                Ok(ReadEvent {
                    position: e.position,
                    version: version_of(e)?,
                    data_len: e.event.data.len(),
                })
            })
            .collect()
    }

    async fn head(&mut self, stream: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.fetch_head(stream).await?.map(|(v, _)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::testkit::{self, events};

    #[test]
    fn errors_are_shortened() {
        let long = DcbError::IntegrityError("x".repeat(10_000));
        assert!(short(&long).len() < 400);
        assert_eq!(short(&DcbError::Timeout()), "timeout");
    }

    /// Needs the `umadb` binary; skipped (with a message) when it is not installed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn append_read_and_conflict_roundtrip() {
        if let Err(e) = find_binary() {
            eprintln!("skipped: {e:#}");
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let setup = Setup {
            base_dir: base.path().to_path_buf(),
        };
        let mut b = UmaDb::open(&setup).await.unwrap();
        let mut c = b.client().await.unwrap();
        let mut other = b.client().await.unwrap();
        assert_eq!(c.head("s").await.unwrap(), None);
        assert_eq!(
            c.append("s", Expected::NoStream, events(1)).await.unwrap(),
            0
        );
        assert_eq!(
            c.append("s", Expected::Exact(0), events(3)).await.unwrap(),
            3
        );
        // The other client learns the head from the server, and its stale append conflicts.
        assert_eq!(other.head("s").await.unwrap(), Some(3));
        assert_eq!(
            other
                .append("s", Expected::Exact(3), events(1))
                .await
                .unwrap(),
            4
        );
        assert!(matches!(
            c.append("s", Expected::Exact(3), events(1)).await,
            Err(AppendError::Conflict)
        ));
        assert!(matches!(
            c.append("s", Expected::NoStream, events(1)).await,
            Err(AppendError::Conflict)
        ));
        assert_eq!(c.head("s").await.unwrap(), Some(4));
        let read = c.read_stream("s", 100).await.unwrap();
        assert_eq!(
            read.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert!(read.iter().all(|e| e.data_len == 7));
        assert_eq!(c.read_stream("s", 2).await.unwrap().len(), 2);

        b.bulk_append(vec![
            BulkPart {
                stream: "t".into(),
                first_version: 0,
                events: events(5),
            },
            BulkPart {
                stream: "s".into(),
                first_version: 5,
                events: events(2),
            },
        ])
        .await
        .unwrap();
        let tally = b.read_all(Tally::per_stream()).await.unwrap();
        let want: HashMap<String, u64> = [("s".to_string(), 6), ("t".to_string(), 4)].into();
        tally.check_against(&want).unwrap();

        drop((c, other));
        testkit::reset_and_close(&mut b, base.path()).await;
    }
}
