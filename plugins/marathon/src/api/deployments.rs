//! `/v2/deployments` (listing, and rollback or forced end of one) and `/v2/queue` (the apps with launches
//! to make, their backoff delay, and how their offers went).

use berth_plugin_sdk::HttpResponse;
use serde_json::{Value, json};

use super::{Params, message, reply};
use crate::app;
use crate::model::{Kind, Persist, version_key};
use crate::scheduler::Marathon;

impl Marathon {
    pub(super) fn list_deployments(&self, params: &Params) -> HttpResponse {
        let embed_failure = params.all("embed").contains(&"lastFailure");
        let list: Vec<Value> =
            self.state.deployments.values().map(|d| self.deployment_json(d, embed_failure)).collect();
        reply(200, json!(list))
    }

    /// Rolls a deployment back: apps it started are removed, the others go back to the version they had
    /// before it, in a new deployment. With `force`, it just stops being tracked.
    pub(super) fn delete_deployment(
        &mut self,
        id: &str,
        params: &Params,
        store: &dyn Persist,
    ) -> HttpResponse {
        let Some(d) = self.state.deployments.get(id).cloned() else {
            return message(404, &format!("DeploymentPlan {id} does not exist"));
        };
        self.finish_deployment(id, false);
        if params.flag("force") {
            return reply(202, json!({}));
        }
        let mut last = None;
        for change in &d.changes {
            let response = match (&change.from_version, change.kind) {
                (None, _) => self.delete_app(&change.app, true),
                (Some(version), _) => {
                    let Some(app) = store
                        .get(&version_key(&change.app, version))
                        .and_then(|b| serde_json::from_slice::<app::App>(&b).ok())
                    else {
                        return message(
                            409,
                            &format!("the previous version {version} of {} is no longer stored", change.app),
                        );
                    };
                    if change.kind == Kind::Stop {
                        // An app being deleted comes back.
                        if let Some(a) = self.state.apps.get_mut(&change.app) {
                            a.deleting = false;
                        }
                    }
                    let body = app::to_json(&app, version);
                    self.app_route(
                        "PUT",
                        &[change.app.trim_start_matches('/')],
                        body,
                        &Params(vec![("force".into(), "true".into())]),
                        store,
                    )
                }
            };
            if response.status >= 300 {
                return response;
            }
            last = Some(response);
        }
        last.unwrap_or_else(|| reply(200, json!({})))
    }

    pub(super) fn queue(&self, params: &Params) -> HttpResponse {
        let embed_offers = params.all("embed").contains(&"lastUnusedOffers");
        let items: Vec<Value> = self
            .state
            .apps
            .values()
            .filter_map(|a| {
                let plan = self.plan(&a.app.id);
                let count = plan.launch + plan.delayed;
                (count > 0).then(|| {
                    let left = a.backoff.launch_after_ms.saturating_sub(self.now_ms);
                    let stats = self.offer_stats.get(&a.app.id);
                    let mut item = json!({
                        "app": self.app_json(a, false, false),
                        "count": count,
                        "delay": {"timeLeftSeconds": left / 1000, "overdue": left == 0},
                        "since": a.version,
                        "processedOffersSummary": stats.map(|s| s.summary()).unwrap_or_else(|| crate::queue::OfferStats::default().summary()),
                    });
                    if embed_offers {
                        item["lastUnusedOffers"] = stats.map(|s| s.last_unused()).unwrap_or_else(|| json!([]));
                    }
                    item
                })
            })
            .collect();
        reply(200, json!({ "queue": items }))
    }

    pub(super) fn reset_delay(&mut self, id: &str) -> HttpResponse {
        match self.state.apps.get_mut(id) {
            Some(a) => {
                a.backoff = Default::default();
                self.state.touch_app(id);
                HttpResponse { status: 204, headers: vec![], body: vec![] }
            }
            None => message(404, &format!("Application {id} not found in tasks queue.")),
        }
    }
}
