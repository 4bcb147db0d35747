//! A [`Batch`]: the writes of one master loop iteration, committed together by either backend.

use std::sync::Arc;

use bytes::Bytes;

use super::{AgentRecord, FrameworkRecord, PluginRecord, PluginVersionRecord, StatusRecord, TaskRecord};

/// One write.
#[derive(Debug)]
pub(super) enum Op {
    Meta(String, Option<Vec<u8>>),
    Plugin(String, Option<Vec<u8>>),
    PluginVersion(String, u32, Option<Vec<u8>>),
    Framework(String, Option<Vec<u8>>),
    /// Encoded when committed (on the writer thread).
    Task(String, String, Option<Box<TaskRecord>>),
    /// Encoded when committed (on the writer thread), and only if no later status of the task in the
    /// same batch replaced it.
    Status(String, String, Option<Box<StatusRecord>>),
    /// The key and value shared with the framework's overlay (`master/kv.rs`), not copied.
    Kv(String, Arc<str>, Option<Bytes>),
    ClearKv(String),
    Filter(String, String, Option<u64>),
    Agent(String, Option<Vec<u8>>),
    /// A write that a later write of the same key in the same batch replaced.
    Replaced,
}

impl Op {
    /// The table and key of a write that a later write of the same key may replace.
    fn key(&self) -> Option<(u8, &str, &str)> {
        match self {
            Op::Task(f, t, _) => Some((0, f, t)),
            Op::Status(f, t, _) => Some((1, f, t)),
            Op::Kv(f, k, _) => Some((2, f, k)),
            _ => None,
        }
    }
}

/// Writes collected during one master loop iteration, committed together.
///
/// A write of a task, a task status or a key-value entry replaces an earlier write of the same key in
/// the same batch, in place of writing both: a task's STARTING and RUNNING, and the framework's receipt
/// of them, usually land in the same loop iteration and need one write, not four. The replaced write is
/// dropped and the new one goes at the end, so writes of different keys keep their order (a framework's
/// data cleared and then written again stays written).
#[derive(Debug, Default)]
pub struct Batch {
    pub(super) ops: Vec<Op>,
    /// The position of the latest keyed write, by a hash of its table and key (a hash collision only
    /// means a replaceable write is not replaced: the key itself is compared).
    latest: rustc_hash::FxHashMap<u64, usize>,
    replaced: usize,
}

pub(super) fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    serde_json::to_writer(&mut out, value).expect("records serialize");
    out
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many writes are pending (replaced ones not counted).
    pub fn len(&self) -> usize {
        self.ops.len() - self.replaced
    }

    /// Adds a write, replacing an earlier write of the same key in this batch.
    fn push(&mut self, op: Op) {
        if let Some(key) = op.key() {
            use std::hash::BuildHasher as _;
            let at = self.ops.len();
            if let Some(previous) = self.latest.insert(rustc_hash::FxBuildHasher.hash_one(key), at)
                && self.ops[previous].key() == Some(key)
            {
                self.ops[previous] = Op::Replaced;
                self.replaced += 1;
            }
        }
        self.ops.push(op);
    }

    /// Adds the writes of `later`, a batch made after this one, as if they had been made here in the same
    /// order: committing the result leaves the store as committing the two one after the other would
    /// (a key written in both is written once, with `later`'s value). The store writer merges batches
    /// that queued up while it committed, to commit them in one transaction.
    pub fn append(&mut self, later: Batch) {
        for op in later.ops {
            if !matches!(op, Op::Replaced) {
                self.push(op);
            }
        }
    }

    /// Sets or clears a metadata value.
    pub fn meta(&mut self, key: &str, value: Option<&str>) {
        self.ops.push(Op::Meta(key.into(), value.map(|v| v.as_bytes().to_vec())));
    }

    /// Writes a plugin's record.
    pub fn put_plugin(&mut self, name: &str, record: &PluginRecord) {
        self.ops.push(Op::Plugin(name.into(), Some(json(record))));
    }

    /// Removes a plugin and all its version records.
    pub fn delete_plugin(&mut self, name: &str, versions: impl IntoIterator<Item = u32>) {
        self.ops.push(Op::Plugin(name.into(), None));
        for v in versions {
            self.ops.push(Op::PluginVersion(name.into(), v, None));
        }
    }

    /// Writes a plugin version's record.
    pub fn put_plugin_version(&mut self, name: &str, version: u32, record: &PluginVersionRecord) {
        self.ops.push(Op::PluginVersion(name.into(), version, Some(json(record))));
    }

    /// Removes a plugin version's record (it fell out of the kept versions).
    pub fn delete_plugin_version(&mut self, name: &str, version: u32) {
        self.ops.push(Op::PluginVersion(name.into(), version, None));
    }

    /// Writes a framework.
    pub fn put_framework(&mut self, name: &str, record: &FrameworkRecord) {
        self.ops.push(Op::Framework(name.into(), Some(json(record))));
    }

    /// Removes a framework and its key-value data (its tasks are removed one by one as they end).
    pub fn delete_framework(&mut self, name: &str) {
        self.ops.push(Op::Framework(name.into(), None));
        self.ops.push(Op::ClearKv(name.into()));
    }

    /// Writes a task's launch record.
    pub fn put_task(&mut self, framework: &str, task: &str, record: TaskRecord) {
        self.push(Op::Task(framework.into(), task.into(), Some(Box::new(record))));
    }

    /// Writes a task's latest status.
    pub fn put_status(&mut self, framework: &str, task: &str, record: StatusRecord) {
        self.push(Op::Status(framework.into(), task.into(), Some(Box::new(record))));
    }

    /// Forgets a task.
    pub fn delete_task(&mut self, framework: &str, task: &str) {
        self.push(Op::Task(framework.into(), task.into(), None));
        self.push(Op::Status(framework.into(), task.into(), None));
    }

    /// Sets (`Some`) or removes (`None`) a framework's key.
    pub fn kv(&mut self, framework: &str, key: Arc<str>, value: Option<Bytes>) {
        self.push(Op::Kv(framework.into(), key, value));
    }

    /// Sets or removes a decline filter.
    pub fn filter(&mut self, framework: &str, agent: &str, expires_ms: Option<u64>) {
        self.ops.push(Op::Filter(framework.into(), agent.into(), expires_ms));
    }

    /// Writes an agent.
    pub fn put_agent(&mut self, agent: &str, record: &AgentRecord) {
        self.ops.push(Op::Agent(agent.into(), Some(json(record))));
    }
}
