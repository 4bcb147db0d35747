//! The default allocator's fairness, through the real wasm component that `berth` embeds.

use berth_host::bundled;
use berth_host::runtime::bindings::{ClusterView, Grant};
use berth_host::runtime::{NewVersion, PluginKind, PluginLimits, Registry, Runtime};
use berth_tests::views::{framework, granted, node, shape, view};

fn allocate(view: &ClusterView) -> Vec<Grant> {
    let registry = Registry::new(Runtime::new(None).expect("runtime"));
    let plugin = registry
        .load(NewVersion {
            name: "proportional",
            kind: PluginKind::Allocator,
            bytes: bundled::PROPORTIONAL,
            config: String::new(),
            limits: PluginLimits::default(),
            number: None,
        })
        .expect("the bundled allocator loads");
    let (_, grants) = plugin.allocate(view).expect("allocate");
    assert_grants_fit(view, &grants);
    grants
}

/// Every grant fits what its node had available, counting all grants on the node together.
fn assert_grants_fit(view: &ClusterView, grants: &[Grant]) {
    for n in &view.nodes {
        let (cpus, mem) = grants
            .iter()
            .filter(|g| g.node == n.id)
            .fold((0, 0), |(c, m), g| (c + g.resources.milli_cpus, m + g.resources.mem_mib));
        assert!(cpus <= n.available.milli_cpus && mem <= n.available.mem_mib, "over-granted node {}", n.id);
    }
}

#[test]
fn drf_paper_example_gives_a_three_tasks_and_b_two() {
    // Ghodsi et al., "Dominant Resource Fairness", NSDI 2011, section 4: <9 CPU, 18 GB>, A runs tasks of
    // <1 CPU, 4 GB>, B runs tasks of <3 CPU, 1 GB>.
    const GB: u64 = 1024;
    let grants = allocate(&view(
        vec![node(1, 9_000, 18 * GB)],
        vec![
            framework(1, "a", 1.0, vec![shape(1_000, 4 * GB, u32::MAX)]),
            framework(2, "b", 1.0, vec![shape(3_000, GB, u32::MAX)]),
        ],
    ));
    let (a_cpus, a_mem) = granted(&grants, 1);
    let (b_cpus, b_mem) = granted(&grants, 2);
    assert_eq!((a_cpus, a_mem), (3_000, 12 * GB), "A: 3 tasks of <1 CPU, 4 GB>");
    assert_eq!((b_cpus, b_mem), (6_000, 2 * GB), "B: 2 tasks of <3 CPU, 1 GB>");
    // Both dominant shares are 2/3: A's is memory (12 of 18 GB), B's is CPU (6 of 9).
    assert_eq!(a_mem * 3, 18 * GB * 2);
    assert_eq!(b_cpus * 3, 9_000 * 2);
}

#[test]
fn one_resource_is_shared_in_proportion_to_weights() {
    // 80 CPUs on ten nodes; weights 1, 2 and 5 with unbounded demand: 10, 20 and 50 CPUs.
    let nodes = (1..=10).map(|i| node(i, 8_000, 0)).collect();
    let frameworks = vec![
        framework(1, "w1", 1.0, vec![shape(1_000, 0, u32::MAX)]),
        framework(2, "w2", 2.0, vec![shape(1_000, 0, u32::MAX)]),
        framework(3, "w5", 5.0, vec![shape(1_000, 0, u32::MAX)]),
    ];
    let grants = allocate(&view(nodes, frameworks));
    assert_eq!(granted(&grants, 1).0, 10_000);
    assert_eq!(granted(&grants, 2).0, 20_000);
    assert_eq!(granted(&grants, 3).0, 50_000);
}

#[test]
fn what_a_framework_already_holds_counts_toward_its_share() {
    // Framework 1 already runs 30 of 40 CPUs; with equal weights framework 2 gets the other 10 and
    // framework 1 nothing more.
    let mut rich = framework(1, "rich", 1.0, vec![shape(1_000, 0, u32::MAX)]);
    rich.allocated.milli_cpus = 30_000;
    let mut n = node(1, 40_000, 0);
    n.available.milli_cpus = 10_000;
    let grants =
        allocate(&view(vec![n], vec![rich, framework(2, "poor", 1.0, vec![shape(1_000, 0, u32::MAX)])]));
    assert_eq!(granted(&grants, 1).0, 0);
    assert_eq!(granted(&grants, 2).0, 10_000);
}
