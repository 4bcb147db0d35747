//! Keeping apps at their instance count: what to launch, what to kill, rolling upgrades, backoff after
//! failures, deployments, and when to suppress or revive offers.
//!
//! A [`Plan`] per app is computed from the stored state, so the logic is the same whether the call follows
//! an offer, a status update, a timer or an API request, and it survives traps and hot swaps (a fresh
//! instance reloads the state and reaches the same plans). Plans are kept between calls and computed again
//! only for the apps whose tasks or definition changed, and for apps waiting out a backoff delay, so a call
//! costs what changed rather than the number of tasks.

use std::collections::{BTreeMap, BTreeSet};

use berth_plugin_sdk::{
    Action, ContainerSpec, Decision, Decline, Event, HealthCheck as AbiHealthCheck, HttpProbe, KeyValue,
    KillTask, Launch, Network, Offer, PortMapping as AbiPortMapping, PortRange, Probe, Protocol, Resources,
    TaskReason, TaskShape, TaskSpec, TaskState, TaskStatus, Volume as AbiVolume,
};
use serde_json::{Value, json};

use crate::app::{App, KillSelection, NetworkMode};
use crate::constraints::Place;
use crate::model::{AppState, Deployment, Kind, Phase, State, Task, TaskFailure, version_key};
use crate::time::iso;

/// Framework configuration (JSON, all optional): `{"decline_seconds": 120}`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How long an offer the framework cannot use is declined for.
    pub decline_seconds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { decline_seconds: 120 }
    }
}

/// A task that ran at least this long before failing resets its app's backoff.
const BACKOFF_RESET_AFTER_MS: u64 = 60_000;
/// Definitions kept per app.
const VERSIONS_KEPT: usize = 50;

/// What one app needs now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Tasks to launch now.
    pub launch: u32,
    /// Tasks to launch once the backoff delay is over.
    pub delayed: u32,
    /// Tasks to kill now.
    pub kill: Vec<String>,
}

/// The framework.
pub struct Marathon {
    pub state: State,
    pub config: Config,
    pub now_ms: u64,
    /// Events to publish with the next actions.
    pub events: Vec<Event>,
    /// Whether anything receives events during this call: when not, none are built (the host would drop
    /// them). Status updates are the hottest path, and each was a JSON document built for nobody.
    pub events_watched: bool,
    /// Actions to return with the next call that can return actions.
    pub actions: Vec<Action>,
    /// Each app's plan as of its last change (see [`Marathon::refresh_plans`]).
    plans: BTreeMap<String, Plan>,
}

/// Marathon's `status_update_event`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusUpdateEvent<'a> {
    event_type: &'static str,
    timestamp: String,
    slave_id: &'a str,
    task_id: &'a str,
    task_status: &'static str,
    message: &'a str,
    app_id: &'a str,
    host: &'a str,
    ports: &'a [u16],
    ip_addresses: [(); 0],
    version: &'a str,
}

/// Marathon's name for a task state.
pub fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Staging => "TASK_STAGING",
        TaskState::Starting => "TASK_STARTING",
        TaskState::Running => "TASK_RUNNING",
        TaskState::Killing => "TASK_KILLING",
        TaskState::Finished => "TASK_FINISHED",
        TaskState::Failed => "TASK_FAILED",
        TaskState::Killed => "TASK_KILLED",
        TaskState::Lost => "TASK_LOST",
        TaskState::Error => "TASK_ERROR",
    }
}

fn terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost | TaskState::Error
    )
}

/// Chooses `count` tasks to kill: not yet running first, then unhealthy, then by the app's kill selection.
fn choose_kills(mut tasks: Vec<&Task>, count: usize, selection: KillSelection) -> Vec<String> {
    tasks.sort_by(|a, b| {
        let rank = |t: &Task| (t.phase == Phase::Running, t.healthy());
        let age = match selection {
            KillSelection::YoungestFirst => b.staged_at_ms.cmp(&a.staged_at_ms),
            KillSelection::OldestFirst => a.staged_at_ms.cmp(&b.staged_at_ms),
        };
        rank(a).cmp(&rank(b)).then(age).then(a.id.cmp(&b.id))
    });
    tasks.into_iter().take(count).map(|t| t.id.to_string()).collect()
}

impl Marathon {
    pub fn new(mut state: State, config: Config, now_ms: u64) -> Marathon {
        let ids: Vec<String> = state.apps.keys().cloned().collect();
        for id in &ids {
            state.app_changed(id);
        }
        Marathon {
            state,
            config,
            now_ms,
            events: Vec::new(),
            events_watched: true,
            actions: Vec::new(),
            plans: BTreeMap::new(),
        }
    }

    /// Brings the kept plans up to date: apps that changed, apps whose backoff delay may have ended, and
    /// apps that are gone. Returns the apps planned again.
    pub fn refresh_plans(&mut self) -> BTreeSet<String> {
        let mut again = self.state.take_changed_apps();
        again.extend(self.plans.iter().filter(|(_, p)| p.delayed > 0).map(|(id, _)| id.clone()));
        for id in &again {
            if self.state.apps.contains_key(id) {
                let plan = self.plan(id);
                self.plans.insert(id.clone(), plan);
            } else {
                self.plans.remove(id);
            }
        }
        again
    }

    /// Launches wanted now, per app (plans up to date).
    fn launches(&mut self) -> Vec<(String, u32)> {
        self.refresh_plans();
        self.plans.iter().filter(|(_, p)| p.launch > 0).map(|(id, p)| (id.clone(), p.launch)).collect()
    }

    /// Queues an event, when anything receives events.
    pub fn publish(&mut self, kind: &str, mut payload: Value) {
        if !self.events_watched {
            return;
        }
        payload["eventType"] = json!(kind);
        payload["timestamp"] = json!(iso(self.now_ms));
        self.events.push(Event { kind: kind.into(), payload: payload.to_string() });
    }

    /// What an app needs now: see the module documentation.
    ///
    /// The common case, no task to kill and no task of an older version, is read off the app's
    /// [`TaskCounts`]; only kills and rolling upgrades look at the tasks themselves.
    pub fn plan(&self, app_id: &str) -> Plan {
        let Some(a) = self.state.apps.get(app_id) else { return Plan::default() };
        let n = a.app.instances as usize;
        let (active, new) = match self.state.counts(app_id) {
            Some(c) => (c.active() as usize, c.version(&a.config_version).active as usize),
            None => (0, 0),
        };
        let mut plan = Plan::default();
        let launch = if a.deleting && active == 0 {
            0
        } else if !a.deleting && active == new && new <= n {
            (n - new) as u32
        } else {
            match self.plan_from_tasks(app_id, a, &mut plan) {
                Some(launch) => launch,
                None => return plan,
            }
        };
        if launch > 0 && self.now_ms < a.backoff.launch_after_ms {
            plan.delayed = launch;
        } else {
            plan.launch = launch;
        }
        plan
    }

    /// The kills of a plan, and its launches (`None` when it only kills, for a deleted app), from the app's
    /// tasks.
    fn plan_from_tasks(&self, app_id: &str, a: &AppState, plan: &mut Plan) -> Option<u32> {
        let active: Vec<&Task> = self.state.app_tasks(app_id).filter(|t| t.active()).collect();
        if a.deleting {
            plan.kill = active.iter().map(|t| t.id.to_string()).collect();
            return None;
        }
        let n = a.app.instances as usize;
        let (old, new): (Vec<&Task>, Vec<&Task>) =
            active.iter().partition(|t| *t.version != *a.config_version);
        let launch = if old.is_empty() {
            if new.len() > n {
                plan.kill = choose_kills(new, active.len() - n, a.app.kill_selection);
                0
            } else {
                n - new.len()
            }
        } else {
            // A rolling replacement: never fewer healthy tasks than minimumHealthCapacity allows, never more
            // tasks than maximumOverCapacity allows.
            let min_healthy = (n as f64 * a.app.minimum_health_capacity).ceil() as usize;
            let mut max_capacity = n + (n as f64 * a.app.maximum_over_capacity).floor() as usize;
            if max_capacity <= n && min_healthy >= n {
                // Both limits at their tightest would allow no step at all: let one task over.
                max_capacity = n + 1;
            }
            let mut healthy_left = active.iter().filter(|t| t.healthy()).count();
            let mut remaining = active.len();
            let mut old_sorted = old.clone();
            // Ties break on the id: tasks come in no particular order.
            old_sorted.sort_by(|a, b| {
                let key =
                    |t: &Task| (t.healthy(), t.phase == Phase::Running, std::cmp::Reverse(t.staged_at_ms));
                key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
            });
            for t in old_sorted {
                if !t.healthy() {
                    plan.kill.push(t.id.to_string());
                    remaining -= 1;
                } else if healthy_left > min_healthy {
                    plan.kill.push(t.id.to_string());
                    healthy_left -= 1;
                    remaining -= 1;
                }
            }
            if new.len() > n {
                plan.kill.extend(choose_kills(new.clone(), new.len() - n, a.app.kill_selection));
            }
            n.saturating_sub(new.len()).min(max_capacity.saturating_sub(remaining))
        };
        Some(launch as u32)
    }

    /// Task shapes for every app with launches to make.
    pub fn demand(&mut self) -> Vec<TaskShape> {
        self.launches()
            .into_iter()
            .map(|(id, launch)| {
                let app = &self.state.apps[&id].app;
                TaskShape {
                    milli_cpus: app.milli_cpus(),
                    mem_mib: app.mem_mib(),
                    disk_mib: app.disk_mib(),
                    gpus: app.gpus,
                    ports: app.port_count() as u32,
                    count: launch,
                }
            })
            .collect()
    }

    /// Launches what fits on each offer (resources, ports, constraints); declines the rest.
    pub fn offers(&mut self, offers: Vec<Offer>) -> Vec<Decision> {
        // Apps with a deployment under way first, then by id.
        let mut wanted = self.launches();
        wanted.sort_by_key(|(id, _)| (self.state.apps[id].deployment.is_none(), id.clone()));
        let mut decisions = Vec::with_capacity(offers.len());
        for offer in offers {
            let mut free = offer.resources.clone();
            let mut tasks = Vec::new();
            for (app_id, left) in wanted.iter_mut() {
                while *left > 0 {
                    match self.place(app_id, &offer, &mut free) {
                        Some(spec) => {
                            tasks.push(spec);
                            *left -= 1;
                        }
                        None => break,
                    }
                }
            }
            if tasks.is_empty() {
                decisions.push(Decision::Decline(Decline {
                    offer: offer.id,
                    refuse_seconds: self.config.decline_seconds,
                }));
            } else {
                decisions.push(Decision::Launch(Launch { offer: offer.id, tasks }));
            }
        }
        decisions
    }

    /// One task of `app_id` on `offer`, if it fits what is left of it; records the task as staging.
    fn place(&mut self, app_id: &str, offer: &Offer, free: &mut Resources) -> Option<TaskSpec> {
        let a = self.state.apps.get(app_id)?;
        let app = &a.app;
        let fits = free.milli_cpus >= app.milli_cpus()
            && free.mem_mib >= app.mem_mib()
            && free.disk_mib >= app.disk_mib()
            && free.gpus >= app.gpus;
        if !fits {
            return None;
        }
        if !app.constraints.is_empty() {
            let here = Place { hostname: &offer.hostname, attributes: &[] };
            let attributes: Vec<(String, String)> =
                offer.attributes.iter().map(|a| (a.name.clone(), a.value.clone())).collect();
            let here = Place { attributes: &attributes, ..here };
            let placed: Vec<Place<'_>> = self
                .state
                .app_tasks(app_id)
                .filter(|t| t.active())
                .map(|t| Place { hostname: &t.host, attributes: &t.attributes })
                .collect();
            if !app.constraints.iter().all(|c| c.allows(&here, &placed)) {
                return None;
            }
        }
        let ports = take_ports(&mut free.ports, &app.fixed_ports())?;
        free.milli_cpus -= app.milli_cpus();
        free.mem_mib -= app.mem_mib();
        free.disk_mib -= app.disk_mib();
        free.gpus -= app.gpus;
        let seq = self.state.meta.seq + 1;
        let id = format!("{}.{:x}-{:x}", app_id.trim_start_matches('/').replace('/', "_"), self.now_ms, seq);
        let version = a.config_version.clone();
        let spec = task_spec(app, &id, &version, &ports);
        let has_health_checks = !app.health_checks.is_empty();
        self.state.next_seq();
        // Interned here too, so a launch does not allocate names only to drop them in `insert_task`.
        let (app, version, host) =
            (self.state.intern(app_id), self.state.intern(&version), self.state.intern(&offer.hostname));
        self.state.insert_task(Task {
            id: id.into(),
            app,
            version,
            phase: Phase::Staging,
            host,
            attributes: offer.attributes.iter().map(|a| (a.name.clone(), a.value.clone())).collect(),
            ports,
            staged_at_ms: self.now_ms,
            started_at_ms: None,
            healthy: None,
            has_health_checks,
            last_health_ms: None,
            killing: false,
        });
        Some(spec)
    }

    /// Applies status updates, then converges.
    pub fn status(&mut self, updates: Vec<TaskStatus>) -> Vec<Action> {
        for update in updates {
            self.apply(update);
        }
        self.converge()
    }

    fn apply(&mut self, u: TaskStatus) {
        let Some(task) = self.state.task(&u.task_id) else {
            // A task this framework does not know (or already forgot): it must not run.
            if !terminal(u.state) {
                self.actions.push(Action::Kill(KillTask { task_id: u.task_id, grace_period_ms: None }));
            }
            return;
        };
        if self.events_watched {
            // Serialized straight from borrowed fields, as this is the hottest path.
            let event = StatusUpdateEvent {
                event_type: "status_update_event",
                timestamp: iso(self.now_ms),
                slave_id: u.hostname.as_deref().unwrap_or_default(),
                task_id: &u.task_id,
                task_status: state_name(u.state),
                message: &u.message,
                app_id: &task.app,
                host: &task.host,
                ports: &task.ports,
                ip_addresses: [],
                version: self.state.apps.get(&*task.app).map_or("", |a| a.version.as_str()),
            };
            let payload = serde_json::to_string(&event).expect("an event serializes");
            self.events.push(Event { kind: "status_update_event".into(), payload });
        }
        if terminal(u.state) {
            let task = self.state.remove_task(&u.task_id).expect("looked up above");
            self.task_ended(&task, &u);
            return;
        }
        let changed = self.state.update_task(&u.task_id, |t| {
            match u.state {
                TaskState::Staging => t.phase = Phase::Staging,
                TaskState::Starting => t.phase = Phase::Starting,
                TaskState::Killing => t.killing = true,
                _ => {
                    t.phase = Phase::Running;
                    if t.started_at_ms.is_none() {
                        t.started_at_ms = Some(u.timestamp_ms);
                    }
                }
            }
            let health_changed = u.healthy.is_some() && u.healthy != t.healthy;
            if health_changed {
                t.healthy = u.healthy;
                t.last_health_ms = Some(u.timestamp_ms);
            }
            health_changed.then(|| (t.app.clone(), t.id.clone(), t.version.clone()))
        });
        if let Some(Some((app, id, version))) = changed {
            self.publish(
                "health_status_changed_event",
                json!({"appId": app, "taskId": id, "instanceId": id, "version": version, "alive": u.healthy}),
            );
        }
    }

    /// A task ended. Failures the app caused (non-zero exit, finishing, refused launches) delay the next
    /// launch by the app's backoff, growing by its factor while tasks keep failing within a minute of
    /// starting; kills and lost agents do not.
    fn task_ended(&mut self, task: &Task, u: &TaskStatus) {
        if task.killing {
            return;
        }
        let now = self.now_ms;
        let Some(a) = self.state.apps.get_mut(&*task.app) else { return };
        a.last_failure = Some(TaskFailure {
            task_id: task.id.to_string(),
            host: task.host.to_string(),
            state: state_name(u.state).into(),
            message: u.message.clone(),
            timestamp_ms: u.timestamp_ms,
            version: a.version.clone(),
        });
        let counts = matches!(u.state, TaskState::Failed | TaskState::Finished | TaskState::Error)
            && u.reason != Some(TaskReason::HealthCheckFailed);
        if counts {
            let b = &mut a.backoff;
            if task.started_at_ms.is_some_and(|s| now.saturating_sub(s) >= BACKOFF_RESET_AFTER_MS) {
                b.failures = 0;
            }
            b.failures += 1;
            let growth = a.app.backoff_factor.powi(b.failures.saturating_sub(1).min(1000) as i32);
            let delay =
                (a.app.backoff_seconds * 1000.0 * growth).min(a.app.max_launch_delay_seconds * 1000.0);
            b.delay_ms = delay as u64;
            b.launch_after_ms = now + b.delay_ms;
        }
        let id = task.app.clone();
        self.state.touch_app(&id);
    }

    /// The timer: deployments and backoff move on even without events.
    pub fn tick(&mut self) -> Vec<Action> {
        self.converge()
    }

    /// Sends the kills plans ask for, finishes deployments that are done, suppresses offers when nothing is
    /// to be launched and revives them when launches are wanted; returns those actions and pending events.
    pub fn converge(&mut self) -> Vec<Action> {
        let mut actions = std::mem::take(&mut self.actions);
        let mut changed = self.refresh_plans();
        for id in &changed {
            let Some(plan) = self.plans.get(id) else { continue };
            if plan.kill.is_empty() {
                continue;
            }
            let kill = plan.kill.clone();
            let grace = self.state.apps[id].app.kill_grace_ms();
            for task in kill {
                if self.state.update_task(&task, |t| t.killing = true).is_some() {
                    actions.push(Action::Kill(KillTask { task_id: task, grace_period_ms: Some(grace) }));
                }
            }
        }
        changed.extend(self.refresh_plans());
        // Only a change to its app (tasks, definition, the deployment itself) can finish a deployment.
        let done: Vec<String> = self
            .state
            .deployments
            .values()
            .filter(|d| changed.contains(&d.app) || !self.state.apps.contains_key(&d.app))
            .filter(|d| self.deployment_done(d))
            .map(|d| d.id.clone())
            .collect();
        for id in done {
            self.finish_deployment(&id, "deployment_success");
        }
        self.refresh_plans();
        let wanted: u64 = self.plans.values().map(|p| u64::from(p.launch)).sum();
        let meta = &mut self.state.meta;
        if wanted > 0 && (meta.suppressed || wanted > meta.launches_wanted) {
            actions.push(Action::Revive);
            meta.suppressed = false;
        } else if wanted == 0 && !meta.suppressed {
            actions.push(Action::Suppress);
            meta.suppressed = true;
        }
        if meta.launches_wanted != wanted {
            meta.launches_wanted = wanted;
        }
        self.state.touch_meta();
        actions.extend(self.events.drain(..).map(Action::Publish));
        actions
    }

    fn deployment_done(&self, d: &Deployment) -> bool {
        let Some(a) = self.state.apps.get(&d.app) else { return true };
        let Some(counts) = self.state.counts(&d.app) else { return a.deleting || a.app.instances == 0 };
        if a.deleting {
            return counts.tasks == 0;
        }
        // Every task is of the current version, not being killed, running and healthy.
        counts.tasks == a.app.instances && counts.version(&a.config_version).ready == counts.tasks
    }

    /// Ends a deployment with `event` (`deployment_success` or `deployment_failed`); a finished stop forgets
    /// the app.
    pub fn finish_deployment(&mut self, id: &str, event: &str) {
        let Some(d) = self.state.deployments.remove(id) else { return };
        self.state.touch_deployment(id);
        let plan = self.deployment_json(&d);
        self.publish(event, json!({"id": d.id, "plan": plan}));
        let Some(a) = self.state.apps.get_mut(&d.app) else { return };
        if a.deployment.as_deref() == Some(id) {
            a.deployment = None;
        }
        let deleting = a.deleting;
        self.state.touch_app(&d.app);
        if deleting && event == "deployment_success" {
            let a = self.state.apps.remove(&d.app).expect("present");
            for v in &a.versions {
                self.state.drop_version(version_key(&d.app, v));
            }
            self.state.forget_app_tasks(&d.app);
        }
    }

    /// Starts a deployment for `app_id`. An app has one at a time: another one is refused unless `force`,
    /// which cancels it. Returns the deployment id, or the id of the one in the way.
    pub fn start_deployment(
        &mut self,
        app_id: &str,
        kind: Kind,
        from_version: Option<String>,
        force: bool,
    ) -> Result<String, String> {
        if let Some(existing) = self.state.apps.get(app_id).and_then(|a| a.deployment.clone()) {
            if !force {
                return Err(existing);
            }
            self.finish_deployment(&existing, "deployment_failed");
        }
        let seq = self.state.next_seq();
        let id = uuid_like(self.now_ms, seq);
        let version = self.state.apps.get(app_id).map(|a| a.version.clone()).unwrap_or_default();
        let d = Deployment {
            id: id.clone(),
            app: app_id.into(),
            kind,
            version,
            from_version,
            started_ms: self.now_ms,
        };
        let plan = self.deployment_json(&d);
        self.publish("deployment_info", json!({"plan": plan, "currentStep": plan["steps"][0]}));
        self.state.deployments.insert(id.clone(), d);
        self.state.touch_deployment(&id);
        if let Some(a) = self.state.apps.get_mut(app_id) {
            a.deployment = Some(id.clone());
            self.state.touch_app(app_id);
        }
        Ok(id)
    }

    /// Marathon's JSON for a deployment.
    pub fn deployment_json(&self, d: &Deployment) -> Value {
        let steps: Vec<Value> =
            d.kind.actions().iter().map(|a| json!({"actions": [{"action": a, "app": d.app}]})).collect();
        let current = steps.len();
        json!({
            "id": d.id,
            "version": d.version,
            "affectedApps": [d.app],
            "affectedPods": [],
            "steps": steps,
            "currentActions": [{"action": d.kind.actions().last().copied().unwrap_or(""), "app": d.app, "readinessCheckResults": []}],
            "currentStep": current,
            "totalSteps": current,
        })
    }

    /// A new version string for a change now, later than `previous`.
    pub fn new_version(&self, previous: Option<&str>) -> String {
        let mut ms = self.now_ms;
        let mut v = iso(ms);
        while previous.is_some_and(|p| p >= v.as_str()) {
            ms += 1;
            v = iso(ms);
        }
        v
    }

    /// Records a definition under its version.
    pub fn remember_version(&mut self, app: &App, version: &str) {
        self.state.new_versions.push((version_key(&app.id, version), app.clone()));
        let mut gone = Vec::new();
        if let Some(a) = self.state.apps.get_mut(&app.id) {
            a.versions.push(version.to_string());
            while a.versions.len() > VERSIONS_KEPT {
                gone.push(a.versions.remove(0));
            }
        }
        for v in gone {
            self.state.drop_version(version_key(&app.id, &v));
        }
    }
}

/// A UUID-shaped id from a time and a counter (unique within this framework, and stable under replay).
fn uuid_like(now_ms: u64, seq: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (now_ms >> 16) as u32,
        (now_ms & 0xffff) as u16,
        (seq >> 12) & 0xfff,
        seq & 0xfff,
        seq
    )
}

/// Takes the ports a task needs from an offer's free ranges: fixed ones exactly, 0 as the lowest free.
fn take_ports(free: &mut Vec<PortRange>, wanted: &[u16]) -> Option<Vec<u16>> {
    let mut left = free.clone();
    let mut out = Vec::with_capacity(wanted.len());
    let remove = |left: &mut Vec<PortRange>, port: u16| {
        let i = left.iter().position(|r| r.begin <= port && port <= r.end)?;
        let r = left.remove(i);
        if r.begin < port {
            left.insert(i, PortRange { begin: r.begin, end: port - 1 });
        }
        if port < r.end {
            let at = if r.begin < port { i + 1 } else { i };
            left.insert(at, PortRange { begin: port + 1, end: r.end });
        }
        Some(())
    };
    for &port in wanted.iter().filter(|p| **p != 0) {
        remove(&mut left, port)?;
    }
    for &port in wanted {
        if port != 0 {
            out.push(port);
            continue;
        }
        let first = left.first()?.begin;
        remove(&mut left, first)?;
        out.push(first);
    }
    *free = left;
    Some(out)
}

/// The task spec for one task of `app` with these host ports. Its environment is the app's and Marathon's
/// own `MARATHON_APP_ID` and `MARATHON_APP_VERSION`; the agent adds `HOST`, `PORT0`…, `PORT`, `PORTS` and
/// `MESOS_TASK_ID` (from the task's ports, in the order given here), so they do not cross the ABI with
/// every task.
fn task_spec(app: &App, id: &str, version: &str, ports: &[u16]) -> TaskSpec {
    let mut env: Vec<KeyValue> = Vec::with_capacity(app.env.len() + 2);
    env.extend(app.env.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }));
    env.push(KeyValue { key: "MARATHON_APP_ID".into(), value: app.id.clone() });
    env.push(KeyValue { key: "MARATHON_APP_VERSION".into(), value: version.into() });
    let network = match &app.network {
        NetworkMode::Host => Network::Host,
        NetworkMode::Bridge => Network::Bridge,
        NetworkMode::None => Network::None,
        NetworkMode::User(name) => Network::User(name.clone()),
    };
    let port_mappings = match app.network {
        NetworkMode::Bridge | NetworkMode::User(_) => app
            .port_mappings
            .iter()
            .zip(ports)
            .map(|(m, &host_port)| AbiPortMapping {
                container_port: m.container_port,
                host_port,
                protocol: if m.protocol == "udp" { Protocol::Udp } else { Protocol::Tcp },
                name: m.name.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let health_checks = app
        .health_checks
        .iter()
        .map(|h| AbiHealthCheck {
            probe: match h.protocol.as_str() {
                "TCP" | "MESOS_TCP" => Probe::Tcp(h.port_index),
                "COMMAND" | "MESOS_COMMAND" => {
                    Probe::Command(vec!["/bin/sh".into(), "-c".into(), h.command.clone().unwrap_or_default()])
                }
                protocol => Probe::Http(HttpProbe {
                    port_index: h.port_index,
                    path: h.path.clone(),
                    https: protocol.ends_with("HTTPS"),
                }),
            },
            grace_period_ms: h.grace_period_seconds.saturating_mul(1000),
            interval_ms: h.interval_seconds.saturating_mul(1000),
            timeout_ms: h.timeout_seconds.saturating_mul(1000),
            max_consecutive_failures: h.max_consecutive_failures,
        })
        .collect();
    let mut resources = Resources::new(app.milli_cpus(), app.mem_mib())
        .with_ports(ports.iter().map(|&p| PortRange { begin: p, end: p }).collect());
    resources.disk_mib = app.disk_mib();
    resources.gpus = app.gpus;
    TaskSpec {
        id: id.into(),
        name: app.id.clone(),
        resources,
        container: ContainerSpec {
            image: app.image.clone(),
            force_pull: app.force_pull_image,
            command: app.cmd.clone(),
            args: app.args.clone(),
            entrypoint: None,
            env,
            labels: app.labels.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect(),
            port_mappings,
            network,
            volumes: app
                .volumes
                .iter()
                .map(|v| AbiVolume {
                    host_path: v.host_path.clone(),
                    container_path: v.container_path.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            working_dir: None,
            user: app.user.clone(),
            privileged: app.privileged,
        },
        health_checks,
        kill_grace_period_ms: app.kill_grace_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(instances: u32, mhc: f64, moc: f64) -> App {
        let mut app =
            crate::app::parse(&json!({"id": "/web", "container": {"docker": {"image": "web:1"}}}), None)
                .unwrap();
        app.instances = instances;
        app.minimum_health_capacity = mhc;
        app.maximum_over_capacity = moc;
        app
    }

    fn marathon(app: App, version: &str) -> Marathon {
        let mut m = Marathon::new(State::default(), Config::default(), 1_000_000);
        m.state.apps.insert(
            app.id.clone(),
            AppState {
                app,
                version: version.into(),
                config_version: version.into(),
                scaling_version: version.into(),
                versions: vec![],
                backoff: Default::default(),
                last_failure: None,
                deployment: None,
                deleting: false,
            },
        );
        m
    }

    fn task(m: &mut Marathon, id: &str, version: &str, healthy: bool) {
        m.state.insert_task(Task {
            id: id.into(),
            app: "/web".into(),
            version: version.into(),
            phase: Phase::Running,
            host: "h".into(),
            attributes: vec![],
            ports: vec![],
            staged_at_ms: 0,
            started_at_ms: Some(0),
            healthy: Some(healthy),
            has_health_checks: true,
            last_health_ms: None,
            killing: false,
        });
    }

    #[test]
    fn a_rolling_upgrade_keeps_the_minimum_healthy_and_the_maximum_over_capacity() {
        // 4 instances at v1, upgrading to v2 with minimumHealthCapacity 0.5, maximumOverCapacity 0.
        let mut m = marathon(app(4, 0.5, 0.0), "v2");
        for i in 0..4 {
            task(&mut m, &format!("old{i}"), "v1", true);
        }
        let plan = m.plan("/web");
        assert_eq!(plan.kill.len(), 2, "kill down to 2 healthy: {plan:?}");
        assert_eq!(plan.launch, 2, "and start 2 new ones, staying within 4 tasks");
        for id in &plan.kill {
            m.state.update_task(id, |t| t.killing = true).unwrap();
        }
        let plan = m.plan("/web");
        assert_eq!((plan.launch, plan.kill.len()), (2, 0), "the same plan until the new tasks exist");
        task(&mut m, "new0", "v2", false);
        task(&mut m, "new1", "v2", true);
        let plan = m.plan("/web");
        assert_eq!(plan.kill.len(), 1, "one new task healthy: one more old one may go: {plan:?}");
        assert_eq!(plan.launch, 1, "and one more new one in its place");
    }

    #[test]
    fn plans_and_deployments_read_off_the_counts_match_a_walk_of_the_tasks() {
        // Random task sets of an app at v2 (tasks at v1 or v2, in every phase, health and kill state);
        // the plan and the deployment check from the counts equal the ones from walking the tasks.
        let mut next = crate::model::testing::numbers(0x2545_f491_4f6c_dd1d);
        let (mut fast, mut walked) = (0, 0);
        for round in 0..2_000 {
            let mut m = marathon(app(next(5) as u32, 0.5, 0.5), "v2");
            let a = m.state.apps.get_mut("/web").unwrap();
            a.deleting = next(5) == 0;
            a.app.health_checks = vec![];
            if next(4) == 0 {
                a.backoff.launch_after_ms = m.now_ms + 1;
            }
            for i in 0..next(7) {
                let id = format!("t{i}");
                task(&mut m, &id, ["v1", "v2", "v2"][next(3) as usize], next(3) > 0);
                let (phase, killing, checks) = (next(3), next(5) == 0, next(2) == 0);
                m.state.update_task(&id, |t| {
                    t.phase = [Phase::Staging, Phase::Starting, Phase::Running][phase as usize];
                    t.killing = killing;
                    t.has_health_checks = checks;
                    t.staged_at_ms = i;
                });
            }
            let a = &m.state.apps["/web"];
            let mut by_walk = Plan::default();
            if let Some(launch) = m.plan_from_tasks("/web", a, &mut by_walk) {
                if launch > 0 && m.now_ms < a.backoff.launch_after_ms {
                    by_walk.delayed = launch;
                } else {
                    by_walk.launch = launch;
                }
            }
            assert_eq!(m.plan("/web"), by_walk, "round {round}");
            let tasks: Vec<&Task> = m.state.app_tasks("/web").collect();
            let done_by_walk = if a.deleting {
                tasks.is_empty()
            } else {
                tasks.len() == a.app.instances as usize
                    && tasks.iter().all(|t| *t.version == *a.config_version && !t.killing && t.healthy())
            };
            let d = Deployment {
                id: "d".into(),
                app: "/web".into(),
                kind: Kind::Scale,
                version: "v2".into(),
                from_version: None,
                started_ms: 0,
            };
            assert_eq!(m.deployment_done(&d), done_by_walk, "round {round}");
            let c = m.state.counts("/web").cloned().unwrap_or_default();
            if !a.deleting && c.active() == c.version("v2").active && c.active() <= a.app.instances {
                fast += 1;
            } else {
                walked += 1;
            }
        }
        assert!(fast > 300 && walked > 300, "both paths taken: {fast} from counts, {walked} walked");
    }

    #[test]
    fn scaling_down_kills_the_youngest_first() {
        let mut m = marathon(app(1, 1.0, 1.0), "v1");
        task(&mut m, "a", "v1", true);
        task(&mut m, "b", "v1", true);
        m.state.update_task("b", |t| t.staged_at_ms = 5).unwrap();
        assert_eq!(m.plan("/web").kill, vec!["b".to_string()]);
        m.state.apps.get_mut("/web").unwrap().app.kill_selection = KillSelection::OldestFirst;
        assert_eq!(m.plan("/web").kill, vec!["a".to_string()]);
    }

    #[test]
    fn failures_delay_launches_by_a_growing_backoff() {
        let mut a = app(1, 1.0, 1.0);
        a.backoff_seconds = 1.0;
        a.backoff_factor = 2.0;
        let mut m = marathon(a, "v1");
        let mut delays = vec![];
        for i in 0..4 {
            let id = format!("t{i}");
            task(&mut m, &id, "v1", true);
            let now = m.now_ms;
            m.state.update_task(&id, |t| t.started_at_ms = Some(now)).unwrap();
            let status = TaskStatus {
                task_id: id,
                state: TaskState::Failed,
                reason: Some(TaskReason::CommandFailed),
                message: "exited with code 1".into(),
                healthy: None,
                exit_code: Some(1),
                node: None,
                hostname: None,
                ports: vec![],
                timestamp_ms: m.now_ms,
            };
            m.status(vec![status]);
            delays.push(m.state.apps["/web"].backoff.delay_ms);
            assert_eq!(
                m.plan("/web"),
                Plan { launch: 0, delayed: 1, kill: vec![] },
                "no launch during the delay"
            );
        }
        assert_eq!(delays, vec![1000, 2000, 4000, 8000]);
        m.now_ms += 8000;
        assert_eq!(m.plan("/web").launch, 1, "after the delay the app launches again");
    }

    #[test]
    fn ports_come_from_the_offer_fixed_ones_exactly() {
        let mut free = vec![PortRange { begin: 100, end: 105 }];
        assert_eq!(take_ports(&mut free, &[0, 103, 0]), Some(vec![100, 103, 101]));
        assert_eq!(free, vec![PortRange { begin: 102, end: 102 }, PortRange { begin: 104, end: 105 }]);
        assert_eq!(take_ports(&mut free, &[200]), None);
        assert_eq!(free.len(), 2, "a failed take leaves the ports alone");
    }
}
