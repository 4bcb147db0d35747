//! Tasks: launching, applying status updates, killing, and forgetting finished ones.

use std::time::Instant;

use berth_proto::v1 as pb;
use pb::master_message::Message as ToAgent;

use super::Event;
use super::core::{Master, publish};
use super::state::{LastStatus, PackedSpec, Task, TaskKey, revise};
use crate::convert;
use crate::model::{ResourcesExt, is_terminal, unix_ms};
use crate::runtime::bindings::{Resources, TaskReason, TaskSpec, TaskState, TaskStatus};
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
        let (Some(&fid), Some(&node)) =
            (self.framework_names.get(framework), self.agents.get(&record.agent_id))
        else {
            self.batch.delete_task(framework, &task_id);
            return;
        };
        let (mut status, delivered, update_uuid) = match status {
            Some(s) => (s.status, s.delivered, s.update_uuid),
            // Launched and no update since (`launch_task` writes no status).
            None => (self.launched_status(&task_id, record.launched_at_ms), true, String::new()),
        };
        status.node = Some(node);
        status.hostname = self.nodes.get(&node).map(|n| n.hostname.clone());
        let key = (fid, task_id);
        let terminal = is_terminal(status.state);
        if !terminal {
            self.take_resources(&key, node, &record.spec.resources);
        }
        let last = LastStatus::of(&status);
        if !delivered && let Some(f) = self.frameworks.get_mut(&fid) {
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
            },
        );
    }

    /// The key of a framework's task, if the framework exists.
    pub(super) fn task_key(&self, framework: &str, task_id: &str) -> Option<TaskKey> {
        let id = *self.framework_names.get(framework)?;
        Some((id, task_id.to_string()))
    }

    fn take_resources(&mut self, key: &TaskKey, node: u32, resources: &Resources) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.used.add(resources);
            n.revision = revise(&mut self.last_revision);
            n.tasks.insert(key.clone());
        }
        if let Some(f) = self.frameworks.get_mut(&key.0) {
            f.allocated.add(resources);
            f.active += 1;
        }
    }

    fn release_resources(&mut self, key: &TaskKey, node: u32, resources: &Resources) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.used.remove(resources);
            n.revision = revise(&mut self.last_revision);
            n.tasks.remove(key);
        }
        if let Some(f) = self.frameworks.get_mut(&key.0) {
            f.allocated.remove(resources);
            f.active = f.active.saturating_sub(1);
        }
    }

    /// Records a validated task as staging on `node` and sends it to the node's agent (after commit).
    pub(super) fn launch_task(&mut self, framework: u32, node: u32, spec: TaskSpec) {
        let key = (framework, spec.id.clone());
        let name = self.frameworks[&framework].name.clone();
        let agent_id = self.nodes[&node].agent_id.clone();
        let now_ms = unix_ms();
        let mut status = self.launched_status(&spec.id, now_ms);
        status.node = Some(node);
        status.hostname = Some(self.nodes[&node].hostname.clone());
        status.ports = spec.resources.ports.clone();
        let (resources, kill_grace_period_ms) = (spec.resources.clone(), spec.kill_grace_period_ms);
        let wire = convert::task_spec(&spec);
        let packed = PackedSpec::new(&wire);
        let record = TaskRecord { spec, agent_id: agent_id.clone(), launched_at_ms: now_ms };
        // No status record: a task stored without one is restored as this STAGING status, delivered
        // (`restore_task`), and its first update from the agent writes one. A launch costs the store one
        // write fewer (of about six per task that runs).
        self.batch.put_task(&name, &key.1, record);
        self.take_resources(&key, node, &resources);
        let message = ToAgent::Launch(pb::LaunchTask { framework: name.clone(), task: Some(wire) });
        publish(&self.events, || Event::Status { framework: name, agent_id, status: status.clone() });
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
            },
        );
        self.send_to_node(node, message);
    }

    /// The STAGING status of a task launched at `launched_at_ms`, as the launch makes it and as a task
    /// stored without a status is restored (without its node, hostname and ports).
    fn launched_status(&self, task_id: &str, launched_at_ms: u64) -> TaskStatus {
        let mut status = self.blank_status(task_id, TaskState::Staging, None, String::new());
        status.timestamp_ms = launched_at_ms;
        status
    }

    /// A status with nothing but an id, a state, a reason and a message.
    pub(super) fn blank_status(
        &self,
        task_id: &str,
        state: TaskState,
        reason: Option<TaskReason>,
        message: String,
    ) -> TaskStatus {
        TaskStatus {
            task_id: task_id.to_string(),
            state,
            reason,
            message,
            healthy: None,
            exit_code: None,
            node: None,
            hostname: None,
            ports: Vec::new(),
            timestamp_ms: unix_ms(),
        }
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
        let task = &self.tasks[key];
        let mut status = task.full_status(&key.1, self.nodes.get(&task.node));
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
        let ended = is_terminal(status.state);
        if ended {
            task.ended = Some(Instant::now());
            let resources = task.resources.clone();
            self.release_resources(key, node, &resources);
            self.cycle_wanted = true;
        }
        let task = &self.tasks[key];
        let Some(framework) = self.frameworks.get_mut(&key.0) else { return };
        self.batch.put_status(
            &framework.name,
            &key.1,
            StatusRecord { status: status.clone(), delivered: false, update_uuid: task.update_uuid.clone() },
        );
        let nodes = &self.nodes;
        publish(&self.events, || Event::Status {
            framework: framework.name.clone(),
            agent_id: nodes.get(&node).map(|n| n.agent_id.clone()).unwrap_or_default(),
            status: status.clone(),
        });
        if !framework.removing {
            framework.pending.push(status);
        }
    }

    /// Marks the framework's latest statuses of these tasks as delivered.
    pub(super) fn mark_delivered(&mut self, framework: u32, task_ids: impl IntoIterator<Item = String>) {
        let Some(name) = self.frameworks.get(&framework).map(|f| f.name.clone()) else { return };
        for id in task_ids {
            let key = (framework, id);
            if let Some(task) = self.tasks.get_mut(&key)
                && !task.delivered
            {
                task.delivered = true;
                let record = StatusRecord {
                    status: task.full_status(&key.1, self.nodes.get(&task.node)),
                    delivered: true,
                    update_uuid: task.update_uuid.clone(),
                };
                self.batch.put_status(&name, &key.1, record);
            }
        }
    }

    /// Asks the task's agent to kill it. Remembered, so that an agent that is away gets the kill when it
    /// re-registers.
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
    pub fn kill_task(
        &mut self,
        framework: &str,
        task_id: &str,
        grace_ms: Option<u32>,
    ) -> Result<(), super::ApiError> {
        let id = self.framework_id(framework)?;
        let key = (id, task_id.to_string());
        let task = self.tasks.get(&key).ok_or_else(|| {
            super::ApiError::NotFound(format!("framework `{framework}` has no task `{task_id}`"))
        })?;
        if is_terminal(task.status.state) {
            return Err(super::ApiError::FailedPrecondition(format!(
                "task `{task_id}` already ended ({})",
                crate::model::state_name(task.status.state)
            )));
        }
        self.kill(&key, grace_ms, TaskReason::KilledByFramework);
        Ok(())
    }

    pub(super) fn send_kill(&mut self, key: &TaskKey, grace_ms: u32, reason: TaskReason) {
        let Some(task) = self.tasks.get(key) else { return };
        let node = task.node;
        let framework = self.frameworks.get(&key.0).map(|f| f.name.clone()).unwrap_or_default();
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
            if let Some(f) = self.frameworks.get(&key.0) {
                self.batch.delete_task(&f.name, &key.1);
            }
        }
    }
}
