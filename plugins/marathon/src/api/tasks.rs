//! `/v2/tasks` and an app's tasks: listing (by state), killing, and killing with scaling down.

use std::collections::BTreeMap;

use berth_plugin_sdk::{Action, HttpResponse, KillTask};
use serde_json::{Value, json};

use super::{Params, deployment_reply, locked, message, reply, task_json};
use crate::app::Invalid;
use crate::model::{Change, Kind, Task};
use crate::scheduler::Marathon;

impl Marathon {
    pub(super) fn app_tasks(&self, id: &str) -> HttpResponse {
        if !self.state.apps.contains_key(id) {
            return self.not_found(id);
        }
        let ports = self.service_ports(id);
        let tasks: Vec<Value> =
            self.state.app_tasks_sorted(id).into_iter().map(|t| task_json(t, &ports)).collect();
        reply(200, json!({ "tasks": tasks }))
    }

    pub(super) fn list_tasks(&self, params: &Params) -> HttpResponse {
        // `status=running` or `status[]=running&status[]=staging`.
        let wanted: Vec<String> = params
            .all("status")
            .into_iter()
            .map(|s| format!("TASK_{}", s.trim().to_ascii_uppercase()))
            .collect();
        let mut tasks: Vec<&Task> = self.state.all_tasks().collect();
        tasks.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let tasks: Vec<Value> = tasks
            .into_iter()
            .map(|t| task_json(t, &self.service_ports(&t.app)))
            .filter(|t| wanted.is_empty() || wanted.iter().any(|w| t["state"] == w.as_str()))
            .collect();
        reply(200, json!({ "tasks": tasks }))
    }

    /// Kills tasks; with `scale`, lowers the app's instance count by as many (a scale deployment).
    pub(super) fn kill_tasks(
        &mut self,
        app_id: &str,
        ids: &[String],
        scale: bool,
        force: bool,
    ) -> Result<Option<(String, String)>, HttpResponse> {
        let current = self.state.apps.get(app_id).cloned().ok_or_else(|| self.not_found(app_id))?;
        if scale
            && let Some(d) = &current.deployment
            && !force
        {
            return Err(locked(d));
        }
        let grace = current.app.kill_grace_ms();
        let mut killed = 0;
        for id in ids {
            if self.state.task(id).is_some_and(|t| *t.app == *app_id && !t.killing) {
                self.state.update_task(id, |t| t.killing = true);
                killed += 1;
                self.actions
                    .push(Action::Kill(KillTask { task_id: id.clone(), grace_period_ms: Some(grace) }));
            }
        }
        if !scale {
            return Ok(None);
        }
        let version = self.new_version(Some(&current.version));
        let a = self.state.apps.get_mut(app_id).expect("present");
        a.app.instances = a.app.instances.saturating_sub(killed);
        a.version = version.clone();
        a.scaling_version = version.clone();
        let app = a.app.clone();
        self.state.touch_app(app_id);
        self.remember_version(&app, &version);
        let change = Change { app: app_id.into(), kind: Kind::Scale, from_version: Some(current.version) };
        let d = self.start_deployment(vec![change], true).map_err(|d| locked(&d))?;
        Ok(Some((d, version)))
    }

    pub(super) fn kill_app_tasks(&mut self, id: &str, params: &Params) -> HttpResponse {
        let host = params.get("host");
        let ids: Vec<String> = self
            .state
            .app_tasks_sorted(id)
            .into_iter()
            .filter(|t| host.is_none_or(|h| *t.host == *h))
            .map(|t| t.id.to_string())
            .collect();
        let ports = self.service_ports(id);
        let tasks: Vec<Value> =
            ids.iter().filter_map(|i| self.state.task(i)).map(|t| task_json(t, &ports)).collect();
        match self.kill_tasks(id, &ids, params.flag("scale"), params.flag("force")) {
            Ok(Some((d, v))) => deployment_reply(200, &d, &v),
            Ok(None) => reply(200, json!({ "tasks": tasks })),
            Err(r) => r,
        }
    }

    pub(super) fn kill_one(&mut self, app_id: &str, task_id: &str, params: &Params) -> HttpResponse {
        let ports = self.service_ports(app_id);
        let Some(task) = self.state.task(task_id).filter(|t| *t.app == *app_id).map(|t| task_json(t, &ports))
        else {
            return message(404, &format!("Task '{task_id}' does not exist"));
        };
        match self.kill_tasks(app_id, &[task_id.to_string()], params.flag("scale"), params.flag("force")) {
            Ok(Some((d, v))) => deployment_reply(200, &d, &v),
            Ok(None) => reply(200, json!({ "task": task })),
            Err(r) => r,
        }
    }

    pub(super) fn delete_tasks(&mut self, body: Value, params: &Params) -> HttpResponse {
        let Some(ids) = body.get("ids").and_then(Value::as_array) else {
            return reply(422, Invalid::one("/ids", "must be a list of task ids").body());
        };
        let mut by_app: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in ids.iter().filter_map(Value::as_str) {
            if let Some(t) = self.state.task(id) {
                by_app.entry(t.app.to_string()).or_default().push(id.to_string());
            }
        }
        for (app, ids) in by_app {
            if let Err(r) = self.kill_tasks(&app, &ids, params.flag("scale"), params.flag("force")) {
                return r;
            }
        }
        reply(200, json!({}))
    }
}
