//! The offer cycle's progress: the stage the current cycle is in, whether another is wanted, and the
//! figures of recent cycles (`/v1/cycles`). The stages themselves run in `cycle.rs`.

use std::collections::VecDeque;
use std::time::Instant;

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
}

impl Default for Cycles {
    fn default() -> Self {
        Cycles {
            number: 0,
            stage: Stage::Idle,
            wanted: true,
            last_start: Instant::now(),
            current: CycleView::default(),
            records: VecDeque::new(),
        }
    }
}

impl Cycles {
    /// Records the cycle in progress.
    pub fn record(&mut self) {
        if self.records.len() == CYCLES_KEPT {
            self.records.pop_front();
        }
        self.records.push_back(std::mem::take(&mut self.current));
    }

    /// Changes the figures of a recorded cycle (offers answered after the cycle was recorded).
    pub fn update(&mut self, number: u64, change: impl FnOnce(&mut CycleView)) {
        if self.current.number == number {
            change(&mut self.current);
        } else if let Some(view) = self.records.iter_mut().rev().find(|v| v.number == number) {
            change(view);
        }
    }

    /// Recent cycles, oldest first.
    pub fn recent(&self) -> Vec<CycleView> {
        self.records.iter().cloned().collect()
    }
}
