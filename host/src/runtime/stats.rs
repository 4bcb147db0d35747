//! Per-version call figures: how many calls, how many failed and why, call time percentiles, memory.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::Serialize;

/// How many recent call durations are kept for percentiles.
const WINDOW: usize = 4096;

pub(crate) struct Stats {
    calls: AtomicU64,
    deadline: AtomicU64,
    memory: AtomicU64,
    traps: AtomicU64,
    limits: AtomicU64,
    peak_memory: AtomicU64,
    recent: Mutex<Recent>,
    /// Every call's time, for `/metrics`: 10 µs to ~5 s, doubling.
    seconds: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            calls: AtomicU64::default(),
            deadline: AtomicU64::default(),
            memory: AtomicU64::default(),
            traps: AtomicU64::default(),
            limits: AtomicU64::default(),
            peak_memory: AtomicU64::default(),
            recent: Mutex::default(),
            seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
        }
    }
}

#[derive(Default)]
struct Recent {
    micros: Vec<u32>,
    next: usize,
}

/// A copy of the figures at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Calls made (including failed ones).
    pub calls: u64,
    /// Calls that trapped (panic, `unreachable`, bad memory access).
    pub traps: u64,
    /// Calls stopped at their deadline.
    pub deadline_exceeded: u64,
    /// Calls that hit the memory budget.
    pub memory_exceeded: u64,
    /// Calls that returned more than the limits on what a call may hand back.
    pub limits_exceeded: u64,
    /// Median call time over the recent window, microseconds.
    pub p50_us: u64,
    /// 99th percentile call time over the recent window, microseconds.
    pub p99_us: u64,
    /// Largest linear memory any instance of this version reached, bytes.
    pub peak_memory_bytes: u64,
}

impl Stats {
    pub(crate) fn record(&self, elapsed: Duration, failure: Option<&super::CallError>, peak_memory: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.peak_memory.fetch_max(peak_memory as u64, Ordering::Relaxed);
        match failure {
            None => {}
            Some(super::CallError::Limit(_)) => {
                self.limits.fetch_add(1, Ordering::Relaxed);
            }
            Some(super::CallError::Deadline(_)) => {
                self.deadline.fetch_add(1, Ordering::Relaxed);
            }
            Some(super::CallError::Memory { .. }) => {
                self.memory.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {
                self.traps.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.seconds.observe(elapsed.as_secs_f64());
        let micros = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
        let mut recent = self.recent.lock().expect("stats lock");
        if recent.micros.len() < WINDOW {
            recent.micros.push(micros);
        } else {
            let next = recent.next;
            recent.micros[next] = micros;
        }
        recent.next = (recent.next + 1) % WINDOW;
    }

    pub(crate) fn call_seconds(&self) -> &Histogram {
        &self.seconds
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut micros = self.recent.lock().expect("stats lock").micros.clone();
        micros.sort_unstable();
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            deadline_exceeded: self.deadline.load(Ordering::Relaxed),
            memory_exceeded: self.memory.load(Ordering::Relaxed),
            limits_exceeded: self.limits.load(Ordering::Relaxed),
            p50_us: percentile(&micros, 50),
            p99_us: percentile(&micros, 99),
            peak_memory_bytes: self.peak_memory.load(Ordering::Relaxed),
        }
    }
}

/// The `p`th percentile of sorted samples (nearest rank), 0 when there are none.
fn percentile(sorted: &[u32], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    u64::from(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50), 50);
        assert_eq!(percentile(&samples, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[], 50), 0);
    }

    #[test]
    fn the_window_keeps_the_latest_calls() {
        let stats = Stats::default();
        for _ in 0..WINDOW {
            stats.record(Duration::from_micros(1), None, 0);
        }
        for _ in 0..WINDOW {
            stats.record(Duration::from_micros(9), Some(&crate::runtime::CallError::Trap("x".into())), 64);
        }
        let s = stats.snapshot();
        assert_eq!(
            (s.calls, s.traps, s.p50_us, s.peak_memory_bytes),
            (2 * WINDOW as u64, WINDOW as u64, 9, 64)
        );
    }
}
