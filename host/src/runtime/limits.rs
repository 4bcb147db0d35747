//! What a plugin instance may use: a memory cap and a deadline per call.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;

/// The operator's limits for a plugin (set at load time, kept with each version).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Largest linear memory an instance may grow to, MiB.
    pub memory_mib: u64,
    /// Longest a single call may run, milliseconds. `init` gets the same deadline.
    pub deadline_ms: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits { memory_mib: 256, deadline_ms: 1_000 }
    }
}

impl PluginLimits {
    /// The deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Checks the limits are usable (a zero deadline would fail every call).
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_mib == 0 || self.memory_mib > 64 * 1024 {
            return Err(format!("memory_mib must be between 1 and 65536, got {}", self.memory_mib));
        }
        if self.deadline_ms == 0 || self.deadline_ms > 600_000 {
            return Err(format!("deadline_ms must be between 1 and 600000, got {}", self.deadline_ms));
        }
        Ok(())
    }
}

/// The trap raised when a plugin grows its memory past the cap; recognised when classifying call errors.
#[derive(Debug, thiserror::Error)]
#[error("memory cap exceeded: asked for {asked} bytes, cap is {cap} bytes")]
pub(crate) struct MemoryCapExceeded {
    pub(crate) asked: usize,
    pub(crate) cap: usize,
}

/// Enforces the memory cap on one store and remembers the peak, for `berth plugin ls`.
pub(crate) struct MemoryLimiter {
    cap: usize,
    pub(crate) peak: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(limits: &PluginLimits) -> MemoryLimiter {
        let cap = usize::try_from(limits.memory_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        MemoryLimiter { cap, peak: 0 }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            // A trap rather than a failed `memory.grow`: the call ends at once with a clear reason instead
            // of whatever the guest's allocator does on failure.
            return Err(wasmtime::Error::new(MemoryCapExceeded { asked: desired, cap: self.cap }));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a plugin that needs a million of them is misbehaving.
        Ok(desired <= 1_000_000)
    }
}
