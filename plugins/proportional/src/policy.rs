//! Weighted dominant-resource fairness (DRF) with progressive filling, as a pure function.
//!
//! A framework's weighted dominant share is the largest fraction it holds of any one resource in the
//! cluster, divided by its weight. The policy runs in two phases:
//!
//! 1. **Demand.** Repeatedly take the framework with the lowest weighted dominant share that still has
//!    unplaced demand, and give it one task of its next shape on the first node (in view order) where
//!    the task fits and the framework has no decline filter. A shape that fits nowhere is dropped for
//!    this cycle. This is progressive filling: with one resource and unbounded demand every framework
//!    ends with `total × weight / Σ weights`, and with several resources it reaches the DRF allocation
//!    (the DRF paper's example: A gets 3 tasks, B 2, both at a dominant share of 2/3).
//! 2. **Leftovers.** Frameworks that stated no demand get what remains, whole node by whole node, each
//!    node to the one with the lowest share that is not filtered there, as Mesos offers.
//!
//! Suppressed frameworks and frameworks without a positive weight get nothing. A grant is made only if
//! it holds at least one of the minimum allocatable quantities (Mesos's `--min_allocatable_resources`).
//! Ties break on framework id and nodes are tried in view order, so the result is a function of the view
//! and the configuration alone.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::collections::hash_map::Entry;

use berth_plugin_sdk::{
    ClusterView, FrameworkId, FrameworkInfo, Grant, GrantColumns, Node, NodeId, PortRange, Resources,
    Scalars, TaskShape, ports,
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;

/// The allocator's configuration, given as JSON when the plugin is loaded. All fields are optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Grants smaller than this in every resource are not made.
    pub min_allocatable: MinAllocatable,
}

/// The smallest grant worth making: one that holds at least one of these quantities.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MinAllocatable {
    /// Thousandths of a core (default 10, Mesos's `cpus:0.01`).
    pub milli_cpus: u64,
    /// MiB (default 32, Mesos's `mem:32`).
    pub mem_mib: u64,
    /// MiB (default 0: not a criterion).
    pub disk_mib: u64,
    /// GPUs (default 0: not a criterion).
    pub gpus: u32,
}

impl Default for MinAllocatable {
    fn default() -> Self {
        MinAllocatable { milli_cpus: 10, mem_mib: 32, disk_mib: 0, gpus: 0 }
    }
}

impl Config {
    /// Parses the plugin configuration: JSON, or empty for the defaults.
    pub fn parse(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_json::from_str(text).map_err(|e| format!("invalid proportional allocator config: {e}"))
    }

    fn minimum(&self) -> Scalars {
        let m = self.min_allocatable;
        Scalars { milli_cpus: m.milli_cpus, mem_mib: m.mem_mib, disk_mib: m.disk_mib, gpus: m.gpus }
    }
}

/// A framework waiting in the queue, ordered so that `BinaryHeap::pop` yields the lowest share first
/// and, among equal shares, the lowest id.
///
/// The share is kept as the bits of its `f64`: shares are never negative or NaN (a dominant share
/// divided by a positive weight), and the bits of such numbers (+0 to +∞) order as the numbers do, so
/// the heap compares integers, which is less work than `f64::total_cmp` on its hottest path.
#[derive(Clone, Copy, Debug)]
struct Queued {
    share: u64,
    id: FrameworkId,
    index: usize,
}

impl Queued {
    fn new(share: f64, id: FrameworkId, index: usize) -> Queued {
        debug_assert!(share >= 0.0, "share {share}");
        // Adding +0 turns a -0 into +0, whose bits order first.
        Queued { share: (share + 0.0).to_bits(), id, index }
    }
}

impl Queued {
    /// Whether `self` is served before `other`: a lower share, or the same share and a lower id.
    ///
    /// Shares rarely tie, so the ids are compared on a branch of their own. Written as one expression,
    /// both comparisons are made and one chosen, in each of the heap's comparisons: in wasm, where the
    /// heap's sift is a third of `decide`, that is half of the comparison's instructions.
    #[inline(always)]
    fn served_before(&self, other: &Self) -> bool {
        if self.share != other.share {
            self.share < other.share
        } else {
            std::hint::cold_path();
            self.id < other.id
        }
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.share, other.id).cmp(&(self.share, self.id))
    }
}
/// The same order as [`Ord`], each comparison through [`Queued::served_before`]: the greatest is served
/// first.
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
    fn lt(&self, other: &Self) -> bool {
        other.served_before(self)
    }
    fn le(&self, other: &Self) -> bool {
        !self.served_before(other)
    }
    fn gt(&self, other: &Self) -> bool {
        self.served_before(other)
    }
    fn ge(&self, other: &Self) -> bool {
        !other.served_before(self)
    }
}
impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}

/// The most grants a cycle reserves room for up front (about 4 MiB in wasm32); beyond this the index grows.
const PRESIZED_GRANTS: usize = 1 << 16;

/// One allocation cycle. See the module documentation for the rules.
pub fn allocate(view: &ClusterView, config: &Config) -> Vec<Grant> {
    decide(view, config).into_grants()
}

/// The same cycle as [`allocate`], answered as the columns a component's `allocate-delta` returns.
pub fn allocate_columns(view: &ClusterView, config: &Config) -> GrantColumns {
    decide(view, config).into_columns()
}

fn decide(view: &ClusterView, config: &Config) -> Decided {
    let minimum = config.minimum();
    let nodes = &view.nodes;
    let total = nodes.iter().fold(Scalars::ZERO, |sum, n| sum.plus(&n.total.scalars()));
    let mut free = Free::new(nodes);
    let filtered: FxHashSet<(FrameworkId, usize)> = if view.filters.iter().any(|f| f.expires_ms > view.now_ms)
    {
        let position: FxHashMap<NodeId, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        view.filters
            .iter()
            .filter(|f| f.expires_ms > view.now_ms)
            .filter_map(|f| position.get(&f.node).map(|&i| (f.framework, i)))
            .collect()
    } else {
        FxHashSet::default()
    };
    let is_filtered = |framework: FrameworkId, node: usize| -> bool {
        !filtered.is_empty() && filtered.contains(&(framework, node))
    };

    let frameworks = &view.frameworks;
    let eligible = |i: usize| {
        let f = &frameworks[i];
        !f.suppressed && f.weight.is_finite() && f.weight > 0.0
    };
    let mut allocated: Vec<Scalars> = frameworks.iter().map(|f| f.allocated.scalars()).collect();
    let share = |allocated: &Scalars, i: usize| allocated.dominant_share(&total) / frameworks[i].weight;
    // Phase 1: progressive filling from stated demand.
    // Each framework's shapes still wanted, last first, with the number of their kind (CPU, memory,
    // disk, GPUs and ports alike): frameworks asking for the same kind share its cursor below.
    let mut kinds: FxHashMap<(Scalars, u32), usize> = FxHashMap::default();
    let mut wants: Vec<Vec<(TaskShape, usize)>> = frameworks
        .iter()
        .map(|f| {
            let wanted = f.demand.iter().filter(|s| s.count > 0).rev();
            wanted
                .map(|s| {
                    let next = kinds.len();
                    (*s, *kinds.entry((s.scalars(), s.ports)).or_insert(next))
                })
                .collect()
        })
        .collect();
    // Grants by (framework index, node position), merged per pair; sorted by ids at the end. Sized for
    // one grant per task wanted (at most one per pair), so the index does not grow during the cycle, up
    // to a bound: demand that cannot fit must not reserve memory under the plugin's cap.
    let tasks: usize = wants.iter().flatten().map(|(s, _)| s.count as usize).sum();
    let pairs = nodes.len().saturating_mul(frameworks.len());
    let mut grants = Grants::with_capacity(tasks.min(pairs).min(PRESIZED_GRANTS), frameworks.len());
    let mut queue: BinaryHeap<Queued> = (0..frameworks.len())
        .filter(|&i| eligible(i) && !wants[i].is_empty())
        .map(|i| Queued::new(share(&allocated[i], i), frameworks[i].id, i))
        .collect();
    // Resources only shrink during a cycle, so a node that cannot fit a kind of task now never will:
    // each kind keeps a cursor before which no node fits it, and the search resumes there.
    let mut cursors = vec![0; kinds.len()];
    // The framework served stays at the top with its new share and sinks to its place: one sift instead
    // of a pop and a push.
    while let Some(mut top) = queue.peek_mut() {
        let Queued { id, index, .. } = *top;
        let Some((shape, kind)) = wants[index].last_mut() else {
            PeekMut::pop(top);
            continue;
        };
        match free.first_fit(shape, &mut cursors[*kind], |node| is_filtered(id, node)) {
            Some(node) => {
                free.take_into(node, shape, grants.entry(index, node));
                allocated[index] = allocated[index].plus(&shape.scalars());
                shape.count -= 1;
                if shape.count == 0 {
                    wants[index].pop();
                }
            }
            None => {
                wants[index].pop();
            }
        }
        if wants[index].is_empty() {
            PeekMut::pop(top);
        } else {
            *top = Queued::new(share(&allocated[index], index), id, index);
        }
    }
    // Grants below the minimum go back. A grant holds at least one task, and more of every quantity
    // meets the minimum if less does: when every kind of task meets it, so does every grant.
    if kinds.keys().any(|(scalars, _)| !scalars.meets_minimum(&minimum)) {
        grants.list.retain(|(index, node, held)| {
            let keep = held.scalars.meets_minimum(&minimum);
            if !keep {
                free.give_back(*node, held);
                allocated[*index] = allocated[*index].minus(&held.scalars);
            }
            keep
        });
    }

    // Phase 2: leftovers, whole nodes, to frameworks that stated no demand. They made no grant in phase 1
    // and each node goes to one of them at most, so these grants never merge with another.
    let mut idle: BinaryHeap<Queued> = (0..frameworks.len())
        .filter(|&i| eligible(i) && frameworks[i].demand.iter().all(|s| s.count == 0))
        .map(|i| Queued::new(share(&allocated[i], i), frameworks[i].id, i))
        .collect();
    if !idle.is_empty() {
        free.reach(nodes.len());
        let mut skipped = Vec::new();
        for position in 0..nodes.len() {
            if !free.scalars(position).meets_minimum(&minimum) {
                continue;
            }
            while let Some(candidate) = idle.pop() {
                if is_filtered(candidate.id, position) {
                    skipped.push(candidate);
                    continue;
                }
                let rest = free.take_all(position);
                let index = candidate.index;
                allocated[index] = allocated[index].plus(&rest.scalars);
                grants.list.push((index, position, rest));
                idle.push(Queued::new(share(&allocated[index], index), candidate.id, index));
                break;
            }
            idle.extend(skipped.drain(..));
        }
    }

    let order = id_order(frameworks, nodes, &grants.list);
    Decided { order, list: grants.list }
}

/// The grants in id order (framework id, then node id), as small keys with the place of each grant; the
/// grants stay where they are until they are written out.
///
/// Bucketed by framework (frameworks in id order: a sort of the frameworks, not of the grants), then each
/// framework's few grants sorted by node id. First fit made most of them in node order already.
fn id_order<T>(
    frameworks: &[FrameworkInfo],
    nodes: &[Node],
    list: &[(usize, usize, T)],
) -> Vec<(FrameworkId, NodeId, u32)> {
    let mut by_id: Vec<usize> = (0..frameworks.len()).collect();
    by_id.sort_unstable_by_key(|&i| frameworks[i].id);
    // Where each framework's grants start in the answer.
    let mut start = vec![0usize; frameworks.len()];
    for (index, _, _) in list {
        start[*index] += 1;
    }
    let mut next = 0;
    for &i in &by_id {
        (start[i], next) = (next, next + start[i]);
    }
    let mut order = vec![(0, 0, 0); list.len()];
    let mut end = start.clone();
    for (g, (index, node, _)) in list.iter().enumerate() {
        order[end[*index]] = (frameworks[*index].id, nodes[*node].id, g as u32);
        end[*index] += 1;
    }
    for &i in &by_id {
        order[start[i]..end[i]].sort_unstable();
    }
    order
}

/// One cycle's grants: each grant in the order they were made, and the order of the answer (by framework
/// id, then node id) with the place of each grant.
struct Decided {
    order: Vec<(FrameworkId, NodeId, u32)>,
    /// (framework index, node position, grant), as [`Grants::list`] holds them.
    list: Vec<(usize, usize, Held)>,
}

impl Decided {
    fn into_grants(self) -> Vec<Grant> {
        let mut held: Vec<Option<Held>> = self.list.into_iter().map(|(_, _, held)| Some(held)).collect();
        self.order
            .into_iter()
            .map(|(framework, node, i)| Grant {
                framework,
                node,
                resources: held[i as usize].take().expect("each grant is moved once").into_resources(),
            })
            .collect()
    }

    fn into_columns(self) -> GrantColumns {
        let list = &self.list;
        GrantColumns::collect_parts(self.order.iter().map(|&(framework, node, i)| {
            let grant = &list[i as usize].2;
            (framework, node, grant.scalars, grant.ports())
        }))
    }
}

/// A grant being made: its quantities and its ports.
///
/// Most grants hold a single range of ports (first fit gives a node's lowest free ports to one framework
/// after another, and most frameworks get one task per node), so the first range is kept apart and a
/// grant of one range needs no list of its own. In wasm, the guest's memory allocator was a tenth of the
/// call, most of it one list per grant; the answer's columns do not need one.
#[derive(Debug, Default)]
struct Held {
    scalars: Scalars,
    first: Option<PortRange>,
    /// The ranges after `first`, in order; or all of them, when `first` is `None`.
    rest: Vec<PortRange>,
}

impl Held {
    /// The ports, in order, in two parts.
    fn ports(&self) -> [&[PortRange]; 2] {
        [self.first.as_slice(), &self.rest]
    }

    /// Adds the ports `begin..=end`. First fit hands a grant its ports in order, each range after the
    /// ones it holds: those are appended or merged in place. Anything else puts every range in the list.
    fn add_ports(&mut self, begin: u16, end: u16) {
        if begin > end {
            return;
        }
        if self.rest.is_empty() {
            match &mut self.first {
                None => return self.first = Some(PortRange { begin, end }),
                Some(first) if first.begin <= begin && u32::from(begin) <= u32::from(first.end) + 1 => {
                    first.end = first.end.max(end);
                    return;
                }
                Some(_) => {}
            }
        }
        let after_first = self.first.is_none_or(|first| first.begin <= begin);
        if !(after_first && ports::append(&mut self.rest, begin, end)) {
            if let Some(first) = self.first.take() {
                self.rest.insert(0, first);
            }
            ports::add(&mut self.rest, &[(begin, end)]);
        }
    }

    fn into_resources(self) -> Resources {
        let Held { scalars, first, mut rest } = self;
        if let Some(first) = first {
            rest.insert(0, first);
        }
        Resources {
            milli_cpus: scalars.milli_cpus,
            mem_mib: scalars.mem_mib,
            disk_mib: scalars.disk_mib,
            gpus: scalars.gpus,
            ports: rest,
        }
    }
}

/// What the nodes have left during a cycle. The first-fit scan reads only the dense `scalars` and
/// `port_counts`; a node's port ranges are copied from the view only when a task takes ports from it.
///
/// The three lists cover the nodes the search has reached, [`REACH`] nodes at a time; the nodes after
/// them still have what the view says. First fit fills the nodes in order, so a cycle that places a few
/// thousand tasks on a cluster of 10,000 nodes reaches a few hundred: copying what every node has was a
/// sixth of the wasm call at 10k nodes x 100 frameworks.
struct Free<'a> {
    nodes: &'a [Node],
    scalars: Vec<Scalars>,
    port_counts: Vec<u64>,
    ports: Vec<Option<Vec<PortRange>>>,
}

/// How many more nodes [`Free`] copies from the view when the search reaches the end of what it holds.
const REACH: usize = 256;

impl<'a> Free<'a> {
    fn new(nodes: &'a [Node]) -> Self {
        Free {
            nodes,
            scalars: Vec::with_capacity(nodes.len()),
            port_counts: Vec::with_capacity(nodes.len()),
            ports: Vec::with_capacity(nodes.len()),
        }
    }

    /// Copies what the nodes up to `end` (or all of them) have from the view, if not yet copied.
    #[inline(never)]
    fn reach(&mut self, end: usize) {
        let (from, end) = (self.scalars.len(), end.min(self.nodes.len()));
        if end <= from {
            return;
        }
        let nodes = &self.nodes[from..end];
        self.scalars.extend(nodes.iter().map(|n| n.available.scalars()));
        self.port_counts.extend(nodes.iter().map(|n| n.available.port_count()));
        self.ports.resize(end, None);
    }

    fn scalars(&self, node: usize) -> Scalars {
        self.scalars[node]
    }

    fn ports_mut(&mut self, node: usize) -> &mut Vec<PortRange> {
        let nodes = self.nodes;
        self.ports[node].get_or_insert_with(|| nodes[node].available.ports.clone())
    }

    /// Takes one task of `shape` (the lowest free ports when it needs ports) and adds it to `grant`; the
    /// caller checked it fits. The ports go straight into the grant: no list per task.
    fn take_into(&mut self, node: usize, shape: &TaskShape, grant: &mut Held) {
        if shape.ports > 0 {
            let taken =
                ports::take_each(self.ports_mut(node), shape.ports, |begin, end| grant.add_ports(begin, end));
            assert!(taken, "checked by first_fit");
            self.port_counts[node] -= u64::from(shape.ports);
        }
        let scalars = shape.scalars();
        self.scalars[node] = self.scalars[node].minus(&scalars);
        grant.scalars = grant.scalars.plus(&scalars);
    }

    /// Takes everything the node has left.
    fn take_all(&mut self, node: usize) -> Held {
        let scalars = std::mem::take(&mut self.scalars[node]);
        self.port_counts[node] = 0;
        Held { scalars, first: None, rest: std::mem::take(self.ports_mut(node)) }
    }

    fn give_back(&mut self, node: usize, grant: &Held) {
        self.scalars[node] = self.scalars[node].plus(&grant.scalars);
        if grant.ports().iter().any(|part| !part.is_empty()) {
            let ports = self.ports_mut(node);
            for part in grant.ports() {
                ports::add(ports, part);
            }
            self.port_counts[node] = ports::count(ports);
        }
    }

    /// The first node at or after `cursor` where one task of `shape` fits and which is not `filtered`.
    /// Moves `cursor` past the nodes that cannot fit the shape, stopping at the first one that fits but
    /// was skipped because of a filter (it may still suit another framework).
    ///
    /// Inlined: a call costs more than the loop around [`Free::scan`] in wasm (a frame in linear memory
    /// for the shape and the answer, the callee-saved registers), and the loop turns once unless a filter
    /// applies or the scan reaches the end of the nodes copied so far.
    #[inline(always)]
    fn first_fit(
        &mut self,
        shape: &TaskShape,
        cursor: &mut usize,
        filtered: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut from = *cursor;
        let mut advancing = true;
        loop {
            let mut i = self.scan(from, shape);
            while i == self.scalars.len() && i < self.nodes.len() {
                self.reach(i + REACH);
                i = self.scan(i, shape);
            }
            if advancing {
                *cursor = i;
            }
            if i == self.nodes.len() {
                return None;
            }
            if !filtered(i) {
                return Some(i);
            }
            advancing = false;
            from = i + 1;
        }
    }

    /// The first node at or after `from` with room for one task of `shape`, among the nodes reached (the
    /// number of nodes reached if none): the scan that most of a cycle's search is.
    ///
    /// A function of its own, not inlined, on purpose. In wasm, Cranelift allocates registers over a whole
    /// function at once: inlined into `decide` (27 KB of machine code), and still beside the filter's hash
    /// lookup, this loop kept the shape, its bounds and the linear memory's base on the stack and reloaded
    /// them for every node it passed. Alone, it keeps them in registers. LLVM's native code does not care.
    /// It answers a plain index, which wasm returns in a register (an `Option` goes through memory), and
    /// is a `while` loop: Cranelift compiles `Iterator::find` over the range with two more register moves
    /// and a jump for each node passed (18 instructions for a node without the CPU, 14 as written).
    #[inline(never)]
    fn scan(&self, from: usize, shape: &TaskShape) -> usize {
        debug_assert!(from <= self.scalars.len(), "the search resumes within the nodes reached");
        let (need, ports) = (shape.scalars(), u64::from(shape.ports));
        let scalars = &self.scalars[..];
        let port_counts = &self.port_counts[..scalars.len()];
        let mut i = from;
        while i < scalars.len() {
            if need.fits_in(&scalars[i]) && port_counts[i] >= ports {
                return i;
            }
            i += 1;
        }
        scalars.len()
    }
}

/// Grants made so far, one per (framework index, node position), in the order first made.
struct Grants {
    list: Vec<(usize, usize, Held)>,
    index: FxHashMap<(usize, usize), usize>,
    /// Each framework's grant added to last (`usize::MAX`: none yet). First fit fills a node before it
    /// moves on, so a framework's next task usually lands on the same node: that grant is found without
    /// hashing.
    last: Vec<usize>,
}

impl Grants {
    fn with_capacity(capacity: usize, frameworks: usize) -> Self {
        Grants {
            list: Vec::with_capacity(capacity),
            index: FxHashMap::with_capacity_and_hasher(capacity, Default::default()),
            last: vec![usize::MAX; frameworks],
        }
    }

    /// The grant for (`framework`, `node`), made empty if there is none yet.
    fn entry(&mut self, framework: usize, node: usize) -> &mut Held {
        let last = self.last[framework];
        let at = if self.list.get(last).is_some_and(|grant| grant.1 == node) {
            last
        } else {
            let at = match self.index.entry((framework, node)) {
                Entry::Occupied(at) => *at.get(),
                Entry::Vacant(slot) => {
                    slot.insert(self.list.len());
                    self.list.push((framework, node, Held::default()));
                    self.list.len() - 1
                }
            };
            self.last[framework] = at;
            at
        };
        &mut self.list[at].2
    }
}

#[cfg(test)]
mod tests {
    //! The policy's rules on small views, natively. The headline properties (DRF paper example, weighted
    //! single resource) are also tested through the wasm component in `tests/`.

    use std::collections::BTreeMap;

    use berth_plugin_sdk::{DeclineFilter, PortRange};

    use super::*;

    fn node(id: NodeId, milli_cpus: u64, mem_mib: u64) -> Node {
        let r = Resources::new(milli_cpus, mem_mib);
        Node { id, hostname: format!("node-{id}"), total: r.clone(), available: r, attributes: vec![] }
    }

    fn framework(id: FrameworkId, weight: f64, demand: Vec<TaskShape>) -> FrameworkInfo {
        FrameworkInfo {
            id,
            name: format!("f{id}"),
            role: "*".into(),
            weight,
            allocated: Resources::default(),
            suppressed: false,
            demand,
        }
    }

    fn view(nodes: Vec<Node>, frameworks: Vec<FrameworkInfo>) -> ClusterView {
        ClusterView { nodes, frameworks, filters: vec![], now_ms: 1_000 }
    }

    /// Total milli-cpus granted to each framework, by id.
    fn cpus_by_framework(grants: &[Grant]) -> BTreeMap<FrameworkId, u64> {
        let mut out = BTreeMap::new();
        for g in grants {
            *out.entry(g.framework).or_default() += g.resources.milli_cpus;
        }
        out
    }

    #[test]
    fn declined_nodes_are_skipped_until_the_filter_lapses() {
        let mut v = view(
            vec![node(1, 1000, 1024), node(2, 1000, 1024)],
            vec![framework(7, 1.0, vec![TaskShape::new(1000, 64, 2)])],
        );
        v.filters.push(DeclineFilter { framework: 7, node: 1, expires_ms: 2_000 });
        let grants = allocate(&v, &Config::default());
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].node, 2);

        v.now_ms = 2_000;
        let grants = allocate(&v, &Config::default());
        assert_eq!(grants.iter().map(|g| g.node).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn suppressed_and_weightless_frameworks_get_nothing() {
        let mut a = framework(1, 1.0, vec![TaskShape::new(100, 32, 5)]);
        a.suppressed = true;
        let b = framework(2, 0.0, vec![]);
        let grants =
            allocate(&view(vec![node(1, 4000, 4096)], vec![a.clone(), b.clone()]), &Config::default());
        assert!(grants.is_empty(), "{grants:?}");
        // The control: the same frameworks with a revived and b weighted are granted the node.
        let (mut a, mut b) = (a, b);
        a.suppressed = false;
        let grants = allocate(&view(vec![node(1, 4000, 4096)], vec![a.clone()]), &Config::default());
        assert_eq!(grants.iter().map(|g| g.framework).collect::<Vec<_>>(), [1], "{grants:?}");
        b.weight = 1.0;
        let grants = allocate(&view(vec![node(1, 4000, 4096)], vec![b]), &Config::default());
        assert_eq!(grants.iter().map(|g| g.framework).collect::<Vec<_>>(), [2], "leftovers: {grants:?}");
    }

    #[test]
    fn leftovers_go_whole_node_to_the_lowest_share_without_demand() {
        let busy = framework(1, 1.0, vec![TaskShape::new(1000, 128, 1)]);
        let mut rich = framework(2, 1.0, vec![]);
        rich.allocated = Resources::new(4000, 0);
        let poor = framework(3, 1.0, vec![]);
        let grants = allocate(
            &view(vec![node(1, 2000, 1024), node(2, 2000, 1024)], vec![busy, rich, poor]),
            &Config::default(),
        );
        // Framework 1 gets its task on node 1; the rest of node 1 goes to 3 (lowest share, no demand),
        // which then holds 1/4 of the cluster's CPU: still below 2's 4/4, so node 2 goes to 3 as well.
        assert_eq!(grants.len(), 3, "{grants:?}");
        assert_eq!((grants[0].framework, grants[0].node, grants[0].resources.milli_cpus), (1, 1, 1000));
        assert_eq!(cpus_by_framework(&grants).get(&3), Some(&3000));
        assert!(!cpus_by_framework(&grants).contains_key(&2));
    }

    #[test]
    fn grants_below_the_minimum_are_not_made() {
        let tiny = framework(1, 1.0, vec![TaskShape::new(5, 8, 1)]);
        let grants = allocate(&view(vec![node(1, 1000, 1024)], vec![tiny.clone()]), &Config::default());
        assert!(grants.is_empty(), "{grants:?}");
        let config = Config::parse(r#"{"min_allocatable": {"milli_cpus": 1, "mem_mib": 0}}"#).unwrap();
        assert_eq!(allocate(&view(vec![node(1, 1000, 1024)], vec![tiny]), &config).len(), 1);
    }

    #[test]
    fn leftovers_smaller_than_the_minimum_are_kept_back() {
        let idle = framework(1, 1.0, vec![]);
        let mut n = node(1, 1000, 1024);
        n.available = Resources::new(5, 16);
        assert!(allocate(&view(vec![n], vec![idle]), &Config::default()).is_empty());
    }

    #[test]
    fn tasks_that_need_ports_get_distinct_ports() {
        let mut n = node(1, 4000, 4096);
        n.available.ports = vec![PortRange { begin: 31000, end: 31002 }];
        let shape = TaskShape { ports: 2, ..TaskShape::new(100, 32, 5) };
        let grants = allocate(&view(vec![n], vec![framework(1, 1.0, vec![shape])]), &Config::default());
        assert_eq!(grants.len(), 1);
        // Only one task fits: the second would need two of the one port left.
        assert_eq!(grants[0].resources.milli_cpus, 100);
        assert_eq!(grants[0].resources.ports, vec![PortRange { begin: 31000, end: 31001 }]);
    }

    #[test]
    fn a_shape_that_fits_nowhere_does_not_block_the_next_shape() {
        let f = framework(1, 1.0, vec![TaskShape::new(8000, 64, 1), TaskShape::new(500, 64, 2)]);
        let grants = allocate(&view(vec![node(1, 2000, 1024)], vec![f]), &Config::default());
        assert_eq!(cpus_by_framework(&grants).get(&1), Some(&1000));
    }

    #[test]
    fn tasks_on_a_node_granted_before_merge_into_its_grant() {
        // The big tasks go to nodes 1 and 2; the small ones go back to node 1 (its grant is not the
        // framework's last) and then to node 2. One grant per node, holding every task placed there.
        let f = framework(1, 1.0, vec![TaskShape::new(800, 64, 2), TaskShape::new(100, 32, 3)]);
        let grants =
            allocate(&view(vec![node(1, 1000, 1024), node(2, 1000, 1024)], vec![f]), &Config::default());
        let placed: Vec<_> =
            grants.iter().map(|g| (g.node, g.resources.milli_cpus, g.resources.mem_mib)).collect();
        assert_eq!(placed, vec![(1, 1000, 128), (2, 900, 96)]);
    }

    #[test]
    fn the_same_view_gives_the_same_grants() {
        let nodes: Vec<Node> = (0..50).map(|i| node(i, 4000 + u64::from(i) * 10, 8192)).collect();
        let frameworks: Vec<FrameworkInfo> = (0..20)
            .map(|i| {
                framework(i, f64::from(1 + i % 3), vec![TaskShape::new(250 + u64::from(i) * 50, 128, 40)])
            })
            .collect();
        let v = view(nodes, frameworks);
        assert_eq!(allocate(&v, &Config::default()), allocate(&v, &Config::default()));
    }

    #[test]
    fn columns_hold_the_same_grants_in_the_same_order() {
        let nodes: Vec<Node> = (0..6)
            .map(|i| {
                let mut n = node(10 - i, 2000, 4096);
                n.available.ports = vec![PortRange { begin: 31000, end: 31003 }];
                n
            })
            .collect();
        let frameworks = vec![
            framework(5, 1.0, vec![TaskShape { ports: 2, ..TaskShape::new(500, 256, 6) }]),
            framework(
                2,
                2.0,
                vec![TaskShape::new(300, 128, 9), TaskShape { ports: 1, ..TaskShape::new(100, 64, 4) }],
            ),
            framework(9, 1.0, vec![]),
        ];
        let v = view(nodes, frameworks);
        let grants = allocate(&v, &Config::default());
        assert!(grants.len() > 6 && grants.iter().any(|g| !g.resources.ports.is_empty()), "{grants:?}");
        assert_eq!(allocate_columns(&v, &Config::default()), GrantColumns::from_grants(&grants));
    }

    /// Pseudo-random numbers below the bound each call is given (xorshift), the same for the same seed.
    fn numbers(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |below| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        }
    }

    #[test]
    fn id_order_is_the_order_of_a_plain_sort() {
        // Frameworks and nodes with ids out of view order, and grants on distinct (framework, node) pairs
        // in a scrambled order of making: the buckets must give what sorting everything gives.
        let mut numbers = numbers(0x9e37_79b9_7f4a_7c15);
        let mut next = move |below: usize| numbers(below as u64) as usize;
        for round in 0..200 {
            let frameworks: Vec<FrameworkInfo> =
                (0..1 + round % 17).map(|i| framework((i * 7919 % 101) as u32, 1.0, vec![])).collect();
            let nodes: Vec<Node> =
                (0..1 + round % 23).map(|i| node((i * 104_729 % 997) as u32, 1, 1)).collect();
            let mut pairs: Vec<(usize, usize)> =
                (0..frameworks.len()).flat_map(|f| (0..nodes.len()).map(move |n| (f, n))).collect();
            for i in (1..pairs.len()).rev() {
                pairs.swap(i, next(i + 1));
            }
            pairs.truncate(next(pairs.len() + 1));
            let list: Vec<(usize, usize, Resources)> =
                pairs.iter().map(|&(f, n)| (f, n, Resources::default())).collect();
            let mut sorted: Vec<(FrameworkId, NodeId, u32)> = list
                .iter()
                .enumerate()
                .map(|(g, (f, n, _))| (frameworks[*f].id, nodes[*n].id, g as u32))
                .collect();
            sorted.sort_unstable();
            assert_eq!(id_order(&frameworks, &nodes, &list), sorted, "round {round}");
        }
    }

    /// The search copies what nodes have from the view `REACH` nodes at a time, as it reaches them: a
    /// node far past the first copies is found, and the leftovers pass sees every node, those the search
    /// never reached included.
    #[test]
    fn the_search_reaches_nodes_past_those_copied_first() {
        let far = 2 * REACH + 5;
        let last = 3 * REACH + 9;
        let mut nodes: Vec<Node> = (0..=last as u32).map(|id| node(id, 0, 0)).collect();
        nodes[far] = node(far as u32, 1000, 1024);
        nodes[last] = node(last as u32, 1000, 1024);
        let busy = framework(1, 1.0, vec![TaskShape::new(500, 256, 2)]);
        let idle = framework(2, 1.0, vec![]);
        let grants = allocate(&view(nodes, vec![busy, idle]), &Config::default());
        let made: Vec<(FrameworkId, NodeId, u64, u64)> = grants
            .iter()
            .map(|g| (g.framework, g.node, g.resources.milli_cpus, g.resources.mem_mib))
            .collect();
        let (far, last) = (far as NodeId, last as NodeId);
        assert_eq!(made, vec![(1, far, 1000, 512), (2, far, 0, 512), (2, last, 1000, 1024)]);
    }

    /// The heap compares through `lt`, `le`, `gt` and `ge`, written apart from `cmp`: each must answer
    /// what `cmp` does, ties of share included, and the heap must pop in (share, id) order.
    #[test]
    fn the_queues_comparisons_agree_with_its_order() {
        let shares = [0.0, 0.25, 0.5, 1.0, 3.0];
        let queued: Vec<Queued> = shares
            .iter()
            .flat_map(|&share| (0..3).map(move |id| Queued::new(share, id, id as usize)))
            .collect();
        for a in &queued {
            for b in &queued {
                let order = a.cmp(b);
                let expected = (b.share, b.id).cmp(&(a.share, a.id));
                assert_eq!(order, expected, "{a:?} {b:?}");
                assert_eq!(a.partial_cmp(b), Some(order), "{a:?} {b:?}");
                assert_eq!(a < b, order == Ordering::Less, "{a:?} < {b:?}");
                assert_eq!(a <= b, order != Ordering::Greater, "{a:?} <= {b:?}");
                assert_eq!(a > b, order == Ordering::Greater, "{a:?} > {b:?}");
                assert_eq!(a >= b, order != Ordering::Less, "{a:?} >= {b:?}");
            }
        }
        let mut heap: BinaryHeap<Queued> = queued.iter().rev().copied().collect();
        let popped: Vec<(u64, FrameworkId)> =
            std::iter::from_fn(|| heap.pop()).map(|q| (q.share, q.id)).collect();
        let mut sorted: Vec<(u64, FrameworkId)> = queued.iter().map(|q| (q.share, q.id)).collect();
        sorted.sort_unstable();
        assert_eq!(popped, sorted);
    }

    /// A grant's ports, kept as a first range and a list, against a plain list that `ports::add` keeps:
    /// ranges in order (as first fit hands them out), touching, overlapping, out of order and empty.
    #[test]
    fn a_grants_ports_are_the_ranges_added_to_it() {
        let mut numbers = numbers(0x2545_f491_4f6c_dd1d);
        let mut next = move |below: u16| numbers(u64::from(below)) as u16;
        for round in 0..5_000 {
            let (mut held, mut expected) = (Held::default(), Vec::<PortRange>::new());
            let mut at = next(40);
            for _ in 0..1 + next(6) {
                let (begin, end) = match next(4) {
                    // In order: right after the last range or a gap further on, as first fit takes them.
                    0 | 1 => {
                        at += next(3);
                        (at, at + next(3))
                    }
                    // Anywhere, sometimes empty.
                    _ => {
                        let begin = next(60);
                        (begin, (begin + next(4)).saturating_sub(next(2)))
                    }
                };
                at = at.max(end.saturating_add(1));
                held.add_ports(begin, end);
                ports::add(&mut expected, &[(begin, end)]);
                assert_eq!(held.ports().concat(), expected, "round {round}: {held:?}");
            }
            assert_eq!(held.into_resources().ports, expected, "round {round}");
        }
    }

    #[test]
    fn unknown_config_fields_are_refused() {
        let err = Config::parse(r#"{"min_alocatable": {}}"#).unwrap_err();
        assert!(err.contains("min_alocatable"), "{err}");
    }
}
