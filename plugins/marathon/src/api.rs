//! Marathon's REST API (`/v2/...` and `/ping`), served through the framework's `handle` export. Paths,
//! parameters, status codes and JSON shapes follow Marathon 1.x, so its clients work unchanged.

use std::collections::BTreeMap;

use berth_plugin_sdk::{Action, ApiReply, HttpRequest, HttpResponse, KeyValue, KillTask};
use serde_json::{Value, json};

use crate::app::{self, App, Invalid};
use crate::model::{AppState, Kind, Persist, Phase, Task, version_key};
use crate::scheduler::Marathon;
use crate::time::iso;

/// What `/v2/info` reports as the build (the `rebuilt` feature changes it, for hot-swap tests).
pub const BUILD: &str = if cfg!(feature = "rebuilt") { "berth-marathon-rebuilt" } else { "berth-marathon" };

fn reply(status: u16, body: Value) -> HttpResponse {
    HttpResponse::json(status, body.to_string())
}

fn message(status: u16, text: &str) -> HttpResponse {
    reply(status, json!({ "message": text }))
}

/// Query parameters, in order, percent-decoded.
fn query(raw: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true") || v == "1")
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).flat_map(|(_, v)| v.split(',')).collect()
    }
}

fn deployment_reply(status: u16, deployment: &str, version: &str) -> HttpResponse {
    let mut r = reply(status, json!({"deploymentId": deployment, "version": version}));
    r.headers.push(KeyValue { key: "Marathon-Deployment-Id".into(), value: deployment.into() });
    r
}

fn locked(deployment: &str) -> HttpResponse {
    reply(
        409,
        json!({
            "message": format!("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{deployment}'."),
            "deployments": [{"id": deployment}],
        }),
    )
}

fn task_json(t: &Task) -> Value {
    let state = if t.killing {
        "TASK_KILLING"
    } else {
        match t.phase {
            Phase::Staging => "TASK_STAGING",
            Phase::Starting => "TASK_STARTING",
            Phase::Running => "TASK_RUNNING",
        }
    };
    let health = match (t.has_health_checks, t.healthy) {
        (true, Some(alive)) => json!([{
            "alive": alive, "consecutiveFailures": if alive { 0 } else { 1 }, "firstSuccess": null,
            "lastFailure": null, "lastSuccess": null, "taskId": t.id, "instanceId": t.id,
        }]),
        _ => json!([]),
    };
    json!({
        "id": t.id, "appId": t.app, "host": t.host, "slaveId": t.host, "ports": t.ports, "servicePorts": [],
        "stagedAt": iso(t.staged_at_ms), "startedAt": t.started_at_ms.map(iso), "version": t.version,
        "state": state, "ipAddresses": [], "healthCheckResults": health,
    })
}

impl Marathon {
    fn app_json(&self, a: &AppState, embed_tasks: bool, embed_failure: bool) -> Value {
        let mut v = app::to_json(&a.app, &a.version);
        let (tasks, running, healthy, unhealthy) = self
            .state
            .counts(&a.app.id)
            .map_or((0, 0, 0, 0), |c| (c.tasks, c.running, c.healthy, c.unhealthy));
        v["tasksRunning"] = json!(running);
        v["tasksStaged"] = json!(tasks - running);
        v["tasksHealthy"] = json!(healthy);
        v["tasksUnhealthy"] = json!(unhealthy);
        v["deployments"] = json!(a.deployment.iter().map(|d| json!({"id": d})).collect::<Vec<_>>());
        v["versionInfo"] =
            json!({"lastScalingAt": a.scaling_version, "lastConfigChangeAt": a.config_version});
        if embed_tasks {
            let tasks = self.state.app_tasks_sorted(&a.app.id);
            v["tasks"] = json!(tasks.into_iter().map(task_json).collect::<Vec<_>>());
        }
        if embed_failure && let Some(f) = &a.last_failure {
            v["lastTaskFailure"] = json!({
                "appId": a.app.id, "host": f.host, "message": f.message, "state": f.state, "taskId": f.task_id,
                "instanceId": f.task_id, "slaveId": f.host, "timestamp": iso(f.timestamp_ms), "version": f.version,
            });
        }
        v
    }

    /// Serves one request.
    pub fn handle(&mut self, request: HttpRequest, store: &dyn Persist) -> ApiReply {
        let params = Params(query(&request.query));
        let body: Result<Value, String> = if request.body.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice(&request.body).map_err(|e| e.to_string())
        };
        let path = request.path.trim_end_matches('/').to_string();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let method = request.method.to_ascii_uppercase();
        let response = match (method.as_str(), segments.as_slice()) {
            ("GET", ["ping"]) => HttpResponse::text(200, "pong"),
            (_, ["v2", ..]) if body.is_err() => reply(
                400,
                json!({"message": "Invalid JSON", "details": [{"path": "/", "errors": [body.clone().unwrap_err()]}]}),
            ),
            ("GET", ["v2", "info"]) => reply(200, self.info()),
            ("GET", ["v2", "leader"]) => reply(200, json!({"leader": "berth"})),
            ("GET", ["v2", "apps"]) => self.list_apps(&params),
            ("POST", ["v2", "apps"]) => self.create(body.unwrap_or_default(), &params),
            ("PUT", ["v2", "apps"]) => self.update_many(body.unwrap_or_default(), &params),
            (_, ["v2", "apps", rest @ ..]) if !rest.is_empty() => {
                self.app_route(&method, rest, body.unwrap_or_default(), &params, store)
            }
            ("GET", ["v2", "tasks"]) => self.list_tasks(&params),
            ("POST", ["v2", "tasks", "delete"]) => self.delete_tasks(body.unwrap_or_default(), &params),
            ("GET", ["v2", "deployments"]) => {
                let list: Vec<Value> =
                    self.state.deployments.values().map(|d| self.deployment_json(d)).collect();
                reply(200, json!(list))
            }
            ("DELETE", ["v2", "deployments", id]) => self.delete_deployment(id, &params, store),
            ("GET", ["v2", "queue"]) => self.queue(),
            ("DELETE", ["v2", "queue", rest @ ..]) if rest.last() == Some(&"delay") => {
                let id = format!("/{}", rest[..rest.len() - 1].join("/"));
                match self.state.apps.get_mut(&id) {
                    Some(a) => {
                        a.backoff = Default::default();
                        self.state.touch_app(&id);
                        HttpResponse { status: 204, headers: vec![], body: vec![] }
                    }
                    None => message(404, &format!("Application {id} not found in tasks queue.")),
                }
            }
            ("GET", ["v2", "groups", rest @ ..]) => self.group(&format!("/{}", rest.join("/"))),
            (_, ["v2", "groups", ..]) => {
                message(422, "groups are not supported by berth: post apps with their full path ids")
            }
            ("GET", ["v2", "events"]) => message(404, "the event stream is served by the host at /v2/events"),
            _ => message(404, &format!("no such endpoint: {} {}", request.method, request.path)),
        };
        ApiReply { response, actions: self.converge() }
    }

    fn info(&self) -> Value {
        json!({
            "name": "marathon", "version": "1.9.109", "buildref": BUILD, "elected": true, "leader": "berth",
            "frameworkId": "berth-marathon",
            "marathon_config": {"master": "berth", "framework_name": "marathon", "hostname": "berth", "task_launch_timeout": 300000},
            "http_config": {"http_port": 8080}, "zookeeper_config": {}, "event_subscriber": null,
        })
    }

    fn list_apps(&self, params: &Params) -> HttpResponse {
        let embed = params.all("embed");
        let embed_tasks = embed.contains(&"apps.tasks") || embed.contains(&"app.tasks");
        let embed_failure = embed.iter().any(|e| e.ends_with("lastTaskFailure") || e.ends_with("failures"));
        let apps: Vec<Value> = self
            .state
            .apps
            .values()
            .filter(|a| !a.deleting)
            .filter(|a| params.get("id").is_none_or(|id| a.app.id.contains(id)))
            .filter(|a| {
                params.get("cmd").is_none_or(|cmd| a.app.cmd.as_deref().is_some_and(|c| c.contains(cmd)))
            })
            .filter(|a| {
                params.get("label").is_none_or(|label| match label.split_once("==") {
                    Some((k, v)) => a.app.labels.get(k).is_some_and(|x| x == v),
                    None => a.app.labels.contains_key(label),
                })
            })
            .map(|a| self.app_json(a, embed_tasks, embed_failure))
            .collect();
        reply(200, json!({ "apps": apps }))
    }

    fn app_route(
        &mut self,
        method: &str,
        rest: &[&str],
        body: Value,
        params: &Params,
        store: &dyn Persist,
    ) -> HttpResponse {
        let n = rest.len();
        let id_of = |parts: &[&str]| format!("/{}", parts.join("/"));
        match (method, rest.last().copied(), n.checked_sub(2).map(|i| rest[i])) {
            ("POST", Some("restart"), _) if n > 1 => self.restart(&id_of(&rest[..n - 1]), params),
            ("GET", Some("tasks"), _) if n > 1 => self.app_tasks(&id_of(&rest[..n - 1])),
            ("DELETE", Some("tasks"), _) if n > 1 => self.kill_app_tasks(&id_of(&rest[..n - 1]), params),
            ("DELETE", Some(task), Some("tasks")) if n > 2 => {
                self.kill_one(&id_of(&rest[..n - 2]), task, params)
            }
            ("GET", Some("versions"), _) if n > 1 => match self.state.apps.get(&id_of(&rest[..n - 1])) {
                Some(a) => reply(200, json!({"versions": a.versions.iter().rev().collect::<Vec<_>>()})),
                None => self.not_found(&id_of(&rest[..n - 1])),
            },
            ("GET", Some(version), Some("versions")) if n > 2 => {
                let id = id_of(&rest[..n - 2]);
                match store
                    .get(&version_key(&id, version))
                    .and_then(|b| serde_json::from_slice::<App>(&b).ok())
                {
                    Some(app) => reply(200, app::to_json(&app, version)),
                    None => message(404, &format!("App '{id}' does not exist in version {version}")),
                }
            }
            ("GET", _, _) => {
                let id = id_of(rest);
                match self.state.apps.get(&id).filter(|a| !a.deleting) {
                    Some(a) => reply(200, json!({"app": self.app_json(a, true, true)})),
                    None => self.not_found(&id),
                }
            }
            ("PUT" | "PATCH", _, _) => {
                self.update(&id_of(rest), body, params.flag("force"), method == "PATCH")
            }
            ("DELETE", _, _) => self.delete_app(&id_of(rest), params.flag("force")),
            _ => message(405, &format!("{method} is not allowed here")),
        }
    }

    fn not_found(&self, id: &str) -> HttpResponse {
        message(404, &format!("App '{id}' does not exist"))
    }

    fn create(&mut self, body: Value, params: &Params) -> HttpResponse {
        let app = match app::parse(&body, None) {
            Ok(app) => app,
            Err(invalid) => return reply(422, invalid.body()),
        };
        if self.state.apps.contains_key(&app.id) {
            return message(409, &format!("An app with id [{}] already exists.", app.id));
        }
        let id = app.id.clone();
        let deployment = self.add_app(app, params.flag("force"));
        let a = &self.state.apps[&id];
        let mut r = reply(201, self.app_json(a, false, false));
        r.headers.push(KeyValue { key: "Location".into(), value: format!("/v2/apps{id}") });
        r.headers.push(KeyValue { key: "Marathon-Deployment-Id".into(), value: deployment });
        r
    }

    fn add_app(&mut self, app: App, force: bool) -> String {
        let version = self.new_version(None);
        let id = app.id.clone();
        self.publish("api_post_event", json!({"clientIp": null, "uri": format!("/v2/apps{id}"), "appDefinition": app::to_json(&app, &version)}));
        self.state.apps.insert(
            id.clone(),
            AppState {
                app: app.clone(),
                version: version.clone(),
                config_version: version.clone(),
                scaling_version: version.clone(),
                versions: Vec::new(),
                backoff: Default::default(),
                last_failure: None,
                deployment: None,
                deleting: false,
            },
        );
        self.state.touch_app(&id);
        self.remember_version(&app, &version);
        self.start_deployment(&id, Kind::Start, None, force).unwrap_or_default()
    }

    /// Applies a full or partial definition to an app (creating it for a `PUT`). Marathon merges the given
    /// fields over the current definition, which is how clients scale with `{"instances": n}`.
    fn update(&mut self, id: &str, body: Value, force: bool, patch: bool) -> HttpResponse {
        let Value::Object(changes) = body else {
            return reply(422, Invalid::one("/", "must be a JSON object").body());
        };
        let id = match app::normalize_id(id) {
            Ok(id) => id,
            Err(e) => return reply(422, Invalid::one("/id", e).body()),
        };
        let Some(current) = self.state.apps.get(&id).filter(|a| !a.deleting).cloned() else {
            if patch {
                return self.not_found(&id);
            }
            let app = match app::parse(&Value::Object(changes), Some(&id)) {
                Ok(app) => app,
                Err(invalid) => return reply(422, invalid.body()),
            };
            let deployment = self.add_app(app, force);
            let version = self.state.apps[&id].version.clone();
            return deployment_reply(201, &deployment, &version);
        };
        let mut merged = app::to_json(&current.app, &current.version);
        if changes.contains_key("container") && !changes.contains_key("networks") {
            merged.as_object_mut().expect("object").remove("networks");
        }
        if changes.contains_key("ports") && !changes.contains_key("portDefinitions") {
            merged.as_object_mut().expect("object").remove("portDefinitions");
        }
        for (k, v) in changes {
            merged[k] = v;
        }
        let app = match app::parse(&merged, Some(&id)) {
            Ok(app) => app,
            Err(invalid) => return reply(422, invalid.body()),
        };
        if let Some(d) = &current.deployment
            && !force
        {
            return locked(d);
        }
        let version = self.new_version(Some(&current.version));
        let kind = if app.config_differs(&current.app) { Kind::Restart } else { Kind::Scale };
        let a = self.state.apps.get_mut(&id).expect("present");
        a.version = version.clone();
        if kind == Kind::Restart {
            a.config_version = version.clone();
            a.backoff = Default::default();
        }
        if app.instances != a.app.instances {
            a.scaling_version = version.clone();
        }
        a.app = app.clone();
        self.state.touch_app(&id);
        self.remember_version(&app, &version);
        self.publish("api_post_event", json!({"clientIp": null, "uri": format!("/v2/apps{id}"), "appDefinition": app::to_json(&app, &version)}));
        match self.start_deployment(&id, kind, Some(current.version), force) {
            Ok(d) => deployment_reply(200, &d, &version),
            Err(d) => locked(&d),
        }
    }

    fn update_many(&mut self, body: Value, params: &Params) -> HttpResponse {
        let Value::Array(apps) = body else {
            return reply(422, Invalid::one("/", "must be a list of apps").body());
        };
        let force = params.flag("force");
        let mut last = (String::new(), String::new());
        for app in apps {
            let id = app.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            let r = self.update(&id, app, force, false);
            if r.status >= 300 {
                return r;
            }
            let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            last = (
                v["deploymentId"].as_str().unwrap_or_default().into(),
                v["version"].as_str().unwrap_or_default().into(),
            );
        }
        deployment_reply(200, &last.0, &last.1)
    }

    fn restart(&mut self, id: &str, params: &Params) -> HttpResponse {
        let Some(current) = self.state.apps.get(id).filter(|a| !a.deleting).cloned() else {
            return self.not_found(id);
        };
        let force = params.flag("force");
        if let Some(d) = &current.deployment
            && !force
        {
            return locked(d);
        }
        let version = self.new_version(Some(&current.version));
        let a = self.state.apps.get_mut(id).expect("present");
        a.version = version.clone();
        a.config_version = version.clone();
        a.backoff = Default::default();
        let app = a.app.clone();
        self.state.touch_app(id);
        self.remember_version(&app, &version);
        match self.start_deployment(id, Kind::Restart, Some(current.version), force) {
            Ok(d) => deployment_reply(200, &d, &version),
            Err(d) => locked(&d),
        }
    }

    fn delete_app(&mut self, id: &str, force: bool) -> HttpResponse {
        let Some(current) = self.state.apps.get(id).filter(|a| !a.deleting).cloned() else {
            return self.not_found(id);
        };
        if let Some(d) = &current.deployment
            && !force
        {
            return locked(d);
        }
        let version = self.new_version(Some(&current.version));
        let a = self.state.apps.get_mut(id).expect("present");
        a.deleting = true;
        a.version = version.clone();
        self.state.touch_app(id);
        match self.start_deployment(id, Kind::Stop, Some(current.version), true) {
            Ok(d) => deployment_reply(200, &d, &version),
            Err(d) => locked(&d),
        }
    }

    fn app_tasks(&self, id: &str) -> HttpResponse {
        if !self.state.apps.contains_key(id) {
            return self.not_found(id);
        }
        let tasks: Vec<Value> = self.state.app_tasks_sorted(id).into_iter().map(task_json).collect();
        reply(200, json!({ "tasks": tasks }))
    }

    fn list_tasks(&self, params: &Params) -> HttpResponse {
        let wanted = params.get("status").map(|s| format!("TASK_{}", s.to_ascii_uppercase()));
        let mut tasks: Vec<&Task> = self.state.all_tasks().collect();
        tasks.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let tasks: Vec<Value> = tasks
            .into_iter()
            .map(task_json)
            .filter(|t| wanted.as_deref().is_none_or(|w| t["state"] == w))
            .collect();
        reply(200, json!({ "tasks": tasks }))
    }

    /// Kills tasks; with `scale`, lowers the app's instance count by as many (a scale deployment).
    fn kill_tasks(
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
        let d = self
            .start_deployment(app_id, Kind::Scale, Some(current.version), true)
            .map_err(|d| locked(&d))?;
        Ok(Some((d, version)))
    }

    fn kill_app_tasks(&mut self, id: &str, params: &Params) -> HttpResponse {
        let host = params.get("host");
        let ids: Vec<String> = self
            .state
            .app_tasks_sorted(id)
            .into_iter()
            .filter(|t| host.is_none_or(|h| *t.host == *h))
            .map(|t| t.id.to_string())
            .collect();
        let tasks: Vec<Value> = ids.iter().filter_map(|i| self.state.task(i)).map(task_json).collect();
        match self.kill_tasks(id, &ids, params.flag("scale"), params.flag("force")) {
            Ok(Some((d, v))) => deployment_reply(200, &d, &v),
            Ok(None) => reply(200, json!({ "tasks": tasks })),
            Err(r) => r,
        }
    }

    fn kill_one(&mut self, app_id: &str, task_id: &str, params: &Params) -> HttpResponse {
        let Some(task) = self.state.task(task_id).filter(|t| *t.app == *app_id).map(task_json) else {
            return message(404, &format!("Task '{task_id}' does not exist"));
        };
        match self.kill_tasks(app_id, &[task_id.to_string()], params.flag("scale"), params.flag("force")) {
            Ok(Some((d, v))) => deployment_reply(200, &d, &v),
            Ok(None) => reply(200, json!({ "task": task })),
            Err(r) => r,
        }
    }

    fn delete_tasks(&mut self, body: Value, params: &Params) -> HttpResponse {
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

    /// Rolls a deployment back (to the app's previous version, or away for a start); with `force`, just stops
    /// tracking it.
    fn delete_deployment(&mut self, id: &str, params: &Params, store: &dyn Persist) -> HttpResponse {
        let Some(d) = self.state.deployments.get(id).cloned() else {
            return message(404, &format!("DeploymentPlan {id} does not exist"));
        };
        if params.flag("force") {
            self.finish_deployment(id, "deployment_failed");
            return reply(202, json!({}));
        }
        self.finish_deployment(id, "deployment_failed");
        match d.from_version {
            None => self.delete_app(&d.app, true),
            Some(version) => {
                let Some(app) = store
                    .get(&version_key(&d.app, &version))
                    .and_then(|b| serde_json::from_slice::<App>(&b).ok())
                else {
                    return message(
                        409,
                        &format!("the previous version {version} of {} is no longer stored", d.app),
                    );
                };
                let body = app::to_json(&app, &version);
                self.update(&d.app, body, true, false)
            }
        }
    }

    fn queue(&self) -> HttpResponse {
        let items: Vec<Value> = self
            .state
            .apps
            .values()
            .filter_map(|a| {
                let plan = self.plan(&a.app.id);
                let count = plan.launch + plan.delayed;
                (count > 0).then(|| {
                    let left = a.backoff.launch_after_ms.saturating_sub(self.now_ms);
                    json!({
                        "app": self.app_json(a, false, false),
                        "count": count,
                        "delay": {"timeLeftSeconds": left / 1000, "overdue": left == 0},
                        "since": a.version,
                    })
                })
            })
            .collect();
        reply(200, json!({ "queue": items }))
    }

    fn group(&self, id: &str) -> HttpResponse {
        let prefix = if id == "/" { "/".to_string() } else { format!("{}/", id.trim_end_matches('/')) };
        let apps: Vec<Value> = self
            .state
            .apps
            .values()
            .filter(|a| !a.deleting && a.app.id.starts_with(&prefix))
            .map(|a| self.app_json(a, false, false))
            .collect();
        if apps.is_empty() && id != "/" {
            return message(404, &format!("Group '{id}' does not exist"));
        }
        let version = self.state.apps.values().map(|a| a.version.clone()).max().unwrap_or_default();
        reply(
            200,
            json!({"id": id, "apps": apps, "groups": [], "pods": [], "dependencies": [], "version": version}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::State;
    use crate::model::testing::MemoryStoreForTests;
    use crate::scheduler::Config;

    fn call(m: &mut Marathon, method: &str, path: &str, body: Value) -> (u16, Value) {
        let request = HttpRequest {
            method: method.into(),
            path: path.split('?').next().unwrap().into(),
            query: path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default(),
            headers: vec![],
            body: if body.is_null() { vec![] } else { body.to_string().into_bytes() },
        };
        let reply = m.handle(request, &MemoryStoreForTests::default());
        (reply.response.status, serde_json::from_slice(&reply.response.body).unwrap_or(Value::Null))
    }

    #[test]
    fn create_conflict_scale_and_lock() {
        let mut m = Marathon::new(State::default(), Config::default(), 1_000);
        let app = json!({"id": "web", "instances": 1, "container": {"docker": {"image": "x:1"}}});
        let (status, body) = call(&mut m, "POST", "/v2/apps", app.clone());
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["id"], "/web");
        assert_eq!(body["deployments"].as_array().unwrap().len(), 1);
        let (status, body) = call(&mut m, "POST", "/v2/apps", app);
        assert_eq!(
            (status, body["message"].as_str().unwrap()),
            (409, "An app with id [/web] already exists.")
        );
        let (status, body) = call(&mut m, "PUT", "/v2/apps/web", json!({"instances": 3}));
        assert_eq!(status, 409, "the start deployment is still running: {body}");
        let (status, body) = call(&mut m, "PUT", "/v2/apps/web?force=True", json!({"instances": 3}));
        assert_eq!(status, 200, "{body}");
        let (_, body) = call(&mut m, "GET", "/v2/apps/web", Value::Null);
        assert_eq!(body["app"]["instances"], 3);
        assert_eq!(m.demand()[0].count, 3);
        let (status, body) = call(&mut m, "POST", "/v2/apps", json!({"id": "bad", "cpus": 0}));
        assert_eq!(status, 422);
        assert_eq!(body["message"], "Object is not valid");
    }

    #[test]
    fn query_strings_decode() {
        let p = Params(query("embed=apps.tasks&embed=apps.counts&force=True&id=%2Fshop"));
        assert_eq!(p.all("embed"), vec!["apps.tasks", "apps.counts"]);
        assert!(p.flag("force"));
        assert_eq!(p.get("id"), Some("/shop"));
    }
}
