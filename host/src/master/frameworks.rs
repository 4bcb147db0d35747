//! Frameworks: adding and removing them, calling their plugins (with the key-value journal committed or
//! undone with the call), delivering status updates, running their timers, applying their actions, and
//! serving their HTTP APIs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::{Master, publish};
use super::kv::FrameworkKv;
use super::state::{Framework, TaskKey};
use super::{ApiError, Event};
use crate::model::{ResourcesExt, is_terminal, unix_ms};
use crate::runtime::bindings::{Action, HttpRequest, HttpResponse, TaskReason, TaskState};
use crate::runtime::{CallError, EventsWatched, FrameworkInstance, PluginKind, valid_name};
use crate::store::FrameworkRecord;

/// How often each framework's `tick` runs.
const TICK_EVERY: Duration = Duration::from_secs(1);
/// The longest a framework waits after repeated failures before it is called again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What adding a framework needs.
#[derive(Clone, Debug)]
pub struct NewFramework {
    /// Its name, unique in the cluster.
    pub name: String,
    /// The framework plugin to run.
    pub plugin: String,
    /// Its role (`*` when empty).
    pub role: String,
    /// Its weight (> 0).
    pub weight: f64,
    /// Its configuration, passed to `init`.
    pub config: String,
}

impl Master {
    /// Creates the plugin instance for a framework, running `init` (its store writes are kept only if
    /// it succeeds).
    fn instantiate(
        &mut self,
        name: &str,
        record: &FrameworkRecord,
        kv: &Arc<FrameworkKv>,
    ) -> Result<FrameworkInstance, String> {
        let plugin = self
            .registry
            .get(&record.plugin)
            .ok_or_else(|| format!("no plugin named `{}`", record.plugin))?;
        if plugin.kind != PluginKind::Framework {
            return Err(format!("plugin `{}` is an allocator, not a framework plugin", record.plugin));
        }
        kv.begin_call();
        // Anything subscribed to the master's events receives what frameworks publish.
        let events = self.events.clone();
        let watched: EventsWatched = Arc::new(move || events.receiver_count() > 0);
        match FrameworkInstance::new(plugin, record.config.clone(), Some(kv.clone()), Some(watched)) {
            Ok(instance) => {
                for (key, value) in kv.take_journal() {
                    self.batch.kv(name, key, value);
                }
                Ok(instance)
            }
            Err(e) => {
                kv.rollback_call();
                Err(e.to_string())
            }
        }
    }

    pub(super) fn restore_framework(
        &mut self,
        name: String,
        record: FrameworkRecord,
        data: BTreeMap<String, Vec<u8>>,
    ) {
        let kv = Arc::new(FrameworkKv::new(
            &name,
            data,
            self.config.kv_quota_bytes,
            self.store.clone(),
            self.progress.clone(),
        ));
        let instance = self.instantiate(&name, &record, &kv);
        if let Err(e) = &instance {
            tracing::error!(target: "berth.master", framework = %name, error = %e,
                "the framework's plugin cannot start; retrying every second");
        }
        self.insert_framework(name, record, kv, instance);
    }

    fn insert_framework(
        &mut self,
        name: String,
        record: FrameworkRecord,
        kv: Arc<FrameworkKv>,
        instance: Result<FrameworkInstance, String>,
    ) {
        let (instance, instance_error) = match instance {
            Ok(instance) => (Some(instance), None),
            Err(e) => (None, Some(e)),
        };
        self.framework_names.insert(name.clone(), record.id);
        self.frameworks.insert(
            record.id,
            Framework {
                id: record.id,
                name,
                record,
                instance,
                kv,
                allocated: crate::runtime::bindings::Resources::zero(),
                active: 0,
                pending: Vec::new(),
                last_tick: Instant::now(),
                retry_at: None,
                consecutive_failures: 0,
                removing: false,
                instance_error,
            },
        );
    }

    /// Adds a framework: its plugin's `init` must accept the configuration.
    pub fn add_framework(&mut self, new: NewFramework) -> Result<u32, ApiError> {
        if !valid_name(&new.name) {
            return Err(ApiError::InvalidArgument(format!(
                "invalid framework name `{}`: use 1-63 characters from a-z, 0-9, `-` and `_`, starting with a letter",
                new.name
            )));
        }
        if self.framework_names.contains_key(&new.name) {
            return Err(ApiError::AlreadyExists(format!("a framework named `{}` exists", new.name)));
        }
        check_weight(new.weight)?;
        let record = FrameworkRecord {
            id: self.next_framework_id,
            plugin: new.plugin.clone(),
            role: if new.role.is_empty() { "*".into() } else { new.role.clone() },
            weight: new.weight,
            config: new.config,
            suppressed: false,
            created_at_ms: unix_ms(),
        };
        let kv = Arc::new(FrameworkKv::new(
            &new.name,
            BTreeMap::new(),
            self.config.kv_quota_bytes,
            self.store.clone(),
            self.progress.clone(),
        ));
        let instance = self.instantiate(&new.name, &record, &kv).map_err(|e| {
            if self.registry.get(&new.plugin).is_none_or(|p| p.kind != PluginKind::Framework) {
                ApiError::NotFound(e)
            } else {
                ApiError::InvalidArgument(format!("the framework plugin refused to start: {e}"))
            }
        })?;
        self.next_framework_id += 1;
        self.batch.put_framework(&new.name, &record);
        let id = record.id;
        self.insert_framework(new.name.clone(), record, kv, Ok(instance));
        self.cycle_wanted = true;
        tracing::info!(target: "berth.master", framework = %new.name, plugin = %new.plugin, "framework added");
        Ok(id)
    }

    /// The framework named `name`.
    pub(super) fn framework_id(&self, name: &str) -> Result<u32, ApiError> {
        self.framework_names
            .get(name)
            .copied()
            .filter(|id| !self.frameworks[id].removing)
            .ok_or_else(|| ApiError::NotFound(format!("no framework named `{name}`")))
    }

    /// A framework's name by id (empty if unknown).
    pub fn framework_name(&self, id: u32) -> String {
        self.frameworks.get(&id).map(|f| f.name.clone()).unwrap_or_default()
    }

    fn persist_framework(&mut self, id: u32) {
        let f = &self.frameworks[&id];
        self.batch.put_framework(&f.name, &f.record);
    }

    /// Changes a framework's weight.
    pub fn set_weight(&mut self, name: &str, weight: f64) -> Result<u32, ApiError> {
        check_weight(weight)?;
        let id = self.framework_id(name)?;
        self.frameworks.get_mut(&id).expect("exists").record.weight = weight;
        self.persist_framework(id);
        self.cycle_wanted = true;
        Ok(id)
    }

    /// Stops (`true`) or resumes offers to a framework; resuming clears its decline filters.
    pub fn set_suppressed(&mut self, name: &str, suppressed: bool) -> Result<u32, ApiError> {
        let id = self.framework_id(name)?;
        self.suppress(id, suppressed);
        Ok(id)
    }

    fn suppress(&mut self, id: u32, suppressed: bool) {
        let Some(f) = self.frameworks.get_mut(&id) else { return };
        let changed = f.record.suppressed != suppressed;
        f.record.suppressed = suppressed;
        if changed {
            self.persist_framework(id);
        }
        if !suppressed {
            let name = self.frameworks[&id].name.clone();
            let cleared: Vec<(u32, String)> =
                self.filters.keys().filter(|(f, _)| *f == id).cloned().collect();
            for key in cleared {
                self.batch.filter(&name, &key.1, None);
                self.filters.remove(&key);
            }
            self.cycle_wanted = true;
        }
    }

    /// Removes a framework: its tasks are killed, its data deleted. Returns how many tasks were killed.
    pub fn remove_framework(&mut self, name: &str) -> Result<u32, ApiError> {
        let id = self.framework_id(name)?;
        let mut tasks: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(key, task)| key.0 == id && !crate::model::is_terminal(task.status.state))
            .map(|(key, _)| key.clone())
            .collect();
        tasks.sort_unstable();
        let mut killed = 0;
        for key in &tasks {
            if self.kill(key, None, TaskReason::FrameworkRemoved) {
                killed += 1;
            }
        }
        let f = self.frameworks.get_mut(&id).expect("exists");
        f.removing = true;
        f.pending.clear();
        f.instance = None;
        let name = f.name.clone();
        self.batch.delete_framework(&name);
        let filters: Vec<(u32, String)> = self.filters.keys().filter(|(f, _)| *f == id).cloned().collect();
        for key in filters {
            self.batch.filter(&name, &key.1, None);
            self.filters.remove(&key);
        }
        self.finish_removals();
        tracing::info!(target: "berth.master", framework = %name, killed, "framework removed");
        Ok(killed)
    }

    /// Forgets removed frameworks once none of their tasks runs.
    fn finish_removals(&mut self) {
        let done: Vec<u32> =
            self.frameworks.values().filter(|f| f.removing && f.active == 0).map(|f| f.id).collect();
        for id in done {
            let f = self.frameworks.remove(&id).expect("listed");
            self.framework_names.remove(&f.name);
            let tasks: Vec<TaskKey> = self.tasks.keys().filter(|(fid, _)| *fid == id).cloned().collect();
            for key in tasks {
                self.tasks.remove(&key);
                self.batch.delete_task(&f.name, &key.1);
            }
        }
    }

    /// Calls a framework's plugin. On success the call's store writes join the batch; on failure they are
    /// undone and the framework backs off before its next call.
    pub(super) fn call_framework<T>(
        &mut self,
        id: u32,
        f: impl FnOnce(&mut FrameworkInstance) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let Some(framework) = self.frameworks.get_mut(&id) else {
            return Err(CallError::Instantiate("no such framework".into()));
        };
        let Some(instance) = framework.instance.as_mut() else {
            return Err(CallError::Instantiate(framework.instance_error.clone().unwrap_or_default()));
        };
        framework.kv.begin_call();
        let result = f(instance);
        match &result {
            Ok(_) => {
                for (key, value) in framework.kv.take_journal() {
                    self.batch.kv(&framework.name, key, value);
                }
                framework.consecutive_failures = 0;
                framework.retry_at = None;
            }
            Err(error) => {
                framework.kv.rollback_call();
                framework.consecutive_failures += 1;
                let backoff = Duration::from_millis(100)
                    .saturating_mul(1 << framework.consecutive_failures.min(10))
                    .min(MAX_BACKOFF);
                framework.retry_at = Some(Instant::now() + backoff);
                tracing::warn!(target: "berth.master", framework = %framework.name, %error, ?backoff,
                    "framework plugin call failed; its effects are discarded");
            }
        }
        result
    }

    /// Whether a framework may be called now (it exists, is not being removed, and is not backing off).
    pub(super) fn callable(&self, id: u32, now: Instant) -> bool {
        self.frameworks
            .get(&id)
            .is_some_and(|f| !f.removing && f.instance.is_some() && f.retry_at.is_none_or(|at| now >= at))
    }

    /// Delivers pending status updates, one `status` call per framework. Updates whose call fails stay
    /// pending and are delivered again (to a fresh instance) after the backoff.
    pub(super) fn deliver_statuses(&mut self) {
        let now = Instant::now();
        let ready: Vec<u32> = self
            .frameworks
            .values()
            .filter(|f| !f.pending.is_empty())
            .map(|f| f.id)
            .filter(|&id| self.callable(id, now))
            .collect();
        for id in ready {
            let updates = std::mem::take(&mut self.frameworks.get_mut(&id).expect("listed").pending);
            match self.call_framework(id, |instance| instance.status(&updates)) {
                Ok(actions) => {
                    self.mark_delivered(id, updates.into_iter().map(|u| u.task_id));
                    self.apply_actions(id, actions);
                }
                Err(_) => {
                    let f = self.frameworks.get_mut(&id).expect("listed");
                    let newer = std::mem::take(&mut f.pending);
                    f.pending = updates;
                    f.pending.extend(newer);
                }
            }
        }
        self.finish_removals();
    }

    /// Runs `tick` for frameworks whose second has come, and retries frameworks whose plugin could not
    /// start.
    pub(super) fn tick_frameworks(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .frameworks
            .values()
            .filter(|f| !f.removing && now.duration_since(f.last_tick) >= TICK_EVERY)
            .map(|f| f.id)
            .collect();
        for id in due {
            self.frameworks.get_mut(&id).expect("listed").last_tick = now;
            if self.frameworks[&id].instance.is_none() {
                let (name, record, kv) = {
                    let f = &self.frameworks[&id];
                    (f.name.clone(), f.record.clone(), f.kv.clone())
                };
                match self.instantiate(&name, &record, &kv) {
                    Ok(instance) => {
                        tracing::info!(target: "berth.master", framework = %name, "framework plugin started");
                        let f = self.frameworks.get_mut(&id).expect("listed");
                        f.instance = Some(instance);
                        f.instance_error = None;
                    }
                    Err(e) => {
                        self.frameworks.get_mut(&id).expect("listed").instance_error = Some(e);
                        continue;
                    }
                }
            }
            if !self.callable(id, now) {
                continue;
            }
            if let Ok(actions) = self.call_framework(id, |instance| instance.tick(unix_ms())) {
                self.apply_actions(id, actions);
            }
        }
    }

    /// Carries out what a framework asked for.
    pub(super) fn apply_actions(&mut self, id: u32, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Kill(kill) => {
                    let key = (id, kill.task_id.clone());
                    if !self.kill(&key, kill.grace_period_ms, TaskReason::KilledByFramework) {
                        tracing::debug!(target: "berth.master", framework = id, task = %kill.task_id,
                            "kill of a task that is unknown or already ended");
                    }
                }
                Action::Suppress => self.suppress(id, true),
                Action::Revive => self.suppress(id, false),
                Action::Reconcile(task_ids) => self.reconcile_framework(id, task_ids),
                Action::Publish(event) => {
                    if let Some(f) = self.frameworks.get(&id) {
                        publish(&self.events, || Event::Framework { framework: f.name.clone(), event });
                    }
                }
            }
        }
    }

    /// Queues the current status of the named tasks (all of the framework's known tasks when empty),
    /// with reason `reconciliation`; unknown tasks are reported lost with reason `task-unknown`.
    fn reconcile_framework(&mut self, id: u32, task_ids: Vec<String>) {
        let ids: Vec<String> = if task_ids.is_empty() {
            self.tasks.keys().filter(|(f, _)| *f == id).map(|(_, t)| t.clone()).collect()
        } else {
            task_ids
        };
        let mut statuses = Vec::with_capacity(ids.len());
        for task_id in ids {
            let status = match self.tasks.get(&(id, task_id.clone())) {
                Some(task) => {
                    let mut status = task.full_status(&task_id, self.nodes.get(&task.node));
                    if !is_terminal(status.state) || status.reason.is_none() {
                        status.reason = Some(TaskReason::Reconciliation);
                    }
                    status
                }
                None => self.blank_status(
                    &task_id,
                    TaskState::Lost,
                    Some(TaskReason::TaskUnknown),
                    "the master does not know this task".into(),
                ),
            };
            statuses.push(status);
        }
        if let Some(f) = self.frameworks.get_mut(&id) {
            f.pending.extend(statuses);
        }
    }

    /// Serves one request to a framework's HTTP API through its plugin's `handle`.
    pub fn framework_http(&mut self, name: &str, request: HttpRequest) -> Result<HttpResponse, ApiError> {
        let id = self.framework_id(name)?;
        let reply = self
            .call_framework(id, |instance| instance.handle(&request))
            .map_err(|e| ApiError::Unavailable(format!("framework `{name}` could not answer: {e}")))?;
        self.apply_actions(id, reply.actions);
        // Any request may change what the framework wants.
        self.cycle_wanted = true;
        Ok(reply.response)
    }
}

fn check_weight(weight: f64) -> Result<(), ApiError> {
    if weight.is_finite() && weight > 0.0 && weight <= 1e6 {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!(
            "weight must be a number above 0 and at most 1000000, got {weight}"
        )))
    }
}
