//! Test guest: an allocator that panics (a trap) when the view contains a node named `trap`, and
//! otherwise grants 1 milli-cpu on the first node to every framework.

use berth_plugin_sdk::{Allocator, ClusterView, Grant, Resources, export_allocator};

struct Trapper;

impl Allocator for Trapper {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Trapper)
    }

    fn allocate(&mut self, view: &ClusterView) -> Vec<Grant> {
        if view.nodes.iter().any(|n| n.hostname == "trap") {
            panic!("asked to trap");
        }
        let Some(node) = view.nodes.first() else { return Vec::new() };
        view.frameworks
            .iter()
            .map(|f| Grant { framework: f.id, node: node.id, resources: Resources::new(1, 0) })
            .collect()
    }
}

export_allocator!(Trapper);
