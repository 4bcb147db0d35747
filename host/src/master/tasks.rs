//! Tasks: the table of every task the master knows (running, and ended but not yet forgotten), each with
//! its resources, its node, its last status and its packed spec.
//!
//! It owns the table and its layout; what happens to a task over its life (launch, status, kill) is in
//! `lifecycle.rs`, which keeps the other parts (nodes, frameworks) in step.

use std::time::Instant;

use berth_proto::v1 as pb;

use super::types::TaskKey;
use crate::model::unix_ms;
use crate::runtime::bindings::{Resources, TaskReason, TaskState, TaskStatus};

/// The master's tasks by key, in a hash table whose entries keep their key's hash and hold the task
/// boxed.
///
/// A hash map grows by moving every entry into a table twice the size, all at once, inside whichever call
/// inserts the entry that crosses seven-eighths full. A map of inline tasks hashed every key again (each
/// id behind a pointer) and moved 216 bytes per task into fresh pages: at 57,000 tasks that was 20 ms or
/// more of one offer cycle. Here growing copies 48-byte entries and reads neither an id nor a task.
/// Lookups take the task id as a `&str`, so they allocate nothing.
#[derive(Default)]
pub struct Tasks {
    table: hashbrown::HashTable<(u64, TaskKey, Box<Task>)>,
    hasher: foldhash::fast::RandomState,
}

impl Tasks {
    fn hash(&self, framework: u32, id: &str) -> u64 {
        use std::hash::BuildHasher as _;
        self.hasher.hash_one((framework, id))
    }

    /// The task `id` of `framework`.
    pub fn find(&self, framework: u32, id: &str) -> Option<&Task> {
        let hash = self.hash(framework, id);
        self.table.find(hash, |(h, k, _)| *h == hash && k.0 == framework && k.1 == id).map(|(_, _, t)| &**t)
    }

    /// The task `id` of `framework`, to change.
    pub fn find_mut(&mut self, framework: u32, id: &str) -> Option<&mut Task> {
        let hash = self.hash(framework, id);
        self.table
            .find_mut(hash, |(h, k, _)| *h == hash && k.0 == framework && k.1 == id)
            .map(|(_, _, t)| &mut **t)
    }

    pub fn get(&self, key: &TaskKey) -> Option<&Task> {
        self.find(key.0, &key.1)
    }

    pub fn get_mut(&mut self, key: &TaskKey) -> Option<&mut Task> {
        let hash = self.hash(key.0, &key.1);
        self.table.find_mut(hash, |(h, k, _)| *h == hash && k == key).map(|(_, _, t)| &mut **t)
    }

    pub fn contains(&self, framework: u32, id: &str) -> bool {
        self.find(framework, id).is_some()
    }

    pub fn contains_key(&self, key: &TaskKey) -> bool {
        self.contains(key.0, &key.1)
    }

    /// Adds the task, or replaces the one with its key and returns that.
    pub fn insert(&mut self, key: TaskKey, task: Task) -> Option<Task> {
        let hash = self.hash(key.0, &key.1);
        match self.table.entry(hash, |(h, k, _)| *h == hash && *k == key, |(h, _, _)| *h) {
            hashbrown::hash_table::Entry::Occupied(mut held) => {
                Some(std::mem::replace(&mut *held.get_mut().2, task))
            }
            hashbrown::hash_table::Entry::Vacant(free) => {
                free.insert((hash, key, Box::new(task)));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &TaskKey) -> Option<Task> {
        let hash = self.hash(key.0, &key.1);
        let held = self.table.find_entry(hash, |(h, k, _)| *h == hash && k == key).ok()?;
        Some(*held.remove().0.2)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Every task with its key, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TaskKey, &Task)> {
        self.table.iter().map(|(_, k, t)| (k, &**t))
    }

    pub fn keys(&self) -> impl Iterator<Item = &TaskKey> {
        self.table.iter().map(|(_, k, _)| k)
    }
}

impl std::ops::Index<&TaskKey> for Tasks {
    type Output = Task;

    /// The task with this key; panics if there is none, like a map's index.
    fn index(&self, key: &TaskKey) -> &Task {
        self.get(key).unwrap_or_else(|| panic!("no task {key:?}"))
    }
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
    /// Its latest sampled resource use, while it runs (in memory only: a sample is not state).
    pub usage: Option<Usage>,
}

/// A task's resource use as its agent last sampled it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Usage {
    /// Cores in use.
    pub cpus: f32,
    pub mem_mib: f32,
    /// When it was sampled, ms since the epoch.
    pub at_ms: u64,
}

impl Task {
    /// Its latest status in full; `id` is its id and `hostname` its node's (nodes are never forgotten).
    pub fn full_status(&self, id: &str, hostname: Option<String>) -> TaskStatus {
        let last = &self.status;
        TaskStatus {
            task_id: id.to_string(),
            state: last.state,
            reason: last.reason,
            message: last.message.to_string(),
            healthy: last.healthy,
            exit_code: last.exit_code,
            node: Some(self.node),
            hostname,
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

/// A status with nothing but an id, a state, a reason and a message.
pub fn blank_status(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert;
    use crate::master::validate::tests::task;
    use crate::model::ResourcesExt;
    use crate::runtime::bindings::PortRange;

    /// A task whose launch time tells it apart.
    fn marked(mark: u64) -> Task {
        Task {
            resources: Resources::zero(),
            kill_grace_period_ms: 0,
            spec: PackedSpec(Box::new([])),
            node: 1,
            status: LastStatus {
                state: TaskState::Staging,
                reason: None,
                message: "".into(),
                healthy: None,
                exit_code: None,
                timestamp_ms: 0,
            },
            launched_at_ms: mark,
            update_uuid: String::new(),
            ended: None,
            delivered: false,
            usage: None,
            kill_requested: None,
        }
    }

    #[test]
    fn the_task_table_answers_as_a_map_would_through_growth_and_removal() {
        // Random inserts (new and replacing), removals, changes and lookups over 3 frameworks × 20,000
        // ids, checked against a BTreeMap after every step; the table grows past 32,768 entries.
        let mut tasks = Tasks::default();
        let mut reference: std::collections::BTreeMap<TaskKey, u64> = Default::default();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for step in 0..150_000u64 {
            let key: TaskKey = (next(3) as u32, format!("/bench/app-{:04}.{}", next(100), next(200)));
            match next(6) {
                0..=2 => {
                    let replaced = tasks.insert(key.clone(), marked(step));
                    assert_eq!(replaced.map(|t| t.launched_at_ms), reference.insert(key.clone(), step));
                }
                3 => assert_eq!(tasks.remove(&key).map(|t| t.launched_at_ms), reference.remove(&key)),
                4 => {
                    if let Some(task) = tasks.get_mut(&key) {
                        task.launched_at_ms += 1;
                        *reference.get_mut(&key).unwrap() += 1;
                    }
                }
                _ => {}
            }
            let held = reference.get(&key).copied();
            assert_eq!(tasks.get(&key).map(|t| t.launched_at_ms), held, "{key:?}");
            assert_eq!(tasks.find(key.0, &key.1).map(|t| t.launched_at_ms), held);
            assert_eq!(tasks.contains(key.0, &key.1), held.is_some());
            assert_eq!(tasks.len(), reference.len());
        }
        assert!(reference.len() > 32_768, "the table grew: {}", reference.len());
        let (first, mark) = reference.iter().next().unwrap();
        assert_eq!(tasks[first].launched_at_ms, *mark);
        let mut listed: Vec<(TaskKey, u64)> =
            tasks.iter().map(|(k, t)| (k.clone(), t.launched_at_ms)).collect();
        listed.sort();
        assert_eq!(listed, reference.into_iter().collect::<Vec<_>>());
    }

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
