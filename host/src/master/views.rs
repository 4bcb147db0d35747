//! What the API shows of the master's state: plain snapshots, built by `query.rs`.

use serde::Serialize;

use crate::model::parse_state;
use crate::runtime::VersionInfo;
use crate::runtime::bindings::{Attribute, Resources, TaskState, TaskStatus};

/// A node as listed.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub id: u32,
    pub agent_id: String,
    pub hostname: String,
    pub state: String,
    pub connected: bool,
    pub total: Resources,
    pub available: Resources,
    pub attributes: Vec<Attribute>,
    pub active_tasks: u32,
    pub agent_running_tasks: u32,
    pub backend: String,
    pub last_seen_ms: u64,
    pub allow_privileged: bool,
    pub allow_host_mounts: bool,
    pub allow_host_network: bool,
    /// What its running tasks use, as their agent last sampled them.
    pub in_use: InUse,
}

/// Resource use summed over running tasks, from the agents' latest samples.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct InUse {
    pub cpus: f64,
    pub mem_mib: f64,
}

/// A framework as listed.
#[derive(Clone, Debug, Serialize)]
pub struct FrameworkView {
    pub name: String,
    pub plugin: String,
    pub plugin_version: u32,
    pub role: String,
    pub weight: f64,
    pub suppressed: bool,
    pub allocated: Resources,
    pub active_tasks: u32,
    /// Weighted dominant share of the cluster's schedulable resources.
    pub share: f64,
    pub config: String,
    /// Why the plugin instance is not running, if it is not.
    pub error: Option<String>,
}

/// A task as listed.
#[derive(Clone, Debug, Serialize)]
pub struct TaskView {
    pub framework: String,
    pub id: String,
    pub name: String,
    pub agent_id: String,
    pub status: TaskStatus,
    pub resources: Resources,
    pub image: String,
    pub launched_at_ms: u64,
    /// Its latest sampled use while it runs, next to `resources` (its limits).
    pub usage: Option<super::tasks::Usage>,
}

/// A plugin and its versions.
#[derive(Clone, Debug, Serialize)]
pub struct PluginView {
    pub name: String,
    pub kind: String,
    pub active_version: u32,
    pub versions: Vec<VersionInfo>,
    pub in_use_as_allocator: bool,
    pub frameworks: Vec<String>,
}

/// One offer cycle's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CycleView {
    pub number: u64,
    pub at_ms: u64,
    pub allocator: String,
    /// The allocator version that decided this cycle.
    pub allocator_version: u32,
    pub nodes: u32,
    pub frameworks: u32,
    pub grants: u32,
    pub refused_grants: u32,
    pub offers: u32,
    pub launched: u32,
    pub refused_tasks: u32,
    pub allocate_us: u64,
    pub duration_us: u64,
    pub error: Option<String>,
}

/// Which tasks to list.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub framework: String,
    pub states: Vec<String>,
    pub node: String,
}

impl TaskFilter {
    /// Checks the state names.
    pub fn states(&self) -> Result<Vec<TaskState>, String> {
        self.states
            .iter()
            .map(|s| parse_state(s).ok_or_else(|| format!("unknown task state `{s}`")))
            .collect()
    }
}
