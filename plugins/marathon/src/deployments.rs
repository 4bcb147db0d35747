//! Deployments: one per change request, covering every app the request changed (an app is in one at a
//! time), done when each app's tasks are all of its new version, ready, and have stayed ready for the
//! app's minimum healthy time; ended by success, by a newer deployment (`force`) or by a rollback. And the
//! versions of definitions they move between, and the events Marathon's clients follow them by.

use serde_json::{Value, json};

use crate::app::{self, App};
use crate::model::{Change, Deployment, Kind, version_key};
use crate::scheduler::Marathon;
use crate::time::iso;

/// Definitions kept per app.
const VERSIONS_KEPT: usize = 50;

impl Marathon {
    /// Whether the change to one app is complete.
    fn change_done(&self, change: &Change) -> bool {
        let Some(a) = self.state.apps.get(&change.app) else { return true };
        let Some(counts) = self.state.counts(&change.app) else { return a.deleting || a.app.instances == 0 };
        if a.deleting {
            return counts.tasks == 0;
        }
        // Every task is of the current version, not being killed, running and healthy...
        if !(counts.tasks == a.app.instances && counts.version(&a.config_version).ready == counts.tasks) {
            return false;
        }
        // ... and has stayed so for the minimum healthy time: a task that starts and crashes at once never
        // gets there, so a crash-looping app's deployment does not succeed. (Walks the app's tasks, but only
        // once every task is ready.)
        let min = a.app.min_healthy_ms().unwrap_or(u64::from(self.config.min_healthy_seconds) * 1000);
        min == 0 || self.state.app_tasks(&change.app).all(|t| t.proven(self.now_ms, min))
    }

    /// Whether every change of a deployment is complete.
    pub(crate) fn deployment_done(&self, d: &Deployment) -> bool {
        d.changes.iter().all(|c| self.change_done(c))
    }

    /// Ends a deployment, successfully or not; a finished stop forgets its app.
    pub fn finish_deployment(&mut self, id: &str, success: bool) {
        let Some(d) = self.state.deployments.remove(id) else { return };
        self.state.touch_deployment(id);
        let plan = self.plan_json(&d);
        if success {
            self.publish("deployment_step_success", json!({"plan": plan}));
            self.publish("deployment_success", json!({"id": d.id, "plan": plan}));
        } else {
            self.publish("deployment_step_failure", json!({"plan": plan}));
            self.publish("deployment_failed", json!({"id": d.id, "plan": plan}));
        }
        for change in &d.changes {
            let Some(a) = self.state.apps.get_mut(&change.app) else { continue };
            if a.deployment.as_deref() == Some(id) {
                a.deployment = None;
            }
            let deleting = a.deleting;
            self.state.touch_app(&change.app);
            if deleting && success {
                let a = self.state.apps.remove(&change.app).expect("present");
                for v in &a.versions {
                    self.state.drop_version(version_key(&change.app, v));
                }
                self.state.forget_app_tasks(&change.app);
                self.publish("app_terminated_event", json!({"appId": change.app}));
            }
        }
    }

    /// Starts one deployment for `changes`. An app is in one deployment at a time: a change to an app in
    /// another is refused unless `force`, which ends that one. Returns the deployment id, or the id of the one
    /// in the way.
    pub fn start_deployment(&mut self, changes: Vec<Change>, force: bool) -> Result<String, String> {
        let busy: Vec<String> = changes
            .iter()
            .filter_map(|c| self.state.apps.get(&c.app).and_then(|a| a.deployment.clone()))
            .collect();
        if let Some(existing) = busy.first()
            && !force
        {
            return Err(existing.clone());
        }
        for existing in busy {
            self.finish_deployment(&existing, false);
        }
        let seq = self.state.next_seq();
        let id = uuid_like(self.now_ms, seq);
        let version = changes
            .iter()
            .filter_map(|c| self.state.apps.get(&c.app).map(|a| a.version.clone()))
            .max()
            .unwrap_or_else(|| iso(self.now_ms));
        let d = Deployment::new(id.clone(), changes, version.clone(), self.now_ms);
        for app in d.apps() {
            if let Some(a) = self.state.apps.get_mut(app) {
                a.deployment = Some(id.clone());
                self.state.touch_app(app);
            }
        }
        self.publish("group_change_success", json!({"groupId": "/", "version": version}));
        let plan = self.plan_json(&d);
        let current = &plan["steps"][self.current_step(&d).saturating_sub(1)];
        self.publish("deployment_info", json!({"plan": plan, "currentStep": current}));
        self.state.deployments.insert(id.clone(), d);
        self.state.touch_deployment(&id);
        Ok(id)
    }

    /// The deployment's steps, as Marathon orders them: apps started, then scaled; restarted; stopped.
    fn steps(d: &Deployment) -> Vec<Vec<(&'static str, &str)>> {
        let of = |kinds: &[Kind], action| -> Vec<(&'static str, &str)> {
            d.changes.iter().filter(|c| kinds.contains(&c.kind)).map(|c| (action, c.app.as_str())).collect()
        };
        [
            of(&[Kind::Start], "StartApplication"),
            of(&[Kind::Start, Kind::Scale], "ScaleApplication"),
            of(&[Kind::Restart], "RestartApplication"),
            of(&[Kind::Stop], "StopApplication"),
        ]
        .into_iter()
        .filter(|step| !step.is_empty())
        .collect()
    }

    /// The step under way, from 1: the first whose actions are not all complete (the last when all are).
    fn current_step(&self, d: &Deployment) -> usize {
        let steps = Self::steps(d);
        let complete = |(action, app): &(&str, &str)| match *action {
            // The app exists with its definition from the moment the deployment starts.
            "StartApplication" => self.state.apps.contains_key(*app),
            _ => d.changes.iter().filter(|c| c.app == *app).all(|c| self.change_done(c)),
        };
        let done = steps.iter().take_while(|step| step.iter().all(complete)).count();
        (done + 1).min(steps.len()).max(1)
    }

    /// Marathon's JSON for a deployment (`/v2/deployments`). With `embed_failure`, each deployment also
    /// carries `lastFailure`: the last task of its apps that failed since it began (a berth extension,
    /// asked for with `?embed=lastFailure`, since Marathon's clients refuse fields they do not know).
    pub fn deployment_json(&self, d: &Deployment, embed_failure: bool) -> Value {
        let steps: Vec<Value> = Self::steps(d)
            .into_iter()
            .map(|step| json!({"actions": step.iter().map(|(action, app)| json!({"action": action, "app": app})).collect::<Vec<_>>()}))
            .collect();
        let current = self.current_step(d);
        let current_actions: Vec<Value> = steps
            .get(current.saturating_sub(1))
            .and_then(|s| s["actions"].as_array())
            .map(|actions| {
                actions
                    .iter()
                    .map(|a| json!({"action": a["action"], "app": a["app"], "readinessCheckResults": []}))
                    .collect()
            })
            .unwrap_or_default();
        let mut v = json!({
            "id": d.id,
            "version": d.version,
            "affectedApps": d.apps().collect::<Vec<_>>(),
            "affectedPods": [],
            "steps": steps,
            "currentActions": current_actions,
            "currentStep": current,
            "totalSteps": steps.len(),
        });
        if embed_failure {
            let failure = d
                .apps()
                .filter_map(|app| self.state.apps.get(app)?.last_failure.as_ref())
                .filter(|f| f.timestamp_ms >= d.started_ms)
                .max_by_key(|f| f.timestamp_ms);
            v["lastFailure"] = match failure {
                Some(f) => {
                    json!({"taskId": f.task_id, "host": f.host, "state": f.state, "message": f.message,
                                  "timestamp": iso(f.timestamp_ms), "version": f.version})
                }
                None => Value::Null,
            };
        }
        v
    }

    /// A deployment's plan as Marathon's events carry it: the root group before and after, and the steps.
    pub fn plan_json(&self, d: &Deployment) -> Value {
        let group = |apps: Vec<Value>, version: &str| json!({"id": "/", "apps": apps, "groups": [], "pods": [], "dependencies": [], "version": version});
        let target: Vec<Value> = d
            .apps()
            .filter_map(|id| self.state.apps.get(id).filter(|a| !a.deleting))
            .map(|a| app::to_json(&a.app, &a.version))
            .collect();
        let original =
            d.changes.iter().filter_map(|c| c.from_version.as_ref()).min().cloned().unwrap_or_default();
        let steps: Vec<Value> = Self::steps(d)
            .into_iter()
            .map(|step| json!({"actions": step.iter().map(|(action, app)| json!({"action": action, "app": app})).collect::<Vec<_>>()}))
            .collect();
        json!({
            "id": d.id,
            "version": d.version,
            "original": group(Vec::new(), &original),
            "target": group(target, &d.version),
            "steps": steps,
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

#[cfg(test)]
mod tests {
    use berth_plugin_sdk::{TaskState, TaskStatus};

    use super::*;
    use crate::scheduler::testing::{app, marathon};

    fn update(m: &mut Marathon, id: &str, state: TaskState) {
        let status = TaskStatus {
            task_id: id.into(),
            state,
            reason: None,
            message: String::new(),
            healthy: None,
            exit_code: None,
            node: Some(1),
            hostname: Some("h".into()),
            ports: vec![],
            timestamp_ms: m.now_ms,
        };
        m.status(vec![status]);
    }

    /// Launches the app's one task on an offer and returns its id.
    fn launch(m: &mut Marathon) -> String {
        use berth_plugin_sdk::{Decision, Offer, PortRange, Resources};
        let offer = Offer {
            id: 1,
            node: 1,
            hostname: "h".into(),
            attributes: vec![],
            resources: Resources {
                milli_cpus: 4_000,
                mem_mib: 4_096,
                disk_mib: 0,
                gpus: 0,
                ports: vec![PortRange { begin: 31000, end: 31010 }],
            },
        };
        match m.offers(vec![offer]).pop() {
            Some(Decision::Launch(launch)) => launch.tasks[0].id.clone(),
            other => panic!("expected a launch, got {other:?}"),
        }
    }

    #[test]
    fn a_crash_looping_app_never_completes_its_deployment_and_a_steady_one_does_after_its_minimum_time() {
        let mut m = marathon(app(1, 1.0, 1.0), "v1");
        let change = Change { app: "/web".into(), kind: Kind::Start, from_version: None };
        let id = m.start_deployment(vec![change], false).unwrap();
        // Ten tasks that start and exit a moment later: the deployment stays, whatever the timing.
        for _ in 0..10 {
            m.state.apps.get_mut("/web").unwrap().backoff = Default::default();
            let task = launch(&mut m);
            update(&mut m, &task, TaskState::Running);
            m.now_ms += 500;
            update(&mut m, &task, TaskState::Failed);
            m.now_ms += 10_000;
            m.tick();
            assert!(m.state.deployments.contains_key(&id), "a crash loop is not a deployment that succeeded");
        }
        let json = m.deployment_json(&m.state.deployments[&id], true);
        assert_eq!(json["lastFailure"]["state"], "TASK_FAILED", "{json}");

        // A task that stays up: done once it has been running for the minimum healthy time (5 s).
        m.state.apps.get_mut("/web").unwrap().backoff = Default::default();
        let task = launch(&mut m);
        update(&mut m, &task, TaskState::Running);
        m.now_ms += 4_000;
        m.tick();
        assert!(m.state.deployments.contains_key(&id), "4 s is not enough");
        m.now_ms += 1_500;
        m.tick();
        assert!(!m.state.deployments.contains_key(&id), "5.5 s is");
    }

    #[test]
    fn the_minimum_healthy_time_is_the_apps_label_when_set() {
        let mut web = app(1, 1.0, 1.0);
        web.labels.insert(app::MIN_HEALTHY_LABEL.into(), "0".into());
        let mut m = marathon(web, "v1");
        let change = Change { app: "/web".into(), kind: Kind::Start, from_version: None };
        let id = m.start_deployment(vec![change], false).unwrap();
        let task = launch(&mut m);
        update(&mut m, &task, TaskState::Running);
        assert!(!m.state.deployments.contains_key(&id), "done as soon as it runs");
    }
}
