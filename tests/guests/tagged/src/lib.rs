//! Test guest: an allocator whose configuration is a number, its tag. Every grant it returns carries the
//! tag as its milli-cpus, one grant per node, so a test can tell which version answered a call and that
//! one version answered all of it.

use berth_plugin_sdk::{Allocator, ClusterView, Grant, Resources, export_allocator};

struct Tagged {
    tag: u64,
}

impl Allocator for Tagged {
    fn init(config: &str) -> Result<Self, String> {
        let tag = config.trim().parse().map_err(|e| format!("the config must be a number: {e}"))?;
        Ok(Tagged { tag })
    }

    fn allocate(&mut self, view: &ClusterView) -> Vec<Grant> {
        view.nodes
            .iter()
            .map(|n| Grant { framework: 0, node: n.id, resources: Resources::new(self.tag, 0) })
            .collect()
    }
}

export_allocator!(Tagged);
