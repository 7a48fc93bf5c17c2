//! `orchestrix`: the command-line tool of the Orchestrix event store.
//!
//! Subcommands: `bench` (throughput and latency of appends, with the raw fdatasync latency of
//! the same disk for reference), `append`, `read`, `read-all`, `inspect` and `verify`. The
//! reading and checking subcommands open the directory with `Store::open_existing`, so a
//! directory that is not a store is reported as such and left untouched. Errors go to stderr
//! with exit code 1; bad arguments get clap's usage error (exit code 2).
#![deny(clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use orchestrix::{
    Direction, Durability, EventData, ExpectedVersion, Options, ReadFilter, RecordedEvent, Store,
    StoreError,
};
use serde_json::value::RawValue;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(
    name = "orchestrix",
    version,
    about = "Orchestrix embedded event store tool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure append throughput and latency.
    Bench(BenchArgs),
    /// Append one JSON event to a stream (creates the store if missing).
    Append(AppendArgs),
    /// Read a stream, one JSON object per line.
    Read(ReadArgs),
    /// Read the global log, one JSON object per line.
    ReadAll(ReadAllArgs),
    /// Show segments, counts and index state of a store.
    Inspect(InspectArgs),
    /// Check every frame's CRC and the index against the log.
    Verify(VerifyArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SyncMode {
    /// fdatasync before every acknowledgement.
    Always,
    /// fdatasync at most --sync-interval-ms after a write.
    Interval,
    /// Never fdatasync.
    Never,
}

#[derive(Args, Debug, Clone)]
struct BenchArgs {
    /// Store directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Total events to append.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Concurrent writer threads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
    writers: u64,
    /// Events per append.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
    /// Approximate size of each event's JSON data in bytes.
    #[arg(long, default_value_t = 256)]
    event_size: usize,
    /// Streams in total (default: 16 per writer); each writer owns its own streams.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    streams: Option<u64>,
    /// Durability mode.
    #[arg(long, value_enum, default_value_t = SyncMode::Always)]
    sync: SyncMode,
    /// Sync interval for --sync interval, in milliseconds.
    #[arg(long, default_value_t = 10)]
    sync_interval_ms: u64,
    /// Maximum segment size in bytes.
    #[arg(long)]
    segment_size: Option<u64>,
    /// After each acknowledged append, write `stream version position` per event to FILE.
    #[arg(long)]
    ack_log: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Run the writers as tokio tasks on the async API (a 2-thread runtime) instead of as
    /// OS threads: many concurrent writers then cost no context switch per append.
    #[arg(long)]
    tasks: bool,
    /// Build every event before the clock starts, so that the figures measure the store
    /// and not the making of the events (which otherwise shares the CPU with it).
    #[arg(long)]
    pregenerate: bool,
}

#[derive(Args, Debug)]
struct AppendArgs {
    /// Store directory.
    dir: PathBuf,
    /// Stream id.
    stream: String,
    /// Event type.
    #[arg(long = "type")]
    event_type: String,
    /// Event data (must be valid JSON).
    #[arg(long, value_parser = parse_json)]
    data: Value,
    /// Expected version: any, no-stream, exists, or a version number.
    #[arg(long, default_value = "any", value_parser = parse_expected)]
    expected: ExpectedVersion,
}

#[derive(Args, Debug)]
struct ReadArgs {
    /// Store directory.
    dir: PathBuf,
    /// Stream id.
    stream: String,
    /// First version to read (default: the start, or the end with --backwards).
    #[arg(long)]
    from: Option<u64>,
    /// Read newest first.
    #[arg(long)]
    backwards: bool,
    /// Maximum number of events.
    #[arg(long)]
    limit: Option<u64>,
}

#[derive(Args, Debug)]
struct ReadAllArgs {
    /// Store directory.
    dir: PathBuf,
    /// First position to read (default: the start, or the end with --backwards).
    #[arg(long)]
    from: Option<u64>,
    /// Only events of this type (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Only streams whose id starts with this.
    #[arg(long)]
    stream_prefix: Option<String>,
    /// Read newest first.
    #[arg(long)]
    backwards: bool,
    /// Maximum number of events.
    #[arg(long)]
    limit: Option<u64>,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// Store directory.
    dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// Store directory.
    dir: PathBuf,
}

/// A failure to report on stderr.
#[derive(Debug)]
enum CliError {
    Msg(String),
    /// stdout was closed (e.g. piped into `head`): stop quietly.
    BrokenPipe,
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::Msg(describe(&e))
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Msg(format!("i/o error: {e}"))
        }
    }
}

type CliResult<T = ()> = Result<T, CliError>;

fn msg(s: impl Into<String>) -> CliError {
    CliError::Msg(s.into())
}

fn describe(e: &StoreError) -> String {
    match e {
        StoreError::WrongExpectedVersion {
            stream,
            expected,
            current,
        } => {
            let want = match expected {
                ExpectedVersion::Any => "any version".to_string(),
                ExpectedVersion::NoStream => "no stream".to_string(),
                ExpectedVersion::StreamExists => "an existing stream".to_string(),
                ExpectedVersion::Exact(v) => format!("version {v}"),
            };
            let have = match current {
                None => "the stream does not exist".to_string(),
                Some(v) => format!("its current version is {v}"),
            };
            format!("wrong expected version on stream {stream:?}: expected {want}, but {have}")
        }
        other => other.to_string(),
    }
}

fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
    match s {
        "any" => Ok(ExpectedVersion::Any),
        "no-stream" => Ok(ExpectedVersion::NoStream),
        "exists" => Ok(ExpectedVersion::StreamExists),
        n => n.parse::<u64>().map(ExpectedVersion::Exact).map_err(|_| {
            format!("expected `any`, `no-stream`, `exists` or a version number, got {n:?}")
        }),
    }
}

fn parse_json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(a) => bench(a),
        Command::Append(a) => append(a),
        Command::Read(a) => read(a),
        Command::ReadAll(a) => read_all(a),
        Command::Inspect(a) => inspect(a),
        Command::Verify(a) => verify(a),
    };
    match result {
        Ok(()) | Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(CliError::Msg(m)) => {
            eprintln!("error: {m}");
            ExitCode::FAILURE
        }
    }
}

fn open_existing(dir: &Path) -> CliResult<Store> {
    Ok(Store::open_existing(dir, Options::default())?)
}

// ---------------------------------------------------------------------------------------
// append / read / read-all

fn append(a: AppendArgs) -> CliResult {
    // Checked before the store is opened, which creates it: bad input leaves no store behind.
    orchestrix::limits::check_stream_id(&a.stream)?;
    orchestrix::limits::check_event_type(&a.event_type)?;
    let data = serde_json::to_vec(&a.data).map_err(|e| msg(format!("encoding data: {e}")))?;
    let store = Store::open_with(&a.dir, Options::default())?;
    let r = store.append(
        &a.stream,
        a.expected,
        vec![EventData::json(a.event_type, data)],
    )?;
    store.close()?;
    let version = r
        .streams
        .first()
        .map(|s| s.1)
        .ok_or_else(|| msg("the store returned no stream for the append"))?;
    let line = json!({
        "position": r.first_position,
        "stream": a.stream,
        "version": version,
        "already_stored": r.already_stored,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

const PAGE: u64 = 1000;

fn read(a: ReadArgs) -> CliResult {
    let store = open_existing(&a.dir)?;
    let dir = direction(a.backwards);
    print_pages(
        a.from,
        a.backwards,
        a.limit,
        |e| e.version,
        |next, n| store.read_stream(&a.stream, next, dir, n),
    )
}

fn read_all(a: ReadAllArgs) -> CliResult {
    let store = open_existing(&a.dir)?;
    let filter = ReadFilter {
        event_types: a.types,
        stream_prefix: a.stream_prefix,
    };
    let dir = direction(a.backwards);
    print_pages(
        a.from,
        a.backwards,
        a.limit,
        |e| e.position,
        |next, n| store.read_all(next, dir, n, &filter),
    )
}

fn direction(backwards: bool) -> Direction {
    if backwards {
        Direction::Backwards
    } else {
        Direction::Forwards
    }
}

/// Prints events one JSON object per line, fetching pages from `from` (default: the start,
/// or the end when reading backwards) until `limit` events or the end. `key` is what a page
/// continues from (version or position).
fn print_pages(
    from: Option<u64>,
    backwards: bool,
    limit: Option<u64>,
    key: impl Fn(&orchestrix::RecordedEvent) -> u64,
    mut fetch: impl FnMut(u64, usize) -> orchestrix::Result<Vec<orchestrix::RecordedEvent>>,
) -> CliResult {
    let mut next = from.unwrap_or(if backwards { u64::MAX } else { 0 });
    let mut left = limit.unwrap_or(u64::MAX);
    let mut out = std::io::stdout().lock();
    while left > 0 {
        let n = usize::try_from(left.min(PAGE)).unwrap_or(PAGE as usize);
        let page = fetch(next, n)?;
        let Some(last) = page.last().map(&key) else {
            break;
        };
        for e in &page {
            writeln!(out, "{}", event_json(e))?;
        }
        left = left.saturating_sub(page.len() as u64);
        next = match if backwards {
            last.checked_sub(1)
        } else {
            last.checked_add(1)
        } {
            Some(k) => k,
            None => break,
        };
    }
    out.flush()?;
    Ok(())
}

/// One line of `read` / `read-all`: the event in the CloudEvents JSON format's terms.
#[derive(serde::Serialize)]
struct EventLine<'a> {
    position: u64,
    stream: &'a str,
    version: u64,
    id: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    source: &'a str,
    subject: Option<&'a str>,
    time: String,
    datacontenttype: Option<&'a str>,
    dataschema: Option<&'a str>,
    correlation_id: Option<&'a str>,
    causation_id: Option<&'a str>,
    /// `[key, value]` pairs in their order: keys may repeat.
    metadata: Vec<(&'a str, &'a str)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

/// The `data` member: the event's JSON as stored (numbers of any precision kept as they
/// are), or its text.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Json(Box<RawValue>),
    Text(&'a str),
}

fn event_json(e: &RecordedEvent) -> String {
    let (data, data_base64) = data_json(e);
    let line = EventLine {
        position: e.position,
        stream: e.stream(),
        version: e.version,
        id: e.id.to_string(),
        event_type: e.event_type(),
        source: e.source(),
        subject: e.subject(),
        time: format_time(e.time_unix_nanos),
        datacontenttype: e.data_content_type(),
        dataschema: e.data_schema(),
        correlation_id: e.correlation_id(),
        causation_id: e.causation_id(),
        metadata: e.metadata().collect(),
        data,
        data_base64,
    };
    // Only strings and numbers: serializing cannot fail.
    serde_json::to_string(&line).unwrap_or_default()
}

/// As the CloudEvents JSON format has it: `data` holds the event's JSON when its content
/// type is JSON (and it parses), or its text when the content type is not JSON; anything
/// else (bytes that are not UTF-8, or a JSON content type over data that is not JSON) is
/// `data_base64`.
fn data_json(e: &RecordedEvent) -> (Option<Data<'_>>, Option<String>) {
    use base64::Engine as _;
    let bytes = e.data();
    if e.is_json() {
        if let Ok(raw) = serde_json::from_slice::<&RawValue>(bytes) {
            if let Ok(compact) = RawValue::from_string(compact_json(raw.get())) {
                return (Some(Data::Json(compact)), None);
            }
        }
    } else if let Ok(text) = std::str::from_utf8(bytes) {
        return (Some(Data::Text(text)), None);
    }
    (
        None,
        Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
    )
}

/// `json` (valid JSON) without the whitespace between its tokens, so that it fits on one
/// line; strings and numbers are kept byte for byte.
fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// RFC 3339 with nanoseconds, UTC. Times before 1970 are formatted by hand because
/// humantime only handles times after the epoch.
fn format_time(nanos: i64) -> String {
    if let Ok(n) = u64::try_from(nanos) {
        return humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(n)).to_string();
    }
    let secs = nanos.div_euclid(1_000_000_000);
    let sub = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{sub:09}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ---------------------------------------------------------------------------------------
// inspect / verify

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn inspect(a: InspectArgs) -> CliResult {
    let store = open_existing(&a.dir)?;
    let info = store.info()?;
    store.close()?;
    let segment_bytes: u64 = info.segments.iter().map(|s| s.2).sum();
    let total = dir_size(&a.dir);
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = json!({
            "dir": a.dir.display().to_string(),
            "events": info.events,
            "streams": info.streams,
            "segments": info.segments.iter().map(|(name, first, bytes)| json!({
                "name": name, "first_position": first, "bytes": bytes,
            })).collect::<Vec<_>>(),
            "segment_bytes": segment_bytes,
            "total_bytes": total,
            "index_checkpoint": info.index_checkpoint.map(|c| json!({
                "segment": c.segment, "offset": c.offset, "next_position": c.next_position,
            })),
            "index": {
                "frames": info.index.frames,
                "stream_chunks": info.index.stream_chunks,
                "streams": info.index.streams,
                "id_files": info.id_files,
                "stream_files": info.stream_files,
            },
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "store:      {}", a.dir.display())?;
        writeln!(out, "events:     {}", info.events)?;
        writeln!(out, "streams:    {}", info.streams)?;
        writeln!(
            out,
            "size:       {} total, {} in segments",
            human_bytes(total),
            human_bytes(segment_bytes)
        )?;
        writeln!(out, "segments:   {}", info.segments.len())?;
        for (name, first, bytes) in &info.segments {
            writeln!(
                out,
                "  {name}  first position {first:>12}  {:>10}",
                human_bytes(*bytes)
            )?;
        }
        match info.index_checkpoint {
            Some(c) => writeln!(
                out,
                "index checkpoint: segment {} offset {} next position {}",
                c.segment, c.offset, c.next_position
            )?,
            None => writeln!(out, "index checkpoint: none")?,
        }
        writeln!(
            out,
            "index: {} frame entries (sparse), {} stream chunks, {} checkpointed streams, {} id files, {} stream files",
            info.index.frames,
            info.index.stream_chunks,
            info.index.streams,
            info.id_files,
            info.stream_files
        )?;
    }
    out.flush()?;
    Ok(())
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn verify(a: VerifyArgs) -> CliResult {
    let (store, report) = Store::open_existing_reported(&a.dir, Options::default())?;
    let n = store.verify()?;
    store.close()?;
    let mut out = std::io::stdout().lock();
    // What opening the store repaired before the check (a crash's leftovers, not corruption).
    if let Some((segment, offset, dropped)) = &report.log.truncated {
        writeln!(
            out,
            "open cut a torn tail: {segment} at byte offset {offset} ({dropped} bytes that nothing proves durable: the write a crash cut short, or damage to the last frames written before it)"
        )?;
    }
    if report.index_rebuilt {
        writeln!(out, "open rebuilt the index from the log")?;
    }
    for (n, what) in [
        (report.id_files_rebuilt, "event-id file"),
        (report.stream_files_rebuilt, "stream index file"),
    ] {
        if n > 0 {
            let s = if n == 1 { "" } else { "s" };
            writeln!(out, "open rebuilt {n} {what}{s} from the log")?;
        }
    }
    writeln!(out, "ok: {n} events verified")?;
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// bench

fn new_hist() -> CliResult<Histogram<u64>> {
    // 1 ns to 1 hour; saturating_record clamps anything beyond. Two significant digits
    // (values within 1%) keep each writer's histogram small (tens of KiB, not hundreds),
    // so that recording an append's latency costs the benchmark no cache misses.
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 2)
        .map_err(|e| msg(format!("histogram: {e}")))
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// JSON data of about `size` bytes.
fn payload(writer: u64, seq: u64, size: usize) -> Vec<u8> {
    // One allocation of the final size: the benchmark should spend its time in the store,
    // not in formatting its input.
    use std::io::Write as _;
    let mut v = Vec::with_capacity(size.max(48));
    let _ = write!(v, "{{\"writer\":{writer},\"seq\":{seq},\"pad\":\"");
    let pad = size.saturating_sub(v.len() + 2);
    v.resize(v.len() + pad, b'x');
    v.extend_from_slice(b"\"}");
    v
}

/// Latency of appending 4 KiB and fdatasync to a scratch file in `dir`, 200 times, on a
/// thread scheduled as the store's syncer is (`orchestrix::sched::request_syncer_slice`).
fn fsync_reference(dir: &Path) -> CliResult<Histogram<u64>> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // A hint: without it the figure is only less comparable on a loaded machine.
            let _ = orchestrix::sched::request_syncer_slice();
            fsync_reference_here(dir)
        })
        .join()
        .unwrap_or_else(|_| Err(msg("the fdatasync reference thread panicked")))
    })
}

fn fsync_reference_here(dir: &Path) -> CliResult<Histogram<u64>> {
    let path = dir.join(format!(
        ".orchestrix-bench-fsync-{}.tmp",
        std::process::id()
    ));
    let mut hist = new_hist()?;
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let block = [0xA5u8; 4096];
        for _ in 0..200 {
            let t = Instant::now();
            f.write_all(&block)?;
            f.sync_data()?;
            hist.saturating_record(t.elapsed().as_nanos() as u64);
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| msg(format!("fdatasync reference on {}: {e}", path.display())))?;
    Ok(hist)
}

struct Progress {
    done: AtomicU64,
    stop: AtomicBool,
}

/// Resident memory of this process in KiB, from `/proc/self/status` (Linux): the anonymous
/// part (heap, the store's own memory) and the pages of mapped files (page cache).
#[derive(Clone, Copy, Default)]
struct Resident {
    anon_kib: u64,
    file_kib: u64,
}

impl Resident {
    fn now() -> Option<Resident> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Some(Resident {
            anon_kib: field("RssAnon:")?,
            file_kib: field("RssFile:")?,
        })
    }
}

/// The largest resident memory seen by sampling every 100 ms while the appends run.
#[derive(Default)]
struct PeakMemory {
    anon_kib: AtomicU64,
    total_kib: AtomicU64,
}

impl PeakMemory {
    fn sample(&self) {
        if let Some(r) = Resident::now() {
            self.anon_kib.fetch_max(r.anon_kib, Ordering::Relaxed);
            self.total_kib
                .fetch_max(r.anon_kib + r.file_kib, Ordering::Relaxed);
        }
    }

    fn mib(v: &AtomicU64) -> f64 {
        v.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

fn draw_progress(done: u64, total: u64, started: Instant) {
    const WIDTH: u64 = 40;
    let filled = (done.saturating_mul(WIDTH) / total.max(1)).min(WIDTH);
    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r[{bar}] {done}/{total} {:5.1}% {rate:>10.0} ev/s",
        done as f64 * 100.0 / total.max(1) as f64
    );
    let _ = err.flush();
}

/// The most event data `--pregenerate` builds in memory before the clock starts.
const PREGENERATE_BYTES_MAX: u64 = 4 << 30;

fn bench(a: BenchArgs) -> CliResult {
    let default_streams = a.writers.saturating_mul(16);
    let streams = a.streams.unwrap_or(default_streams);
    if streams < a.writers {
        return Err(msg(format!(
            "--streams ({streams}) must be at least --writers ({}) so that each writer owns its streams",
            a.writers
        )));
    }
    if streams > a.events.max(default_streams) {
        return Err(msg(format!(
            "--streams ({streams}) is more than --events ({}) and than 16 per writer: streams without events are never created",
            a.events
        )));
    }
    let event_size_max = orchestrix::limits::EVENT_SIZE_MAX_DEFAULT;
    if a.event_size as u64 > event_size_max {
        return Err(msg(format!(
            "--event-size ({}) is more than the store accepts ({event_size_max} bytes)",
            a.event_size
        )));
    }
    if a.pregenerate && a.events.saturating_mul(a.event_size as u64 + 64) > PREGENERATE_BYTES_MAX {
        return Err(msg(format!(
            "--pregenerate would build {} events of {} bytes in memory, more than {} GiB: leave it out to build them as they are appended",
            a.events,
            a.event_size,
            PREGENERATE_BYTES_MAX >> 30
        )));
    }
    let _temp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            let t = tempfile::Builder::new()
                .prefix("orchestrix-bench-")
                .tempdir()
                .map_err(|e| msg(format!("creating a temporary directory: {e}")))?;
            let p = t.path().to_path_buf();
            eprintln!("using temporary directory {}", p.display());
            _temp = t;
            p
        }
    };
    let durability = match a.sync {
        SyncMode::Always => Durability::Always,
        SyncMode::Interval => Durability::Interval(Duration::from_millis(a.sync_interval_ms)),
        SyncMode::Never => Durability::Never,
    };
    let mut options = Options {
        durability,
        ..Options::default()
    };
    if let Some(s) = a.segment_size {
        options.segment_size_bytes_max = s;
    }
    let ack_log = match &a.ack_log {
        Some(p) => Some(Mutex::new(BufWriter::new(
            File::create(p).map_err(|e| msg(format!("creating ack log {}: {e}", p.display())))?,
        ))),
        None => None,
    };
    let store = Arc::new(Store::open_with(&dir, options)?);

    let show_progress = std::io::stderr().is_terminal() && a.events > 0;
    let ctx = Arc::new(BenchCtx {
        pregenerated: (0..a.writers)
            .map(|w| Mutex::new(a.pregenerate.then(|| pregenerate(&a, w))))
            .collect(),
        progress: Progress {
            done: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        },
        failed: AtomicBool::new(false),
        payload_bytes: AtomicU64::new(0),
        ack_log,
    });
    let progress = &ctx.progress;
    let peak = PeakMemory::default();
    let peak_ref = &peak;
    let started = Instant::now();
    let (results, elapsed) = std::thread::scope(|s| {
        let watcher = s.spawn(move || {
            let total = a.events;
            while !progress.stop.load(Ordering::Relaxed) {
                peak_ref.sample();
                if show_progress {
                    draw_progress(progress.done.load(Ordering::Relaxed), total, started);
                }
                std::thread::park_timeout(Duration::from_millis(100));
            }
            peak_ref.sample();
            if show_progress {
                draw_progress(progress.done.load(Ordering::Relaxed), total, started);
                eprintln!();
            }
        });
        let results = if a.tasks {
            run_tasks(&store, &a, streams, &ctx)
        } else {
            run_threads(s, &store, &a, streams, &ctx)
        };
        // The clock stops when the last append is acknowledged, not when the watcher ends.
        let elapsed = started.elapsed();
        progress.stop.store(true, Ordering::Relaxed);
        watcher.thread().unpark();
        let _ = watcher.join();
        (results, elapsed)
    });
    let mut hist = new_hist()?;
    for r in results {
        hist.add(r?)
            .map_err(|e| msg(format!("merging histograms: {e}")))?;
    }
    store.close()?;
    drop(store);
    let fsync = fsync_reference(&dir)?;

    let events = progress.done.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let bytes = ctx.payload_bytes.load(Ordering::Relaxed);
    let events_per_sec = events as f64 / secs;
    let mb_per_sec = bytes as f64 / secs / 1e6;
    let sync = match a.sync {
        SyncMode::Always => "always".to_string(),
        SyncMode::Interval => format!("interval({}ms)", a.sync_interval_ms),
        SyncMode::Never => "never".to_string(),
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = json!({
            "dir": dir.display().to_string(),
            "temporary_dir": a.dir.is_none(),
            "events": events,
            "writers": a.writers,
            "batch": a.batch,
            "event_size": a.event_size,
            "streams": streams,
            "sync": sync,
            "appends": hist.len(),
            "elapsed_secs": secs,
            "events_per_sec": events_per_sec,
            "payload_bytes": bytes,
            "mb_per_sec": mb_per_sec,
            "append_latency_us": {
                "p50": us(hist.value_at_quantile(0.5)),
                "p99": us(hist.value_at_quantile(0.99)),
                "p999": us(hist.value_at_quantile(0.999)),
                "max": us(hist.max()),
                "mean": hist.mean() / 1000.0,
            },
            "fdatasync_4k_us": {
                "samples": fsync.len(),
                "p50": us(fsync.value_at_quantile(0.5)),
                "p99": us(fsync.value_at_quantile(0.99)),
            },
            "peak_resident_mib": {
                "anonymous": PeakMemory::mib(&peak.anon_kib),
                "total": PeakMemory::mib(&peak.total_kib),
            },
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "orchestrix bench: {events} events, {} writers, batch {}, ~{} B/event, {streams} streams, sync {sync}",
            a.writers, a.batch, a.event_size
        )?;
        writeln!(
            out,
            "dir:         {}{}",
            dir.display(),
            if a.dir.is_none() {
                " (temporary, removed)"
            } else {
                ""
            }
        )?;
        writeln!(
            out,
            "throughput:  {events_per_sec:.0} events/s, {mb_per_sec:.2} MB/s payload ({:.2} s)",
            secs
        )?;
        writeln!(
            out,
            "append latency ({} appends): p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs",
            hist.len(),
            us(hist.value_at_quantile(0.5)),
            us(hist.value_at_quantile(0.99)),
            us(hist.value_at_quantile(0.999)),
            us(hist.max())
        )?;
        writeln!(
            out,
            "reference:   raw 4 KiB write + fdatasync on this disk: p50 {:.1} µs  p99 {:.1} µs ({} samples)",
            us(fsync.value_at_quantile(0.5)),
            us(fsync.value_at_quantile(0.99)),
            fsync.len()
        )?;
        writeln!(
            out,
            "memory:      peak resident {:.1} MiB, of which anonymous {:.1} MiB (sampled every 100 ms)",
            PeakMemory::mib(&peak.total_kib),
            PeakMemory::mib(&peak.anon_kib)
        )?;
    }
    out.flush()?;
    Ok(())
}

fn run_threads<'s, 'e>(
    s: &'s std::thread::Scope<'s, 'e>,
    store: &'s Store,
    a: &'s BenchArgs,
    streams: u64,
    ctx: &'s BenchCtx,
) -> Vec<CliResult<Histogram<u64>>> {
    let handles: Vec<_> = (0..a.writers)
        .map(|w| {
            s.spawn(move || {
                let r = bench_writer(store, a, w, streams, ctx);
                if r.is_err() {
                    ctx.failed.store(true, Ordering::Relaxed);
                }
                r
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(msg("a writer thread panicked")))
        })
        .collect()
}

/// Runs the writers as tokio tasks on a 2-thread runtime.
fn run_tasks(
    store: &Arc<Store>,
    a: &BenchArgs,
    streams: u64,
    ctx: &Arc<BenchCtx>,
) -> Vec<CliResult<Histogram<u64>>> {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return vec![Err(msg(format!("starting tokio: {e}")))],
    };
    let store = orchestrix::AsyncStore::from(store.clone());
    let a = Arc::new(a.clone());
    rt.block_on(async {
        let tasks: Vec<_> = (0..a.writers)
            .map(|w| {
                let (store, a, ctx) = (store.clone(), a.clone(), ctx.clone());
                tokio::spawn(async move {
                    let r = bench_task(store, &a, w, streams, &ctx).await;
                    if r.is_err() {
                        ctx.failed.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        let mut results = Vec::with_capacity(tasks.len());
        for t in tasks {
            results.push(
                t.await
                    .unwrap_or_else(|e| Err(msg(format!("a writer task failed: {e}")))),
            );
        }
        results
    })
}

/// A writer's appends' events with their payload bytes.
type Batches = Vec<(Vec<EventData>, u64)>;

/// How many events writer `w` appends.
fn writer_share(a: &BenchArgs, w: u64) -> u64 {
    a.events / a.writers + u64::from(w < a.events % a.writers)
}

/// The `n` events of one append, starting at sequence number `seq`, with their payload bytes.
fn make_events(w: u64, seq: u64, n: u64, size: usize) -> (Vec<EventData>, u64) {
    let mut bytes = 0u64;
    let events = (0..n)
        .map(|i| {
            let data = payload(w, seq + i, size);
            bytes += data.len() as u64;
            EventData::json("BenchEvent", data)
        })
        .collect();
    (events, bytes)
}

/// Every append's events of writer `w`, in reverse order (popped from the end).
fn pregenerate(a: &BenchArgs, w: u64) -> Batches {
    let share = writer_share(a, w);
    let mut out = Vec::new();
    let mut seq = 0;
    while seq < share {
        let n = a.batch.min(share - seq);
        out.push(make_events(w, seq, n, a.event_size));
        seq += n;
    }
    out.reverse();
    out
}

/// What one benchmark writer owns: its streams (with their versions) and its share.
struct WriterPlan<'a> {
    a: &'a BenchArgs,
    w: u64,
    share: u64,
    owned: Vec<(String, Option<u64>)>,
    written: u64,
    turn: usize,
    /// Events built before the clock started, in reverse order of use.
    pregenerated: Option<Batches>,
}

/// One append to make: stream slot, expected version, events, payload bytes.
struct PlannedAppend {
    slot: usize,
    name: String,
    expected: ExpectedVersion,
    events: Vec<EventData>,
    bytes: u64,
}

impl<'a> WriterPlan<'a> {
    fn new(
        store: &Store,
        a: &'a BenchArgs,
        w: u64,
        streams: u64,
        pregenerated: Option<Batches>,
    ) -> CliResult<Self> {
        let share = writer_share(a, w);
        // This writer owns streams w, w + W, w + 2W, ... and tracks their versions itself.
        let mut owned = Vec::new();
        let mut k = w;
        while k < streams {
            let name = format!("bench-{k}");
            let head = store.stream_head(&name)?;
            owned.push((name, head));
            k += a.writers;
        }
        Ok(WriterPlan {
            a,
            w,
            share,
            owned,
            written: 0,
            turn: 0,
            pregenerated,
        })
    }

    fn next(&mut self) -> Option<PlannedAppend> {
        if self.written >= self.share || self.owned.is_empty() {
            return None;
        }
        let n = self.a.batch.min(self.share - self.written);
        let slot = self.turn % self.owned.len();
        self.turn += 1;
        let (name, head) = &self.owned[slot];
        let (events, bytes) = match self.pregenerated.as_mut().and_then(Vec::pop) {
            Some(e) => e,
            None => make_events(self.w, self.written, n, self.a.event_size),
        };
        let expected = match *head {
            None => ExpectedVersion::NoStream,
            Some(v) => ExpectedVersion::Exact(v),
        };
        Some(PlannedAppend {
            slot,
            name: name.clone(),
            expected,
            events,
            bytes,
        })
    }

    /// Records an acknowledged append: versions, the ack log, progress.
    fn acknowledged(
        &mut self,
        p: &PlannedAppend,
        n: u64,
        r: &orchestrix::AppendResult,
        ctx: &BenchCtx,
    ) -> CliResult {
        let (first_version, last_version) = r
            .streams
            .first()
            .map(|s| (s.1, s.2))
            .ok_or_else(|| msg("the store returned no stream for an append"))?;
        if let Some(slot) = self.owned.get_mut(p.slot) {
            slot.1 = Some(last_version);
        }
        if let Some(log) = &ctx.ack_log {
            let mut log = log.lock().map_err(|_| msg("ack log lock poisoned"))?;
            let mut line = String::new();
            for i in 0..n {
                line.push_str(&format!(
                    "{} {} {}\n",
                    p.name,
                    first_version + i,
                    r.first_position + i
                ));
            }
            log.write_all(line.as_bytes())
                .and_then(|()| log.flush())
                .map_err(|e| msg(format!("writing the ack log: {e}")))?;
        }
        self.written += n;
        ctx.payload_bytes.fetch_add(p.bytes, Ordering::Relaxed);
        ctx.progress.done.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

/// What all benchmark writers share.
struct BenchCtx {
    progress: Progress,
    failed: AtomicBool,
    payload_bytes: AtomicU64,
    ack_log: Option<Mutex<BufWriter<File>>>,
    /// Per writer, its events built before the clock started (`--pregenerate`).
    pregenerated: Vec<Mutex<Option<Batches>>>,
}

impl BenchCtx {
    fn take_pregenerated(&self, w: u64) -> Option<Batches> {
        self.pregenerated
            .get(w as usize)
            .and_then(|m| m.lock().ok().and_then(|mut g| g.take()))
    }
}

fn bench_writer(
    store: &Store,
    a: &BenchArgs,
    w: u64,
    streams: u64,
    ctx: &BenchCtx,
) -> CliResult<Histogram<u64>> {
    let mut hist = new_hist()?;
    let mut plan = WriterPlan::new(store, a, w, streams, ctx.take_pregenerated(w))?;
    while let Some(mut p) = plan.next() {
        if ctx.failed.load(Ordering::Relaxed) {
            break;
        }
        let n = p.events.len() as u64;
        let events = std::mem::take(&mut p.events);
        let t = Instant::now();
        let r = store.append(&p.name, p.expected, events)?;
        hist.saturating_record(t.elapsed().as_nanos() as u64);
        plan.acknowledged(&p, n, &r, ctx)?;
    }
    Ok(hist)
}

async fn bench_task(
    store: orchestrix::AsyncStore,
    a: &BenchArgs,
    w: u64,
    streams: u64,
    ctx: &BenchCtx,
) -> CliResult<Histogram<u64>> {
    let mut hist = new_hist()?;
    let mut plan = WriterPlan::new(store.store(), a, w, streams, ctx.take_pregenerated(w))?;
    while let Some(mut p) = plan.next() {
        if ctx.failed.load(Ordering::Relaxed) {
            break;
        }
        let n = p.events.len() as u64;
        let events = std::mem::take(&mut p.events);
        let t = Instant::now();
        let r = store.append(&p.name, p.expected, events).await?;
        hist.saturating_record(t.elapsed().as_nanos() as u64);
        plan.acknowledged(&p, n, &r, ctx)?;
    }
    Ok(hist)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_rfc3339_nanos_including_before_the_epoch() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(format_time(1), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            format_time(951_782_400_123_000_000),
            "2000-02-29T00:00:00.123000000Z"
        );
        assert_eq!(
            format_time(-86_400_000_000_000),
            "1969-12-31T00:00:00.000000000Z"
        );
        assert_eq!(format_time(i64::MIN), "1677-09-21T00:12:43.145224192Z");
        assert_eq!(format_time(i64::MAX), "2262-04-11T23:47:16.854775807Z");
    }

    #[test]
    fn expected_versions_parse() {
        assert_eq!(parse_expected("any"), Ok(ExpectedVersion::Any));
        assert_eq!(parse_expected("no-stream"), Ok(ExpectedVersion::NoStream));
        assert_eq!(parse_expected("exists"), Ok(ExpectedVersion::StreamExists));
        assert_eq!(parse_expected("7"), Ok(ExpectedVersion::Exact(7)));
        assert!(parse_expected("-1").is_err());
    }

    #[test]
    fn payload_is_json_of_about_the_size() {
        let p = payload(3, 42, 256);
        assert_eq!(p.len(), 256);
        assert!(serde_json::from_slice::<Value>(&p).is_ok());
    }
}
