//! The offer cycle, in stages that never make the master thread wait:
//!
//! 1. **Demand.** Frameworks that take part are asked for their demand; the cycle waits for their answers
//!    until `demand_wait`, then goes on with the last demand known of any that has not answered.
//! 2. **Allocation.** The allocator is called on a worker with the cluster view: the schedulable nodes (what
//!    is neither used nor on offer), the frameworks with what they hold and have on offer and their demand,
//!    and the decline filters.
//! 3. **Offers.** Its grants are checked against the cluster as it is when they come back and merged into one
//!    offer per framework and node; each holds its resources until the framework answers (or it expires).
//!    A framework's answer is checked launch by launch before anything starts.
//!
//! Failures of plugins are contained: a failed allocator makes an empty cycle, a failed framework's offers go
//! back to the pool.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::calls::Job;
use super::core::Master;
use super::frameworks::Slot;
use super::history::Stage;
use super::offers::Outstanding;
use super::tasks::blank_status;
use super::types::FastSet;
use super::validate::{self, NodePolicy};
use super::views::CycleView;
use crate::model::{ResourcesExt, unix_ms};
use crate::runtime::bindings::{
    ClusterView, Decision, DeclineFilter, Framework as ViewFramework, Grants, Resources, TaskReason,
    TaskShape, TaskSpec, TaskState,
};
use crate::runtime::{CallError, Version};

impl Master {
    /// Starts a cycle when one is due, and moves the current one along.
    pub(super) fn advance_cycle(&mut self, now: Instant) {
        match &self.cycles.stage {
            Stage::Idle => {
                let since = now.duration_since(self.cycles.last_start);
                // A framework deciding on its offers has its demand left out of a cycle, which would then
                // give the others what its share calls for (a node joining meanwhile went whole to the
                // others). So a wanted cycle waits for those answers, up to the cycle interval.
                let deciding =
                    self.frameworks.iter().any(|f| !matches!(f.slot, Slot::Down) && self.offers.holds(f.id));
                if (self.cycles.wanted && since >= self.config.cycle_min_gap && !deciding)
                    || since >= self.config.cycle_interval
                {
                    self.begin_cycle(now);
                }
            }
            Stage::Demand { waiting, until } => {
                if waiting.is_empty() || now >= *until {
                    self.allocate(now);
                }
            }
            Stage::Allocating => {}
        }
    }

    /// Stage 1: asks every framework that takes part and holds no offers for its demand.
    fn begin_cycle(&mut self, now: Instant) {
        let _span = tracing::debug_span!("berth.master.cycle", number = self.cycles.number + 1).entered();
        self.cycles.number += 1;
        self.cycles.wanted = false;
        self.cycles.last_start = now;
        self.cycles.current = CycleView {
            number: self.cycles.number,
            at_ms: unix_ms(),
            allocator: self.choices.allocator.clone(),
            ..CycleView::default()
        };
        let mut waiting = FastSet::default();
        for f in self.frameworks.iter_mut() {
            if f.participates(now) && !f.record.suppressed && !self.offers.holds(f.id) {
                f.wants_demand = true;
                waiting.insert(f.id);
            }
        }
        self.cycles.stage = Stage::Demand { waiting, until: now + self.config.demand_wait };
        self.advance_cycle(now);
    }

    /// A framework's answer to `demand`, capped at `max_launches_per_cycle`.
    pub(super) fn demand_answered(&mut self, id: u32, mut shapes: Vec<TaskShape>) {
        let capped = cap_demand(&mut shapes, self.config.max_launches_per_cycle);
        if let Some(f) = self.frameworks.get_mut(id) {
            f.demand = shapes;
            f.demand_capped = capped;
        }
        if let Stage::Demand { waiting, .. } = &mut self.cycles.stage {
            waiting.remove(&id);
        }
    }

    /// A framework will not answer `demand` this cycle (its call failed, it went away).
    pub(super) fn demand_missing(&mut self, id: u32) {
        if let Stage::Demand { waiting, .. } = &mut self.cycles.stage {
            waiting.remove(&id);
        }
    }

    /// Stage 2: hands the allocator the view, unless there is nothing to allocate.
    fn allocate(&mut self, now: Instant) {
        let current = &mut self.cycles.current;
        let Some(allocator) = self.registry.get(&self.choices.allocator) else {
            current.error = Some(format!("no allocator plugin named `{}`", self.choices.allocator));
            tracing::error!(target: "berth.master", allocator = %self.choices.allocator, "the allocator plugin is missing");
            self.end_cycle(now);
            return;
        };
        let (nodes, revisions) = self.nodes.take_views();
        let frameworks: Vec<ViewFramework> = self
            .frameworks
            .iter()
            .filter(|f| f.participates(now))
            .map(|f| {
                let mut allocated = f.allocated().clone();
                let holding = match self.offers.offered_to(f.id) {
                    Some(offered) => {
                        allocated.add(offered);
                        true
                    }
                    None => false,
                };
                ViewFramework {
                    id: f.id,
                    name: f.name.clone(),
                    role: f.record.role.clone(),
                    weight: f.record.weight,
                    allocated,
                    suppressed: f.record.suppressed,
                    // A framework still deciding on offers asks for nothing more until it answers.
                    demand: if holding || f.record.suppressed { Vec::new() } else { f.demand.clone() },
                }
            })
            .collect();
        let now_ms = unix_ms();
        let mut filters: Vec<DeclineFilter> = self
            .offers
            .filters(now_ms)
            .filter_map(|(framework, agent, expires_ms)| {
                self.nodes.by_agent(agent).map(|node| DeclineFilter { framework, node, expires_ms })
            })
            .collect();
        filters.sort_by_key(|f| (f.framework, f.node));
        let view = ClusterView { nodes, frameworks, filters, now_ms };
        current.nodes = view.nodes.len() as u32;
        current.frameworks = view.frameworks.len() as u32;
        if view.nodes.is_empty() || view.frameworks.is_empty() {
            self.nodes.return_views(view.nodes, revisions);
            self.end_cycle(now);
            return;
        }
        let version = allocator.active();
        current.allocator_version = version.number;
        self.calls.run(Job::Allocate { version, view, revisions, cycle: self.cycles.number });
        self.cycles.stage = Stage::Allocating;
    }

    /// Stage 3: the allocator answered. Its grants become offers, queued for their frameworks.
    pub(super) fn allocated(
        &mut self,
        version: &std::sync::Arc<Version>,
        view: ClusterView,
        revisions: Vec<u64>,
        result: Result<Grants, CallError>,
        took: Duration,
    ) {
        let frameworks = view.frameworks.len();
        self.nodes.return_views(view.nodes, revisions);
        let now = Instant::now();
        self.cycles.current.allocate_us = took.as_micros() as u64;
        let grants = match result {
            Ok(grants) => grants,
            Err(e) => {
                self.cycles.current.error = Some(format!("allocator failed: {e}"));
                self.plugin_failed(version, &e);
                self.end_cycle(now);
                return;
            }
        };
        self.plugin_succeeded(version);
        self.cycles.current.grants = grants.len() as u32;
        let (merged, refused) = self.check_grants(&grants, now);
        self.cycles.current.refused_grants = refused;
        if refused > 0 {
            tracing::warn!(target: "berth.master", allocator = %self.choices.allocator, refused,
                "the allocator returned grants that do not fit the cluster");
        }
        let expires = now + self.config.offer_timeout;
        for ((framework, node), resources) in merged {
            let Some(n) = self.nodes.get(node) else { continue };
            let (hostname, attributes) = (n.hostname.clone(), n.attributes.clone());
            self.nodes.offer(node, &resources);
            let offer = Outstanding { framework, node, resources, cycle: self.cycles.number, expires };
            self.offers.make(offer, hostname, attributes);
            self.cycles.current.offers += 1;
        }
        tracing::debug!(target: "berth.master", cycle = self.cycles.number, frameworks, grants = grants.len(),
            offers = self.cycles.current.offers, "allocated");
        self.end_cycle(now);
    }

    fn end_cycle(&mut self, now: Instant) {
        self.cycles.current.duration_us = now.duration_since(self.cycles.last_start).as_micros() as u64;
        self.cycles.record();
        self.cycles.stage = Stage::Idle;
    }

    /// Checks the grants against the cluster as it is now (see [`check_grants`]).
    fn check_grants(&self, grants: &Grants, now: Instant) -> (BTreeMap<(u32, u32), Resources>, u32) {
        let eligible: HashMap<u32, bool> =
            self.frameworks.iter().map(|f| (f.id, f.participates(now) && !f.record.suppressed)).collect();
        let filtered: HashSet<(u32, u32)> = self
            .offers
            .filters(unix_ms())
            .filter_map(|(framework, agent, _)| self.nodes.by_agent(agent).map(|node| (framework, node)))
            .collect();
        check_grants(
            grants,
            |f| eligible.get(&f).copied().unwrap_or(false),
            &filtered,
            |node| self.nodes.get(node).filter(|n| n.schedulable()).map(|n| n.available()),
        )
    }

    /// A framework answered its offers: each launch is checked and started, or refused with a status
    /// naming why; declined offers install filters; offers neither used nor declined are declined with the
    /// default filter.
    pub(super) fn offers_answered(&mut self, framework: u32, sent: Vec<u64>, decisions: Vec<Decision>) {
        let mut pending: HashSet<u64> = sent.into_iter().collect();
        let (mut launched, mut refused) = (HashMap::<u64, u32>::new(), HashMap::<u64, u32>::new());
        for decision in decisions {
            match decision {
                Decision::Launch(launch) => {
                    pending.remove(&launch.offer);
                    let Some(offer) = self.offers.answer(launch.offer).filter(|o| o.framework == framework)
                    else {
                        let reason = format!("offer {} is unknown, expired, or already used", launch.offer);
                        self.refuse(framework, &launch.tasks, &reason);
                        continue;
                    };
                    self.nodes.unoffer(offer.node, &offer.resources);
                    // Tasks that are wrong on their own are refused one by one; the rest launch together.
                    let (tasks, wrong) = self.split_launch(framework, &offer, launch.tasks);
                    for (task, reason) in wrong {
                        *refused.entry(offer.cycle).or_default() += 1;
                        let reason = format!("launch on offer {} refused: {reason}", launch.offer);
                        self.refuse(framework, std::slice::from_ref(&task), &reason);
                    }
                    if tasks.is_empty() {
                        continue;
                    }
                    match self.check_launch(framework, &offer, &tasks) {
                        Ok(()) => {
                            *launched.entry(offer.cycle).or_default() += tasks.len() as u32;
                            for task in tasks {
                                self.launch_task(framework, offer.node, task);
                            }
                        }
                        Err(reason) => {
                            *refused.entry(offer.cycle).or_default() += tasks.len() as u32;
                            let reason = format!("launch on offer {} refused: {reason}", launch.offer);
                            self.refuse(framework, &tasks, &reason);
                        }
                    }
                }
                Decision::Decline(decline) => {
                    pending.remove(&decline.offer);
                    if let Some(offer) =
                        self.offers.answer(decline.offer).filter(|o| o.framework == framework)
                    {
                        self.nodes.unoffer(offer.node, &offer.resources);
                        self.metrics.declines.inc();
                        self.add_filter(framework, offer.node, decline.refuse_seconds);
                    }
                }
            }
        }
        // Offers the framework neither used nor declined are declined with the default filter.
        for id in pending {
            if let Some(offer) = self.offers.answer(id) {
                self.nodes.unoffer(offer.node, &offer.resources);
                self.metrics.declines.inc();
                self.add_filter(framework, offer.node, self.config.default_refuse_seconds);
            }
        }
        let any_launched = launched.values().any(|&n| n > 0);
        for (cycle, n) in launched {
            self.cycles.update(cycle, |v| v.launched += n);
        }
        for (cycle, n) in refused {
            self.cycles.update(cycle, |v| v.refused_tasks += n);
        }
        if any_launched && self.frameworks.get(framework).is_some_and(|f| f.demand_capped) {
            // Demand was left out of the cycle and the cycle made progress: ask for the rest as soon as the
            // minimum gap allows. A cycle that launched nothing waits for the usual triggers instead, so a
            // backlog that does not fit the cluster does not spin the master.
            self.cycles.wanted = true;
        }
    }

    /// Offers sent to a framework whose call failed go back to the pool, unfiltered.
    pub(super) fn offers_returned(&mut self, sent: Vec<u64>) {
        for id in sent {
            if let Some(offer) = self.offers.answer(id) {
                self.nodes.unoffer(offer.node, &offer.resources);
            }
        }
        self.cycles.wanted = true;
    }

    /// Rescinds offers that went unanswered past the offer timeout.
    pub(super) fn expire_offers(&mut self, now: Instant) {
        let expired = self.offers.rescind(|_, o| o.expires <= now);
        if !expired.is_empty() {
            tracing::warn!(target: "berth.master", offers = expired.len(), timeout = ?self.config.offer_timeout,
                "offers went unanswered past the offer timeout; rescinded");
            for (_, offer) in expired {
                self.nodes.unoffer(offer.node, &offer.resources);
            }
            self.cycles.wanted = true;
        }
    }

    /// Rescinds the offers on a node that is going away.
    pub(super) fn rescind_node(&mut self, node: u32, why: &str) {
        let gone = self.offers.rescind(|_, o| o.node == node);
        if !gone.is_empty() {
            tracing::debug!(target: "berth.master", node, offers = gone.len(), why, "offers rescinded");
            for (_, offer) in gone {
                self.nodes.unoffer(offer.node, &offer.resources);
            }
        }
    }

    fn policy(&self, offer: &Outstanding) -> Option<NodePolicy> {
        let node = self.nodes.get(offer.node)?;
        Some(NodePolicy {
            allow_privileged: node.allow_privileged,
            allow_host_mounts: node.allow_host_mounts,
            allow_host_network: node.allow_host_network,
        })
    }

    /// Splits a launch into the tasks that pass [`validate::task`] and those that do not, with why.
    fn split_launch(
        &self,
        framework: u32,
        offer: &Outstanding,
        tasks: Vec<TaskSpec>,
    ) -> (Vec<TaskSpec>, Vec<(TaskSpec, String)>) {
        let Some(policy) = self.policy(offer) else { return (tasks, Vec::new()) };
        let mut good = Vec::with_capacity(tasks.len());
        let mut wrong = Vec::new();
        for task in tasks {
            match validate::task(&task, &policy, |id| self.tasks.contains(framework, id)) {
                Ok(()) => good.push(task),
                Err(reason) => wrong.push((task, reason)),
            }
        }
        (good, wrong)
    }

    fn check_launch(&self, framework: u32, offer: &Outstanding, tasks: &[TaskSpec]) -> Result<(), String> {
        let node = self.nodes.get(offer.node).ok_or("the offer's node is gone")?;
        if !node.schedulable() {
            return Err(format!("node {} is no longer available (the offer was rescinded)", node.hostname));
        }
        let policy = self.policy(offer).ok_or("the offer's node is gone")?;
        validate::launch(&offer.resources, &policy, tasks, |id| self.tasks.contains(framework, id))
    }

    /// Tells the framework (through `status`) that these tasks were not launched, and why.
    fn refuse(&mut self, framework: u32, tasks: &[TaskSpec], reason: &str) {
        let Some(f) = self.frameworks.get_mut(framework) else { return };
        tracing::warn!(target: "berth.master", framework = %f.name, tasks = tasks.len(), %reason, "launch refused");
        for t in tasks {
            f.pending.push(blank_status(
                &t.id,
                TaskState::Error,
                Some(TaskReason::InvalidLaunch),
                reason.to_string(),
            ));
        }
    }

    /// Installs a decline filter: no offers of this node to this framework for `seconds`.
    fn add_filter(&mut self, framework: u32, node: u32, seconds: u32) {
        if seconds == 0 {
            return;
        }
        let (Some(f), Some(n)) = (self.frameworks.get(framework), self.nodes.get(node)) else { return };
        let expires = unix_ms() + u64::from(seconds) * 1000;
        if self.offers.filter(framework, &n.agent_id, expires) {
            self.effects.batch.filter(&f.name, &n.agent_id, Some(expires));
        }
    }

    /// Drops expired decline filters.
    pub(super) fn expire_filters(&mut self) {
        let now_ms = unix_ms();
        let expired = self.offers.clear_filters(|_, _, expires| expires <= now_ms);
        for (framework, agent) in expired {
            if let Some(f) = self.frameworks.get(framework) {
                self.effects.batch.filter(&f.name, &agent, None);
            }
            self.cycles.wanted = true;
        }
    }
}

/// Checks each grant and merges the grants into one offer per framework and node. A grant is refused (and
/// counted) if its framework is not `eligible` (it does not take part in cycles now, or is suppressed), if
/// the framework declined the node (`filtered`), if it is empty, if its node is not schedulable
/// (`available` answers `None`), or if it asks for more than the node has left after the grants before it.
///
/// Only the nodes the grants name are looked at: what they have left is asked for at their first grant.
fn check_grants(
    grants: &Grants,
    eligible: impl Fn(u32) -> bool,
    filtered: &HashSet<(u32, u32)>,
    available: impl Fn(u32) -> Option<Resources>,
) -> (BTreeMap<(u32, u32), Resources>, u32) {
    let mut free: HashMap<u32, Option<Resources>> = HashMap::new();
    let mut merged: BTreeMap<(u32, u32), Resources> = BTreeMap::new();
    let mut refused = 0;
    for grant in grants.iter() {
        let refusal = if !eligible(grant.framework) {
            Some("unknown or suppressed framework")
        } else if filtered.contains(&(grant.framework, grant.node)) {
            Some("the framework declined this node")
        } else if grant.scalars.is_zero() && grant.ports.is_empty() {
            Some("an empty grant")
        } else {
            let left = match free.entry(grant.node) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => entry.insert(available(grant.node)),
            };
            match left {
                Some(left) if left.contains_parts(&grant.scalars, grant.ports) => {
                    left.remove_parts(&grant.scalars, grant.ports);
                    None
                }
                Some(_) => Some("more than the node has available"),
                None => Some("a node that is not schedulable"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::{Grant, PortRange};

    fn cpus(milli_cpus: u64) -> Resources {
        Resources { milli_cpus, mem_mib: 0, disk_mib: 0, gpus: 0, ports: vec![] }
    }

    fn grant(framework: u32, node: u32, resources: Resources) -> Grant {
        Grant { framework, node, resources }
    }

    #[test]
    fn grants_are_checked_against_what_each_node_has_left_and_merged() {
        let with_ports = |milli_cpus, ports: &[(u16, u16)]| Resources {
            ports: ports.iter().map(|&(begin, end)| PortRange { begin, end }).collect(),
            ..cpus(milli_cpus)
        };
        let available = |node: u32| {
            [1, 2, 4]
                .contains(&node)
                .then(|| Resources { ports: vec![PortRange { begin: 31000, end: 31009 }], ..cpus(1_000) })
        };
        let filtered: HashSet<(u32, u32)> = [(10, 2)].into();
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
        let (merged, refused) = check_grants(&Grants::from_list(&grants), |f| f == 10, &filtered, available);
        assert_eq!(refused, 8);
        assert_eq!(
            merged.into_iter().collect::<Vec<_>>(),
            vec![((10, 1), with_ports(1_000, &[(31000, 31002), (31005, 31005)])), ((10, 4), cpus(1_000))]
        );
    }

    fn shape(milli_cpus: u64, count: u32) -> TaskShape {
        TaskShape { milli_cpus, mem_mib: 32, disk_mib: 0, gpus: 0, ports: 1, count }
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
