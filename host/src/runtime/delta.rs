//! Incremental views, the host's side: a copy of the view an `incremental-allocator` instance holds, and
//! the delta that turns it into the next view.
//!
//! The copy is kept per instance, so an instance that is dropped (after a failed call) or replaced (a
//! new version) takes its copy with it and the next instance starts from a whole view.

use super::bindings::{ClusterView, Framework, Node, NodeAvailable, ViewDelta};

/// What one instance holds, as of its last answered `allocate-delta`.
#[derive(Debug, Default)]
pub(crate) struct HeldView {
    /// The epoch of the view the instance holds; `None` when it holds none the host can build on.
    epoch: Option<u64>,
    /// The last epoch handed out.
    last_epoch: u64,
    nodes: Vec<Node>,
    frameworks: Vec<Framework>,
}

impl HeldView {
    /// The delta from the held view to `view`, and the held copy updated to `view` on the assumption that
    /// the instance applies it. If the call fails the instance is dropped with this copy; if the guest
    /// answers that it does not hold the base, call [`HeldView::whole`].
    pub(crate) fn delta(&mut self, view: &ClusterView) -> ViewDelta {
        let (Some(base), true) = (self.epoch, sorted(view)) else {
            return self.whole(view);
        };
        let mut delta = self.empty_delta(view, Some(base));
        let available = &mut delta.available;
        diff(
            &mut self.nodes,
            &view.nodes,
            |n| n.id,
            &mut delta.nodes,
            &mut delta.removed_nodes,
            |held, next| {
                let only_available = held.hostname == next.hostname
                    && held.total == next.total
                    && held.attributes == next.attributes;
                if only_available {
                    held.available.clone_from(&next.available);
                    available.push(NodeAvailable { id: next.id, available: next.available.clone() });
                }
                only_available
            },
        );
        diff(
            &mut self.frameworks,
            &view.frameworks,
            |f| f.id,
            &mut delta.frameworks,
            &mut delta.removed_frameworks,
            |_, _| false,
        );
        delta
    }

    /// The whole view as a delta (`base: none`). The held copy follows only if the view's lists are
    /// sorted by id, which deltas rely on; an unsorted view is sent whole every time.
    pub(crate) fn whole(&mut self, view: &ClusterView) -> ViewDelta {
        let mut delta = self.empty_delta(view, None);
        delta.nodes = view.nodes.clone();
        delta.frameworks = view.frameworks.clone();
        if sorted(view) {
            self.nodes = view.nodes.clone();
            self.frameworks = view.frameworks.clone();
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
            available: Vec::new(),
            removed_nodes: Vec::new(),
            frameworks: Vec::new(),
            removed_frameworks: Vec::new(),
            filters: view.filters.clone(),
            now_ms: view.now_ms,
        }
    }
}

fn sorted(view: &ClusterView) -> bool {
    view.nodes.windows(2).all(|w| w[0].id < w[1].id) && view.frameworks.windows(2).all(|w| w[0].id < w[1].id)
}

/// Brings `held` to `next` (both sorted by id), pushing what is new or changed onto `changed` and the
/// ids that are gone onto `removed`, both in id order. When the ids are the same as before (the usual
/// cycle), each changed record is first offered to `partial`, which may update the held record and send
/// the change its own way (returning `true`) instead of whole.
fn diff<T: Clone + PartialEq>(
    held: &mut Vec<T>,
    next: &[T],
    id: impl Fn(&T) -> u32,
    changed: &mut Vec<T>,
    removed: &mut Vec<u32>,
    mut partial: impl FnMut(&mut T, &T) -> bool,
) {
    if held.len() == next.len() && held.iter().zip(next).all(|(h, n)| id(h) == id(n)) {
        for (h, n) in held.iter_mut().zip(next) {
            if h != n && !partial(h, n) {
                h.clone_from(n);
                changed.push(n.clone());
            }
        }
        return;
    }
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
    use crate::runtime::bindings::{Attribute, Resources};

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
        for a in &delta.available {
            let i = held.binary_search_by_key(&a.id, |h| h.id).expect("`available` names a held node");
            held[i].available = a.available.clone();
        }
    }

    #[test]
    fn deltas_rebuild_every_view_and_carry_only_changes() {
        let mut held = HeldView::default();
        let mut guest = Vec::new();
        let first = view((1..=5).map(|i| node(i, 1000)).collect());
        let d = held.delta(&first);
        assert_eq!((d.base, d.epoch, d.nodes.len()), (None, 1, 5));
        apply(&mut guest, &d);
        assert_eq!(guest, first.nodes);

        let mut second = first.clone();
        second.nodes[2].available.milli_cpus = 400;
        second.nodes[4].attributes.push(Attribute { name: "rack".into(), value: "r1".into() });
        let d = held.delta(&second);
        assert_eq!((d.base, d.epoch), (Some(1), 2));
        assert_eq!(
            d.available.iter().map(|a| (a.id, a.available.milli_cpus)).collect::<Vec<_>>(),
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
        let d = held.delta(&third);
        assert_eq!(d.base, Some(2));
        assert_eq!(d.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![0, 4, 9]);
        assert_eq!(d.removed_nodes, vec![2]);
        apply(&mut guest, &d);
        assert_eq!(guest, third.nodes);

        let d = held.delta(&view(vec![]));
        assert_eq!(d.removed_nodes, vec![0, 1, 3, 4, 5, 9]);
        apply(&mut guest, &d);
        assert!(guest.is_empty());
    }

    #[test]
    fn unsorted_views_and_forgotten_instances_get_whole_views() {
        let mut held = HeldView::default();
        let unsorted = view(vec![node(2, 1), node(1, 1)]);
        assert_eq!(held.delta(&unsorted).base, None);
        assert_eq!(held.delta(&unsorted).base, None, "an unsorted view is never diffed");

        let sorted = view(vec![node(1, 1), node(2, 1)]);
        assert_eq!(held.delta(&sorted).base, None);
        assert!(held.delta(&sorted).base.is_some());
        held.forget();
        let d = held.delta(&sorted);
        assert_eq!((d.base, d.nodes.len()), (None, 2));
    }
}
