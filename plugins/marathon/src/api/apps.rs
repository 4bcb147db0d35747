//! `/v2/apps`: listing (with Marathon's label selectors), creating, updating (merged or whole, one app or
//! several in one deployment), rolling back to a stored version, restarting and deleting apps.

use berth_plugin_sdk::{HttpResponse, KeyValue};
use serde_json::{Value, json};

use super::{Params, deployment_reply, locked, message, reply};
use crate::app::{self, App, Invalid};
use crate::model::{AppState, Change, Kind, Persist, version_key};
use crate::scheduler::Marathon;

/// One term of a label selector (`/v2/apps?label=...`).
#[derive(Debug, PartialEq)]
enum Selector {
    Exists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Parses Marathon's label selector: terms separated by commas, each `key`, `key==value`, `key!=value`,
/// `key in (a, b)` or `key notin (a, b)`.
fn selectors(text: &str) -> Result<Vec<Selector>, String> {
    let mut terms = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        // A term ends at a comma outside parentheses.
        let mut depth = 0;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                c == ',' && depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let term = rest[..end].trim();
        rest = rest[end..].trim_start_matches(',').trim();
        let list = |values: &str| -> Result<Vec<String>, String> {
            let inner = values.trim().strip_prefix('(').and_then(|v| v.strip_suffix(')'));
            let inner = inner.ok_or_else(|| format!("`{term}`: a set must be in parentheses"))?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
        };
        let selector = if let Some((k, v)) = term.split_once("!=") {
            Selector::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once("==") {
            Selector::Equals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once(" notin ") {
            Selector::NotIn(k.trim().into(), list(v)?)
        } else if let Some((k, v)) = term.split_once(" in ") {
            Selector::In(k.trim().into(), list(v)?)
        } else if !term.is_empty() && !term.contains(['(', ')', '=', ' ']) {
            Selector::Exists(term.into())
        } else {
            return Err(format!(
                "`{term}` is not a label selector (key, key==v, key!=v, key in (a,b), key notin (a,b))"
            ));
        };
        terms.push(selector);
    }
    Ok(terms)
}

fn matches(selector: &Selector, labels: &std::collections::BTreeMap<String, String>) -> bool {
    match selector {
        Selector::Exists(k) => labels.contains_key(k),
        Selector::Equals(k, v) => labels.get(k) == Some(v),
        Selector::NotEquals(k, v) => labels.get(k) != Some(v),
        Selector::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
        Selector::NotIn(k, set) => labels.get(k).is_none_or(|v| !set.contains(v)),
    }
}

/// A stored definition of `id` at `version`.
fn stored(store: &dyn Persist, id: &str, version: &str) -> Option<App> {
    store.get(&version_key(id, version)).and_then(|b| serde_json::from_slice::<App>(&b).ok())
}

impl Marathon {
    pub(super) fn list_apps(&self, params: &Params) -> HttpResponse {
        let embed = params.all("embed");
        let embed_tasks = embed.contains(&"apps.tasks") || embed.contains(&"app.tasks");
        let embed_failure = embed.iter().any(|e| e.ends_with("lastTaskFailure") || e.ends_with("failures"));
        let labels = match params.get("label").map(selectors).transpose() {
            Ok(terms) => terms.unwrap_or_default(),
            Err(e) => return message(400, &e),
        };
        let apps: Vec<Value> = self
            .state
            .apps
            .values()
            .filter(|a| !a.deleting)
            .filter(|a| params.get("id").is_none_or(|id| a.app.id.contains(id)))
            .filter(|a| {
                params.get("cmd").is_none_or(|cmd| a.app.cmd.as_deref().is_some_and(|c| c.contains(cmd)))
            })
            .filter(|a| labels.iter().all(|s| matches(s, &a.app.labels)))
            .map(|a| self.app_json(a, embed_tasks, embed_failure))
            .collect();
        reply(200, json!({ "apps": apps }))
    }

    pub(super) fn app_route(
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
                match stored(store, &id, version) {
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
                let whole = method == "PUT"
                    && params.get("partialUpdate").is_some_and(|v| v.eq_ignore_ascii_case("false"));
                match self.prepare_update(&id_of(rest), body, method == "PATCH", whole, store) {
                    Err(response) => response,
                    Ok(None) => self.not_found(&id_of(rest)),
                    Ok(Some(update)) => self.apply_updates(vec![update], params.flag("force")),
                }
            }
            // Marathon deletes an app even while it deploys, unless told `force=false`.
            ("DELETE", _, _) => self.delete_app(&id_of(rest), params.flag_or_true("force")),
            _ => message(405, &format!("{method} is not allowed here")),
        }
    }

    pub(super) fn not_found(&self, id: &str) -> HttpResponse {
        message(404, &format!("App '{id}' does not exist"))
    }

    pub(super) fn create(&mut self, body: Value, params: &Params) -> HttpResponse {
        let app = match app::parse(&body, None) {
            Ok(app) => app,
            Err(invalid) => return reply(422, invalid.body()),
        };
        if self.state.apps.contains_key(&app.id) {
            return message(409, &format!("An app with id [{}] already exists.", app.id));
        }
        let id = app.id.clone();
        let deployment = match self.start(vec![Update::new(app)], params.flag("force")) {
            Ok((deployment, _)) => deployment,
            Err(r) => return r,
        };
        let a = &self.state.apps[&id];
        let mut r = reply(201, self.app_json(a, false, false));
        r.headers.push(KeyValue { key: "Location".into(), value: format!("/v2/apps{id}") });
        r.headers.push(KeyValue { key: "Marathon-Deployment-Id".into(), value: deployment });
        r
    }

    /// Works out the new definition of app `id` from a request body: merged over the current one (Marathon's
    /// default, how clients scale with `{"instances": n}`), the body alone (`whole`: `partialUpdate=false`),
    /// or a stored version (`{"version": …}`: a rollback). `Ok(None)`: a `PATCH` of an app that does not
    /// exist. Nothing is changed yet.
    pub(super) fn prepare_update(
        &self,
        id: &str,
        body: Value,
        patch: bool,
        whole: bool,
        store: &dyn Persist,
    ) -> Result<Option<Update>, HttpResponse> {
        let Value::Object(changes) = body else {
            return Err(reply(422, Invalid::one("/", "must be a JSON object").body()));
        };
        let id = app::normalize_id(id).map_err(|e| reply(422, Invalid::one("/id", e).body()))?;
        let current = self.state.apps.get(&id).filter(|a| !a.deleting);
        let parse =
            |value: &Value| app::parse(value, Some(&id)).map_err(|invalid| reply(422, invalid.body()));
        let app = match (current, changes.get("version").and_then(Value::as_str)) {
            // A rollback (marathon-python's `rollback_app`): the stored definition of that version.
            (Some(_), Some(version)) if changes.len() == 1 => stored(store, &id, version)
                .ok_or_else(|| message(404, &format!("App '{id}' does not exist in version {version}")))?,
            (None, _) if patch => return Ok(None),
            (None, _) => parse(&Value::Object(changes))?,
            (Some(_), _) if whole => parse(&Value::Object(changes))?,
            (Some(current), _) => {
                let mut merged = app::to_json(&current.app, &current.version);
                if changes.contains_key("container") && !changes.contains_key("networks") {
                    merged.as_object_mut().expect("object").remove("networks");
                }
                if changes.contains_key("ports") && !changes.contains_key("portDefinitions") {
                    merged.as_object_mut().expect("object").remove("portDefinitions");
                }
                if changes.contains_key("portDefinitions") || changes.contains_key("container") {
                    merged.as_object_mut().expect("object").remove("ports");
                }
                for (k, v) in changes {
                    merged[k] = v;
                }
                parse(&merged)?
            }
        };
        Ok(Some(Update { app }))
    }

    /// `PUT /v2/apps` with a list of apps: all checked first, then applied in one deployment; one invalid app
    /// changes nothing.
    pub(super) fn update_many(&mut self, body: Value, params: &Params, store: &dyn Persist) -> HttpResponse {
        let Value::Array(apps) = body else {
            return reply(422, Invalid::one("/", "must be a list of apps").body());
        };
        let mut updates = Vec::with_capacity(apps.len());
        for (i, app) in apps.into_iter().enumerate() {
            let id = app.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            if updates.iter().any(|u: &Update| app::normalize_id(&id).is_ok_and(|n| n == u.app.id)) {
                return reply(
                    422,
                    Invalid::one(&format!("({i})/id"), "the list names this app twice").body(),
                );
            }
            match self.prepare_update(&id, app, false, false, store) {
                Ok(Some(update)) => updates.push(update),
                Ok(None) => unreachable!("a PUT creates"),
                Err(response) => return response,
            }
        }
        self.apply_updates(updates, params.flag("force"))
    }

    /// Applies prepared updates in one deployment.
    fn apply_updates(&mut self, updates: Vec<Update>, force: bool) -> HttpResponse {
        let created = updates.iter().any(|u| !self.state.apps.contains_key(&u.app.id));
        match self.start(updates, force) {
            Ok((deployment, version)) => {
                deployment_reply(if created { 201 } else { 200 }, &deployment, &version)
            }
            Err(response) => response,
        }
    }

    /// Records new definitions and starts one deployment for them (refused, changing nothing, if an app is
    /// in another deployment and not `force`). Returns the deployment and the new version.
    pub(super) fn start(
        &mut self,
        updates: Vec<Update>,
        force: bool,
    ) -> Result<(String, String), HttpResponse> {
        self.start_with_stops(updates, Vec::new(), force)
    }

    /// [`Marathon::start`], also stopping and removing the apps `stops` names, in the same deployment.
    pub(super) fn start_with_stops(
        &mut self,
        updates: Vec<Update>,
        stops: Vec<String>,
        force: bool,
    ) -> Result<(String, String), HttpResponse> {
        // Service ports first: a conflict refuses the whole change before anything is recorded.
        let mut updates = updates;
        for i in 0..updates.len() {
            let (done, rest) = updates.split_at_mut(i);
            // Those assigned already, and the ports the later ones ask for.
            let beside: Vec<App> = done.iter().chain(&rest[1..]).map(|u| u.app.clone()).collect();
            let previous =
                self.state.apps.get(&rest[0].app.id).filter(|a| !a.deleting).map(|a| a.app.clone());
            if let Err(invalid) =
                self.assign_service_ports_beside(&mut rest[0].app, previous.as_ref(), &beside)
            {
                return Err(reply(422, invalid.body()));
            }
        }
        let ids = updates.iter().map(|u| u.app.id.as_str()).chain(stops.iter().map(String::as_str));
        let busy = ids.clone().find_map(|id| self.state.apps.get(id)?.deployment.clone());
        if !force && let Some(d) = busy {
            return Err(locked(&d));
        }
        let previous = ids.filter_map(|id| self.state.apps.get(id).map(|a| a.version.clone())).max();
        let version = self.new_version(previous.as_deref());
        let mut changes = Vec::with_capacity(updates.len() + stops.len());
        for id in stops {
            let Some(a) = self.state.apps.get_mut(&id).filter(|a| !a.deleting) else { continue };
            let from_version = Some(a.version.clone());
            a.deleting = true;
            a.version = version.clone();
            self.state.touch_app(&id);
            changes.push(Change { app: id, kind: Kind::Stop, from_version });
        }
        for Update { app, .. } in updates {
            let id = app.id.clone();
            self.publish(
                "api_post_event",
                json!({"clientIp": null, "uri": format!("/v2/apps{id}"), "appDefinition": app::to_json(&app, &version)}),
            );
            let change = match self.state.apps.get_mut(&id).filter(|a| !a.deleting) {
                None => {
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
                    Change { app: id.clone(), kind: Kind::Start, from_version: None }
                }
                Some(a) => {
                    let kind = if app.config_differs(&a.app) { Kind::Restart } else { Kind::Scale };
                    let from_version = Some(a.version.clone());
                    a.version = version.clone();
                    if kind == Kind::Restart {
                        a.config_version = version.clone();
                        a.backoff = Default::default();
                    }
                    if app.instances != a.app.instances {
                        a.scaling_version = version.clone();
                    }
                    a.app = app.clone();
                    Change { app: id.clone(), kind, from_version }
                }
            };
            self.state.touch_app(&id);
            self.remember_version(&app, &version);
            changes.push(change);
        }
        let deployment = self.start_deployment(changes, true).expect("forced");
        Ok((deployment, version))
    }

    pub(super) fn restart(&mut self, id: &str, params: &Params) -> HttpResponse {
        let Some(current) = self.state.apps.get(id).filter(|a| !a.deleting).cloned() else {
            return self.not_found(id);
        };
        if let Some(d) = &current.deployment
            && !params.flag("force")
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
        let change = Change { app: id.into(), kind: Kind::Restart, from_version: Some(current.version) };
        match self.start_deployment(vec![change], true) {
            Ok(d) => deployment_reply(200, &d, &version),
            Err(d) => locked(&d),
        }
    }

    pub(super) fn delete_app(&mut self, id: &str, force: bool) -> HttpResponse {
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
        let change = Change { app: id.into(), kind: Kind::Stop, from_version: Some(current.version) };
        match self.start_deployment(vec![change], true) {
            Ok(d) => deployment_reply(200, &d, &version),
            Err(d) => locked(&d),
        }
    }
}

/// A new definition for one app, checked and ready to apply.
pub(super) struct Update {
    pub(super) app: App,
}

impl Update {
    pub(super) fn new(app: App) -> Update {
        Update { app }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_read_every_form() {
        let terms = selectors("env==prod, tier!=db,team in (a, b),zone notin (x),canary").unwrap();
        assert_eq!(
            terms,
            vec![
                Selector::Equals("env".into(), "prod".into()),
                Selector::NotEquals("tier".into(), "db".into()),
                Selector::In("team".into(), vec!["a".into(), "b".into()]),
                Selector::NotIn("zone".into(), vec!["x".into()]),
                Selector::Exists("canary".into()),
            ]
        );
        let labels = [("env", "prod"), ("team", "b"), ("canary", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(terms.iter().all(|t| matches(t, &labels)));
        assert!(selectors("team in a,b").is_err());
    }
}
