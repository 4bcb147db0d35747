//! A framework plugin's instance: one per framework, following its plugin's active version (the `Plugin`
//! of the registry), with its own configuration and data.

use std::sync::Arc;

use wasmtime::Store;

use super::bindings::framework::Framework;
use super::bindings::{Action, ApiReply, Decision, HttpRequest, Offer, TaskShape, TaskStatus};
use super::limits::{MAX_ACTIONS, MAX_DECISIONS, MAX_RESPONSE_BODY, MAX_RESPONSE_HEADERS, MAX_SHAPES};
use super::registry::Plugin;
use super::state::{EventsWatched, KvBackend, PluginState};
use super::version::{InstantiateError, Live, Pre, Version, call, new_store, within};
use super::{CallError, LoadError};

/// A live framework instance of `version`: instantiated, `init` run with `config`.
fn instantiate_framework(
    version: &Arc<Version>,
    config: &str,
    kv: Option<Arc<dyn KvBackend>>,
    events: Option<EventsWatched>,
) -> Result<Live<Framework>, InstantiateError> {
    let Pre::Framework(pre) = &version.pre else {
        unreachable!("framework instance of an allocator version");
    };
    let mut store = new_store(version, kv, events);
    let exports =
        call(version, &mut store, |store| pre.instantiate(store)).map_err(InstantiateError::Failed)?;
    call(version, &mut store, |store| exports.call_init(store, config))
        .map_err(InstantiateError::Failed)?
        .map_err(InstantiateError::Refused)?;
    Ok(Live { store, exports, version: version.clone() })
}

/// A framework plugin running as one framework instance: its own configuration, its own key-value data,
/// and one live plugin instance that follows the plugin's active version.
///
/// After a failed call the instance is dropped; the next call creates a fresh one (which runs `init`
/// again, rebuilding from the store). When the plugin's active version changes, the next call moves to
/// it; if the new version's `init` fails for this framework, the framework stays on the version it runs
/// and the failure is logged once.
pub struct FrameworkInstance {
    plugin: Arc<Plugin>,
    config: String,
    kv: Option<Arc<dyn KvBackend>>,
    events: Option<EventsWatched>,
    /// The instance calls go to; `None` after a failed call until the next call creates one.
    live: Option<Live<Framework>>,
    /// The version that last ran this framework successfully: where it stays if a new one refuses it.
    last: Arc<Version>,
    /// An active version whose `init` failed for this framework, so it is not retried on every call.
    refused: Option<u32>,
}

impl FrameworkInstance {
    /// Creates the framework on the plugin's active version, running `init` with `config`. `kv` backs its
    /// `store` import (`None`: every write is refused); `events` answers its `events.watched` import
    /// (`None`: never watched).
    pub fn new(
        plugin: Arc<Plugin>,
        config: String,
        kv: Option<Arc<dyn KvBackend>>,
        events: Option<EventsWatched>,
    ) -> Result<FrameworkInstance, LoadError> {
        let active = plugin.active();
        let mut instance =
            FrameworkInstance { plugin, config, kv, events, live: None, last: active.clone(), refused: None };
        instance.live = Some(instance.instantiate(&active)?);
        Ok(instance)
    }

    /// Checks that `version` can run a framework with `config` and the data `kv` holds (its `init`
    /// accepts them), without running it. Used before activating a new version; `kv` should drop writes.
    pub fn probe_version(
        version: &Arc<Version>,
        config: &str,
        kv: Arc<dyn KvBackend>,
    ) -> Result<(), LoadError> {
        instantiate_framework(version, config, Some(kv), None).map(drop).map_err(LoadError::from)
    }

    fn instantiate(&self, version: &Arc<Version>) -> Result<Live<Framework>, InstantiateError> {
        instantiate_framework(version, &self.config, self.kv.clone(), self.events.clone())
    }

    /// The live instance: the current one if it runs the active version, else a new one on the active
    /// version, else (when the active version refuses this framework) one on the version it ran before.
    fn ready(&mut self) -> Result<&mut Live<Framework>, CallError> {
        let active = self.plugin.active();
        let switching = self.refused != Some(active.number) && active.number != self.last.number;
        if switching {
            match self.instantiate(&active) {
                Ok(live) => {
                    tracing::info!(target: "berth.runtime", plugin = %active.label, "framework moved to this version");
                    self.live = Some(live);
                    self.last = active;
                    self.refused = None;
                }
                Err(error) => {
                    let error = CallError::from(error);
                    tracing::error!(target: "berth.runtime", plugin = %active.label, %error,
                        "this version cannot run the framework; it stays on the version it runs");
                    self.refused = Some(active.number);
                }
            }
        }
        if self.live.is_none() {
            self.live = Some(self.instantiate(&self.last)?);
        }
        Ok(self.live.as_mut().expect("a live instance after ready"))
    }

    fn run<T>(
        &mut self,
        f: impl FnOnce(&Framework, &mut Store<PluginState>) -> wasmtime::Result<T>,
    ) -> Result<T, CallError> {
        let live = self.ready()?;
        let result = call(&live.version, &mut live.store, |store| f(&live.exports, store));
        if result.is_err() {
            // A trapped instance may be in any state: never call it again.
            self.live = None;
        }
        result
    }

    /// What the framework wants to launch now.
    pub fn demand(&mut self) -> Result<Vec<TaskShape>, CallError> {
        let shapes = self.run(|exports, store| exports.call_demand(store))?;
        let count = shapes.len();
        within(shapes, count, MAX_SHAPES, "task shapes returned by `demand`")
    }

    /// Offers in, decisions out.
    pub fn offers(&mut self, offers: &[Offer]) -> Result<Vec<Decision>, CallError> {
        let decisions = self.run(|exports, store| exports.call_offers(store, offers))?;
        let count = decisions.len();
        let decisions = within(decisions, count, MAX_DECISIONS, "decisions returned by `offers`")?;
        let tasks: usize = decisions
            .iter()
            .map(|d| match d {
                Decision::Launch(launch) => launch.tasks.len(),
                Decision::Decline(_) => 0,
            })
            .sum();
        within(decisions, tasks, MAX_DECISIONS, "tasks launched by one `offers` call")
    }

    /// Status updates in, actions out.
    pub fn status(&mut self, updates: &[TaskStatus]) -> Result<Vec<Action>, CallError> {
        let actions = self.run(|exports, store| exports.call_status(store, updates))?;
        let count = actions.len();
        within(actions, count, MAX_ACTIONS, "actions returned by `status`")
    }

    /// The periodic timer.
    pub fn tick(&mut self, now_ms: u64) -> Result<Vec<Action>, CallError> {
        let actions = self.run(|exports, store| exports.call_tick(store, now_ms))?;
        let count = actions.len();
        within(actions, count, MAX_ACTIONS, "actions returned by `tick`")
    }

    /// One request to the framework's HTTP API.
    pub fn handle(&mut self, request: &HttpRequest) -> Result<ApiReply, CallError> {
        let reply = self.run(|exports, store| exports.call_handle(store, request))?;
        let (body, headers, actions) =
            (reply.response.body.len(), reply.response.headers.len(), reply.actions.len());
        let reply = within(reply, body, MAX_RESPONSE_BODY, "bytes in the body `handle` returned")?;
        let reply = within(reply, headers, MAX_RESPONSE_HEADERS, "headers `handle` returned")?;
        within(reply, actions, MAX_ACTIONS, "actions returned by `handle`")
    }

    /// The version this framework runs.
    pub fn version(&self) -> u32 {
        self.last.number
    }

    /// Drops the live instance: the next call gets a fresh one, which rebuilds its state from the store.
    /// For an instance whose last call's effects were discarded, so its memory and the store disagree.
    pub fn discard(&mut self) {
        self.live = None;
    }

    /// The version this framework runs (the one its last call ran on).
    pub fn running_version(&self) -> Arc<Version> {
        self.last.clone()
    }

    /// The plugin this framework runs.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }
}
