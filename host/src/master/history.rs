//! The offer cycle's progress: the stage the current cycle is in, whether another is wanted, and the
//! figures of recent cycles (`/v1/cycles`). The stages themselves run in `cycle.rs`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::metrics::Metrics;
use super::types::FastSet;
use super::views::CycleView;

/// Recent cycles kept for `/v1/cycles`.
const CYCLES_KEPT: usize = 256;

/// Where the current cycle is.
pub enum Stage {
    /// No cycle runs.
    Idle,
    /// Waiting for fresh demand from these frameworks, until `until`; then allocating with what is known.
    Demand { waiting: FastSet<u32>, until: Instant },
    /// The allocator is deciding, on a worker.
    Allocating,
}

/// The cycles so far.
pub struct Cycles {
    /// The number of the latest cycle begun.
    pub number: u64,
    pub stage: Stage,
    /// Something happened that a cycle should look at (a node joined, a task ended, a framework asked).
    pub wanted: bool,
    /// When the latest cycle began.
    pub last_start: Instant,
    /// The figures of the cycle in progress, until it is recorded.
    pub current: CycleView,
    records: VecDeque<CycleView>,
    /// Each recorded cycle is counted here too, for `/metrics`.
    metrics: Arc<Metrics>,
}

impl Cycles {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Cycles {
            number: 0,
            stage: Stage::Idle,
            wanted: true,
            last_start: Instant::now(),
            current: CycleView::default(),
            records: VecDeque::new(),
            metrics,
        }
    }

    /// Records the cycle in progress.
    pub fn record(&mut self) {
        if self.records.len() == CYCLES_KEPT {
            self.records.pop_front();
        }
        let cycle = std::mem::take(&mut self.current);
        let m = &self.metrics;
        m.cycles.inc();
        m.cycle_seconds.observe(cycle.duration_us as f64 / 1e6);
        m.allocate_seconds.observe(cycle.allocate_us as f64 / 1e6);
        if cycle.error.is_some() {
            m.cycle_errors.inc();
        }
        m.grants.inc_by(cycle.grants.into());
        m.refused_grants.inc_by(cycle.refused_grants.into());
        m.offers.inc_by(cycle.offers.into());
        m.launches.inc_by(cycle.launched.into());
        m.refused_tasks.inc_by(cycle.refused_tasks.into());
        self.records.push_back(cycle);
    }

    /// Changes the figures of a recorded cycle (offers answered after the cycle was recorded).
    pub fn update(&mut self, number: u64, change: impl FnOnce(&mut CycleView)) {
        if self.current.number == number {
            change(&mut self.current);
        } else if let Some(view) = self.records.iter_mut().rev().find(|v| v.number == number) {
            let (launched, refused) = (view.launched, view.refused_tasks);
            change(view);
            // Recorded cycles were counted when recorded; what came later is counted now.
            self.metrics.launches.inc_by(view.launched.saturating_sub(launched).into());
            self.metrics.refused_tasks.inc_by(view.refused_tasks.saturating_sub(refused).into());
        }
    }

    /// Recent cycles, oldest first.
    pub fn recent(&self) -> Vec<CycleView> {
        self.records.iter().cloned().collect()
    }
}
