//! The default allocator's fairness, through the real wasm component that `berth` embeds.

use std::collections::HashMap;

use berth_host::bundled;
use berth_host::runtime::bindings::{ClusterView, Grant};
use berth_host::runtime::{AllocatorInstance, NewVersion, PluginKind, PluginLimits, Registry, Runtime};
use berth_plugin_proportional::policy;
use berth_plugin_sdk as sdk;
use berth_tests::bench::allocation::{after, cluster, plain_native, plain_wasm, to_abi};
use berth_tests::views::{framework, granted, node, shape, view};

fn registry() -> Registry {
    let registry = Registry::new(Runtime::new(None).expect("runtime"));
    registry
        .load(NewVersion {
            name: "proportional",
            kind: PluginKind::Allocator,
            bytes: bundled::PROPORTIONAL,
            config: String::new(),
            limits: PluginLimits::default(),
            number: None,
        })
        .expect("the bundled allocator loads");
    registry
}

fn allocate(view: &ClusterView) -> Vec<Grant> {
    let registry = registry();
    let plugin = registry.get("proportional").expect("loaded");
    let (_, grants) = plugin.allocate(view).expect("allocate");
    let grants = grants.to_vec();
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

#[test]
fn deltas_decide_exactly_what_whole_views_decide() {
    // The component keeps the view between calls and is sent only what changed. Over a run of changing
    // views (nodes granted on, joining, leaving, relabelled; frameworks changing demand, joining, leaving;
    // decline filters), each answer must equal the same policy's natively on the whole view, and the
    // component's own answer when it is sent the whole view.
    let registry = registry();
    let plugin = registry.get("proportional").expect("loaded");
    let mut instance = AllocatorInstance::create(&plugin.active()).expect("an instance");
    assert!(instance.incremental(), "the Rust SDK exports `allocate-delta`");
    let mut other = AllocatorInstance::create(&plugin.active()).expect("an instance");
    // A third instance is given node revisions, as the master gives them (from one count, so no two
    // states of any nodes share one): the host then reads only the nodes whose revision moved.
    let mut revised = AllocatorInstance::create(&plugin.active()).expect("an instance");
    let mut seen: HashMap<u32, (sdk::Node, u64)> = HashMap::new();
    let mut last_revision = 0;
    let config = policy::Config::default();
    let mut current = cluster(300, 30);
    let mut next_id = 1_000;
    let mut filters_mattered = 0;
    for step in 0..16 {
        let native = policy::allocate(&current, &config);
        // Decline filters hold: no grant to a framework on a node it declined, though the same view
        // without its filters would (checked, so that the filters can be seen to matter).
        let filtered: Vec<(u32, u32)> = current
            .filters
            .iter()
            .filter(|f| f.expires_ms > current.now_ms)
            .map(|f| (f.framework, f.node))
            .collect();
        for g in &native {
            assert!(
                !filtered.contains(&(g.framework, g.node)),
                "step {step}: a grant despite a filter: {g:?}"
            );
        }
        if !filtered.is_empty() {
            let mut unfiltered = current.clone();
            unfiltered.filters.clear();
            let grants = policy::allocate(&unfiltered, &config);
            filters_mattered += usize::from(grants.iter().any(|g| filtered.contains(&(g.framework, g.node))));
        }
        let abi = to_abi(&current);
        let incremental = instance.allocate(&abi).expect("allocate-delta");
        let whole = other.allocate_whole(&abi).expect("allocate");
        let revisions: Vec<u64> = current
            .nodes
            .iter()
            .map(|n| {
                let (last, revision) = seen.entry(n.id).or_insert_with(|| (n.clone(), 0));
                if *revision == 0 || last != n {
                    *last = n.clone();
                    last_revision += 1;
                    *revision = last_revision;
                }
                *revision
            })
            .collect();
        let with_revisions = revised.allocate_revised(&abi, Some(&revisions)).expect("allocate-delta");
        assert!(!native.is_empty(), "step {step}: the view has demand that fits");
        assert_eq!(
            plain_wasm(&with_revisions),
            plain_native(&native),
            "step {step}: the answer with node revisions differs"
        );
        assert_eq!(
            plain_wasm(&incremental),
            plain_native(&native),
            "step {step}: the delta's answer differs"
        );
        assert_eq!(plain_wasm(&whole), plain_native(&native), "step {step}: the whole view's answer differs");

        // The next view: half of the grants taken up, plus one other kind of change in turn.
        let taken: Vec<sdk::Grant> = native.into_iter().step_by(2).collect();
        current = after(&current, &taken);
        match step % 4 {
            0 => {
                current.nodes.remove(7);
                current.nodes.remove(100);
            }
            1 => {
                // One leaves and one joins: as many nodes as before, most of them at new places.
                current.nodes.remove(50);
                let mut joined = current.nodes[0].clone();
                joined.id = next_id;
                joined.hostname = format!("joined-{next_id}");
                next_id += 1;
                current.nodes.push(joined);
                current.nodes[3].attributes[0].value = "moved".into();
            }
            2 => {
                current.frameworks.remove(4);
                current.frameworks[9].demand.clear();
                current.frameworks[10].weight *= 3.0;
                let mut joined = current.frameworks[1].clone();
                joined.id = next_id;
                next_id += 1;
                current.frameworks.push(joined);
            }
            _ => {
                // A pair the next view would be granted (if any still fits): the filter must take it away.
                if let Some(g) = policy::allocate(&current, &config).first() {
                    let (framework, node) = (g.framework, g.node);
                    current.filters.push(sdk::DeclineFilter {
                        framework,
                        node,
                        expires_ms: current.now_ms + 5_000,
                    });
                }
                current.now_ms += 1_000;
            }
        }
    }
    assert!(filters_mattered > 0, "no step where a decline filter changed the grants");
}
