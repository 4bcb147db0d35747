//! Building cluster views (the allocator's input) in the host's own ABI types.

use berth_host::runtime::bindings::{ClusterView, Framework, Grant, Node, Resources, TaskShape};

/// A node with these CPU (milli) and memory (MiB), all of it available.
pub fn node(id: u32, milli_cpus: u64, mem_mib: u64) -> Node {
    let r = resources(milli_cpus, mem_mib);
    Node { id, hostname: format!("node-{id}"), total: r.clone(), available: r, attributes: vec![] }
}

/// CPU and memory, nothing else.
pub fn resources(milli_cpus: u64, mem_mib: u64) -> Resources {
    Resources { milli_cpus, mem_mib, disk_mib: 0, gpus: 0, ports: vec![] }
}

/// `count` tasks of this size.
pub fn shape(milli_cpus: u64, mem_mib: u64, count: u32) -> TaskShape {
    TaskShape { milli_cpus, mem_mib, disk_mib: 0, gpus: 0, ports: 0, count }
}

/// A framework holding nothing yet.
pub fn framework(id: u32, name: &str, weight: f64, demand: Vec<TaskShape>) -> Framework {
    Framework {
        id,
        name: name.into(),
        role: "*".into(),
        weight,
        allocated: resources(0, 0),
        suppressed: false,
        demand,
    }
}

/// A view with no decline filters.
pub fn view(nodes: Vec<Node>, frameworks: Vec<Framework>) -> ClusterView {
    ClusterView { nodes, frameworks, filters: vec![], now_ms: 1_700_000_000_000 }
}

/// The sum of what `grants` give framework `id`, as (milli-cpus, MiB).
pub fn granted(grants: &[Grant], id: u32) -> (u64, u64) {
    grants
        .iter()
        .filter(|g| g.framework == id)
        .fold((0, 0), |(c, m), g| (c + g.resources.milli_cpus, m + g.resources.mem_mib))
}
