//! {{name}}: a berth allocator. It gives each framework with demand its tasks on the first node where they
//! fit, frameworks in order of id; change `allocate` to make it your policy.

use berth_plugin_sdk::{Allocator, ClusterView, Grant, Resources, export_allocator, log};

struct Plugin;

impl Allocator for Plugin {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Plugin)
    }

    fn allocate(&mut self, view: &ClusterView) -> Vec<Grant> {
        let mut free: Vec<Resources> = view.nodes.iter().map(|n| n.available.clone()).collect();
        let mut grants: Vec<Grant> = Vec::new();
        for framework in view.frameworks.iter().filter(|f| !f.suppressed) {
            for shape in &framework.demand {
                for _ in 0..shape.count {
                    let Some((i, taken)) =
                        free.iter_mut().enumerate().find_map(|(i, f)| f.take_shape(shape).map(|t| (i, t)))
                    else {
                        break;
                    };
                    let node = view.nodes[i].id;
                    match grants.iter_mut().find(|g| g.framework == framework.id && g.node == node) {
                        Some(g) => g.resources.add(&taken),
                        None => grants.push(Grant { framework: framework.id, node, resources: taken }),
                    }
                }
            }
        }
        log::debug(&format!("{{name}}: {} grants", grants.len()));
        grants
    }
}

export_allocator!(Plugin);
