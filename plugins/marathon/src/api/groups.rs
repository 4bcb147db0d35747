//! `/v2/groups`: groups are the paths of app ids (`/shop/web` is in `/shop`), shown as Marathon's nested
//! tree, and changed as a whole: creating, replacing (`PUT`, apps not named are removed) or merging
//! (`PATCH`) a group's apps, scaling them (`scaleBy`), rolling them back to a version, deleting them, each as
//! one deployment; `dryRun` answers the plan without applying it.
//!
//! Not built: `dependencies` between apps or groups (refused with a 422 naming them): berth deploys a
//! group's apps together.

use berth_plugin_sdk::HttpResponse;
use serde_json::{Map, Value, json};

use super::apps::Update;
use super::{Params, deployment_reply, message, reply};
use crate::app::{self, Invalid};
use crate::model::{Persist, version_key};
use crate::scheduler::Marathon;

/// The apps a group body names (nested groups included), each with its absolute id, as bodies for
/// `prepare_update`. Refuses `dependencies`.
fn apps_of(group_id: &str, body: &Map<String, Value>, out: &mut Vec<(String, Value)>) -> Result<(), Invalid> {
    let base = if group_id == "/" { String::new() } else { group_id.to_string() };
    if body.get("dependencies").and_then(Value::as_array).is_some_and(|d| !d.is_empty()) {
        return Err(Invalid::one(
            &format!("{group_id}/dependencies"),
            "dependencies are not supported by berth: a group's apps deploy together",
        ));
    }
    for app in body.get("apps").and_then(Value::as_array).into_iter().flatten() {
        let id = app.get("id").and_then(Value::as_str).unwrap_or_default();
        let id = if id.starts_with('/') { id.to_string() } else { format!("{base}/{id}") };
        let id = app::normalize_id(&id).map_err(|e| Invalid::one(&format!("{group_id}/apps/id"), e))?;
        if !id.starts_with(&format!("{base}/")) {
            return Err(Invalid::one(
                &format!("{group_id}/apps"),
                format!("app {id} is not in group {group_id}"),
            ));
        }
        let mut app = app.clone();
        app["id"] = json!(id);
        out.push((id, app));
    }
    for group in body.get("groups").and_then(Value::as_array).into_iter().flatten() {
        let Some(object) = group.as_object() else { continue };
        let id = group.get("id").and_then(Value::as_str).unwrap_or_default();
        let id = if id.starts_with('/') { id.to_string() } else { format!("{base}/{id}") };
        apps_of(&id, object, out)?;
    }
    Ok(())
}

impl Marathon {
    /// The ids of the apps in group `id` (at any depth).
    fn group_apps(&self, id: &str) -> Vec<String> {
        let prefix = if id == "/" { "/".to_string() } else { format!("{id}/") };
        self.state
            .apps
            .values()
            .filter(|a| !a.deleting && a.app.id.starts_with(&prefix))
            .map(|a| a.app.id.clone())
            .collect()
    }

    pub(super) fn groups_route(
        &mut self,
        method: &str,
        rest: &[&str],
        body: Value,
        params: &Params,
        store: &dyn Persist,
    ) -> HttpResponse {
        // `PUT /v2/groups/{id}/versions/{version}`: marathon-python's `rollback_group`.
        if method == "PUT" && rest.len() >= 2 && rest[rest.len() - 2] == "versions" {
            let id = if rest.len() == 2 {
                "/".to_string()
            } else {
                format!("/{}", rest[..rest.len() - 2].join("/"))
            };
            let version = rest[rest.len() - 1];
            return self.change_group(&id, json!({"version": version}), false, false, params, store);
        }
        let (rest, versions) = match rest.split_last() {
            Some((&"versions", head)) => (head, true),
            _ => (rest, false),
        };
        let id = if rest.is_empty() { "/".to_string() } else { format!("/{}", rest.join("/")) };
        match (method, versions) {
            ("GET", true) => {
                let mut all: Vec<String> = self
                    .group_apps(&id)
                    .iter()
                    .flat_map(|app| self.state.apps[app].versions.clone())
                    .collect();
                all.sort();
                all.dedup();
                all.reverse();
                reply(200, json!(all))
            }
            ("GET", false) => self.group(&id),
            ("POST", _) => {
                // `POST /v2/groups` names the group in the body; `POST /v2/groups/{id}` in the path.
                let id = match body.get("id").and_then(Value::as_str) {
                    Some(named) if rest.is_empty() => match app::normalize_id(named) {
                        Ok(id) => id,
                        Err(e) => return reply(422, Invalid::one("/id", e).body()),
                    },
                    _ => id,
                };
                if !self.group_apps(&id).is_empty() {
                    return message(
                        409,
                        &format!("Group {id} is already created. Use PUT to change this group."),
                    );
                }
                self.change_group(&id, body, false, true, params, store)
            }
            ("PUT", _) => self.change_group(&id, body, true, false, params, store),
            ("PATCH", _) => self.change_group(&id, body, false, false, params, store),
            ("DELETE", _) => {
                let apps = self.group_apps(&id);
                if apps.is_empty() && id != "/" {
                    return message(404, &format!("Group '{id}' does not exist"));
                }
                match self.start_with_stops(Vec::new(), apps, params.flag_or_true("force")) {
                    Ok((deployment, version)) => deployment_reply(200, &deployment, &version),
                    Err(response) => response,
                }
            }
            _ => message(405, &format!("{method} is not allowed here")),
        }
    }

    /// Applies a group body: `{"scaleBy": f}` scales every app; `{"version": v}` rolls every app back to its
    /// definition at that version; anything else gives the group the apps it names (created or merged over
    /// the current ones), and with `replace` removes the group's apps it does not name.
    fn change_group(
        &mut self,
        id: &str,
        body: Value,
        replace: bool,
        creating: bool,
        params: &Params,
        store: &dyn Persist,
    ) -> HttpResponse {
        let Value::Object(object) = body else {
            return reply(422, Invalid::one("/", "must be a JSON object").body());
        };
        let mut bodies: Vec<(String, Value)> = Vec::new();
        let mut stops: Vec<String> = Vec::new();
        if let Some(factor) = object.get("scaleBy") {
            let Some(factor) = factor.as_f64().filter(|f| f.is_finite() && *f >= 0.0) else {
                return reply(422, Invalid::one("/scaleBy", "must be a number, 0 or more").body());
            };
            for app in self.group_apps(id) {
                let instances = (f64::from(self.state.apps[&app].app.instances) * factor).ceil();
                bodies.push((app, json!({"instances": instances})));
            }
        } else if let Some(version) =
            object.get("version").and_then(Value::as_str).filter(|_| object.len() == 1)
        {
            for app in self.group_apps(id) {
                // Each app's definition as it was at that version: its latest version not after it.
                let Some(at) =
                    self.state.apps[&app].versions.iter().filter(|v| v.as_str() <= version).max().cloned()
                else {
                    stops.push(app);
                    continue;
                };
                let Some(definition) = store
                    .get(&version_key(&app, &at))
                    .and_then(|b| serde_json::from_slice::<app::App>(&b).ok())
                else {
                    return message(409, &format!("version {at} of {app} is no longer stored"));
                };
                bodies.push((app.clone(), app::to_json(&definition, &at)));
            }
        } else {
            if let Err(invalid) = apps_of(id, &object, &mut bodies) {
                return reply(422, invalid.body());
            }
            if replace {
                stops =
                    self.group_apps(id).into_iter().filter(|a| !bodies.iter().any(|(b, _)| b == a)).collect();
            }
        }
        let mut updates = Vec::with_capacity(bodies.len());
        for (app, body) in bodies {
            match self.prepare_update(&app, body, false, false, store) {
                Ok(Some(update)) => updates.push(update),
                Ok(None) => unreachable!("not a patch"),
                Err(response) => return response,
            }
        }
        if params.flag("dryRun") {
            let steps: Vec<Value> = updates
                .iter()
                .map(|u: &Update| {
                    let action = if self.state.apps.contains_key(&u.app.id) {
                        "RestartApplication"
                    } else {
                        "StartApplication"
                    };
                    json!({"actions": [{"action": action, "app": u.app.id}]})
                })
                .chain(stops.iter().map(|a| json!({"actions": [{"action": "StopApplication", "app": a}]})))
                .collect();
            return reply(200, json!({"steps": steps}));
        }
        match self.start_with_stops(updates, stops, params.flag("force")) {
            Ok((deployment, version)) => {
                deployment_reply(if creating { 201 } else { 200 }, &deployment, &version)
            }
            Err(response) => response,
        }
    }
}
