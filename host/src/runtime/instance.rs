//! Live plugin instances: one `Store` each, every call under a deadline and a memory cap, and a fresh
//! instance after any failure (a trapped instance is never called again). Allocators here; frameworks,
//! which follow their plugin's active version, in `framework.rs` on the same helpers.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Store, Trap};

use super::bindings::allocator::Allocator;
use super::bindings::incremental_allocator::IncrementalAllocator;
use super::bindings::{ClusterView, Grants};
use super::blocking::BlockedPastDeadline;
use super::delta::HeldView;
use super::limits::{MAX_GRANTS, MAX_RETURN_BYTES, MemoryCapExceeded};
use super::state::{EventsWatched, KvBackend, PluginState};
use super::version::{Pre, Version};
use super::{CallError, LoadError};

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
