//! The offer cycle: frameworks' demand, the cluster view, the allocator's grants, offers, and the
//! frameworks' decisions, each checked before it takes effect.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use super::core::Master;
use super::query::CycleView;
use super::state::Node;
use super::validate::{self, NodePolicy};
use crate::model::{ResourcesExt, unix_ms};
use crate::runtime::bindings::{
    ClusterView, Decision, DeclineFilter, Framework as ViewFramework, Grants, Node as ViewNode, Offer,
    Resources, TaskReason, TaskShape, TaskSpec, TaskState,
};

/// An offer between the grant that made it and the decision that answers it.
struct PendingOffer {
    framework: u32,
    node: u32,
    resources: Resources,
}

impl Master {
    /// Runs one cycle. Failures of plugins are contained: a failed allocator makes an empty cycle, a
    /// failed framework gets no offers this cycle.
    pub(super) fn cycle(&mut self) {
        let started = Instant::now();
        self.cycle_wanted = false;
        self.last_cycle = started;
        self.cycle_count += 1;
        let mut record = CycleView {
            number: self.cycle_count,
            at_ms: unix_ms(),
            allocator: self.allocator.clone(),
            ..CycleView::default()
        };

        let (demand, capped) = self.collect_demand(started);
        self.node_views.refresh(self.nodes.values().filter(|n| n.schedulable()));
        let nodes = std::mem::take(&mut self.node_views.nodes);
        let view = self.view(nodes, demand);
        record.nodes = view.nodes.len() as u32;
        record.frameworks = view.frameworks.len() as u32;
        let checked = self.allocate(&view, &mut record).map(|grants| check_grants(&view, &grants));
        // The nodes go back for the next cycle to update.
        self.node_views.nodes = view.nodes;
        let Some((merged, refused)) = checked else {
            record.duration_us = started.elapsed().as_micros() as u64;
            self.record_cycle(record);
            return;
        };
        record.refused_grants = refused;
        if record.refused_grants > 0 {
            tracing::warn!(target: "berth.master", allocator = %self.allocator, refused = record.refused_grants,
                "the allocator returned grants that do not fit the view");
        }

        let mut by_framework: BTreeMap<u32, Vec<(u64, PendingOffer)>> = BTreeMap::new();
        for ((framework, node), resources) in merged {
            let id = self.next_offer_id;
            self.next_offer_id += 1;
            by_framework
                .entry(framework)
                .or_default()
                .push((id, PendingOffer { framework, node, resources }));
        }
        record.offers = by_framework.values().map(|o| o.len() as u32).sum();

        for (framework, offers) in by_framework {
            let (launched, refused) = self.offer(framework, offers);
            record.launched += launched;
            record.refused_tasks += refused;
        }
        if capped && record.launched > 0 {
            // Demand was left out of this cycle and the cycle made progress: ask for the rest as soon as
            // the minimum gap allows. A cycle that launched nothing waits for the usual triggers instead,
            // so a backlog that does not fit the cluster does not spin the master.
            self.cycle_wanted = true;
        }
        record.duration_us = started.elapsed().as_micros() as u64;
        self.record_cycle(record);
    }

    /// Each callable, unsuppressed framework's demand, capped at `max_launches_per_cycle`; and whether
    /// the cap left any out.
    fn collect_demand(&mut self, now: Instant) -> (HashMap<u32, Vec<TaskShape>>, bool) {
        let ids: Vec<u32> = self
            .frameworks
            .values()
            .filter(|f| !f.record.suppressed)
            .map(|f| f.id)
            .filter(|&id| self.callable(id, now))
            .collect();
        let mut demand = HashMap::with_capacity(ids.len());
        let mut capped = false;
        for id in ids {
            if let Ok(mut shapes) = self.call_framework(id, |instance| instance.demand()) {
                capped |= cap_demand(&mut shapes, self.config.max_launches_per_cycle);
                demand.insert(id, shapes);
            }
        }
        (demand, capped)
    }

    /// Calls the allocator on the view, unless there is nothing to allocate. `None`: no grants this
    /// cycle, and the record says why if something failed.
    fn allocate(&self, view: &ClusterView, record: &mut CycleView) -> Option<Grants> {
        if view.nodes.is_empty() || view.frameworks.is_empty() {
            return None;
        }
        let Some(allocator) = self.registry.get(&self.allocator) else {
            record.error = Some(format!("no allocator plugin named `{}`", self.allocator));
            tracing::error!(target: "berth.master", allocator = %self.allocator, "the allocator plugin is missing");
            return None;
        };
        let allocate_started = Instant::now();
        // The revisions spare the allocator's runtime reading the nodes that did not change.
        match allocator.allocate_revised(view, Some(&self.node_views.revisions)) {
            Ok((version, grants)) => {
                record.allocator_version = version;
                record.allocate_us = allocate_started.elapsed().as_micros() as u64;
                record.grants = grants.len() as u32;
                Some(grants)
            }
            Err(e) => {
                record.allocator_version = allocator.active().number;
                record.error = Some(format!("allocator failed: {e}"));
                None
            }
        }
    }

    /// The allocator's input: the schedulable nodes (as `NodeViews::refresh` left them), callable
    /// frameworks and active filters.
    fn view(&self, nodes: Vec<ViewNode>, mut demand: HashMap<u32, Vec<TaskShape>>) -> ClusterView {
        let now = Instant::now();
        let frameworks = self
            .frameworks
            .values()
            .filter(|f| self.callable(f.id, now))
            .map(|f| ViewFramework {
                id: f.id,
                name: f.name.clone(),
                role: f.record.role.clone(),
                weight: f.record.weight,
                allocated: f.allocated.clone(),
                suppressed: f.record.suppressed,
                demand: demand.remove(&f.id).unwrap_or_default(),
            })
            .collect();
        let now_ms = unix_ms();
        let mut filters: Vec<DeclineFilter> = self
            .filters
            .iter()
            .filter(|&(_, &expires)| expires > now_ms)
            .filter_map(|((framework, agent), &expires)| {
                self.agents.get(agent).map(|&node| DeclineFilter {
                    framework: *framework,
                    node,
                    expires_ms: expires,
                })
            })
            .collect();
        filters.sort_by_key(|f| (f.framework, f.node));
        ClusterView { nodes, frameworks, filters, now_ms }
    }

    /// Hands one framework its offers and applies its decisions. Returns (tasks launched, tasks refused).
    fn offer(&mut self, framework: u32, offers: Vec<(u64, PendingOffer)>) -> (u32, u32) {
        let abi_offers: Vec<Offer> = offers
            .iter()
            .map(|(id, o)| {
                let node = &self.nodes[&o.node];
                Offer {
                    id: *id,
                    node: o.node,
                    hostname: node.hostname.clone(),
                    attributes: node.attributes.clone(),
                    resources: o.resources.clone(),
                }
            })
            .collect();
        let mut pending: HashMap<u64, PendingOffer> = offers.into_iter().collect();
        let decisions = match self.call_framework(framework, |instance| instance.offers(&abi_offers)) {
            Ok(decisions) => decisions,
            // The offers simply go back to the pool.
            Err(_) => return (0, 0),
        };
        let (mut launched, mut refused) = (0, 0);
        for decision in decisions {
            match decision {
                Decision::Launch(launch) => {
                    let Some(offer) = pending.remove(&launch.offer) else {
                        refused += launch.tasks.len() as u32;
                        let reason = format!("offer {} is unknown, expired, or already used", launch.offer);
                        self.refuse(framework, &launch.tasks, &reason);
                        continue;
                    };
                    debug_assert_eq!(offer.framework, framework);
                    match self.check_launch(framework, &offer, &launch.tasks) {
                        Ok(()) => {
                            launched += launch.tasks.len() as u32;
                            for task in launch.tasks {
                                self.launch_task(framework, offer.node, task);
                            }
                        }
                        Err(reason) => {
                            refused += launch.tasks.len() as u32;
                            self.refuse(
                                framework,
                                &launch.tasks,
                                &format!("launch on offer {} refused: {reason}", launch.offer),
                            );
                        }
                    }
                }
                Decision::Decline(decline) => {
                    if let Some(offer) = pending.remove(&decline.offer) {
                        self.add_filter(framework, offer.node, decline.refuse_seconds);
                    }
                }
            }
        }
        // Offers the framework neither used nor declined are declined with the default filter.
        for (_, offer) in pending {
            self.add_filter(framework, offer.node, self.config.default_refuse_seconds);
        }
        (launched, refused)
    }

    fn check_launch(&self, framework: u32, offer: &PendingOffer, tasks: &[TaskSpec]) -> Result<(), String> {
        let node = self.nodes.get(&offer.node).ok_or("the offer's node is gone")?;
        if !node.schedulable() {
            return Err(format!("node {} is no longer available (the offer was rescinded)", node.hostname));
        }
        let policy =
            NodePolicy { allow_privileged: node.allow_privileged, allow_host_mounts: node.allow_host_mounts };
        validate::launch(&offer.resources, &policy, tasks, |id| self.tasks.contains(framework, id))
    }

    /// Tells the framework (through `status`) that these tasks were not launched, and why.
    fn refuse(&mut self, framework: u32, tasks: &[TaskSpec], reason: &str) {
        let name = self.frameworks.get(&framework).map(|f| f.name.clone()).unwrap_or_default();
        tracing::warn!(target: "berth.master", framework = %name, tasks = tasks.len(), %reason, "launch refused");
        let statuses: Vec<_> = tasks
            .iter()
            .map(|t| {
                self.blank_status(
                    &t.id,
                    TaskState::Error,
                    Some(TaskReason::InvalidLaunch),
                    reason.to_string(),
                )
            })
            .collect();
        if let Some(f) = self.frameworks.get_mut(&framework) {
            f.pending.extend(statuses);
        }
    }

    /// Installs a decline filter: no offers of this node to this framework for `seconds`.
    fn add_filter(&mut self, framework: u32, node: u32, seconds: u32) {
        if seconds == 0 {
            return;
        }
        let (Some(f), Some(n)) = (self.frameworks.get(&framework), self.nodes.get(&node)) else { return };
        let expires = unix_ms() + u64::from(seconds) * 1000;
        let key = (framework, n.agent_id.clone());
        if self.filters.get(&key).is_some_and(|&e| e >= expires) {
            return;
        }
        self.batch.filter(&f.name, &n.agent_id, Some(expires));
        self.filters.insert(key, expires);
    }
}

/// The nodes of the allocator's view as the last cycle left them, each with the revision of the node it
/// was made from (`Node::revision`). A cycle remakes only the views whose node changed since: at 10,000
/// nodes, copying every node's hostname, resources and attributes each cycle was 10,000 sets of
/// allocations and frees, for the few hundred nodes a cycle's launches and task ends touch.
#[derive(Default)]
pub(super) struct NodeViews {
    nodes: Vec<ViewNode>,
    /// `revisions[i]` is the revision `nodes[i]` was made at; the allocator's runtime reads them too.
    revisions: Vec<u64>,
}

impl NodeViews {
    /// Brings the views up to date with `current`, the schedulable nodes in id order: a node whose view
    /// has its revision keeps it, any other gets a new one, and views of nodes not in `current` are
    /// dropped. Returns how many views were made or remade.
    fn refresh<'a>(&mut self, current: impl Iterator<Item = &'a Node> + Clone) -> usize {
        let mut made = 0;
        if current.clone().map(|n| n.id).eq(self.nodes.iter().map(|v| v.id)) {
            // The same nodes as last cycle, the usual case: update the changed ones in place.
            for ((node, view), revision) in current.zip(&mut self.nodes).zip(&mut self.revisions) {
                if *revision != node.revision {
                    update_view(view, node);
                    *revision = node.revision;
                    made += 1;
                }
            }
            return made;
        }
        // Nodes came or went: rebuild the list, moving the views that are still current.
        let (nodes, revisions) = (std::mem::take(&mut self.nodes), std::mem::take(&mut self.revisions));
        let mut old = nodes.into_iter().zip(revisions).peekable();
        for node in current {
            while old.next_if(|(view, _)| view.id < node.id).is_some() {}
            let view = match old.next_if(|(view, revision)| view.id == node.id && *revision == node.revision)
            {
                Some((view, _)) => view,
                None => {
                    made += 1;
                    let mut view = ViewNode {
                        id: node.id,
                        hostname: String::new(),
                        total: Resources::zero(),
                        available: Resources::zero(),
                        attributes: Vec::new(),
                    };
                    update_view(&mut view, node);
                    view
                }
            };
            self.nodes.push(view);
            self.revisions.push(node.revision);
        }
        made
    }
}

/// Makes `view` show `node`, reusing its allocations where it can.
fn update_view(view: &mut ViewNode, node: &Node) {
    view.id = node.id;
    view.hostname.clone_from(&node.hostname);
    view.total.clone_from(&node.total);
    view.available = node.available();
    view.attributes.clone_from(&node.attributes);
}

/// Keeps the first `cap` tasks of a framework's demand, in the framework's order: the allocator sizes
/// its grants to the demand, so this bounds what one cycle launches for the framework. Returns whether
/// any demand was left out.
fn cap_demand(shapes: &mut Vec<TaskShape>, cap: u32) -> bool {
    let mut left = cap;
    let mut cut = false;
    shapes.retain_mut(|shape| {
        cut |= shape.count > left;
        shape.count = shape.count.min(left);
        left -= shape.count;
        shape.count > 0
    });
    cut
}

/// Checks each grant against the view and merges the grants into one offer per framework and node. A
/// grant is refused (and counted) if its framework is unknown or suppressed, if the framework declined the
/// node, if it is empty, if its node is not in the view, or if it asks for more than the node has left after
/// the grants before it.
///
/// Only the nodes the grants name are looked at: their ids are found in the view's nodes (sorted by id,
/// as `Master::view` makes them) and what they have left is copied when their first grant comes. A copy of
/// every node's resources per cycle was 10,000 clones and hash inserts at 10,000 nodes, for the few
/// hundred nodes a cycle grants on.
fn check_grants(view: &ClusterView, grants: &Grants) -> (BTreeMap<(u32, u32), Resources>, u32) {
    debug_assert!(view.nodes.is_sorted_by_key(|n| n.id), "the view's nodes are sorted by id");
    let eligible: HashMap<u32, bool> = view.frameworks.iter().map(|f| (f.id, !f.suppressed)).collect();
    let filtered: HashSet<(u32, u32)> = view.filters.iter().map(|f| (f.framework, f.node)).collect();
    let mut free: HashMap<u32, Resources> = HashMap::new();
    let mut merged: BTreeMap<(u32, u32), Resources> = BTreeMap::new();
    let mut refused = 0;
    for grant in grants.iter() {
        let refusal = if !eligible.get(&grant.framework).copied().unwrap_or(false) {
            Some("unknown or suppressed framework")
        } else if filtered.contains(&(grant.framework, grant.node)) {
            Some("the framework declined this node")
        } else if grant.scalars.is_zero() && grant.ports.is_empty() {
            Some("an empty grant")
        } else {
            // What the node has left, copied from the view at its first grant; `None`: not in the view.
            let available = match free.entry(grant.node) {
                Entry::Occupied(entry) => Some(entry.into_mut()),
                Entry::Vacant(entry) => view
                    .nodes
                    .binary_search_by_key(&grant.node, |n| n.id)
                    .ok()
                    .map(|at| entry.insert(view.nodes[at].available.clone())),
            };
            match available {
                Some(available) if available.contains_parts(&grant.scalars, grant.ports) => {
                    available.remove_parts(&grant.scalars, grant.ports);
                    None
                }
                Some(_) => Some("more than the node has available"),
                None => Some("a node not in the view"),
            }
        };
        if let Some(reason) = refusal {
            refused += 1;
            tracing::debug!(target: "berth.master", framework = grant.framework, node = grant.node, reason,
                "grant refused");
            continue;
        }
        merged
            .entry((grant.framework, grant.node))
            .or_insert_with(Resources::zero)
            .add_parts(&grant.scalars, grant.ports);
    }
    (merged, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::{Attribute, Grant, PortRange};

    fn shape(milli_cpus: u64, count: u32) -> TaskShape {
        TaskShape { milli_cpus, mem_mib: 32, disk_mib: 0, gpus: 0, ports: 1, count }
    }

    fn cpus(milli_cpus: u64) -> Resources {
        Resources { milli_cpus, mem_mib: 0, disk_mib: 0, gpus: 0, ports: vec![] }
    }

    fn grant(framework: u32, node: u32, resources: Resources) -> Grant {
        Grant { framework, node, resources }
    }

    #[test]
    fn grants_are_checked_against_what_each_node_has_left_and_merged() {
        let node = |id| ViewNode {
            id,
            hostname: format!("node-{id}"),
            total: cpus(1_000),
            available: Resources { ports: vec![PortRange { begin: 31000, end: 31009 }], ..cpus(1_000) },
            attributes: vec![],
        };
        let with_ports = |milli_cpus, ports: &[(u16, u16)]| Resources {
            ports: ports.iter().map(|&(begin, end)| PortRange { begin, end }).collect(),
            ..cpus(milli_cpus)
        };
        let framework = |id, suppressed| ViewFramework {
            id,
            name: format!("f{id}"),
            role: "*".into(),
            weight: 1.0,
            allocated: cpus(0),
            suppressed,
            demand: vec![],
        };
        let view = ClusterView {
            nodes: vec![node(1), node(2), node(4)],
            frameworks: vec![framework(10, false), framework(11, true)],
            filters: vec![DeclineFilter { framework: 10, node: 2, expires_ms: u64::MAX }],
            now_ms: 0,
        };
        let grants = vec![
            grant(10, 1, with_ports(600, &[(31000, 31001)])),
            grant(10, 1, cpus(600)),                        // node 1 has 400 left
            grant(10, 1, with_ports(0, &[(31001, 31001)])), // taken already
            grant(10, 1, with_ports(400, &[(31002, 31002), (31005, 31005)])),
            grant(10, 4, cpus(1_000)),
            grant(11, 1, cpus(1)), // suppressed
            grant(12, 1, cpus(1)), // unknown framework
            grant(10, 2, cpus(1)), // declined
            grant(10, 3, cpus(1)), // unknown node
            grant(10, 4, cpus(0)), // empty
            grant(10, 4, cpus(1)), // node 4 is full
        ];
        let (merged, refused) = check_grants(&view, &Grants::from_list(&grants));
        assert_eq!(refused, 8);
        assert_eq!(
            merged.into_iter().collect::<Vec<_>>(),
            vec![((10, 1), with_ports(1_000, &[(31000, 31002), (31005, 31005)])), ((10, 4), cpus(1_000))]
        );
    }

    fn node(id: u32, revision: u64, used: u64) -> Node {
        Node {
            hostname: format!("node-{id}"),
            total: cpus(1_000),
            attributes: vec![Attribute { name: "rack".into(), value: format!("r{id}") }],
            revision,
            used: cpus(used),
            ..Node::blank(id, format!("agent-{id}"))
        }
    }

    /// What a view made from scratch would hold: (id, hostname, available cpus, attributes).
    fn shown(views: &NodeViews) -> Vec<(u32, String, u64, Vec<Attribute>)> {
        views
            .nodes
            .iter()
            .map(|v| (v.id, v.hostname.clone(), v.available.milli_cpus, v.attributes.clone()))
            .collect()
    }

    fn expected(nodes: &[Node]) -> Vec<(u32, String, u64, Vec<Attribute>)> {
        nodes
            .iter()
            .map(|n| (n.id, n.hostname.clone(), n.available().milli_cpus, n.attributes.clone()))
            .collect()
    }

    #[test]
    fn node_views_are_remade_only_for_nodes_whose_revision_moved() {
        let mut views = NodeViews::default();
        let mut nodes = vec![node(1, 1, 0), node(2, 1, 0), node(3, 1, 0)];
        assert_eq!(views.refresh(nodes.iter()), 3, "the first cycle makes every view");
        assert_eq!(shown(&views), expected(&nodes));
        assert_eq!(views.refresh(nodes.iter()), 0, "nothing changed");

        // A launch on node 2: its revision moves with what it has left.
        nodes[1] = node(2, 2, 300);
        assert_eq!(views.refresh(nodes.iter()), 1);
        assert_eq!(shown(&views), expected(&nodes));
        assert_eq!(views.revisions, vec![1, 2, 1]);

        // Node 1 leaves (unschedulable), node 5 joins, node 3 re-registers with new attributes.
        let mut changed = node(3, 2, 0);
        changed.attributes = vec![Attribute { name: "zone".into(), value: "z".into() }];
        nodes = vec![node(2, 2, 300), changed, node(5, 1, 0)];
        assert_eq!(views.refresh(nodes.iter()), 2, "node 2 keeps its view; 3 and 5 get new ones");
        assert_eq!(shown(&views), expected(&nodes));
        assert_eq!(views.revisions, vec![2, 2, 1]);

        // A change of membership and of a node's revision in the same cycle.
        nodes = vec![node(2, 3, 100), node(5, 1, 0)];
        assert_eq!(views.refresh(nodes.iter()), 1);
        assert_eq!(shown(&views), expected(&nodes));

        assert_eq!(views.refresh(std::iter::empty()), 0);
        assert!(views.nodes.is_empty() && views.revisions.is_empty());
    }

    #[test]
    fn demand_is_capped_in_the_frameworks_order() {
        let mut shapes = vec![shape(100, 1500), shape(200, 0), shape(300, 800), shape(400, 5)];
        assert!(cap_demand(&mut shapes, 2_000));
        assert_eq!(shapes, vec![shape(100, 1500), shape(300, 500)]);

        let mut small = vec![shape(100, 3), shape(200, 4)];
        assert!(!cap_demand(&mut small, 2_000));
        assert_eq!(small, vec![shape(100, 3), shape(200, 4)], "demand under the cap is left as it is");
    }
}
