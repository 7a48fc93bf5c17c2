//! The results: one table for people, the same and more as JSON for machines.

use std::fmt::Write as _;

use serde::Serialize;

use crate::reference::Reference;
use crate::stats::{median, RunResult};
use crate::workload::{ReadStore, Workload, NOT_YET};

/// A backend as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendInfo {
    /// Its name.
    pub name: String,
    /// What it does before acknowledging an append.
    pub acknowledges: String,
}

/// One backend's runs of one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The backend.
    pub backend: String,
    /// The round with the median events/s.
    pub median: Option<RunResult>,
    /// Every round, in order.
    pub rounds: Vec<RunResult>,
    /// How the backend's runs differ from the workload as specified (shown on its row), if
    /// they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caveat: Option<String>,
}

impl Cell {
    /// A cell of these rounds, with their median picked.
    pub fn new(backend: &str, rounds: Vec<RunResult>) -> Self {
        Cell {
            backend: backend.to_string(),
            median: median(&rounds).cloned(),
            rounds,
            caveat: None,
        }
    }

    /// The same cell with a caveat (see [`crate::backend::Backend::caveat`]).
    pub fn with_caveat(mut self, caveat: Option<String>) -> Self {
        self.caveat = caveat;
        self
    }
}

/// One workload's results.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResults {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Whether it writes.
    pub writes: bool,
    /// One cell per backend, in the run's order.
    pub cells: Vec<Cell>,
}

impl WorkloadResults {
    /// Results of `w`.
    pub fn new(w: &Workload, cells: Vec<Cell>) -> Self {
        WorkloadResults {
            id: w.id.to_string(),
            title: w.title.to_string(),
            writes: w.kind.writes(),
            cells,
        }
    }

    fn events_per_sec(&self, backend: &str) -> Option<f64> {
        self.cells
            .iter()
            .find(|c| c.backend == backend)
            .and_then(|c| c.median.as_ref())
            .map(RunResult::events_per_sec)
    }
}

/// A target of the issue: Orchestrix at least `min_ratio` times PostgreSQL's events/s.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The workload.
    pub workload: String,
    /// The ratio required.
    pub min_ratio: f64,
    /// The ratio measured (if both ran).
    pub ratio: Option<f64>,
    /// Whether it was met (if both ran).
    pub met: Option<bool>,
}

/// The targets of issue 3 against PostgreSQL: (workload id, minimum ratio).
pub const TARGETS: &[(&str, f64)] = &[
    ("1", 1.0),
    ("2-64", 20.0),
    ("3", 20.0),
    ("4-1", 50.0),
    ("4-8", 50.0),
    ("5", 20.0),
];

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether this was a `--quick` run.
    pub quick: bool,
    /// Rounds per workload and backend.
    pub rounds: u32,
    /// Length of a timed run in seconds.
    pub seconds_per_run: f64,
    /// Size of each event's data.
    pub event_bytes: usize,
    /// The read workloads' store.
    pub read_store: ReadStore,
    /// Worker threads of the tokio runtime driving the clients.
    pub runtime_threads: usize,
    /// Where the data directories were.
    pub data_dir: String,
    /// The backends that ran.
    pub backends: Vec<BackendInfo>,
    /// Backends left out, with why.
    pub skipped: Vec<(String, String)>,
    /// The machine's limits measured in this run.
    pub reference: Option<Reference>,
    /// The workloads that ran.
    pub workloads: Vec<WorkloadResults>,
    /// The targets against PostgreSQL.
    pub targets: Vec<Target>,
    /// Wall time of the whole run.
    pub total_secs: f64,
}

impl Report {
    /// Fills in the targets from the workloads' medians.
    pub fn compute_targets(&mut self) {
        self.targets = TARGETS
            .iter()
            .filter_map(|(id, min)| {
                let w = self.workloads.iter().find(|w| w.id == *id)?;
                let ratio = match (w.events_per_sec("orchestrix"), w.events_per_sec("postgres")) {
                    (Some(o), Some(p)) if p > 0.0 => Some(o / p),
                    _ => None,
                };
                Some(Target {
                    workload: id.to_string(),
                    min_ratio: *min,
                    ratio,
                    met: ratio.map(|r| r >= *min),
                })
            })
            .collect();
    }
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency in microseconds with a unit that suits it.
pub fn duration_us(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.1} us")
    } else if us < 1000.0 {
        format!("{us:.0} us")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

const COLUMNS: [(&str, usize); 8] = [
    ("backend", 10),
    ("events/s", 12),
    ("ops/s", 10),
    ("p50", 9),
    ("p99", 9),
    ("p99.9", 9),
    ("conflicts", 10),
    ("ox/peer", 8),
];
const WORKLOAD_WIDTH: usize = 49;

fn row(out: &mut String, workload: &str, cols: [&str; 8]) {
    let _ = write!(out, "{workload:<WORKLOAD_WIDTH$}");
    for (i, (v, (_, w))) in cols.iter().zip(COLUMNS).enumerate() {
        if i == 0 {
            let _ = write!(out, " {v:<w$}");
        } else {
            let _ = write!(out, " {v:>w$}");
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
}

/// The table and what goes under it.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Orchestrix peer comparison{}: {} round(s) per workload and backend, alternating backends; \
         the median round shown. Timed runs of {:.1} s; {}-byte JSON events; read store {} events \
         in {} streams; {} runtime threads.",
        if r.quick { " (--quick)" } else { "" },
        r.rounds,
        r.seconds_per_run,
        r.event_bytes,
        thousands(r.read_store.events as f64),
        thousands(r.read_store.streams as f64),
        r.runtime_threads,
    );
    let _ = writeln!(out);
    let mut header = String::new();
    row(&mut header, "workload", COLUMNS.map(|(h, _)| h));
    out.push_str(&header);
    out.push_str(&"-".repeat(header.trim_end().len()));
    out.push('\n');

    let mut workloads: Vec<(&str, Option<&WorkloadResults>)> = r
        .workloads
        .iter()
        .map(|w| (w.id.as_str(), Some(w)))
        .collect();
    for (id, _, _) in NOT_YET {
        workloads.push((id, None));
    }
    for (id, w) in workloads {
        let Some(w) = w else {
            if let Some((_, title, why)) = NOT_YET.iter().find(|n| n.0 == id) {
                let _ = writeln!(out, "{:<WORKLOAD_WIDTH$} {why}", format!("{id:<5}{title}"));
            }
            continue;
        };
        let ox = w.events_per_sec("orchestrix");
        for (i, c) in w.cells.iter().enumerate() {
            let label = if i == 0 {
                format!("{:<5}{}", w.id, w.title)
            } else {
                String::new()
            };
            let Some(m) = &c.median else {
                row(
                    &mut out,
                    &label,
                    [&c.backend, "no run", "", "", "", "", "", ""],
                );
                continue;
            };
            let lat = |f: fn(&crate::stats::Latency) -> f64| {
                m.latency
                    .as_ref()
                    .map_or("-".to_string(), |l| duration_us(f(l)))
            };
            // A run that is one operation (the full read) has no rate of operations.
            let ops = if m.latency.is_some() {
                thousands(m.ops_per_sec())
            } else {
                "-".into()
            };
            let conflicts = if w.writes {
                thousands(m.conflicts as f64)
            } else {
                "-".into()
            };
            let vs = match ox {
                Some(o) if c.backend != "orchestrix" && m.events_per_sec() > 0.0 => {
                    ratio(o / m.events_per_sec())
                }
                _ => String::new(),
            };
            row(
                &mut out,
                &label,
                [
                    &c.backend,
                    &thousands(m.events_per_sec()),
                    &ops,
                    &lat(|l| l.p50_us),
                    &lat(|l| l.p99_us),
                    &lat(|l| l.p999_us),
                    &conflicts,
                    &vs,
                ],
            );
            if let Some(caveat) = &c.caveat {
                // The row says itself that it is not the workload as specified.
                out.pop();
                let _ = writeln!(out, "  ! {caveat}");
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "ops/s: appends/s for writes (workload 6: successful appends, latency including re-reads \
         and retries), stream reads/s for workload 4. ox/peer: Orchestrix's events/s divided by \
         the peer's."
    );
    let _ = writeln!(out);
    if let Some(reference) = &r.reference {
        let _ = writeln!(
            out,
            "Reference limits of this machine, measured in this run in {}:",
            r.data_dir
        );
        let _ = writeln!(
            out,
            "  4 KiB append + fdatasync: p50 {}, p99 {} ({} samples)",
            duration_us(reference.fdatasync_4k.p50_us),
            duration_us(reference.fdatasync_4k.p99_us),
            reference.fdatasync_4k.count
        );
        let _ = writeln!(
            out,
            "  sequential write, {} MiB in 1 MiB blocks + fdatasync: {} MB/s",
            reference.seq_write_bytes >> 20,
            thousands(reference.seq_write_mb_per_sec)
        );
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "Before acknowledging an append:");
    for b in &r.backends {
        let _ = writeln!(out, "  {:<10} {}", b.name, b.acknowledges);
    }
    for (name, why) in &r.skipped {
        let _ = writeln!(out, "  {name:<10} skipped: {why}");
    }
    let caveats: Vec<(&str, &Cell)> = r
        .workloads
        .iter()
        .flat_map(|w| w.cells.iter().map(move |c| (w.id.as_str(), c)))
        .filter(|(_, c)| c.caveat.is_some())
        .collect();
    if !caveats.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Not as specified (the rows marked !; their ox/peer compares different work):"
        );
        for (id, c) in caveats {
            let _ = writeln!(
                out,
                "  {:<10} workload {id}: {}",
                c.backend,
                c.caveat.as_deref().unwrap_or_default()
            );
        }
    }
    if !r.targets.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Targets, Orchestrix events/s over PostgreSQL's:");
        for t in &r.targets {
            let verdict = match (t.ratio, t.met) {
                (Some(x), Some(true)) => format!("{} (met)", ratio(x)),
                (Some(x), _) => format!("{} (NOT met)", ratio(x)),
                _ => "not measured".into(),
            };
            let _ = writeln!(
                out,
                "  workload {:<5} at least {:<6} {verdict}",
                t.workload,
                ratio(t.min_ratio)
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Every write run was read back in full and matched what was acknowledged; every read \
         returned the events loaded. Total time {:.0} s.",
        r.total_secs
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latency;
    use crate::workload::WORKLOADS;

    fn result(events: u64, conflicts: u64) -> RunResult {
        RunResult {
            events,
            ops: events,
            secs: 2.0,
            conflicts,
            latency: Some(Latency {
                count: events,
                p50_us: 150.0,
                p99_us: 2500.0,
                p999_us: 1_500_000.0,
                max_us: 2_000_000.0,
            }),
        }
    }

    fn report() -> Report {
        let w1 = WORKLOADS[0];
        let w6 = *WORKLOADS.iter().find(|w| w.id == "6").unwrap();
        let mut r = Report {
            quick: true,
            rounds: 3,
            seconds_per_run: 0.5,
            event_bytes: 256,
            read_store: ReadStore {
                events: 20_000,
                streams: 200,
            },
            runtime_threads: 2,
            data_dir: "/tmp".into(),
            backends: vec![
                BackendInfo {
                    name: "orchestrix".into(),
                    acknowledges: "fdatasync per group commit".into(),
                },
                BackendInfo {
                    name: "postgres".into(),
                    acknowledges: "WAL flush at commit".into(),
                },
            ],
            skipped: vec![("sqlite".into(), "not asked for".into())],
            reference: None,
            workloads: vec![
                WorkloadResults::new(
                    &w1,
                    vec![
                        Cell::new(
                            "orchestrix",
                            vec![result(30_000, 0), result(10_000, 0), result(20_000, 0)],
                        ),
                        Cell::new("postgres", vec![result(4_000, 0)]),
                    ],
                ),
                WorkloadResults::new(
                    &w6,
                    vec![
                        Cell::new("orchestrix", vec![result(1000, 1234)]),
                        Cell::new("postgres", vec![]),
                        Cell::new("peer", vec![result(500, 7)])
                            .with_caveat(Some("not quite workload 6".into())),
                    ],
                ),
            ],
            targets: Vec::new(),
            total_secs: 42.0,
        };
        r.compute_targets();
        r
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(f64::NAN), "-");
        assert_eq!(duration_us(4.25), "4.2 us");
        assert_eq!(duration_us(412.3), "412 us");
        assert_eq!(duration_us(2500.0), "2.50 ms");
        assert_eq!(duration_us(1_500_000.0), "1.50 s");
        assert_eq!(ratio(2.5), "2.50x");
        assert_eq!(ratio(25.0), "25.0x");
        assert_eq!(ratio(250.0), "250x");
    }

    #[test]
    fn the_table_has_a_row_per_backend_and_the_ratio() {
        let r = report();
        let t = render(&r);
        let lines: Vec<&str> = t.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("workload"))
            .unwrap();
        for col in [
            "backend",
            "events/s",
            "ops/s",
            "p50",
            "p99",
            "p99.9",
            "conflicts",
            "ox/peer",
        ] {
            assert!(
                lines[header].contains(col),
                "{col} missing: {}",
                lines[header]
            );
        }
        // The median round of orchestrix (20,000 events in 2 s) against postgres (2,000/s).
        let ox = lines[header + 2];
        assert!(ox.starts_with("1    1 writer"), "{ox}");
        assert!(ox.contains("orchestrix") && ox.contains("10,000"), "{ox}");
        let pg = lines[header + 3];
        assert!(pg.starts_with(' ') && pg.contains("postgres"), "{pg}");
        assert!(pg.contains("2,000") && pg.ends_with("5.00x"), "{pg}");
        assert!(
            pg.contains("150 us") && pg.contains("2.50 ms") && pg.contains("1.50 s"),
            "{pg}"
        );
        // Columns line up: every backend name starts in the same column.
        let at = |l: &str, s: &str| l.find(s).unwrap();
        assert_eq!(at(ox, "orchestrix"), at(pg, "postgres"));
        assert_eq!(at(lines[header], "backend"), at(ox, "orchestrix"));
        // Conflicts are shown, a missing run is said, workload 7 is listed as not yet.
        assert!(t.lines().any(|l| l.contains("1,234")), "{t}");
        assert!(
            t.lines()
                .any(|l| l.contains("postgres") && l.contains("no run")),
            "{t}"
        );
        assert!(
            t.contains("7    aggregate load with/without snapshot"),
            "{t}"
        );
        assert!(t.contains("not yet (needs the toolkit issue)"), "{t}");
        assert!(t.contains("sqlite     skipped: not asked for"), "{t}");
        // A caveat is on its row and in the legend.
        assert!(
            t.lines()
                .any(|l| l.contains("peer") && l.ends_with("  ! not quite workload 6")),
            "{t}"
        );
        assert!(
            t.contains("  peer       workload 6: not quite workload 6"),
            "{t}"
        );
        assert!(
            t.contains("workload 1     at least 1.00x  5.00x (met)"),
            "{t}"
        );
    }

    #[test]
    fn the_report_serializes_to_json() {
        let v = serde_json::to_value(report()).unwrap();
        assert_eq!(v["workloads"][0]["cells"][0]["median"]["events"], 20_000);
        assert_eq!(
            v["workloads"][0]["cells"][0]["rounds"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(v["targets"][0]["met"], true);
        assert!(v["workloads"][0]["cells"][0].get("caveat").is_none());
        assert_eq!(
            v["workloads"][1]["cells"][2]["caveat"],
            "not quite workload 6"
        );
    }
}
