//! What operators do to frameworks: add (its plugin's `init` must accept the configuration), weigh,
//! suppress and revive, remove, and send requests to its HTTP API.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::core::Master;
use super::frameworks::{Framework, HttpCall, Slot};
use super::kv::FrameworkKv;
use super::types::{ApiError, TaskKey};
use crate::model::{is_terminal, unix_ms};
use crate::runtime::bindings::{HttpRequest, HttpResponse, TaskReason};
use crate::runtime::valid_name;
use crate::store::FrameworkRecord;

/// What adding a framework needs.
#[derive(Clone, Debug)]
pub struct NewFramework {
    /// Its name, unique in the cluster.
    pub name: String,
    /// The framework plugin to run.
    pub plugin: String,
    /// Its role (`*` when empty).
    pub role: String,
    /// Its weight (> 0).
    pub weight: f64,
    /// Its configuration, passed to `init`.
    pub config: String,
}

impl Master {
    /// Key-value data for framework `name` (loaded from the store when restoring).
    pub(super) fn framework_kv(&self, name: &str, data: BTreeMap<String, Vec<u8>>) -> Arc<FrameworkKv> {
        Arc::new(FrameworkKv::new(
            name,
            data,
            self.config.kv_quota_bytes,
            self.store.clone(),
            self.effects.progress().clone(),
        ))
    }

    /// Starts adding a framework: the name is reserved at once, and `reply` answers once its plugin's
    /// `init` has accepted the configuration and the framework is persisted (or says why not).
    pub(super) fn add_framework(&mut self, new: NewFramework, reply: oneshot::Sender<Result<u32, ApiError>>) {
        if let Err(e) = self.check_new_framework(&new) {
            let _ = reply.send(Err(e));
            return;
        }
        let record = FrameworkRecord {
            id: self.frameworks.next_id(),
            plugin: new.plugin,
            role: if new.role.is_empty() { "*".into() } else { new.role },
            weight: new.weight,
            config: new.config,
            suppressed: false,
            created_at_ms: unix_ms(),
        };
        let kv = self.framework_kv(&new.name, BTreeMap::new());
        let mut framework = Framework::new(new.name, record, kv);
        framework.adding = Some(reply);
        self.frameworks.insert(framework);
    }

    fn check_new_framework(&self, new: &NewFramework) -> Result<(), ApiError> {
        if !valid_name(&new.name) {
            return Err(ApiError::InvalidArgument(format!(
                "invalid framework name `{}`: use 1-63 characters from a-z, 0-9, `-` and `_`, starting with a letter",
                new.name
            )));
        }
        if self.frameworks.id_of(&new.name).is_some() {
            return Err(ApiError::AlreadyExists(format!("a framework named `{}` exists", new.name)));
        }
        check_weight(new.weight)
    }

    fn persist_framework(&mut self, id: u32) {
        if let Some(f) = self.frameworks.get(id) {
            self.effects.batch.put_framework(&f.name, &f.record);
        }
    }

    /// Changes a framework's weight.
    pub(super) fn set_weight(&mut self, name: &str, weight: f64) -> Result<(), ApiError> {
        check_weight(weight)?;
        let id = self.frameworks.find(name)?;
        self.frameworks.get_mut(id).expect("found").record.weight = weight;
        self.persist_framework(id);
        self.cycles.wanted = true;
        Ok(())
    }

    /// Stops (`true`) or resumes offers to a framework; resuming clears its decline filters.
    pub(super) fn set_suppressed(&mut self, name: &str, suppressed: bool) -> Result<(), ApiError> {
        let id = self.frameworks.find(name)?;
        self.suppress(id, suppressed);
        Ok(())
    }

    pub(super) fn suppress(&mut self, id: u32, suppressed: bool) {
        let Some(f) = self.frameworks.get_mut(id) else { return };
        let changed = f.record.suppressed != suppressed;
        f.record.suppressed = suppressed;
        let name = f.name.clone();
        if changed {
            self.persist_framework(id);
        }
        if !suppressed {
            for (_, agent) in self.offers.clear_filters(|f, _, _| f == id) {
                self.effects.batch.filter(&name, &agent, None);
            }
            self.cycles.wanted = true;
        }
    }

    /// Removes a framework: its tasks are killed, its offers rescinded, its data deleted. Returns how many
    /// tasks were killed.
    pub(super) fn remove_framework(&mut self, name: &str) -> Result<u32, ApiError> {
        let id = self.frameworks.find(name)?;
        let mut tasks: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(key, task)| key.0 == id && !is_terminal(task.status.state))
            .map(|(key, _)| key.clone())
            .collect();
        tasks.sort_unstable();
        let mut killed = 0;
        for key in &tasks {
            if self.kill(key, None, TaskReason::FrameworkRemoved) {
                killed += 1;
            }
        }
        for (_, offer) in self.offers.rescind(|_, o| o.framework == id) {
            self.nodes.unoffer(offer.node, &offer.resources);
        }
        let f = self.frameworks.get_mut(id).expect("found");
        f.removing = true;
        f.pending.clear();
        if matches!(f.slot, Slot::Idle(_)) {
            f.back(None);
        }
        for call in f.http.drain(..) {
            let _ = call.reply.send(Err(ApiError::NotFound(format!("framework `{name}` was removed"))));
        }
        self.effects.batch.delete_framework(name);
        for (_, agent) in self.offers.clear_filters(|f, _, _| f == id) {
            self.effects.batch.filter(name, &agent, None);
        }
        self.finish_removals();
        tracing::info!(target: "berth.master", framework = %name, killed, "framework removed");
        Ok(killed)
    }

    /// Forgets removed frameworks once none of their tasks runs and no call of theirs is out.
    pub(super) fn finish_removals(&mut self) {
        let done: Vec<u32> = self
            .frameworks
            .iter()
            .filter(|f| f.removing && f.active() == 0 && !matches!(f.slot, Slot::Busy))
            .map(|f| f.id)
            .collect();
        for id in done {
            let f = self.frameworks.remove(id).expect("listed");
            let tasks: Vec<TaskKey> = self.tasks.keys().filter(|(fid, _)| *fid == id).cloned().collect();
            for key in tasks {
                self.tasks.remove(&key);
                self.effects.batch.delete_task(&f.name, &key.1);
            }
        }
    }

    /// Queues a request to a framework's HTTP API; `reply` answers once its effects are committed.
    pub(super) fn framework_http(
        &mut self,
        name: &str,
        request: HttpRequest,
        authenticated: bool,
        reply: oneshot::Sender<Result<HttpResponse, ApiError>>,
    ) {
        let f = match self.frameworks.find(name) {
            Ok(id) => self.frameworks.get_mut(id).expect("found"),
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if let Slot::Down = f.slot {
            let why = f.error.clone().unwrap_or_else(|| "it is not running".into());
            let _ =
                reply.send(Err(ApiError::Unavailable(format!("framework `{name}` could not answer: {why}"))));
            return;
        }
        f.http.push_back(HttpCall { request, authenticated, reply });
    }
}

fn check_weight(weight: f64) -> Result<(), ApiError> {
    if weight.is_finite() && weight > 0.0 && weight <= 1e6 {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!(
            "weight must be a number above 0 and at most 1000000, got {weight}"
        )))
    }
}
