//! `orchestrix-compare`: runs the same workloads against Orchestrix, PostgreSQL and SQLite (and
//! SierraDB and UmaDB when built with their cargo features) in one process run, alternating
//! backends round by round, and prints one table (and, with `--json FILE`, everything as
//! JSON). Progress goes to stderr. Exits non-zero if any backend fails or reads back anything
//! other than what was written.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use orchestrix_compare::backend::Backend;
use orchestrix_compare::backends::{self, Setup};
use orchestrix_compare::reference;
use orchestrix_compare::report::{self, BackendInfo, Cell, Report, WorkloadResults};
use orchestrix_compare::stats::RunResult;
use orchestrix_compare::workload::{self, Params, ReadStore, Workload};

#[derive(Parser, Debug)]
#[command(
    name = "orchestrix-compare",
    version,
    about = "Orchestrix against its peers, same workloads, one run"
)]
struct Cli {
    /// Small sizes and short runs (under two minutes; what CI runs).
    #[arg(long)]
    quick: bool,
    /// Also write all results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Backends to run, comma-separated (default: all of this build's).
    #[arg(long, value_delimiter = ',')]
    backends: Option<Vec<String>>,
    /// Workloads to run, comma-separated ids: 1, 2-8, 2-64, 3, 4-1, 4-8, 5, 6, or 2 and 4
    /// for both variants (default: all).
    #[arg(long, value_delimiter = ',')]
    workloads: Option<Vec<String>>,
    /// Rounds per workload and backend (default: 5, or 2 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: Option<u32>,
    /// Seconds per timed run (default: 5, or 0.5 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// Events in the read workloads' store (default: 1,000,000, or 20,000 with --quick).
    #[arg(long)]
    read_events: Option<u64>,
    /// Streams in the read workloads' store (default: 10,000, or 200 with --quick).
    #[arg(long)]
    read_streams: Option<u64>,
    /// Directory under which the backends' data directories are made (default: the system
    /// temporary directory; the `postgres` user must be able to enter it).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        tokio::select! {
            r = run(cli, threads) => r,
            r = interrupted() => r,
        }
    });
    // Tasks still running after an error or interrupt are cancelled here.
    rt.shutdown_timeout(Duration::from_secs(10));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves with an error on Ctrl-C or SIGTERM, so that `run` is dropped and its backends
/// (the PostgreSQL server, the temporary directories) are cleaned up.
async fn interrupted() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    bail!("interrupted; cleaning up")
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Prints a progress line to stderr, prefixed with the time since the start.
fn progress(started: Instant, line: &str) {
    eprintln!("[{:>5.0}s] {line}", started.elapsed().as_secs_f64());
}

fn summary(r: &RunResult) -> String {
    let mut s = format!(
        "{} events/s, {} ops/s",
        report::thousands(r.events_per_sec()),
        report::thousands(r.ops_per_sec())
    );
    if let Some(l) = &r.latency {
        s.push_str(&format!(
            ", p50 {} p99 {}",
            report::duration_us(l.p50_us),
            report::duration_us(l.p99_us)
        ));
    }
    if r.conflicts > 0 {
        s.push_str(&format!(", {} conflicts", r.conflicts));
    }
    s
}

async fn run(cli: Cli, threads: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let rounds = cli.rounds.unwrap_or(if cli.quick { 2 } else { 5 });
    let seconds = cli.seconds.unwrap_or(if cli.quick { 0.5 } else { 5.0 });
    if !(seconds > 0.0 && seconds <= 3600.0) {
        bail!("--seconds must be between 0 and 3600");
    }
    let read_store = ReadStore {
        events: cli
            .read_events
            .unwrap_or(if cli.quick { 20_000 } else { 1_000_000 }),
        streams: cli
            .read_streams
            .unwrap_or(if cli.quick { 200 } else { 10_000 }),
    };
    if read_store.streams == 0 || !read_store.events.is_multiple_of(read_store.streams) {
        bail!("--read-events must be a positive multiple of --read-streams");
    }
    let (fsync_samples, seq_mib) = if cli.quick { (200, 32) } else { (1000, 256) };
    let workloads: Vec<Workload> = match &cli.workloads {
        Some(spec) => workload::select(spec)?,
        None => workload::WORKLOADS.to_vec(),
    };
    let explicit = cli.backends.is_some();
    let names: Vec<String> = match cli.backends {
        Some(v) => v.into_iter().map(|s| s.trim().to_string()).collect(),
        None => backends::NAMES.iter().map(|s| s.to_string()).collect(),
    };
    for n in &names {
        if !backends::NAMES.contains(&n.as_str()) {
            bail!(
                "unknown backend {n:?} (this build has: {})",
                backends::NAMES.join(", ")
            );
        }
    }
    let base_dir = cli.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base_dir)
        .with_context(|| format!("creating {}", base_dir.display()))?;
    let payload = Arc::new(orchestrix_benches::payload());
    let params = Params {
        duration: Duration::from_secs_f64(seconds),
        payload: payload.clone(),
        read_store,
    };

    progress(
        started,
        &format!(
            "reference: 4 KiB append + fdatasync x{fsync_samples}, {seq_mib} MiB sequential write in {}",
            base_dir.display()
        ),
    );
    let dir = base_dir.clone();
    let reference =
        tokio::task::spawn_blocking(move || reference::measure(&dir, fsync_samples, seq_mib))
            .await??;
    progress(
        started,
        &format!(
            "reference: fdatasync p50 {} p99 {}; sequential write {} MB/s",
            report::duration_us(reference.fdatasync_4k.p50_us),
            report::duration_us(reference.fdatasync_4k.p99_us),
            report::thousands(reference.seq_write_mb_per_sec)
        ),
    );

    let setup = Setup {
        base_dir: base_dir.clone(),
    };
    let mut opened: Vec<Box<dyn Backend>> = Vec::new();
    let mut skipped = Vec::new();
    for name in &names {
        progress(started, &format!("{name}: starting"));
        match backends::open(name, &setup).await {
            Ok(b) => opened.push(b),
            Err(e) if name == "postgres" && !explicit && !ci() => {
                let why = format!("{e:#}");
                progress(
                    started,
                    &format!(
                        "warning: PostgreSQL left out ({why}); under CI=true this fails the run"
                    ),
                );
                skipped.push((name.clone(), why));
            }
            Err(e) => {
                // Its own errors are printed; the start failure is the one to return.
                let _ = close_all(&mut opened).await;
                return Err(e.context(format!("starting backend {name}")));
            }
        }
    }

    let outcome = run_workloads(&mut opened, &workloads, &params, rounds, started).await;
    let closed = close_all(&mut opened).await;
    let results = outcome?;
    closed?;

    let mut report = Report {
        quick: cli.quick,
        rounds,
        seconds_per_run: seconds,
        event_bytes: payload.len(),
        read_store,
        runtime_threads: threads,
        data_dir: base_dir.display().to_string(),
        backends: results.1,
        skipped,
        reference: Some(reference),
        workloads: results.0,
        targets: Vec::new(),
        total_secs: started.elapsed().as_secs_f64(),
    };
    report.compute_targets();
    print!("{}", report::render(&report));
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report).context("encoding the JSON report")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        progress(started, &format!("results written to {}", path.display()));
    }
    Ok(())
}

/// Closes every backend, reporting each failure; returns the first.
async fn close_all(backends: &mut Vec<Box<dyn Backend>>) -> anyhow::Result<()> {
    let mut first = Ok(());
    for mut b in backends.drain(..) {
        if let Err(e) = b.close().await {
            eprintln!("error: closing {}: {e:#}", b.name());
            if first.is_ok() {
                first = Err(e.context(format!("closing {}", b.name())));
            }
        }
    }
    first
}

type Results = (Vec<WorkloadResults>, Vec<BackendInfo>);

async fn run_workloads(
    backends: &mut [Box<dyn Backend>],
    workloads: &[Workload],
    params: &Params,
    rounds: u32,
    started: Instant,
) -> anyhow::Result<Results> {
    let mut results: Vec<(Workload, Vec<Vec<RunResult>>)> = Vec::new();
    // The write workloads first (each run on an emptied store), then the read store is
    // loaded once per backend for the read workloads.
    let (writes, reads): (Vec<Workload>, Vec<Workload>) =
        workloads.iter().partition(|w| w.kind.writes());
    let mut loaded = vec![None; backends.len()];
    for (i, w) in writes.iter().chain(&reads).enumerate() {
        if i == writes.len() {
            for (b, l) in backends.iter_mut().zip(loaded.iter_mut()) {
                *l = Some(load(b.as_mut(), params, started).await?);
            }
        }
        let mut per_backend: Vec<Vec<RunResult>> = vec![Vec::new(); backends.len()];
        for round in 1..=rounds {
            for (k, b) in backends.iter_mut().enumerate() {
                let r = workload::run(b.as_mut(), w, params, loaded[k])
                    .await
                    .with_context(|| {
                        format!(
                            "workload {} ({}) on {}, round {round}",
                            w.id,
                            w.title,
                            b.name()
                        )
                    })?;
                progress(
                    started,
                    &format!(
                        "workload {:<4} round {round}/{rounds} {:<10} {}",
                        w.id,
                        b.name(),
                        summary(&r)
                    ),
                );
                per_backend[k].push(r);
            }
        }
        results.push((*w, per_backend));
    }
    // The table lists workloads in the order.
    results.sort_by_key(|(w, _)| workload::WORKLOADS.iter().position(|x| x.id == w.id));
    let infos: Vec<BackendInfo> = backends
        .iter()
        .map(|b| BackendInfo {
            name: b.name().to_string(),
            acknowledges: b.acknowledges(),
        })
        .collect();
    let table = results
        .into_iter()
        .map(|(w, per_backend)| {
            let cells = backends
                .iter()
                .zip(per_backend)
                .map(|(b, runs)| Cell::new(b.name(), runs).with_caveat(b.caveat(w.id)))
                .collect();
            WorkloadResults::new(&w, cells)
        })
        .collect();
    Ok((table, infos))
}

async fn load(
    backend: &mut dyn Backend,
    params: &Params,
    started: Instant,
) -> anyhow::Result<workload::Loaded> {
    let name = backend.name();
    let total = params.read_store.events;
    progress(
        started,
        &format!(
            "{name}: loading the read store ({} events in {} streams, untimed)",
            report::thousands(total as f64),
            report::thousands(params.read_store.streams as f64)
        ),
    );
    let t = Instant::now();
    let mut last_report = Instant::now();
    let loaded = workload::load(backend, params, |done| {
        if last_report.elapsed() >= Duration::from_secs(5) && done < total {
            progress(
                started,
                &format!("{name}: loaded {}%", done * 100 / total.max(1)),
            );
            last_report = Instant::now();
        }
    })
    .await
    .with_context(|| format!("loading the read store into {name}"))?;
    progress(
        started,
        &format!(
            "{name}: loaded and verified in {:.1} s ({} events/s)",
            t.elapsed().as_secs_f64(),
            report::thousands(total as f64 / t.elapsed().as_secs_f64().max(1e-9))
        ),
    );
    Ok(loaded)
}
