//! Latency histograms and the figures of one timed run.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency histogram in nanoseconds, 1 ns to 1 hour, 3 significant digits.
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
        .map_err(|e| anyhow::anyhow!("creating a histogram: {e}"))
}

/// Records a duration, clamping what is out of range.
pub fn record(h: &mut Histogram<u64>, d: std::time::Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
}

/// Percentiles of one run's operation latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Operations measured.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl Latency {
    /// The percentiles of a histogram in nanoseconds (`None` if it is empty).
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

/// What one timed run of one workload on one backend did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    /// Events written (acknowledged) or read.
    pub events: u64,
    /// Operations: appends, stream reads, or 1 for a full read.
    pub ops: u64,
    /// Wall time from the start of the first operation to the end of the last.
    pub secs: f64,
    /// Appends refused for their expected version (then retried).
    pub conflicts: u64,
    /// Operation latency (`None` where one operation is the whole run).
    pub latency: Option<Latency>,
}

impl RunResult {
    /// Events per second.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.secs.max(1e-9)
    }

    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }
}

/// The run with the median events/s (the lower middle one for an even count).
pub fn median(runs: &[RunResult]) -> Option<&RunResult> {
    let mut sorted: Vec<&RunResult> = runs.iter().collect();
    sorted.sort_by(|a, b| a.events_per_sec().total_cmp(&b.events_per_sec()));
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(events: u64) -> RunResult {
        RunResult {
            events,
            ops: events,
            secs: 1.0,
            conflicts: 0,
            latency: None,
        }
    }

    #[test]
    fn the_median_round_is_the_middle_by_events_per_second() {
        assert!(median(&[]).is_none());
        assert_eq!(median(&[run(5)]).unwrap().events, 5);
        assert_eq!(median(&[run(9), run(1), run(5)]).unwrap().events, 5);
        assert_eq!(median(&[run(9), run(1), run(5), run(7)]).unwrap().events, 5);
    }

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let mut h = new_histogram().unwrap();
        assert!(Latency::of(&h).is_none());
        for us in 1..=1000u64 {
            record(&mut h, std::time::Duration::from_micros(us));
        }
        let l = Latency::of(&h).unwrap();
        assert_eq!(l.count, 1000);
        assert!((l.p50_us - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99_us - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.max_us - 1000.0).abs() < 1.0, "{l:?}");
    }
}
