//! One version of a plugin: compiled, linked and ready to instantiate, with its limits, its call figures,
//! the summary of it that listings show, and its live instances. Each instance has its own `Store`, every
//! call runs under a deadline and a memory cap, and a failed instance is replaced (a trapped instance is
//! never called again). Allocators keep a pool of idle instances here; frameworks, which follow their
//! plugin's active version, are in `framework.rs` on the same helpers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::{Store, Trap};

use super::bindings::allocator::{Allocator, AllocatorPre};
use super::bindings::framework::FrameworkPre;
use super::bindings::incremental_allocator::{IncrementalAllocator, IncrementalAllocatorPre};
use super::bindings::{ClusterView, Grants};
use super::blocking::BlockedPastDeadline;
use super::delta::HeldView;
use super::engine::Runtime;
use super::limits::{MAX_GRANTS, MAX_RETURN_BYTES, MemoryCapExceeded, PluginLimits};
use super::state::{EventsWatched, KvBackend, PluginState};
use super::stats::{Stats, StatsSnapshot};
use super::{CallError, LoadError, PluginKind};

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

/// A store and the typed exports of one instance.
pub(super) struct Live<B> {
    pub(super) store: Store<PluginState>,
    pub(super) exports: B,
    pub(super) version: Arc<Version>,
}

/// Why creating an instance failed: `init` said no, or the instance failed before `init` answered.
pub(crate) enum InstantiateError {
    Refused(String),
    Failed(CallError),
}

impl From<InstantiateError> for LoadError {
    fn from(e: InstantiateError) -> LoadError {
        match e {
            InstantiateError::Refused(message) => LoadError::InitRefused(message),
            InstantiateError::Failed(error) => LoadError::InitFailed(error),
        }
    }
}

impl From<InstantiateError> for CallError {
    fn from(e: InstantiateError) -> CallError {
        match e {
            InstantiateError::Refused(message) => CallError::Instantiate(format!("init refused: {message}")),
            InstantiateError::Failed(error) => CallError::Instantiate(error.to_string()),
        }
    }
}

pub(super) fn new_store(
    version: &Version,
    kv: Option<Arc<dyn KvBackend>>,
    events: Option<EventsWatched>,
) -> Store<PluginState> {
    let state = PluginState::new(version.label.clone(), &version.limits, kv, events);
    let mut store = Store::new(version.runtime.engine(), state);
    store.limiter(|state| &mut state.limiter);
    // What one call may copy out of the plugin, return values and host-call arguments alike: every string
    // and list counts, so aliased data cannot multiply it.
    store.set_hostcall_fuel(MAX_RETURN_BYTES);
    store
}

/// Runs one call with the version's deadline, classifies a failure, and records the figures.
pub(super) fn call<T>(
    version: &Version,
    store: &mut Store<PluginState>,
    f: impl FnOnce(&mut Store<PluginState>) -> wasmtime::Result<T>,
) -> Result<T, CallError> {
    store.set_epoch_deadline(version.runtime.deadline_ticks(version.limits.deadline()));
    let started = Instant::now();
    store.data_mut().deadline = started + version.limits.deadline();
    let result = f(store).map_err(|e| classify(e, version));
    version.stats.record(started.elapsed(), result.as_ref().err(), store.data().limiter.peak);
    if let Err(error) = &result {
        tracing::warn!(target: "berth.runtime", plugin = %version.label, kind = error.kind(), %error,
            "plugin call failed");
    }
    result
}

/// Checks a value a call returned against one of the limits on what plugins hand back.
pub(super) fn within<T>(value: T, count: usize, limit: usize, what: &'static str) -> Result<T, CallError> {
    if count > limit {
        return Err(CallError::Limit(format!("{what}: {count}, the limit is {limit}")));
    }
    Ok(value)
}

pub(super) fn classify(error: wasmtime::Error, version: &Version) -> CallError {
    const MIB: usize = 1024 * 1024;
    if let Some(cap) = error.downcast_ref::<MemoryCapExceeded>() {
        return CallError::Memory {
            asked_mib: cap.asked.div_ceil(MIB) as u64,
            cap_mib: (cap.cap / MIB) as u64,
        };
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return CallError::Deadline(version.limits.deadline());
    }
    if error.downcast_ref::<BlockedPastDeadline>().is_some() {
        return CallError::Deadline(version.limits.deadline());
    }
    let text = format!("{error:?}");
    // wasmtime's own error for data beyond the store's hostcall fuel (its type is private).
    if text.contains("fuel allocated for hostcalls has been exhausted") {
        return CallError::Limit(format!(
            "the call handed the host more than {} MiB (strings and lists counted one by one)",
            MAX_RETURN_BYTES / MIB
        ));
    }
    if text.contains("resource table has no free keys") {
        return CallError::Limit(format!(
            "the plugin holds more than {} WASI resources (timers, streams) at once",
            super::limits::MAX_HOST_RESOURCES
        ));
    }
    CallError::Trap(text)
}

/// The typed exports of an allocator instance: the plain world, or the incremental one with the host's
/// copy of the view the instance holds.
enum AllocatorExports {
    Whole(Allocator),
    Incremental(IncrementalAllocator, HeldView),
}

/// One allocator instance. Instances of a version are pooled by the [`Plugin`]; see
/// [`Plugin::allocate`].
pub struct AllocatorInstance {
    live: Live<AllocatorExports>,
}

impl AllocatorInstance {
    pub(crate) fn new(version: &Arc<Version>) -> Result<AllocatorInstance, InstantiateError> {
        let mut store = new_store(version, None, None);
        let exports = match &version.pre {
            Pre::Allocator(pre) => {
                call(version, &mut store, |store| pre.instantiate(store)).map(AllocatorExports::Whole)
            }
            Pre::IncrementalAllocator(pre) => call(version, &mut store, |store| pre.instantiate(store))
                .map(|exports| AllocatorExports::Incremental(exports, HeldView::default())),
            Pre::Framework(_) => unreachable!("allocator instance of a framework version"),
        }
        .map_err(InstantiateError::Failed)?;
        call(version, &mut store, |store| match &exports {
            AllocatorExports::Whole(exports) => exports.call_init(store, &version.config),
            AllocatorExports::Incremental(exports, _) => exports.call_init(store, &version.config),
        })
        .map_err(InstantiateError::Failed)?
        .map_err(InstantiateError::Refused)?;
        Ok(AllocatorInstance { live: Live { store, exports, version: version.clone() } })
    }

    /// A fresh instance of `version` (instantiated, `init` run), outside the version's pool: for tools that
    /// measure instantiation.
    pub fn create(version: &Arc<Version>) -> Result<AllocatorInstance, CallError> {
        AllocatorInstance::new(version).map_err(CallError::from)
    }

    /// Runs one allocation cycle. An incremental allocator is sent what changed since its previous call
    /// (the whole view the first time, or when it asks for it).
    pub fn allocate(&mut self, view: &ClusterView) -> Result<Grants, CallError> {
        self.allocate_revised(view, None)
    }

    /// [`AllocatorInstance::allocate`] with each node's revision: `revisions[i]` names the state of
    /// `view.nodes[i]`, and is never given to another state of that node or to another node (the master
    /// draws them from one count). Finding what changed then reads only the nodes whose revision moved at
    /// their place in the view, instead of every node. Revisions of another length than the view's nodes
    /// are ignored.
    pub fn allocate_revised(
        &mut self,
        view: &ClusterView,
        revisions: Option<&[u64]>,
    ) -> Result<Grants, CallError> {
        let Live { store, exports, version } = &mut self.live;
        match exports {
            AllocatorExports::Whole(exports) => {
                let list = call(version, store, |store| exports.call_allocate(store, view))?;
                let count = list.len();
                within(Grants::from_list(&list), count, MAX_GRANTS, "grants returned by `allocate`")
            }
            AllocatorExports::Incremental(exports, held) => {
                let delta = held.delta(view, revisions);
                let mut answer = call(version, store, |store| exports.call_allocate_delta(store, &delta))?;
                if answer.is_none() && delta.base.is_some() {
                    tracing::debug!(target: "berth.runtime", plugin = %version.label,
                        "the allocator does not hold the view a delta was based on: sending the whole view");
                    let whole = held.whole(view, revisions);
                    answer = call(version, store, |store| exports.call_allocate_delta(store, &whole))?;
                }
                let columns = answer.ok_or_else(|| {
                    held.forget();
                    CallError::Protocol("`allocate-delta` answered `none` to a whole view (`base: none`)")
                })?;
                let count = columns.frameworks.len();
                let grants = Grants::from_columns(columns).map_err(|e| {
                    held.forget();
                    CallError::Protocol(e)
                })?;
                within(grants, count, MAX_GRANTS, "grants returned by `allocate-delta`")
            }
        }
    }

    /// Runs one allocation cycle on the whole view (`allocate`), whatever the world: for tools that compare
    /// the two paths. An incremental allocator's held view is left as it was.
    pub fn allocate_whole(&mut self, view: &ClusterView) -> Result<Grants, CallError> {
        let Live { store, exports, version } = &mut self.live;
        call(version, store, |store| match exports {
            AllocatorExports::Whole(exports) => exports.call_allocate(store, view),
            AllocatorExports::Incremental(exports, _) => exports.call_allocate(store, view),
        })
        .map(|list| Grants::from_list(&list))
    }

    /// Whether this instance is sent deltas (its component exports `allocate-delta`).
    pub fn incremental(&self) -> bool {
        matches!(self.live.exports, AllocatorExports::Incremental(..))
    }

    /// The version this instance runs.
    pub fn version(&self) -> u32 {
        self.live.version.number
    }
}
