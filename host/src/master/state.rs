//! The master's in-memory state: nodes, frameworks, tasks.

use std::sync::Arc;
use std::time::Instant;

use berth_proto::v1 as pb;

use super::ToAgent;
use super::kv::FrameworkKv;
use crate::model::ResourcesExt;
use crate::runtime::FrameworkInstance;
use crate::runtime::bindings::{Attribute, Resources, TaskReason, TaskState, TaskStatus};
use crate::store::FrameworkRecord;

/// A task, keyed by its framework's compact id and its own id.
pub type TaskKey = (u32, String);

/// The maps on the master's per-task path. Task and agent ids come from plugins and agents, so the
/// hasher is seeded per process (foldhash: several times faster than the standard SipHash on these short
/// keys, and not predictable from outside).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// Whether a node takes new work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Registered and heard from within the agent timeout.
    Active,
    /// Being emptied: no offers, its tasks killed.
    Draining,
    /// Silent past the agent timeout: its tasks are lost.
    Unreachable,
}

impl NodeState {
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Unreachable => "unreachable",
        }
    }
}

/// One agent's machine.
pub struct Node {
    pub id: u32,
    pub agent_id: String,
    pub hostname: String,
    pub total: Resources,
    pub attributes: Vec<Attribute>,
    /// Counts the changes to what the allocator sees of the node (`hostname`, `total`, `attributes`,
    /// `used`): registration and every change of `used` add one. The allocator's runtime does not read a
    /// node whose revision it has seen before, so anything else that changes these fields must add one
    /// too.
    pub revision: u64,
    /// Resources of the non-terminal tasks placed here.
    pub used: Resources,
    pub state: NodeState,
    /// The live connection, if any: its id and the channel to the agent.
    pub connection: Option<(u64, ToAgent)>,
    pub last_seen: Instant,
    pub last_seen_ms: u64,
    /// Tasks the agent last said it runs.
    pub agent_running: u32,
    pub allow_privileged: bool,
    pub allow_host_mounts: bool,
    pub backend: String,
    /// Non-terminal tasks placed here.
    pub tasks: FastSet<TaskKey>,
}

impl Node {
    /// A node that has registered nothing yet: no resources, no connection, active.
    pub fn blank(id: u32, agent_id: String) -> Node {
        Node {
            id,
            agent_id,
            hostname: String::new(),
            total: Resources::zero(),
            attributes: Vec::new(),
            revision: 0,
            used: Resources::zero(),
            state: NodeState::Active,
            connection: None,
            last_seen: Instant::now(),
            last_seen_ms: 0,
            agent_running: 0,
            allow_privileged: false,
            allow_host_mounts: false,
            backend: String::new(),
            tasks: Default::default(),
        }
    }

    /// What is neither used nor offered.
    pub fn available(&self) -> Resources {
        let mut free = self.total.clone();
        free.remove(&self.used);
        free
    }

    /// Whether the node can take new work now.
    pub fn schedulable(&self) -> bool {
        self.state == NodeState::Active && self.connection.is_some()
    }
}

/// A framework instance.
pub struct Framework {
    pub id: u32,
    pub name: String,
    pub record: FrameworkRecord,
    /// The plugin instance; `None` when it could not be created (retried on each tick).
    pub instance: Option<FrameworkInstance>,
    pub kv: Arc<FrameworkKv>,
    /// Resources of its non-terminal tasks.
    pub allocated: Resources,
    /// How many of its tasks are not terminal (the tasks themselves are in the master's task map).
    pub active: u32,
    /// Status updates not yet delivered, in the order they happened.
    pub pending: Vec<TaskStatus>,
    pub last_tick: Instant,
    /// After a failed call, no delivery or tick before this instant.
    pub retry_at: Option<Instant>,
    pub consecutive_failures: u32,
    /// Being removed: no offers or calls; forgotten once its tasks are gone.
    pub removing: bool,
    /// Why the plugin instance could not be created, for listings.
    pub instance_error: Option<String>,
}

/// A task the master knows.
pub struct Task {
    /// What it holds on its node (and its framework holds).
    pub resources: Resources,
    /// How long its kill waits between SIGTERM and SIGKILL by default, ms.
    pub kill_grace_period_ms: u32,
    /// The rest of what the framework launched, packed.
    pub spec: PackedSpec,
    /// Its node (nodes are never forgotten, so its agent id and hostname are found there).
    pub node: u32,
    pub status: LastStatus,
    pub launched_at_ms: u64,
    /// The last status update applied from the agent (duplicates are acknowledged, not applied).
    pub update_uuid: String,
    /// When it reached a terminal state.
    pub ended: Option<Instant>,
    /// Whether the framework has received the latest status.
    pub delivered: bool,
    /// A kill was asked for (grace period, reason): re-sent when the agent re-registers.
    pub kill_requested: Option<(u32, TaskReason)>,
}

impl Task {
    /// Its latest status in full; `id` is its id and `node` its node (never missing: nodes are not
    /// forgotten).
    pub fn full_status(&self, id: &str, node: Option<&Node>) -> TaskStatus {
        let last = &self.status;
        TaskStatus {
            task_id: id.to_string(),
            state: last.state,
            reason: last.reason,
            message: last.message.to_string(),
            healthy: last.healthy,
            exit_code: last.exit_code,
            node: Some(self.node),
            hostname: node.map(|n| n.hostname.clone()),
            ports: self.resources.ports.clone(),
            timestamp_ms: last.timestamp_ms,
        }
    }
}

/// A task's latest status, without what its key, node and resources say (its id, node, hostname and
/// ports): [`Task::full_status`] puts them back. A status with them is ~200 bytes more per task.
pub struct LastStatus {
    pub state: TaskState,
    pub reason: Option<TaskReason>,
    pub message: Box<str>,
    pub healthy: Option<bool>,
    pub exit_code: Option<i32>,
    pub timestamp_ms: u64,
}

impl LastStatus {
    pub fn of(status: &TaskStatus) -> LastStatus {
        LastStatus {
            state: status.state,
            reason: status.reason,
            message: status.message.as_str().into(),
            healthy: status.healthy,
            exit_code: status.exit_code,
            timestamp_ms: status.timestamp_ms,
        }
    }
}

/// A task's spec as the master keeps it between the launch and a relaunch or a listing, the only places
/// that read it whole: protobuf-encoded, about a third of the decoded spec with its strings (a Marathon
/// task's spec is ~1.5 KiB decoded, and the master keeps one per task).
pub struct PackedSpec(Box<[u8]>);

impl PackedSpec {
    pub fn new(spec: &pb::TaskSpec) -> PackedSpec {
        PackedSpec(prost::Message::encode_to_vec(spec).into_boxed_slice())
    }

    /// The spec as the agents receive it.
    pub fn unpack(&self) -> pb::TaskSpec {
        // It was encoded by `new` from a valid message, in this process.
        prost::Message::decode(&*self.0).expect("a packed spec decodes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert;
    use crate::master::validate::tests::task;
    use crate::runtime::bindings::PortRange;

    #[test]
    fn a_packed_spec_unpacks_to_what_the_agents_receive() {
        let mut spec = task("web.1", 250, vec![PortRange { begin: 31000, end: 31001 }]);
        spec.name = "web".into();
        let wire = convert::task_spec(&spec);
        let packed = PackedSpec::new(&wire);
        assert_eq!(packed.unpack(), wire);
        assert!(packed.0.len() < std::mem::size_of::<pb::TaskSpec>(), "smaller than the struct alone");
    }
}
