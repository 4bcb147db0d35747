//! Read-only snapshots of the master's state, for the API (the types are in `views.rs`).

use super::core::Master;
use super::metrics::{FrameworkGauge, Gauges, NodeGauge};
use super::views::{CycleView, FrameworkView, InUse, NodeView, PluginView, TaskFilter, TaskView};
use crate::model::{ResourcesExt, is_terminal, state_name};
use crate::runtime::bindings::{TaskState, TaskStatus};

impl Master {
    pub(super) fn nodes_view(&self) -> Vec<NodeView> {
        self.nodes
            .iter()
            .map(|n| NodeView {
                id: n.id,
                agent_id: n.agent_id.clone(),
                hostname: n.hostname.clone(),
                state: n.state.name().to_string(),
                connected: n.connection.is_some(),
                total: n.total.clone(),
                available: n.available(),
                attributes: n.attributes.clone(),
                active_tasks: n.tasks().len() as u32,
                agent_running_tasks: n.agent_running,
                backend: n.backend.clone(),
                last_seen_ms: n.last_seen_ms,
                allow_privileged: n.allow_privileged,
                allow_host_mounts: n.allow_host_mounts,
                allow_host_network: n.allow_host_network,
                in_use: n.tasks().iter().filter_map(|k| self.tasks.get(k)).fold(
                    InUse::default(),
                    |sum, t| match t.usage.filter(|_| t.status.state == TaskState::Running) {
                        Some(u) => InUse {
                            cpus: sum.cpus + f64::from(u.cpus),
                            mem_mib: sum.mem_mib + f64::from(u.mem_mib),
                        },
                        None => sum,
                    },
                ),
            })
            .collect()
    }

    pub(super) fn frameworks_view(&self) -> Vec<FrameworkView> {
        let total = self
            .nodes
            .iter()
            .filter(|n| n.schedulable())
            .fold(berth_proto::Scalars::ZERO, |sum, n| sum.plus(&n.total.scalars()));
        self.frameworks
            .iter()
            .filter(|f| !f.removing && f.adding.is_none())
            .map(|f| FrameworkView {
                name: f.name.clone(),
                plugin: f.record.plugin.clone(),
                plugin_version: f.version,
                role: f.record.role.clone(),
                weight: f.record.weight,
                suppressed: f.record.suppressed,
                allocated: f.allocated().clone(),
                active_tasks: f.active(),
                share: f.allocated().scalars().dominant_share(&total) / f.record.weight,
                config: f.record.config.clone(),
                error: f.error.clone(),
            })
            .collect()
    }

    pub(super) fn tasks_view(&self, filter: &TaskFilter) -> Result<Vec<TaskView>, String> {
        let states = filter.states()?;
        let framework = if filter.framework.is_empty() {
            None
        } else {
            Some(
                self.frameworks
                    .id_of(&filter.framework)
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
                    || self.nodes.get(t.node).is_some_and(|n| {
                        n.agent_id == filter.node
                            || n.hostname == filter.node
                            || n.id.to_string() == filter.node
                    })
            })
            .filter_map(|((f, id), t)| {
                let spec = t.spec.unpack();
                let node = self.nodes.get(t.node);
                Some(TaskView {
                    framework: self.frameworks.get(*f)?.name.clone(),
                    id: id.clone(),
                    name: spec.name,
                    agent_id: node.map(|n| n.agent_id.clone()).unwrap_or_default(),
                    status: t.full_status(id, node.map(|n| n.hostname.clone())),
                    resources: t.resources.clone(),
                    image: spec.container.map(|c| c.image).unwrap_or_default(),
                    launched_at_ms: t.launched_at_ms,
                    usage: t.usage.filter(|_| t.status.state == TaskState::Running),
                })
            })
            .collect();
        tasks.sort_by(|a, b| {
            (&a.framework, a.launched_at_ms, &a.id).cmp(&(&b.framework, b.launched_at_ms, &b.id))
        });
        Ok(tasks)
    }

    pub(super) fn plugins_view(&self) -> Vec<PluginView> {
        self.registry
            .plugins()
            .into_iter()
            .map(|p| PluginView {
                name: p.name.clone(),
                kind: p.kind.to_string(),
                active_version: p.active().number,
                versions: p.info(),
                in_use_as_allocator: self.choices.allocator == p.name,
                frameworks: self
                    .frameworks
                    .iter()
                    .filter(|f| !f.removing && f.record.plugin == p.name)
                    .map(|f| f.name.clone())
                    .collect(),
            })
            .collect()
    }

    /// The state a `/metrics` scrape reports, in one pass.
    pub(super) fn gauges(&self) -> Gauges {
        let mut tasks: std::collections::BTreeMap<(u32, &'static str), u64> = Default::default();
        // Sampled use of running tasks, by framework and by node: (cores, MiB).
        let mut by_framework: std::collections::HashMap<u32, (f64, f64)> = Default::default();
        let mut by_node: std::collections::HashMap<u32, (f64, f64)> = Default::default();
        for ((framework, _), task) in self.tasks.iter() {
            *tasks.entry((*framework, state_name(task.status.state))).or_default() += 1;
            if let Some(u) = task.usage.filter(|_| task.status.state == TaskState::Running) {
                for sum in
                    [by_framework.entry(*framework).or_default(), by_node.entry(task.node).or_default()]
                {
                    sum.0 += f64::from(u.cpus);
                    sum.1 += f64::from(u.mem_mib);
                }
            }
        }
        Gauges {
            tasks: tasks
                .into_iter()
                .filter_map(|((f, state), n)| Some((self.frameworks.get(f)?.name.clone(), state, n)))
                .collect(),
            frameworks: self
                .frameworks_view()
                .into_iter()
                .map(|f| FrameworkGauge {
                    in_use: self
                        .frameworks
                        .id_of(&f.name)
                        .and_then(|id| by_framework.get(&id).copied())
                        .unwrap_or_default(),
                    allocated: f.allocated.scalars(),
                    name: f.name,
                    weight: f.weight,
                    share: f.share,
                    suppressed: f.suppressed,
                })
                .collect(),
            nodes: self
                .nodes
                .iter()
                .map(|n| {
                    let total = n.total.scalars();
                    NodeGauge {
                        hostname: n.hostname.clone(),
                        state: n.state.name(),
                        connected: n.connection.is_some(),
                        used: total.minus(&n.available().scalars()),
                        in_use: by_node.get(&n.id).copied().unwrap_or_default(),
                        total,
                    }
                })
                .collect(),
            store_queue: self.effects.progress().queued(),
            allocator: self.choices.allocator.clone(),
        }
    }

    pub(super) fn cycles_view(&self) -> Vec<CycleView> {
        self.cycles.recent()
    }

    /// The allocator in use.
    pub(super) fn allocator(&self) -> &str {
        &self.choices.allocator
    }

    /// Statuses of the tasks matching `filter`, for the start of a watch.
    pub(super) fn statuses(&self, filter: &TaskFilter) -> Result<Vec<(String, String, TaskStatus)>, String> {
        Ok(self
            .tasks_view(filter)?
            .into_iter()
            .filter(|t| !is_terminal(t.status.state) || filter.states.is_empty())
            .map(|t| (t.framework, t.agent_id, t.status))
            .collect())
    }
}
