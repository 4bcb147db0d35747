//! The offer cycle: frameworks' demand, the cluster view, the allocator's grants, offers, and the
//! frameworks' decisions, each checked before it takes effect.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use super::core::Master;
use super::query::CycleView;
use super::validate::{self, NodePolicy};
use crate::model::{ResourcesExt, unix_ms};
use crate::runtime::bindings::{
    ClusterView, Decision, DeclineFilter, Framework as ViewFramework, Grant, Node as ViewNode, Offer,
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
        let (view, revisions) = self.view(demand);
        record.nodes = view.nodes.len() as u32;
        record.frameworks = view.frameworks.len() as u32;
        if view.nodes.is_empty() || view.frameworks.is_empty() {
            record.duration_us = started.elapsed().as_micros() as u64;
            self.record_cycle(record);
            return;
        }

        let Some(allocator) = self.registry.get(&self.allocator) else {
            record.error = Some(format!("no allocator plugin named `{}`", self.allocator));
            tracing::error!(target: "berth.master", allocator = %self.allocator, "the allocator plugin is missing");
            self.record_cycle(record);
            return;
        };
        let allocate_started = Instant::now();
        let grants = match allocator.allocate_revised(&view, Some(&revisions)) {
            Ok((version, grants)) => {
                record.allocator_version = version;
                grants
            }
            Err(e) => {
                record.allocator_version = allocator.active().number;
                record.error = Some(format!("allocator failed: {e}"));
                record.duration_us = started.elapsed().as_micros() as u64;
                self.record_cycle(record);
                return;
            }
        };
        record.allocate_us = allocate_started.elapsed().as_micros() as u64;
        record.grants = grants.len() as u32;

        let (merged, refused) = check_grants(&view, grants);
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

    /// The allocator's input: schedulable nodes, callable frameworks, active filters; and each node's
    /// revision, which spares the allocator's runtime reading the nodes that did not change.
    fn view(&self, mut demand: HashMap<u32, Vec<TaskShape>>) -> (ClusterView, Vec<u64>) {
        let now = Instant::now();
        let (nodes, revisions) = self
            .nodes
            .values()
            .filter(|n| n.schedulable())
            .map(|n| {
                let node = ViewNode {
                    id: n.id,
                    hostname: n.hostname.clone(),
                    total: n.total.clone(),
                    available: n.available(),
                    attributes: n.attributes.clone(),
                };
                (node, n.revision)
            })
            .unzip();
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
        (ClusterView { nodes, frameworks, filters, now_ms }, revisions)
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
        validate::launch(&offer.resources, &policy, tasks, |id| {
            self.tasks.contains_key(&(framework, id.to_string()))
        })
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
fn check_grants(view: &ClusterView, grants: Vec<Grant>) -> (BTreeMap<(u32, u32), Resources>, u32) {
    debug_assert!(view.nodes.is_sorted_by_key(|n| n.id), "the view's nodes are sorted by id");
    let eligible: HashMap<u32, bool> = view.frameworks.iter().map(|f| (f.id, !f.suppressed)).collect();
    let filtered: HashSet<(u32, u32)> = view.filters.iter().map(|f| (f.framework, f.node)).collect();
    let mut free: HashMap<u32, Resources> = HashMap::new();
    let mut merged: BTreeMap<(u32, u32), Resources> = BTreeMap::new();
    let mut refused = 0;
    for grant in grants {
        let refusal = if !eligible.get(&grant.framework).copied().unwrap_or(false) {
            Some("unknown or suppressed framework")
        } else if filtered.contains(&(grant.framework, grant.node)) {
            Some("the framework declined this node")
        } else if grant.resources.is_empty() {
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
                Some(available) if available.contains(&grant.resources) => {
                    available.remove(&grant.resources);
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
        merged.entry((grant.framework, grant.node)).or_insert_with(Resources::zero).add(&grant.resources);
    }
    (merged, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            available: cpus(1_000),
            attributes: vec![],
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
            grant(10, 1, cpus(600)),
            grant(10, 1, cpus(600)), // node 1 has 400 left
            grant(10, 1, cpus(400)),
            grant(10, 4, cpus(1_000)),
            grant(11, 1, cpus(1)), // suppressed
            grant(12, 1, cpus(1)), // unknown framework
            grant(10, 2, cpus(1)), // declined
            grant(10, 3, cpus(1)), // unknown node
            grant(10, 4, cpus(0)), // empty
            grant(10, 4, cpus(1)), // node 4 is full
        ];
        let (merged, refused) = check_grants(&view, grants);
        assert_eq!(refused, 7);
        assert_eq!(
            merged.into_iter().collect::<Vec<_>>(),
            vec![((10, 1), cpus(1_000)), ((10, 4), cpus(1_000))]
        );
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
