//! Read-only snapshots of the master's state, for the API.

use serde::Serialize;

use super::core::Master;
use crate::model::{ResourcesExt, is_terminal, parse_state};
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

impl Master {
    pub fn nodes_view(&self) -> Vec<NodeView> {
        self.nodes
            .values()
            .map(|n| NodeView {
                id: n.id,
                agent_id: n.agent_id.clone(),
                hostname: n.hostname.clone(),
                state: n.state.name().to_string(),
                connected: n.connection.is_some(),
                total: n.total.clone(),
                available: n.available(),
                attributes: n.attributes.clone(),
                active_tasks: n.tasks.len() as u32,
                agent_running_tasks: n.agent_running,
                backend: n.backend.clone(),
                last_seen_ms: n.last_seen_ms,
            })
            .collect()
    }

    pub fn frameworks_view(&self) -> Vec<FrameworkView> {
        let total = self
            .nodes
            .values()
            .filter(|n| n.schedulable())
            .fold(berth_proto::Scalars::ZERO, |sum, n| sum.plus(&n.total.scalars()));
        self.frameworks
            .values()
            .filter(|f| !f.removing)
            .map(|f| FrameworkView {
                name: f.name.clone(),
                plugin: f.record.plugin.clone(),
                plugin_version: f.instance.as_ref().map(|i| i.version()).unwrap_or(0),
                role: f.record.role.clone(),
                weight: f.record.weight,
                suppressed: f.record.suppressed,
                allocated: f.allocated.clone(),
                active_tasks: f.active,
                share: f.allocated.scalars().dominant_share(&total) / f.record.weight,
                config: f.record.config.clone(),
                error: f.instance_error.clone(),
            })
            .collect()
    }

    pub fn tasks_view(&self, filter: &TaskFilter) -> Result<Vec<TaskView>, String> {
        let states = filter.states()?;
        let framework = if filter.framework.is_empty() {
            None
        } else {
            Some(
                self.framework_names
                    .get(&filter.framework)
                    .copied()
                    .ok_or(format!("no framework named `{}`", filter.framework))?,
            )
        };
        let mut tasks: Vec<TaskView> = self
            .tasks
            .iter()
            .filter(|((f, _), _)| framework.is_none_or(|id| id == *f))
            .filter(|(_, t)| states.is_empty() || states.contains(&t.status.state))
            .filter(|(_, t)| {
                filter.node.is_empty()
                    || self.nodes.get(&t.node).is_some_and(|n| {
                        n.agent_id == filter.node
                            || n.hostname == filter.node
                            || n.id.to_string() == filter.node
                    })
            })
            .filter_map(|((f, id), t)| {
                let spec = t.spec.unpack();
                Some(TaskView {
                    framework: self.frameworks.get(f)?.name.clone(),
                    id: id.clone(),
                    name: spec.name,
                    agent_id: self.nodes.get(&t.node).map(|n| n.agent_id.clone()).unwrap_or_default(),
                    status: t.full_status(id, self.nodes.get(&t.node)),
                    resources: t.resources.clone(),
                    image: spec.container.map(|c| c.image).unwrap_or_default(),
                    launched_at_ms: t.launched_at_ms,
                })
            })
            .collect();
        tasks.sort_by(|a, b| {
            (&a.framework, a.launched_at_ms, &a.id).cmp(&(&b.framework, b.launched_at_ms, &b.id))
        });
        Ok(tasks)
    }

    pub fn plugins_view(&self) -> Vec<PluginView> {
        self.registry
            .plugins()
            .into_iter()
            .map(|p| PluginView {
                name: p.name.clone(),
                kind: p.kind.to_string(),
                active_version: p.active().number,
                versions: p.info(),
                in_use_as_allocator: self.allocator == p.name,
                frameworks: self
                    .frameworks
                    .values()
                    .filter(|f| !f.removing && f.record.plugin == p.name)
                    .map(|f| f.name.clone())
                    .collect(),
            })
            .collect()
    }

    pub fn cycles_view(&self) -> Vec<CycleView> {
        self.cycles.iter().cloned().collect()
    }

    /// The allocator in use.
    pub fn allocator(&self) -> &str {
        &self.allocator
    }

    /// Statuses of the tasks matching `filter`, for the start of a watch.
    pub fn statuses(&self, filter: &TaskFilter) -> Result<Vec<(String, String, TaskStatus)>, String> {
        Ok(self
            .tasks_view(filter)?
            .into_iter()
            .filter(|t| !is_terminal(t.status.state) || filter.states.is_empty())
            .map(|t| (t.framework, t.agent_id, t.status))
            .collect())
    }

    /// A node by id, agent id or hostname.
    pub fn find_node(&self, name: &str) -> Option<u32> {
        self.nodes
            .values()
            .find(|n| n.id.to_string() == name || n.agent_id == name || n.hostname == name)
            .map(|n| n.id)
    }
}
