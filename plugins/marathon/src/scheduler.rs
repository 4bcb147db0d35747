//! The framework: its configuration and the state it keeps between calls, and `converge`, which every call
//! ends with: the kills plans ask for, deployments that are done, and suppressing or reviving offers.
//!
//! What an app needs is planned in `planning.rs`, offers are answered in `placement.rs`, status updates
//! applied in `status.rs`, deployments tracked in `deployments.rs`, and the REST API served in `api.rs`.

use std::collections::BTreeMap;

use berth_plugin_sdk::{Action, Event, KillTask};
use serde_json::{Value, json};

use crate::model::State;
use crate::planning::Plan;
use crate::queue::OfferStats;
use crate::time::iso;

/// Framework configuration (JSON, all optional): `{"decline_seconds": 120}`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How long an offer the framework cannot use is declined for.
    pub decline_seconds: u32,
    /// How long a new task must stay running (and healthy, with health checks) before it counts toward a
    /// deployment, unless its app's `berth.minHealthySeconds` label says otherwise (Nomad's
    /// `min_healthy_time`).
    pub min_healthy_seconds: u32,
    /// The range service ports are assigned from, inclusive.
    pub service_ports: (u16, u16),
    /// How long an offer is declined for when launches are wanted but nothing fits it.
    pub unfit_decline_seconds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            decline_seconds: 120,
            min_healthy_seconds: 5,
            service_ports: (10_000, 20_000),
            unfit_decline_seconds: 5,
        }
    }
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
    pub(crate) plans: BTreeMap<String, Plan>,
    /// How each app's offers went, for `/v2/queue` (kept in memory: a summary, not state).
    pub(crate) offer_stats: BTreeMap<String, OfferStats>,
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
            offer_stats: BTreeMap::new(),
        }
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

    /// The timer: deployments and backoff move on even without events.
    pub fn tick(&mut self) -> Vec<Action> {
        self.converge()
    }

    /// Sends the kills plans ask for, finishes deployments that are done, suppresses offers when nothing is
    /// to be launched and revives them when launches are wanted; returns those actions and pending events.
    pub fn converge(&mut self) -> Vec<Action> {
        let mut actions = std::mem::take(&mut self.actions);
        let changed = self.refresh_plans();
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
        self.refresh_plans();
        // A change to its app (tasks, definition, the deployment itself) or time passing (its tasks' minimum
        // healthy time) can finish a deployment; `deployment_done` is cheap until every task is ready.
        let done: Vec<String> = self
            .state
            .deployments
            .values()
            .filter(|d| self.deployment_done(d))
            .map(|d| d.id.clone())
            .collect();
        for id in done {
            self.finish_deployment(&id, true);
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
}

/// Helpers for the unit tests of every module.
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::app::App;
    use crate::model::{AppState, Phase, Task};

    pub fn app(instances: u32, mhc: f64, moc: f64) -> App {
        let mut app =
            crate::app::parse(&json!({"id": "/web", "container": {"docker": {"image": "web:1"}}}), None)
                .unwrap();
        app.instances = instances;
        app.minimum_health_capacity = mhc;
        app.maximum_over_capacity = moc;
        app
    }

    pub fn marathon(app: App, version: &str) -> Marathon {
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

    pub fn task(m: &mut Marathon, id: &str, version: &str, healthy: bool) {
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
            ready_since_ms: None,
        });
    }
}
