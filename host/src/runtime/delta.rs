//! Incremental views, the host's side: a copy of the view an `incremental-allocator` instance holds, and
//! the delta that turns it into the next view.
//!
//! The copy is kept per instance, so an instance that is dropped (after a failed call) or replaced (a
//! new version) takes its copy with it and the next instance starts from a whole view.

use super::bindings::{ClusterView, Framework, Node, ResourceColumns, ViewDelta};

/// What one instance holds, as of its last answered `allocate-delta`.
#[derive(Debug, Default)]
pub(crate) struct HeldView {
    /// The epoch of the view the instance holds; `None` when it holds none the host can build on.
    epoch: Option<u64>,
    /// The last epoch handed out.
    last_epoch: u64,
    nodes: Vec<Node>,
    /// The caller's revision of each held node (see [`HeldView::delta`]); empty when the caller gave none.
    revisions: Vec<u64>,
    frameworks: Vec<Framework>,
}

impl HeldView {
    /// The delta from the held view to `view`, and the held copy updated to `view` on the assumption that
    /// the instance applies it. If the call fails the instance is dropped with this copy; if the guest
    /// answers that it does not hold the base, call [`HeldView::whole`].
    ///
    /// `revisions`, when given, holds for each node of `view` (in order) its revision: a number that names
    /// one state of one node and is never given to another (the master draws them from one count for all
    /// its nodes). Where a node's revision is the one held at its place, it is the node held there,
    /// unchanged, and is not read at all; so a cycle costs what changed, not the size of the cluster. At
    /// 10,000 nodes, comparing every node field by field was most of the call, and then reading every
    /// node's id to see that none had joined or left was a tenth of it. Without revisions every node is
    /// compared.
    pub(crate) fn delta(&mut self, view: &ClusterView, revisions: Option<&[u64]>) -> ViewDelta {
        let revisions = revisions.filter(|r| r.len() == view.nodes.len());
        let (Some(base), true) = (self.epoch, sorted_frameworks(view)) else {
            return self.whole(view, revisions);
        };
        if let Some(revisions) = revisions
            && let Some(moved) = self.moved(&view.nodes, revisions)
        {
            let mut delta = self.empty_delta(view, Some(base));
            for i in moved {
                self.revisions[i] = revisions[i];
                changed_node(&mut self.nodes[i], &view.nodes[i], &mut delta);
            }
            self.frameworks_delta(view, &mut delta);
            return delta;
        }
        // The held nodes are sorted, so the same ids are sorted too: the usual cycle reads the ids once.
        let same_nodes = same_ids(&self.nodes, &view.nodes, |n| n.id);
        if !same_nodes && !sorted(&view.nodes, |n| n.id) {
            return self.whole(view, revisions);
        }
        let mut delta = self.empty_delta(view, Some(base));
        if same_nodes {
            for (held, next) in self.nodes.iter_mut().zip(&view.nodes) {
                changed_node(held, next, &mut delta);
            }
        } else {
            diff(&mut self.nodes, &view.nodes, |n| n.id, &mut delta.nodes, &mut delta.removed_nodes);
        }
        self.revisions = revisions.map(<[u64]>::to_vec).unwrap_or_default();
        self.frameworks_delta(view, &mut delta);
        delta
    }

    /// The places of the held nodes whose revision is not the one in `revisions`, if `nodes` can be told
    /// from the held ones by their revisions alone: revisions are held for as many nodes, and the node at
    /// each place whose revision moved is the one held there (at the others the revision says so). `None`
    /// when nodes joined or left, or no revisions are held: then the nodes are read.
    fn moved(&self, nodes: &[Node], revisions: &[u64]) -> Option<Vec<usize>> {
        if self.revisions.len() != revisions.len() || self.nodes.len() != nodes.len() {
            return None;
        }
        let moved: Vec<usize> = (self.revisions.iter().zip(revisions).enumerate())
            .filter_map(|(i, (held, next))| (held != next).then_some(i))
            .collect();
        let same = moved.iter().all(|&i| self.nodes[i].id == nodes[i].id);
        // A caller that gave one revision to two nodes would leave the guest holding the wrong node at a
        // place: the tests, built with debug assertions, check every place.
        debug_assert!(
            !same || self.nodes.iter().zip(nodes).all(|(held, next)| held.id == next.id),
            "a node's revision was held for another node at its place: revisions must never be reused"
        );
        same.then_some(moved)
    }

    /// Adds to `delta` what changed in the frameworks, and brings the held ones up to `view`'s.
    fn frameworks_delta(&mut self, view: &ClusterView, delta: &mut ViewDelta) {
        if same_ids(&self.frameworks, &view.frameworks, |f| f.id) {
            for (held, next) in self.frameworks.iter_mut().zip(&view.frameworks) {
                changed_framework(held, next, delta);
            }
        } else {
            diff(
                &mut self.frameworks,
                &view.frameworks,
                |f| f.id,
                &mut delta.frameworks,
                &mut delta.removed_frameworks,
            );
        }
    }

    /// The whole view as a delta (`base: none`). The held copy follows only if the view's lists are
    /// sorted by id, which deltas rely on; an unsorted view is sent whole every time.
    pub(crate) fn whole(&mut self, view: &ClusterView, revisions: Option<&[u64]>) -> ViewDelta {
        let mut delta = self.empty_delta(view, None);
        delta.nodes = view.nodes.clone();
        delta.frameworks = view.frameworks.clone();
        self.revisions.clear();
        if sorted(&view.nodes, |n| n.id) && sorted_frameworks(view) {
            self.nodes = view.nodes.clone();
            self.frameworks = view.frameworks.clone();
            if let Some(revisions) = revisions.filter(|r| r.len() == view.nodes.len()) {
                self.revisions.extend_from_slice(revisions);
            }
        } else {
            self.epoch = None;
            self.nodes = Vec::new();
            self.frameworks = Vec::new();
        }
        delta
    }

    /// Forgets the held view: the next delta is whole.
    pub(crate) fn forget(&mut self) {
        self.epoch = None;
    }

    fn empty_delta(&mut self, view: &ClusterView, base: Option<u64>) -> ViewDelta {
        self.last_epoch += 1;
        self.epoch = Some(self.last_epoch);
        ViewDelta {
            base,
            epoch: self.last_epoch,
            nodes: Vec::new(),
            available: ResourceColumns::default(),
            removed_nodes: Vec::new(),
            frameworks: Vec::new(),
            allocated: ResourceColumns::default(),
            removed_frameworks: Vec::new(),
            filters: view.filters.clone(),
            now_ms: view.now_ms,
        }
    }
}

/// Whether `items` are in strictly increasing order of `id`.
fn sorted<T>(items: &[T], id: impl Fn(&T) -> u32) -> bool {
    items.is_sorted_by(|a, b| id(a) < id(b))
}

fn sorted_frameworks(view: &ClusterView) -> bool {
    sorted(&view.frameworks, |f| f.id)
}

/// Whether `held` and `next` hold the same ids in the same order: the usual cycle, where records change
/// in place and none join or leave.
fn same_ids<T>(held: &[T], next: &[T], id: impl Fn(&T) -> u32) -> bool {
    held.len() == next.len() && held.iter().zip(next).all(|(h, n)| id(h) == id(n))
}

/// Brings a node held from the base up to `next`: nothing when they are equal; `(id, available)` when
/// `available` is all that changed; the node whole otherwise.
fn changed_node(held: &mut Node, next: &Node, delta: &mut ViewDelta) {
    if held.available != next.available {
        if held.hostname == next.hostname && held.total == next.total && held.attributes == next.attributes {
            held.available.clone_from(&next.available);
            delta.available.push(next.id, &next.available);
            return;
        }
    } else if held == next {
        return;
    }
    held.clone_from(next);
    delta.nodes.push(next.clone());
}

/// Brings a framework held from the base up to `next`, as [`changed_node`] does a node: `(id, allocated)`
/// when what it holds is all that changed (a cycle's grants, its tasks starting and ending).
fn changed_framework(held: &mut Framework, next: &Framework, delta: &mut ViewDelta) {
    let Framework { id: _, name, role, weight, allocated, suppressed, demand } = next;
    if held.allocated != *allocated {
        if held.name == *name
            && held.role == *role
            && held.weight == *weight
            && held.suppressed == *suppressed
            && held.demand == *demand
        {
            held.allocated.clone_from(allocated);
            delta.allocated.push(next.id, allocated);
            return;
        }
    } else if held == next {
        return;
    }
    held.clone_from(next);
    delta.frameworks.push(next.clone());
}

/// Brings `held` to `next` (both sorted by id) when ids joined or left, pushing what is new or changed
/// onto `changed` and the ids that are gone onto `removed`, both in id order.
fn diff<T: Clone + PartialEq>(
    held: &mut Vec<T>,
    next: &[T],
    id: impl Fn(&T) -> u32,
    changed: &mut Vec<T>,
    removed: &mut Vec<u32>,
) {
    let mut old = std::mem::take(held).into_iter().peekable();
    held.reserve(next.len());
    for item in next {
        while let Some(gone) = old.next_if(|o| id(o) < id(item)) {
            removed.push(id(&gone));
        }
        match old.next_if(|o| id(o) == id(item)) {
            Some(same) if same == *item => held.push(same),
            _ => {
                changed.push(item.clone());
                held.push(item.clone());
            }
        }
    }
    removed.extend(old.map(|gone| id(&gone)));
}

#[cfg(test)]
mod tests {
    //! The diff as pure logic: applying each delta the way the SDK does must give back the view.

    use super::*;
    use crate::runtime::bindings::{Attribute, PortRange, Resources, TaskShape};

    fn node(id: u32, milli_cpus: u64) -> Node {
        let r = Resources { milli_cpus, mem_mib: 1024, disk_mib: 0, gpus: 0, ports: vec![] };
        Node { id, hostname: format!("n{id}"), total: r.clone(), available: r, attributes: vec![] }
    }

    fn view(nodes: Vec<Node>) -> ClusterView {
        ClusterView { nodes, frameworks: vec![], filters: vec![], now_ms: 5 }
    }

    /// The guest's side, written plainly: remove, replace or insert, then update what is available.
    fn apply(held: &mut Vec<Node>, delta: &ViewDelta) {
        if delta.base.is_none() {
            held.clear();
        }
        held.retain(|n| !delta.removed_nodes.contains(&n.id));
        for n in &delta.nodes {
            match held.binary_search_by_key(&n.id, |h| h.id) {
                Ok(i) => held[i] = n.clone(),
                Err(i) => held.insert(i, n.clone()),
            }
        }
        for (id, available) in delta.available.entries() {
            let i = held.binary_search_by_key(&id, |h| h.id).expect("`available` names a held node");
            held[i].available = available;
        }
    }

    #[test]
    fn deltas_rebuild_every_view_and_carry_only_changes() {
        let mut held = HeldView::default();
        let mut guest = Vec::new();
        let first = view((1..=5).map(|i| node(i, 1000)).collect());
        let d = held.delta(&first, None);
        assert_eq!((d.base, d.epoch, d.nodes.len()), (None, 1, 5));
        apply(&mut guest, &d);
        assert_eq!(guest, first.nodes);

        let mut second = first.clone();
        second.nodes[2].available.milli_cpus = 400;
        second.nodes[4].attributes.push(Attribute { name: "rack".into(), value: "r1".into() });
        let d = held.delta(&second, None);
        assert_eq!((d.base, d.epoch), (Some(1), 2));
        assert_eq!(
            d.available.entries().iter().map(|(id, a)| (*id, a.milli_cpus)).collect::<Vec<_>>(),
            vec![(3, 400)]
        );
        assert_eq!(
            d.nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
            vec![5],
            "a changed attribute sends the node whole"
        );
        assert!(d.removed_nodes.is_empty());
        apply(&mut guest, &d);
        assert_eq!(guest, second.nodes);

        // Node 2 leaves, node 9 joins, node 4 changes, node 0 joins in front.
        let mut third = second.clone();
        third.nodes.remove(1);
        third.nodes[2].available.milli_cpus = 10;
        third.nodes.push(node(9, 2000));
        third.nodes.insert(0, node(0, 3000));
        let d = held.delta(&third, None);
        assert_eq!(d.base, Some(2));
        assert_eq!(d.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![0, 4, 9]);
        assert_eq!(d.removed_nodes, vec![2]);
        apply(&mut guest, &d);
        assert_eq!(guest, third.nodes);

        let d = held.delta(&view(vec![]), None);
        assert_eq!(d.removed_nodes, vec![0, 1, 3, 4, 5, 9]);
        apply(&mut guest, &d);
        assert!(guest.is_empty());
    }

    #[test]
    fn unsorted_views_and_forgotten_instances_get_whole_views() {
        let mut held = HeldView::default();
        let unsorted = view(vec![node(2, 1), node(1, 1)]);
        assert_eq!(held.delta(&unsorted, None).base, None);
        assert_eq!(held.delta(&unsorted, None).base, None, "an unsorted view is never diffed");

        let sorted = view(vec![node(1, 1), node(2, 1)]);
        assert_eq!(held.delta(&sorted, None).base, None);
        assert!(held.delta(&sorted, None).base.is_some());
        held.forget();
        let d = held.delta(&sorted, None);
        assert_eq!((d.base, d.nodes.len()), (None, 2));
    }

    /// A held view of nodes 1-4 at revisions 1-4, and the guest's copy after the first (whole) delta.
    fn four_nodes_revised() -> (HeldView, Vec<Node>, ClusterView) {
        let mut held = HeldView::default();
        let mut guest = Vec::new();
        let first = view((1..=4).map(|i| node(i, 1000)).collect());
        apply(&mut guest, &held.delta(&first, Some(&[1, 2, 3, 4])));
        (held, guest, first)
    }

    #[test]
    fn with_revisions_only_nodes_whose_revision_moved_are_read() {
        let (mut held, mut guest, first) = four_nodes_revised();

        // Node 1's revision moves without a change; node 2's attributes change and node 4's `available`,
        // each with a new revision; node 3's hostname changes without one (a caller that broke its
        // promise), so the delta does not see it.
        let mut second = first.clone();
        second.nodes[1].attributes.push(Attribute { name: "rack".into(), value: "r1".into() });
        second.nodes[2].hostname = "renamed".into();
        second.nodes[3].available.milli_cpus = 20;
        let d = held.delta(&second, Some(&[5, 6, 3, 7]));
        assert_eq!(d.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(d.available.ids, vec![4]);
        apply(&mut guest, &d);
        assert_eq!(guest[2].hostname, "n3", "a node is read only when its revision moves");

        // Revisions of another length are ignored: every node is compared again, and node 3's new
        // hostname goes out.
        let d = held.delta(&second, Some(&[0]));
        assert_eq!(d.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![3]);
        apply(&mut guest, &d);
        assert_eq!(guest, second.nodes);

        // A node joins: the general diff runs and keeps the revisions given for the next delta.
        let mut third = second.clone();
        third.nodes.push(node(5, 500));
        let d = held.delta(&third, Some(&[5, 6, 3, 7, 8]));
        assert_eq!(d.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![5]);
        apply(&mut guest, &d);
        let mut fourth = third.clone();
        fourth.nodes[4].attributes.push(Attribute { name: "zone".into(), value: "z".into() });
        fourth.nodes[0].available.milli_cpus = 1;
        let d = held.delta(&fourth, Some(&[9, 6, 3, 7, 10]));
        assert_eq!(d.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![5]);
        assert_eq!(d.available.ids, vec![1]);
        apply(&mut guest, &d);
        assert_eq!(guest, fourth.nodes);
    }

    #[test]
    fn with_revisions_a_node_that_took_anothers_place_is_seen() {
        let (mut held, mut guest, first) = four_nodes_revised();

        // Node 2 leaves and node 7 joins: as many nodes as before, and those after node 2 each at another
        // place, where the revision held is another node's. They are read, and the delta says who left.
        let mut second = first.clone();
        second.nodes.remove(1);
        second.nodes.push(node(7, 700));
        let d = held.delta(&second, Some(&[1, 3, 4, 5]));
        assert_eq!(d.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![7]);
        assert_eq!(d.removed_nodes, vec![2]);
        apply(&mut guest, &d);
        assert_eq!(guest, second.nodes);

        // The same nodes again, node 7 changed: only its revision moves, and it alone is read.
        let mut third = second.clone();
        third.nodes[3].available.milli_cpus = 7;
        let d = held.delta(&third, Some(&[1, 3, 4, 6]));
        assert_eq!((d.nodes.len(), d.available.ids.clone(), d.removed_nodes.len()), (0, vec![7], 0));
        apply(&mut guest, &d);
        assert_eq!(guest, third.nodes);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "revisions must never be reused")]
    fn a_revision_given_to_two_nodes_is_caught_in_debug_builds() {
        let mut held = HeldView::default();
        let first = view((1..=3).map(|i| node(i, 1000)).collect());
        held.delta(&first, Some(&[1, 1, 1]));
        // Node 1 leaves and node 4 joins, and every place keeps revision 1 (counted per node, say).
        let second = view((2..=4).map(|i| node(i, 1000)).collect());
        held.delta(&second, Some(&[1, 1, 1]));
    }

    fn framework(id: u32) -> Framework {
        let allocated = Resources { milli_cpus: 0, mem_mib: 0, disk_mib: 0, gpus: 0, ports: vec![] };
        let (name, role) = (format!("f{id}"), "*".into());
        Framework { id, name, role, weight: 1.0, allocated, suppressed: false, demand: vec![] }
    }

    #[test]
    fn frameworks_whose_holdings_alone_changed_cross_as_columns() {
        let mut held = HeldView::default();
        let mut first = view(vec![node(1, 1000)]);
        first.frameworks = (1..=3).map(framework).collect();
        assert_eq!(held.delta(&first, None).frameworks.len(), 3);

        // Framework 1 holds more (with ports); framework 3 holds more and wants a task.
        let mut second = first.clone();
        second.frameworks[0].allocated.milli_cpus = 500;
        second.frameworks[0].allocated.ports = vec![PortRange { begin: 31000, end: 31002 }];
        second.frameworks[2].allocated.milli_cpus = 100;
        let shape = TaskShape { milli_cpus: 100, mem_mib: 32, disk_mib: 0, gpus: 0, ports: 0, count: 1 };
        second.frameworks[2].demand.push(shape);
        let d = held.delta(&second, None);
        assert_eq!(d.allocated.entries(), vec![(1, second.frameworks[0].allocated.clone())]);
        assert_eq!(d.frameworks, vec![second.frameworks[2].clone()], "another change sends it whole");

        // The held copy followed both.
        let d = held.delta(&second, None);
        assert!(d.allocated.is_empty() && d.frameworks.is_empty(), "{d:?}");
    }
}
