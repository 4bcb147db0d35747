//! Hot swap under load: one thread runs allocation cycles back to back through the registry's active
//! `proportional` version, as the master's cycle does, first alone (the baseline), then while another
//! thread prepares new versions (compiling them, as an upload does) and activates each.
//!
//! Figures: the cycles' p99 in both phases (the difference is the extra latency a swap costs the cycles
//! running beside it, compilation on the other core included), the swap pause (the time `activate` holds
//! the switch, which is all a cycle could ever wait for), and the calls that failed (must be none) or were
//! answered by a version other than the one active when they started (must be none either).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::allocation::{cluster, proportional, registry, to_abi};
use super::quantile;

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct HotSwap {
    pub nodes: u32,
    pub frameworks: u32,
    /// Length of each phase.
    pub phase: Duration,
    /// Swaps made during the second phase, evenly spread.
    pub swaps: u32,
}

/// What it measured.
#[derive(Clone, Debug)]
pub struct Swapped {
    pub setup: HotSwap,
    pub baseline_cycles: usize,
    pub swapping_cycles: usize,
    pub baseline_p50: Duration,
    pub baseline_p99: Duration,
    pub swapping_p50: Duration,
    pub swapping_p99: Duration,
    /// `activate` of a prepared version, p99 and slowest.
    pub pause_p99: Duration,
    pub pause_max: Duration,
    pub swaps: usize,
    /// Versions that answered calls during the swapping phase.
    pub versions_seen: usize,
    pub failed_calls: usize,
}

impl Swapped {
    /// The p99 cycle latency a swap adds.
    pub fn extra_p99(&self) -> Duration {
        self.swapping_p99.saturating_sub(self.baseline_p99)
    }
}

pub fn run(setup: HotSwap) -> Swapped {
    let registry = registry();
    let plugin = registry.get("proportional").expect("loaded");
    let view = to_abi(&cluster(setup.nodes, setup.frameworks));

    // Cycles back to back until `stop`: (duration, failed, answered by the version active at the start).
    let cycles = |stop: &AtomicBool| {
        let mut durations = Vec::new();
        let (mut failed, mut versions) = (0, std::collections::BTreeSet::new());
        while !stop.load(Ordering::Relaxed) {
            let active = plugin.active().number;
            let started = Instant::now();
            match plugin.allocate(&view) {
                Ok((number, grants)) => {
                    std::hint::black_box(grants);
                    // A call answered by a version activated after it started would be a torn swap.
                    assert!(number >= active, "a call that started on v{active} was answered by v{number}");
                    versions.insert(number);
                }
                Err(_) => failed += 1,
            }
            durations.push(started.elapsed());
        }
        (durations, failed, versions.len())
    };

    // Warm up, then the baseline.
    for _ in 0..20 {
        plugin.allocate(&view).expect("warm-up call");
    }
    let stop = AtomicBool::new(false);
    let (mut baseline, baseline_failed, _) = std::thread::scope(|s| {
        let runner = s.spawn(|| cycles(&stop));
        std::thread::sleep(setup.phase);
        stop.store(true, Ordering::Relaxed);
        runner.join().unwrap()
    });

    let stop = AtomicBool::new(false);
    let ((mut swapping, swapping_failed, versions_seen), mut pauses) = std::thread::scope(|s| {
        let runner = s.spawn(|| cycles(&stop));
        let every = setup.phase / setup.swaps.max(1);
        let mut pauses = Vec::new();
        let begun = Instant::now();
        for i in 0..setup.swaps {
            let version = registry.prepare(proportional(None)).expect("preparing a new version");
            let started = Instant::now();
            registry.activate(version);
            pauses.push(started.elapsed());
            if let Some(rest) = (every * (i + 1)).checked_sub(begun.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        stop.store(true, Ordering::Relaxed);
        (runner.join().unwrap(), pauses)
    });

    Swapped {
        setup,
        baseline_cycles: baseline.len(),
        swapping_cycles: swapping.len(),
        baseline_p50: quantile(&mut baseline, 0.5),
        baseline_p99: quantile(&mut baseline, 0.99),
        swapping_p50: quantile(&mut swapping, 0.5),
        swapping_p99: quantile(&mut swapping, 0.99),
        pause_p99: quantile(&mut pauses, 0.99),
        pause_max: quantile(&mut pauses, 1.0),
        swaps: pauses.len(),
        versions_seen,
        failed_calls: baseline_failed + swapping_failed,
    }
}
