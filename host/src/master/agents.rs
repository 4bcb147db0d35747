//! Agents as the master sees them: registration and re-registration (with reconciliation of what the
//! agent runs against what the master expects), heartbeats, loss of an agent, draining, and status
//! updates with their acknowledgements.

use std::collections::HashSet;
use std::time::Instant;

use berth_proto::v1 as pb;
use pb::agent_message::Message as FromAgent;
use pb::master_message::Message as ToAgent;

use super::core::Master;
use super::effects::Effects;
use super::nodes::Registration;
use super::tasks::Usage;
use super::types::TaskKey;
use crate::convert;
use crate::model::{is_terminal, unix_ms};
use crate::runtime::bindings::{Resources, TaskReason, TaskState, TaskStatus};

/// Grace period for killing tasks an agent runs that the master does not want (orphans).
const ORPHAN_KILL_GRACE_MS: u32 = 3_000;

/// Wall-clock ms of an `Instant` in the recent past.
fn ms_at(at: Instant) -> u64 {
    unix_ms().saturating_sub(at.elapsed().as_millis() as u64)
}

impl Master {
    /// A message from the agent on `connection`, which arrived at `at`.
    pub(super) fn agent_message(&mut self, connection: u64, message: pb::AgentMessage, at: Instant) {
        let Some(message) = message.message else { return };
        if let FromAgent::Register(register) = message {
            self.register(connection, register, at);
            return;
        }
        let Some(node) = self.nodes.of_connection(connection) else {
            tracing::warn!(target: "berth.master", connection, "message from an agent that has not registered; ignored");
            return;
        };
        match message {
            FromAgent::Register(_) => unreachable!("handled above"),
            FromAgent::Heartbeat(heartbeat) => {
                self.nodes.heard(node, at, ms_at(at), Some(heartbeat.running_tasks));
                self.record_usage(node, &heartbeat.usage);
            }
            FromAgent::Logs(chunk) => self.log_chunk(node, chunk),
            FromAgent::Status(update) => {
                self.nodes.heard(node, at, ms_at(at), None);
                self.status_update(node, update);
            }
        }
    }

    fn register(&mut self, connection: u64, register: pb::Register, at: Instant) {
        let Some(tx) = self.nodes.registering(connection) else { return };
        let resources = match check_register(&register) {
            Ok(resources) => resources,
            Err(reason) => return refuse_registration(&mut self.effects, tx, &register, &reason),
        };
        let local = self.nodes.is_local(connection);
        let known = self.nodes.by_agent(&register.agent_id);
        let mut credential = None;
        if let Some(node) = known.and_then(|id| self.nodes.get(id)) {
            // An agent id is one node: a second connection may take it over only once the first has gone
            // silent past the agent timeout (a restarted agent whose old connection is not closed yet).
            if let Some((live, _)) = &node.connection
                && *live != connection
                && at.saturating_duration_since(node.last_seen) < self.config.agent_timeout
            {
                return refuse_registration(
                    &mut self.effects,
                    tx,
                    &register,
                    "an agent with this id is connected; a second one is refused",
                );
            }
            // From its first registration on, an agent proves it is the same one with its credential.
            if !node.credential_sha256.is_empty() && !local {
                if crate::runtime::sha256_hex(register.credential.as_bytes()) != node.credential_sha256 {
                    return refuse_registration(
                        &mut self.effects,
                        tx,
                        &register,
                        "the agent's credential is not the one issued to this agent id",
                    );
                }
            } else if node.credential_sha256.is_empty() {
                credential = Some(new_credential());
            }
        } else {
            credential = Some(new_credential());
        }
        let registration = Registration {
            agent_id: register.agent_id.clone(),
            hostname: register.hostname.clone(),
            total: resources,
            attributes: convert::attributes_from(&register.attributes),
            // What tasks may do is the operator's setting: `berth serve`'s own configuration for its agent,
            // `berth node allow` for the others. An agent's claim about itself is not believed.
            policy: local.then_some((
                register.allow_privileged,
                register.allow_host_mounts,
                register.allow_host_network,
            )),
            backend: register.backend.clone(),
            running: register.tasks.len() as u32,
        };
        let (node, returning) = self.nodes.register(connection, tx.clone(), registration, at, ms_at(at));
        if let Some(credential) = &credential
            && let Some(n) = self.nodes.get_mut_policy(node)
        {
            n.credential_sha256 = crate::runtime::sha256_hex(credential.as_bytes());
        }
        let record = self.nodes.get(node).expect("just registered").record();
        self.effects.batch.put_agent(&register.agent_id, &record);
        self.effects.send(
            tx,
            ToAgent::Registered(pb::Registered {
                node_id: node,
                heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u32,
                credential: credential.unwrap_or_default(),
            }),
        );
        self.metrics.agent_registrations.inc();
        tracing::info!(target: "berth.master", agent = %register.agent_id, hostname = %register.hostname, node,
            returning, tasks = register.tasks.len(), "agent registered");
        self.reconcile_agent(node, register.tasks);
        self.cycles.wanted = true;
    }

    /// Sets what tasks on a node may do (the operator's setting).
    pub(super) fn set_node_policy(
        &mut self,
        node: u32,
        privileged: Option<bool>,
        host_mounts: Option<bool>,
        host_network: Option<bool>,
    ) {
        let Some(n) = self.nodes.get_mut_policy(node) else { return };
        n.allow_privileged = privileged.unwrap_or(n.allow_privileged);
        n.allow_host_mounts = host_mounts.unwrap_or(n.allow_host_mounts);
        n.allow_host_network = host_network.unwrap_or(n.allow_host_network);
        let (agent, record) = (n.agent_id.clone(), n.record());
        tracing::info!(target: "berth.master", %agent, privileged = record.allow_privileged,
            host_mounts = record.allow_host_mounts, host_network = record.allow_host_network, "node policy set");
        self.effects.batch.put_agent(&agent, &record);
    }

    /// Compares what a (re-)registering agent runs with what the master expects on that node: tasks the
    /// master does not want there are killed; tasks it expects but the agent lacks are launched again if
    /// the launch may have been lost (`staging`), and lost otherwise.
    fn reconcile_agent(&mut self, node: u32, reported: Vec<pb::TaskStatus>) {
        let mut seen: HashSet<TaskKey> = HashSet::new();
        for report in reported {
            let key = self.task_key(&report.framework, &report.task_id);
            let wanted = key.as_ref().and_then(|k| self.tasks.get(k)).is_some_and(|t| {
                t.node == node && !is_terminal(t.status.state) && t.kill_requested.is_none()
            });
            if !wanted {
                // A task that ended while the agent was away, as the master already knows it ended (or
                // has forgotten it): nothing runs, nothing to do.
                if !is_terminal(convert::state_from(report.state())) {
                    self.kill_orphan(node, &report.framework, &report.task_id);
                }
                continue;
            }
            let key = key.expect("wanted implies known");
            seen.insert(key.clone());
            let state = convert::state_from(report.state());
            let task = &self.tasks[&key];
            if state != task.status.state || report.healthy != task.status.healthy {
                let status = self.status_from_report(node, &key, &report);
                self.apply_status(&key, status, None);
            }
        }
        let expected: Vec<TaskKey> = self
            .nodes
            .get(node)
            .map(|n| n.tasks().iter().filter(|k| !seen.contains(*k)).cloned().collect())
            .unwrap_or_default();
        for key in expected {
            let task = &self.tasks[&key];
            if let Some((_, reason)) = task.kill_requested {
                // The kill was asked for while the agent was away, and the agent no longer runs the task.
                let status =
                    self.synthetic_status(&key, TaskState::Killed, reason, "killed while its agent was away");
                self.apply_status(&key, status, None);
            } else if task.status.state == TaskState::Staging {
                let framework = self.frameworks.name(key.0).to_string();
                let spec = task.spec.unpack();
                self.send_to_node(node, ToAgent::Launch(pb::LaunchTask { framework, task: Some(spec) }));
            } else {
                let status = self.synthetic_status(
                    &key,
                    TaskState::Lost,
                    TaskReason::ContainerVanished,
                    "the agent came back without this task",
                );
                self.apply_status(&key, status, None);
            }
        }
        // Kills asked for while the agent was away, for tasks it still runs.
        let to_kill: Vec<(TaskKey, u32, TaskReason)> = seen
            .iter()
            .filter_map(|k| self.tasks[k].kill_requested.map(|(g, r)| (k.clone(), g, r)))
            .collect();
        for (key, grace, reason) in to_kill {
            self.send_kill(&key, grace, reason);
        }
    }

    fn kill_orphan(&mut self, node: u32, framework: &str, task_id: &str) {
        tracing::info!(target: "berth.master", node, %framework, task = %task_id, "killing a task the master does not want here");
        self.send_to_node(
            node,
            ToAgent::Kill(pb::KillTask {
                framework: framework.to_string(),
                task_id: task_id.to_string(),
                grace_period_ms: ORPHAN_KILL_GRACE_MS,
                // `task-unknown` tells the agent nobody wants this container, not even for its logs.
                reason: pb::TaskReason::TaskUnknown as i32,
            }),
        );
    }

    /// A status update from an agent: applied unless it is a duplicate or about a task the master does
    /// not expect on that node (which is then killed), and acknowledged after it is persisted.
    fn status_update(&mut self, node: u32, update: pb::StatusUpdate) {
        let uuid = update.uuid.clone();
        if let Some(report) = update.status {
            let key = self.task_key(&report.framework, &report.task_id);
            let task = key.as_ref().and_then(|k| self.tasks.get(k));
            match task {
                Some(t) if t.update_uuid == uuid => {}
                Some(t) if t.node == node && !is_terminal(t.status.state) => {
                    let key = key.expect("task found");
                    let status = self.status_from_report(node, &key, &report);
                    self.apply_status(&key, status, Some(uuid.clone()));
                }
                _ => {
                    if !is_terminal(convert::state_from(report.state())) {
                        self.kill_orphan(node, &report.framework, &report.task_id);
                    }
                }
            }
        }
        self.send_to_node(node, ToAgent::Ack(pb::Ack { uuid }));
    }

    /// Keeps the newest usage sample of each running task the reporting node runs; samples of tasks it
    /// does not run (ended meanwhile, or never its own) are dropped.
    fn record_usage(&mut self, node: u32, samples: &[pb::TaskUsage]) {
        let mut framework: Option<(&str, u32)> = None;
        for sample in samples {
            let fid = match framework {
                Some((name, id)) if name == sample.framework => id,
                _ => {
                    let Some(id) = self.frameworks.id_of(&sample.framework) else { continue };
                    framework = Some((&sample.framework, id));
                    id
                }
            };
            if let Some(task) = self.tasks.find_mut(fid, &sample.task_id)
                && task.node == node
                && task.status.state == TaskState::Running
                && sample.cpus.is_finite()
                && sample.cpus >= 0.0
            {
                task.usage = Some(Usage {
                    cpus: sample.cpus as f32,
                    mem_mib: (sample.mem_bytes as f64 / (1024.0 * 1024.0)) as f32,
                    at_ms: sample.timestamp_ms,
                });
            }
        }
    }

    fn status_from_report(&self, node: u32, key: &TaskKey, report: &pb::TaskStatus) -> TaskStatus {
        let task = &self.tasks[key];
        TaskStatus {
            task_id: key.1.clone(),
            state: convert::state_from(report.state()),
            reason: convert::reason_from(report.reason()),
            message: report.message.clone(),
            healthy: report.healthy,
            exit_code: report.exit_code,
            node: Some(node),
            hostname: self.nodes.get(node).map(|n| n.hostname.clone()),
            ports: task.resources.ports.clone(),
            timestamp_ms: if report.timestamp_ms > 0 { report.timestamp_ms } else { unix_ms() },
        }
    }

    pub(super) fn agent_disconnected(&mut self, connection: u64) {
        if let Some(node) = self.nodes.disconnected(connection) {
            let agent = self.nodes.get(node).map(|n| n.agent_id.clone()).unwrap_or_default();
            tracing::info!(target: "berth.master", %agent, "agent disconnected");
            self.logs.close_node(node, "the agent disconnected");
            self.rescind_node(node, "its agent disconnected");
        }
    }

    /// Nodes silent past the agent timeout become unreachable and their tasks lost.
    pub(super) fn check_agents(&mut self, now: Instant) {
        for node in self.nodes.silent(now, self.config.agent_timeout) {
            self.node_lost(node);
        }
    }

    fn node_lost(&mut self, node: u32) {
        self.logs.close_node(node, "the agent is unreachable");
        self.rescind_node(node, "its agent is unreachable");
        self.nodes.unreachable(node);
        let Some(n) = self.nodes.get(node) else { return };
        let agent = n.agent_id.clone();
        let tasks: Vec<TaskKey> = n.tasks().iter().cloned().collect();
        self.metrics.agents_lost.inc();
        tracing::warn!(target: "berth.master", %agent, tasks = tasks.len(), timeout = ?self.config.agent_timeout,
            "agent unreachable; its tasks are lost");
        let message = format!("agent {agent} was not heard from for {:?}", self.config.agent_timeout);
        for key in tasks {
            let status = self.synthetic_status(&key, TaskState::Lost, TaskReason::AgentLost, &message);
            self.apply_status(&key, status, None);
        }
        self.cycles.wanted = true;
    }

    /// Stops offering a node and kills its tasks, so their frameworks place them elsewhere. Returns how
    /// many tasks were killed.
    pub(super) fn drain_node(&mut self, node: u32) -> u32 {
        self.nodes.drain(node);
        self.rescind_node(node, "it is being drained");
        let Some(n) = self.nodes.get(node) else { return 0 };
        let mut record = n.record();
        record.draining = true;
        let agent = n.agent_id.clone();
        let tasks: Vec<TaskKey> = n.tasks().iter().cloned().collect();
        self.effects.batch.put_agent(&agent, &record);
        for key in &tasks {
            self.kill(key, None, TaskReason::NodeDrained);
        }
        tasks.len() as u32
    }
}

/// Refuses a registration: dropping the connection's sender ends the stream; the agent logs the end and
/// retries later.
fn refuse_registration(
    effects: &mut Effects,
    tx: super::types::ToAgent,
    register: &pb::Register,
    reason: &str,
) {
    tracing::warn!(target: "berth.master", agent = %register.agent_id, hostname = %register.hostname, %reason,
        "registration refused");
    effects.send(tx, ToAgent::Refused(pb::Refused { reason: reason.to_string() }));
}

/// A credential for a new agent: 32 random bytes, hex.
fn new_credential() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's randomness");
    hex::encode(bytes)
}

/// Checks a registration and returns the agent's resources.
pub(crate) fn check_register(register: &pb::Register) -> Result<Resources, String> {
    let id = &register.agent_id;
    if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "invalid agent_id `{id}`: use 1-128 characters from A-Z, a-z, 0-9, `-`, `_`, `.`"
        ));
    }
    if register.hostname.is_empty() {
        return Err("hostname is empty".into());
    }
    let resources = register.resources.as_ref().ok_or("resources are missing")?;
    convert::resources_from(resources).map_err(|e| format!("resources: {e}"))
}
