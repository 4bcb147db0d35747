//! Marathon's REST API (`/v2/...`, `/ping`, `/metrics`), served through the framework's `handle` export.
//! Paths, parameters, status codes and JSON shapes follow Marathon 1.x, so its clients work unchanged.
//!
//! Routing and the shared helpers are here; apps (`apps.rs`), groups (`groups.rs`), tasks (`tasks.rs`),
//! deployments and the launch queue (`deployments.rs`) have their own modules, and `render.rs` shows apps
//! and tasks.

mod apps;
mod deployments;
mod groups;
mod render;
mod tasks;

use berth_plugin_sdk::{ApiReply, HttpRequest, HttpResponse, KeyValue};
use serde_json::{Value, json};

use crate::model::Persist;
use crate::scheduler::Marathon;

pub use render::task_json;

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
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                // Bytes, not `&s[..]`: the two after `%` may be the middle of a multi-byte character.
                b'%' => {
                    match (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                        (Some(high), Some(low)) => {
                            out.push(high << 4 | low);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
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
    /// A flag that is on unless given as false (`?force=false`).
    fn flag_or_true(&self, name: &str) -> bool {
        self.get(name).is_none_or(|v| !(v.eq_ignore_ascii_case("false") || v == "0"))
    }
    /// Every value of `name` (and of `name[]`, as Marathon's clients send lists), split at commas.
    fn all(&self, name: &str) -> Vec<&str> {
        let list = format!("{name}[]");
        self.0.iter().filter(|(k, _)| *k == name || *k == list).flat_map(|(_, v)| v.split(',')).collect()
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

impl Marathon {
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
        let host =
            request.headers.iter().find(|h| h.key.eq_ignore_ascii_case("host")).map(|h| h.value.clone());
        let response = match (method.as_str(), segments.as_slice()) {
            ("GET", ["ping"]) => HttpResponse::text(200, "pong"),
            ("GET", ["metrics"]) => reply(200, self.metrics()),
            (_, ["v2", ..]) if body.is_err() => reply(
                400,
                json!({"message": "Invalid JSON", "details": [{"path": "/", "errors": [body.clone().unwrap_err()]}]}),
            ),
            ("GET", ["v2", "info"]) => reply(200, self.info(host.as_deref())),
            ("GET", ["v2", "leader"]) => {
                reply(200, json!({"leader": host.unwrap_or_else(|| "berth".into())}))
            }
            ("DELETE", ["v2", "leader"]) => {
                message(503, "berth's masters elect their leader themselves: abdication is not supported")
            }
            ("GET", ["v2", "apps"]) => self.list_apps(&params),
            ("POST", ["v2", "apps"]) => self.create(body.unwrap_or_default(), &params),
            ("PUT", ["v2", "apps"]) => self.update_many(body.unwrap_or_default(), &params, store),
            (_, ["v2", "apps", rest @ ..]) if !rest.is_empty() => {
                self.app_route(&method, rest, body.unwrap_or_default(), &params, store)
            }
            ("GET", ["v2", "tasks"]) => self.list_tasks(&params),
            ("POST", ["v2", "tasks", "delete"]) => self.delete_tasks(body.unwrap_or_default(), &params),
            ("GET", ["v2", "deployments"]) => self.list_deployments(&params),
            ("DELETE", ["v2", "deployments", id]) => self.delete_deployment(id, &params, store),
            ("GET", ["v2", "queue"]) => self.queue(&params),
            ("DELETE", ["v2", "queue", rest @ ..]) if rest.last() == Some(&"delay") => {
                self.reset_delay(&format!("/{}", rest[..rest.len() - 1].join("/")))
            }
            (_, ["v2", "groups", rest @ ..]) => {
                self.groups_route(&method, rest, body.unwrap_or_default(), &params, store)
            }
            ("GET", ["v2", "eventSubscriptions"]) | (_, ["v2", "eventSubscriptions", ..]) => message(
                422,
                "event subscriptions (callbacks) are not supported (removed in Marathon 1.5): read /v2/events",
            ),
            (_, ["v2", "pods", ..]) => message(422, "pods are not supported by berth: use apps"),
            ("GET", ["v2", "events"]) => message(404, "the event stream is served by the host at /v2/events"),
            _ => message(404, &format!("no such endpoint: {} {}", request.method, request.path)),
        };
        // A read changes nothing (the host drops what an anonymous call writes or asks for, and discards an
        // instance that tried): the timer converges in its place.
        let read = method == "GET" || method == "HEAD";
        ApiReply { response, actions: if read { Vec::new() } else { self.converge() } }
    }

    fn info(&self, host: Option<&str>) -> Value {
        let leader = host.unwrap_or("berth");
        json!({
            "name": "marathon", "version": "1.9.109", "buildref": BUILD, "elected": true, "leader": leader,
            "frameworkId": "berth-marathon",
            "marathon_config": {"master": "berth", "framework_name": "marathon", "hostname": leader, "task_launch_timeout": 300000},
            "http_config": {"http_port": 8080}, "zookeeper_config": {}, "event_subscriber": null,
        })
    }

    /// Marathon's `/metrics` (Dropwizard's JSON): gauges of what the framework holds.
    fn metrics(&self) -> Value {
        let tasks = self.state.all_tasks().count();
        let running =
            self.state.apps.keys().filter_map(|id| self.state.counts(id)).map(|c| c.running).sum::<u32>();
        let gauge = |v: u64| json!({"value": v});
        json!({
            "version": "4.0.0",
            "gauges": {
                "service.mesosphere.marathon.app.count": gauge(self.state.apps.values().filter(|a| !a.deleting).count() as u64),
                "service.mesosphere.marathon.group.count": gauge(self.group_ids().len() as u64),
                "service.mesosphere.marathon.task.running.count": gauge(u64::from(running)),
                "service.mesosphere.marathon.task.staged.count": gauge(tasks as u64 - u64::from(running)),
                "service.mesosphere.marathon.deployments.active": gauge(self.state.deployments.len() as u64),
                "service.mesosphere.marathon.launchQueue.count": gauge(self.plans.values().map(|p| u64::from(p.launch + p.delayed)).sum()),
            },
            "counters": {}, "histograms": {}, "meters": {}, "timers": {},
        })
    }

    /// Every group id implied by the apps' paths, `/` included.
    pub(super) fn group_ids(&self) -> std::collections::BTreeSet<String> {
        let mut groups = std::collections::BTreeSet::from(["/".to_string()]);
        for id in self.state.apps.keys() {
            let parts: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
            for i in 1..parts.len() {
                groups.insert(format!("/{}", parts[..i].join("/")));
            }
        }
        groups
    }

    /// A group and the groups and apps under it.
    fn group(&self, id: &str) -> HttpResponse {
        let id = if id == "/" { "/".to_string() } else { id.trim_end_matches('/').to_string() };
        if !self.group_ids().contains(&id) {
            return message(404, &format!("Group '{id}' does not exist"));
        }
        reply(200, self.group_json(&id))
    }

    fn group_json(&self, id: &str) -> Value {
        let prefix = if id == "/" { "/".to_string() } else { format!("{id}/") };
        let depth = prefix.matches('/').count();
        let apps: Vec<Value> = self
            .state
            .apps
            .values()
            .filter(|a| {
                !a.deleting && a.app.id.starts_with(&prefix) && a.app.id.matches('/').count() == depth
            })
            .map(|a| self.app_json(a, false, false))
            .collect();
        let groups: Vec<Value> = self
            .group_ids()
            .into_iter()
            .filter(|g| g != "/" && g.starts_with(&prefix) && g.matches('/').count() == depth)
            .map(|g| self.group_json(&g))
            .collect();
        let version = self
            .state
            .apps
            .values()
            .filter(|a| a.app.id.starts_with(&prefix))
            .map(|a| a.version.clone())
            .max()
            .unwrap_or_default();
        json!({"id": id, "apps": apps, "groups": groups, "pods": [], "dependencies": [], "version": version})
    }
}

#[cfg(test)]
mod tests;
