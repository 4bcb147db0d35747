//! What each framework is called with next, and what its calls' answers do.
//!
//! A framework's instance runs one call at a time on a worker (`calls.rs`). Whenever it is idle the master
//! hands it the most pressing work: offers (they hold resources), then fresh demand for a cycle (the cycle
//! waits on it; behind a stream of status updates it waited out `demand_wait` every time, which halved
//! placement throughput), then undelivered status updates, then requests to its HTTP API, then its tick,
//! once a second. A framework whose last call failed backs off (100 ms doubling to 10 s) before it is
//! called again, except for API requests, which an operator is waiting on.
//!
//! A call's effects (its store writes, launches, kills, published events) take effect when its answer is
//! applied here, in one batch; a failed call's are discarded and its updates delivered again later.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::calls::{Answer, Done, Job, Op};
use super::core::Master;
use super::frameworks::{InFlight, Slot};
use super::tasks::blank_status;
use super::types::{ApiError, Event};
use crate::model::{is_terminal, unix_ms};
use crate::runtime::bindings::{Action, TaskReason, TaskState, TaskStatus};
use crate::runtime::{CallError, EventsWatched, FrameworkInstance, PluginKind, Version};

/// How often each framework's `tick` runs.
const TICK_EVERY: Duration = Duration::from_secs(1);
/// The longest a framework waits after repeated failures before it is called again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a framework whose instance could not be created waits before the next try.
const RETRY_INSTANTIATE: Duration = Duration::from_secs(1);

impl Master {
    /// Hands every idle framework its next call.
    pub(super) fn dispatch_all(&mut self, now: Instant) {
        for id in self.frameworks.ids() {
            self.dispatch(id, now);
        }
    }

    fn dispatch(&mut self, id: u32, now: Instant) {
        let Some(f) = self.frameworks.get_mut(id) else { return };
        let backing_off = f.retry_at.is_some_and(|at| now < at);
        match f.slot {
            Slot::Busy => return,
            Slot::Down => {
                if !f.removing && !backing_off {
                    self.instantiate(id);
                }
                return;
            }
            Slot::Idle(_) if f.removing => {
                // Nothing more is asked of a framework being removed.
                f.back(None);
                return;
            }
            Slot::Idle(_) => {}
        }
        let (op, in_flight) = if self.offers.has_queued(id) && !backing_off {
            let offers = self.offers.take_queued(id);
            let ids = offers.iter().map(|o| o.id).collect();
            (Op::Offers(offers), InFlight::Offers(ids))
        } else if f.wants_demand && !backing_off {
            // A cycle waits on this answer; updates and requests queued meanwhile go next.
            f.wants_demand = false;
            (Op::Demand, InFlight::Demand)
        } else if !f.pending.is_empty() && !backing_off {
            (Op::Status(std::mem::take(&mut f.pending)), InFlight::Status)
        } else if let Some(call) = f.http.pop_front() {
            (Op::Http(call.request, call.authenticated), InFlight::Http(call.reply))
        } else if now.duration_since(f.last_tick) >= TICK_EVERY && !backing_off {
            f.last_tick = now;
            (Op::Tick(unix_ms()), InFlight::Tick)
        } else {
            return;
        };
        let instance = f.take_instance(in_flight).expect("an idle framework has its instance");
        let kv = f.kv.clone();
        self.calls.run(Job::Framework { id, instance, kv, op });
    }

    /// Sends a framework's `init` to a worker.
    fn instantiate(&mut self, id: u32) {
        let Some(f) = self.frameworks.get_mut(id) else { return };
        let plugin = match self.registry.get(&f.record.plugin) {
            Some(p) if p.kind == PluginKind::Framework => p,
            Some(_) => {
                let error = format!("plugin `{}` is an allocator, not a framework plugin", f.record.plugin);
                return self.instantiated(id, Err(error));
            }
            None => {
                let error = format!("no plugin named `{}`", f.record.plugin);
                return self.instantiated(id, Err(error));
            }
        };
        f.slot = Slot::Busy;
        f.in_flight = Some(InFlight::Instantiate);
        // Anything subscribed to the master's events receives what frameworks publish.
        let events = self.effects.events().clone();
        let watched: EventsWatched = Arc::new(move || events.receiver_count() > 0);
        let job = Job::Instantiate {
            id,
            plugin,
            config: f.record.config.clone(),
            kv: f.kv.clone(),
            events: watched,
        };
        self.calls.run(job);
    }

    /// A plugin call came back from a worker.
    pub(super) fn call_done(&mut self, done: Done) {
        match done {
            Done::Allocated { version, view, revisions, result, took, cycle } => {
                if cycle == self.cycles.number {
                    self.allocated(&version, view, revisions, result, took);
                } else {
                    self.nodes.return_views(view.nodes, revisions);
                }
            }
            Done::Instantiated { id, result } => self.instantiated(id, result),
            Done::Framework { id, instance, result, version, updates } => {
                self.framework_done(id, instance, result, &version, updates)
            }
        }
    }

    /// A framework's `init` finished (or could not be run).
    fn instantiated(&mut self, id: u32, result: Result<Box<FrameworkInstance>, String>) {
        let Some(f) = self.frameworks.get_mut(id) else { return };
        match result {
            Ok(instance) => {
                if f.removing {
                    f.back(None);
                    return;
                }
                for (key, value) in f.kv.take_journal() {
                    self.effects.batch.kv(&f.name, key, value);
                }
                f.back(Some(instance));
                f.error = None;
                f.retry_at = None;
                f.consecutive_failures = 0;
                if let Some(reply) = f.adding.take() {
                    // Added: the record is written with `init`'s data, and the operator answered once both
                    // are committed.
                    self.effects.batch.put_framework(&f.name, &f.record);
                    tracing::info!(target: "berth.master", framework = %f.name, plugin = %f.record.plugin, "framework added");
                    self.effects.after_commit(Box::new(move || {
                        let _ = reply.send(Ok(id));
                    }));
                } else {
                    tracing::info!(target: "berth.master", framework = %f.name, version = f.version, "framework plugin started");
                }
                self.cycles.wanted = true;
            }
            Err(error) => {
                f.back(None);
                if let Some(reply) = f.adding.take() {
                    let error = if self
                        .registry
                        .get(&f.record.plugin)
                        .is_none_or(|p| p.kind != PluginKind::Framework)
                    {
                        ApiError::NotFound(error)
                    } else {
                        ApiError::InvalidArgument(format!("the framework plugin refused to start: {error}"))
                    };
                    let _ = reply.send(Err(error));
                    self.frameworks.remove(id);
                    return;
                }
                if f.error.as_deref() != Some(error.as_str()) {
                    tracing::error!(target: "berth.master", framework = %f.name, %error,
                        "the framework's plugin cannot start; retrying every second");
                }
                f.error = Some(error);
                f.retry_at = Some(Instant::now() + RETRY_INSTANTIATE);
            }
        }
    }

    /// A call on a framework's instance finished: its effects are applied, or discarded if it failed.
    fn framework_done(
        &mut self,
        id: u32,
        instance: Box<FrameworkInstance>,
        result: Result<Answer, CallError>,
        version: &Arc<Version>,
        updates: Vec<TaskStatus>,
    ) {
        let Some(f) = self.frameworks.get_mut(id) else { return };
        let in_flight = f.back(Some(instance)).expect("a call was in flight");
        if f.removing {
            f.back(None);
            if let InFlight::Http(reply) = in_flight {
                let _ = reply.send(Err(ApiError::NotFound(format!("framework `{}` was removed", f.name))));
            }
            return;
        }
        let error = match result {
            Ok(answer) => {
                for (key, value) in f.kv.take_journal() {
                    self.effects.batch.kv(&f.name, key, value);
                }
                f.consecutive_failures = 0;
                f.retry_at = None;
                self.plugin_succeeded(version);
                match (in_flight, answer) {
                    (InFlight::Demand, Answer::Demand(shapes)) => self.demand_answered(id, shapes),
                    (InFlight::Offers(sent), Answer::Decisions(decisions)) => {
                        self.offers_answered(id, sent, decisions)
                    }
                    (InFlight::Status, Answer::Actions(actions)) => {
                        self.mark_delivered(id, updates.into_iter().map(|u| u.task_id));
                        self.apply_actions(id, actions);
                    }
                    (InFlight::Tick, Answer::Actions(actions)) => self.apply_actions(id, actions),
                    (InFlight::Http(reply), Answer::Reply(answer)) => {
                        self.apply_actions(id, answer.actions);
                        // Any request may change what the framework wants.
                        self.cycles.wanted = true;
                        let response = answer.response;
                        self.effects.after_commit(Box::new(move || {
                            let _ = reply.send(Ok(response));
                        }));
                    }
                    _ => unreachable!("every call answers in its own kind"),
                }
                return;
            }
            Err(error) => error,
        };
        f.consecutive_failures += 1;
        let backoff =
            Duration::from_millis(100).saturating_mul(1 << f.consecutive_failures.min(10)).min(MAX_BACKOFF);
        f.retry_at = Some(Instant::now() + backoff);
        tracing::warn!(target: "berth.master", framework = %f.name, plugin = %version.name, version = version.number, %error, ?backoff,
            "framework plugin call failed; its effects are discarded");
        match in_flight {
            InFlight::Demand => self.demand_missing(id),
            InFlight::Offers(sent) => self.offers_returned(sent),
            InFlight::Status => {
                // Delivered again, before anything that happened since.
                let newer = std::mem::replace(&mut f.pending, updates);
                f.pending.extend(newer);
            }
            InFlight::Http(reply) => {
                let name = f.name.clone();
                let _ = reply.send(Err(ApiError::Unavailable(format!(
                    "framework `{name}` could not answer: {error}"
                ))));
            }
            InFlight::Tick | InFlight::Instantiate => {}
        }
        // Offers waiting for it go back to the pool while it backs off.
        let queued = self.offers.rescind(|_, o| o.framework == id);
        for (_, offer) in queued {
            self.nodes.unoffer(offer.node, &offer.resources);
        }
        self.plugin_failed(version, &error);
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
                    if let Some(f) = self.frameworks.get(id) {
                        let framework = f.name.clone();
                        self.effects.publish(|| Event::Framework { framework, event });
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
            let status = match self.task_status(&(id, task_id.clone())) {
                Some(mut status) => {
                    if !is_terminal(status.state) || status.reason.is_none() {
                        status.reason = Some(TaskReason::Reconciliation);
                    }
                    status
                }
                None => blank_status(
                    &task_id,
                    TaskState::Lost,
                    Some(TaskReason::TaskUnknown),
                    "the master does not know this task".into(),
                ),
            };
            statuses.push(status);
        }
        if let Some(f) = self.frameworks.get_mut(id) {
            f.pending.extend(statuses);
        }
    }
}
