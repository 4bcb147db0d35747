//! One version of a plugin: compiled, linked and ready to instantiate, with its limits, its call figures and
//! (for allocators) its pool of idle instances; and the summary of it that listings show.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::bindings::allocator::AllocatorPre;
use super::bindings::framework::FrameworkPre;
use super::bindings::incremental_allocator::IncrementalAllocatorPre;
use super::bindings::{ClusterView, Grants};
use super::engine::Runtime;
use super::instance::AllocatorInstance;
use super::limits::PluginLimits;
use super::state::PluginState;
use super::stats::{Stats, StatsSnapshot};
use super::{CallError, PluginKind};

pub(crate) enum Pre {
    Allocator(AllocatorPre<PluginState>),
    IncrementalAllocator(IncrementalAllocatorPre<PluginState>),
    Framework(FrameworkPre<PluginState>),
}

/// One loaded version of a plugin: compiled, linked, ready to instantiate.
pub struct Version {
    pub(crate) runtime: Arc<Runtime>,
    /// Plugin name.
    pub name: String,
    /// Version number, from 1, unique per plugin name.
    pub number: u32,
    /// The world it implements.
    pub kind: PluginKind,
    /// `name@vN`, for logs.
    pub(crate) label: Arc<str>,
    pub(crate) pre: Pre,
    /// sha256 of the component bytes.
    pub sha256: String,
    /// Size of the component bytes.
    pub size: usize,
    /// How long compiling (or loading the cached artifact) took.
    pub compile_time: Duration,
    /// Whether the compiled artifact came from the cache.
    pub from_cache: bool,
    /// When it was loaded, ms since the Unix epoch.
    pub loaded_at_ms: u64,
    /// The allocator's configuration (frameworks carry theirs per framework instance).
    pub config: String,
    /// Memory cap and deadline.
    pub limits: PluginLimits,
    pub(crate) stats: Stats,
    /// Idle allocator instances, ready for the next call.
    pub(super) pool: Mutex<Vec<AllocatorInstance>>,
    /// Why it was rolled back automatically, if it was.
    pub(super) rolled_back: Mutex<Option<String>>,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("name", &self.name)
            .field("number", &self.number)
            .field("kind", &self.kind)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl Version {
    /// The runtime this version runs on.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Call figures so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The time of each call, for `/metrics`.
    pub fn call_seconds(&self) -> &prometheus_client::metrics::histogram::Histogram {
        self.stats.call_seconds()
    }

    /// Why the version was rolled back automatically, if it was.
    pub fn rolled_back(&self) -> Option<String> {
        self.rolled_back.lock().expect("rolled back lock").clone()
    }

    /// Records why the version was rolled back.
    pub fn set_rolled_back(&self, reason: String) {
        *self.rolled_back.lock().expect("rolled back lock") = Some(reason);
    }

    fn take_instance(self: &Arc<Self>) -> Result<AllocatorInstance, CallError> {
        if let Some(instance) = self.pool.lock().expect("pool lock").pop() {
            return Ok(instance);
        }
        AllocatorInstance::new(self).map_err(CallError::from)
    }

    /// Runs one allocation on an instance of this version. After a failure the instance is dropped and a
    /// fresh one created for the next call.
    pub fn allocate(self: &Arc<Self>, view: &ClusterView) -> Result<Grants, CallError> {
        self.allocate_revised(view, None)
    }

    /// [`Version::allocate`] with each node's revision, as [`AllocatorInstance::allocate_revised`] takes it.
    pub fn allocate_revised(
        self: &Arc<Self>,
        view: &ClusterView,
        revisions: Option<&[u64]>,
    ) -> Result<Grants, CallError> {
        let mut instance = self.take_instance()?;
        let result = instance.allocate_revised(view, revisions);
        match &result {
            Ok(_) => self.pool.lock().expect("pool lock").push(instance),
            Err(_) => {
                drop(instance);
                match AllocatorInstance::new(self) {
                    Ok(fresh) => self.pool.lock().expect("pool lock").push(fresh),
                    Err(e) => tracing::error!(target: "berth.runtime", plugin = %self.label,
                        error = %CallError::from(e), "could not re-instantiate after a failed call"),
                }
            }
        }
        result
    }
}

/// A version's summary, for listings.
#[derive(Clone, Debug, Serialize)]
pub struct VersionInfo {
    /// Plugin name.
    pub name: String,
    /// Its kind.
    pub kind: PluginKind,
    /// Version number.
    pub version: u32,
    /// Whether it is the active version.
    pub active: bool,
    /// sha256 of the component.
    pub sha256: String,
    /// Component size in bytes.
    pub size: usize,
    /// Compile (or cache load) time, microseconds.
    pub compile_us: u64,
    /// Whether the compiled artifact came from the cache.
    pub from_cache: bool,
    /// When it was loaded, ms since the Unix epoch.
    pub loaded_at_ms: u64,
    /// Its limits.
    pub limits: PluginLimits,
    /// Its `init` configuration (allocators).
    pub config: String,
    /// Call figures.
    pub stats: StatsSnapshot,
    /// Why it was rolled back automatically, if it was.
    pub rolled_back: Option<String>,
}

impl VersionInfo {
    pub(super) fn new(v: &Version, active: bool) -> VersionInfo {
        VersionInfo {
            name: v.name.clone(),
            kind: v.kind,
            version: v.number,
            active,
            sha256: v.sha256.clone(),
            size: v.size,
            compile_us: v.compile_time.as_micros() as u64,
            from_cache: v.from_cache,
            loaded_at_ms: v.loaded_at_ms,
            limits: v.limits,
            config: v.config.clone(),
            stats: v.stats(),
            rolled_back: v.rolled_back(),
        }
    }
}

/// What to load: a component's bytes and how to run it.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    /// Plugin name (created if new).
    pub name: &'a str,
    /// The world it must implement.
    pub kind: PluginKind,
    /// The component.
    pub bytes: &'a [u8],
    /// Configuration passed to `init` (allocators).
    pub config: String,
    /// Memory cap and deadline.
    pub limits: PluginLimits,
    /// A version number to restore (after a restart); `None` takes the next one.
    pub number: Option<u32>,
}
