//! A task's life as the master sees it: launched, its status updates applied, killed, forgotten. Each step
//! keeps the parts in step: the task table, its node's and its framework's holdings, the store, the
//! framework's pending updates, and the watchers.

use std::time::Instant;

use berth_proto::v1 as pb;
use pb::master_message::Message as ToAgent;

use super::core::Master;
use super::tasks::{LastStatus, PackedSpec, Task, blank_status};
use super::types::{ApiError, Event, TaskKey};
use crate::convert;
use crate::model::{is_terminal, state_name, unix_ms};
use crate::runtime::bindings::{TaskReason, TaskSpec, TaskState, TaskStatus};
use crate::store::{StatusRecord, TaskRecord};

impl Master {
    /// Re-creates a task from the store. Tasks of frameworks that no longer exist are forgotten (their
    /// agents will be told to kill them when they report them).
    pub(super) fn restore_task(
        &mut self,
        framework: &str,
        task_id: String,
        record: TaskRecord,
        status: Option<StatusRecord>,
    ) {
        let (Some(fid), Some(node)) =
            (self.frameworks.id_of(framework), self.nodes.by_agent(&record.agent_id))
        else {
            self.effects.batch.delete_task(framework, &task_id);
            return;
        };
        let (mut status, delivered, update_uuid) = match status {
            Some(s) => (s.status, s.delivered, s.update_uuid),
            // Launched and no update since (`launch_task` writes no status).
            None => (launched_status(&task_id, record.launched_at_ms), true, String::new()),
        };
        status.node = Some(node);
        status.hostname = self.nodes.get(node).map(|n| n.hostname.clone());
        let key = (fid, task_id);
        let terminal = is_terminal(status.state);
        if !terminal {
            self.nodes.take(node, &key, &record.spec.resources);
            self.frameworks.hold(fid, &record.spec.resources);
        }
        let last = LastStatus::of(&status);
        if !delivered && let Some(f) = self.frameworks.get_mut(fid) {
            f.pending.push(status);
        }
        self.tasks.insert(
            key,
            Task {
                resources: record.spec.resources.clone(),
                kill_grace_period_ms: record.spec.kill_grace_period_ms,
                spec: PackedSpec::new(&convert::task_spec(&record.spec)),
                node,
                status: last,
                launched_at_ms: record.launched_at_ms,
                update_uuid,
                ended: terminal.then(Instant::now),
                delivered,
                kill_requested: None,
                usage: None,
            },
        );
    }

    /// The key of a framework's task, if the framework exists.
    pub(super) fn task_key(&self, framework: &str, task_id: &str) -> Option<TaskKey> {
        Some((self.frameworks.id_of(framework)?, task_id.to_string()))
    }

    /// A task's latest status in full.
    pub(super) fn task_status(&self, key: &TaskKey) -> Option<TaskStatus> {
        let task = self.tasks.get(key)?;
        Some(task.full_status(&key.1, self.nodes.get(task.node).map(|n| n.hostname.clone())))
    }

    /// Records a validated task as staging on `node` and sends it to the node's agent (after commit).
    pub(super) fn launch_task(&mut self, framework: u32, node: u32, spec: TaskSpec) {
        let _span = tracing::debug_span!("berth.master.launch", framework, node, task = %spec.id).entered();
        let key = (framework, spec.id.clone());
        let name = self.frameworks.name(framework).to_string();
        let (agent_id, hostname) = match self.nodes.get(node) {
            Some(n) => (n.agent_id.clone(), n.hostname.clone()),
            None => return,
        };
        let now_ms = unix_ms();
        let mut status = launched_status(&spec.id, now_ms);
        status.node = Some(node);
        status.hostname = Some(hostname);
        status.ports = spec.resources.ports.clone();
        let (resources, kill_grace_period_ms) = (spec.resources.clone(), spec.kill_grace_period_ms);
        let wire = convert::task_spec(&spec);
        let packed = PackedSpec::new(&wire);
        let record = TaskRecord { spec, agent_id: agent_id.clone(), launched_at_ms: now_ms };
        // No status record: a task stored without one is restored as this STAGING status, delivered
        // (`restore_task`), and its first update from the agent writes one. A launch costs the store one
        // write fewer (of about six per task that runs).
        self.effects.batch.put_task(&name, &key.1, record);
        self.nodes.take(node, &key, &resources);
        self.frameworks.hold(framework, &resources);
        let message = ToAgent::Launch(pb::LaunchTask { framework: name.clone(), task: Some(wire) });
        self.effects.publish(|| Event::Status { framework: name, agent_id, status: status.clone() });
        self.tasks.insert(
            key,
            Task {
                resources,
                kill_grace_period_ms,
                spec: packed,
                node,
                status: LastStatus::of(&status),
                launched_at_ms: now_ms,
                update_uuid: String::new(),
                ended: None,
                delivered: true,
                kill_requested: None,
                usage: None,
            },
        );
        self.send_to_node(node, message);
    }

    /// A status the master decides on its own (a lost agent, a vanished container): the task's current
    /// status with a new state, reason and message.
    pub(super) fn synthetic_status(
        &self,
        key: &TaskKey,
        state: TaskState,
        reason: TaskReason,
        message: &str,
    ) -> TaskStatus {
        let mut status = self.task_status(key).expect("a known task");
        status.state = state;
        status.reason = Some(reason);
        status.message = message.to_string();
        status.timestamp_ms = unix_ms();
        status
    }

    /// Applies a status to a task: persisted, queued for the framework, published to watchers. A
    /// terminal task never changes again; when a task ends its resources return to the pool.
    pub(super) fn apply_status(&mut self, key: &TaskKey, status: TaskStatus, uuid: Option<String>) {
        let Some(task) = self.tasks.get_mut(key) else { return };
        if is_terminal(task.status.state) {
            return;
        }
        task.status = LastStatus::of(&status);
        task.delivered = false;
        if let Some(uuid) = uuid {
            task.update_uuid = uuid;
        }
        let node = task.node;
        let update_uuid = task.update_uuid.clone();
        if is_terminal(status.state) {
            task.ended = Some(Instant::now());
            let resources = task.resources.clone();
            self.nodes.release(node, key, &resources);
            self.frameworks.release(key.0, &resources);
            self.cycles.wanted = true;
        }
        let Some(framework) = self.frameworks.get_mut(key.0) else { return };
        self.effects.batch.put_status(
            &framework.name,
            &key.1,
            StatusRecord { status: status.clone(), delivered: false, update_uuid },
        );
        let nodes = &self.nodes;
        self.effects.publish(|| Event::Status {
            framework: framework.name.clone(),
            agent_id: nodes.get(node).map(|n| n.agent_id.clone()).unwrap_or_default(),
            status: status.clone(),
        });
        if !framework.removing {
            framework.pending.push(status);
        }
    }

    /// Marks the framework's latest statuses of these tasks as delivered.
    pub(super) fn mark_delivered(&mut self, framework: u32, task_ids: impl IntoIterator<Item = String>) {
        let Some(name) = self.frameworks.get(framework).map(|f| f.name.clone()) else { return };
        for id in task_ids {
            let key = (framework, id);
            let Some(task) = self.tasks.get_mut(&key) else { continue };
            if task.delivered {
                continue;
            }
            task.delivered = true;
            let update_uuid = task.update_uuid.clone();
            let status = self.task_status(&key).expect("just found");
            self.effects.batch.put_status(
                &name,
                &key.1,
                StatusRecord { status, delivered: true, update_uuid },
            );
        }
    }

    /// Asks the task's agent to kill it. Remembered, so that an agent that is away gets the kill when it
    /// re-registers. Returns whether there was a running task to kill.
    pub(super) fn kill(&mut self, key: &TaskKey, grace_ms: Option<u32>, reason: TaskReason) -> bool {
        let Some(task) = self.tasks.get_mut(key) else { return false };
        if is_terminal(task.status.state) {
            return false;
        }
        let grace = grace_ms.unwrap_or(task.kill_grace_period_ms);
        task.kill_requested = Some((grace, reason));
        self.send_kill(key, grace, reason);
        true
    }

    /// Kills a task on an operator's request.
    pub(super) fn kill_task(&mut self, key: &TaskKey, grace_ms: Option<u32>) -> Result<(), ApiError> {
        let task = self.tasks.get(key).ok_or_else(|| ApiError::NotFound(format!("no task `{}`", key.1)))?;
        if is_terminal(task.status.state) {
            return Err(ApiError::FailedPrecondition(format!(
                "task `{}` already ended ({})",
                key.1,
                state_name(task.status.state)
            )));
        }
        self.kill(key, grace_ms, TaskReason::KilledByFramework);
        Ok(())
    }

    pub(super) fn send_kill(&mut self, key: &TaskKey, grace_ms: u32, reason: TaskReason) {
        let Some(task) = self.tasks.get(key) else { return };
        let node = task.node;
        let framework = self.frameworks.name(key.0).to_string();
        self.send_to_node(
            node,
            ToAgent::Kill(pb::KillTask {
                framework,
                task_id: key.1.clone(),
                grace_period_ms: grace_ms,
                reason: convert::reason(Some(reason)) as i32,
            }),
        );
    }

    /// Forgets tasks that ended longer ago than the retention period and whose end was delivered.
    pub(super) fn forget_old_tasks(&mut self, now: Instant) {
        let retention = self.config.task_retention;
        let old: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.delivered && t.ended.is_some_and(|e| now.duration_since(e) > retention))
            .map(|(k, _)| k.clone())
            .collect();
        for key in old {
            self.tasks.remove(&key);
            if let Some(f) = self.frameworks.get(key.0) {
                self.effects.batch.delete_task(&f.name, &key.1);
            }
        }
    }
}

/// The STAGING status of a task launched at `launched_at_ms`, as the launch makes it and as a task stored
/// without a status is restored (without its node, hostname and ports).
fn launched_status(task_id: &str, launched_at_ms: u64) -> TaskStatus {
    let mut status = blank_status(task_id, TaskState::Staging, None, String::new());
    status.timestamp_ms = launched_at_ms;
    status
}
