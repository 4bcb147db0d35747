//! What a plugin instance may use: one memory budget across all its memories and tables, few of each, a
//! deadline per call, and limits on what a call may hand back to the host.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;

/// The operator's limits for a plugin (set at load time, kept with each version).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// The instance's memory budget, MiB: all its linear memories and tables together.
    pub memory_mib: u64,
    /// Longest a single call may run, milliseconds, whatever it does (computes, or waits in a host call).
    /// `init` gets the same deadline.
    pub deadline_ms: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits { memory_mib: 256, deadline_ms: 1_000 }
    }
}

/// Largest memory budget an operator may give a plugin, MiB. What a call hands back is copied into the
/// daemon's memory, so the budget bounds that too (see [`MAX_RETURN_BYTES`]).
pub const MAX_MEMORY_MIB: u64 = 4 * 1024;

/// Linear memories an instance may create. Components made by Rust, C and componentize-py have one to
/// three (the program's, WASI adapters'); more is an attempt to hold several budgets' worth.
pub const MAX_MEMORIES: usize = 4;
/// Tables an instance may create (function tables of its core modules and adapters).
pub const MAX_TABLES: usize = 16;
/// Core instances a component may create (its modules, adapters and shims).
pub const MAX_INSTANCES: usize = 32;
/// Bytes charged against the budget per table element (a function or resource reference).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// The most bytes one call may copy from the plugin into the daemon: its return value, or the arguments
/// of one host call (wasmtime's "hostcall fuel"). Each string and list counts, so a return value that
/// points many times at the same memory cannot make the daemon copy more than this.
pub const MAX_RETURN_BYTES: usize = 64 << 20;
/// Grants one `allocate` call may return.
pub const MAX_GRANTS: usize = 1_000_000;
/// Decisions one `offers` call may return, and tasks all its launches may hold together.
pub const MAX_DECISIONS: usize = 100_000;
/// Actions one `status`, `tick` or `handle` call may return.
pub const MAX_ACTIONS: usize = 100_000;
/// Body of one response of a framework's HTTP API, bytes.
pub const MAX_RESPONSE_BODY: usize = 16 << 20;
/// Headers of one response of a framework's HTTP API.
pub const MAX_RESPONSE_HEADERS: usize = 256;
/// Task shapes one `demand` call may return.
pub const MAX_SHAPES: usize = 100_000;
/// Resources (pollables, streams, sockets) one instance may hold at once through WASI.
pub const MAX_HOST_RESOURCES: usize = 1_024;
/// Largest buffer of random bytes one WASI call may ask for.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

impl PluginLimits {
    /// The deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Checks the limits are usable (a zero deadline would fail every call).
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_mib == 0 || self.memory_mib > MAX_MEMORY_MIB {
            return Err(format!(
                "memory_mib must be between 1 and {MAX_MEMORY_MIB}, got {}",
                self.memory_mib
            ));
        }
        if self.deadline_ms == 0 || self.deadline_ms > 600_000 {
            return Err(format!("deadline_ms must be between 1 and 600000, got {}", self.deadline_ms));
        }
        Ok(())
    }
}

/// The trap raised when an instance would go past its memory budget (or create more memories or tables
/// than allowed); recognised when classifying call errors.
#[derive(Debug, thiserror::Error)]
#[error(
    "memory budget exceeded: {what} would bring the instance to {asked} bytes, its budget is {cap} bytes"
)]
pub(crate) struct MemoryCapExceeded {
    pub(crate) what: &'static str,
    pub(crate) asked: usize,
    pub(crate) cap: usize,
}

/// Keeps one instance within its budget: every memory's and table's growth is charged against one total,
/// which only grows (a store holds one instance, and is dropped with it). Remembers the peak for
/// `berth plugin ls`.
pub(crate) struct MemoryLimiter {
    cap: usize,
    /// Bytes of all memories and tables so far.
    used: usize,
    pub(crate) peak: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(limits: &PluginLimits) -> MemoryLimiter {
        let cap = usize::try_from(limits.memory_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        MemoryLimiter { cap, used: 0, peak: 0 }
    }

    fn charge(&mut self, what: &'static str, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let asked = self.used.saturating_add(desired.saturating_sub(current));
        if asked > self.cap {
            // A trap rather than a failed `memory.grow`: the call ends at once with a clear reason instead
            // of whatever the guest's allocator does on failure.
            return Err(wasmtime::Error::new(MemoryCapExceeded { what, asked, cap: self.cap }));
        }
        self.used = asked;
        self.peak = self.peak.max(asked);
        Ok(true)
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.charge("growing a memory", current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.charge(
            "growing a table",
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_one_total_over_every_memory_and_table() {
        let mut limiter = MemoryLimiter::new(&PluginLimits { memory_mib: 1, deadline_ms: 1 });
        assert!(limiter.memory_growing(0, 400 << 10, None).unwrap());
        assert!(limiter.memory_growing(0, 400 << 10, None).unwrap(), "a second memory within the budget");
        let error = limiter.memory_growing(0, 400 << 10, None).unwrap_err();
        let error = error.downcast_ref::<MemoryCapExceeded>().unwrap();
        assert_eq!((error.asked, error.cap), (1200 << 10, 1 << 20));
        // Growing the first from 400 KiB to 500 KiB charges 100 KiB.
        assert!(limiter.memory_growing(400 << 10, 500 << 10, None).unwrap());
        assert!(limiter.table_growing(0, 10_000, None).unwrap());
        assert!(limiter.table_growing(0, 10_000_000, None).is_err(), "tables count against the same budget");
        assert_eq!(limiter.peak, (900 << 10) + 10_000 * TABLE_ELEMENT_BYTES);
    }
}
