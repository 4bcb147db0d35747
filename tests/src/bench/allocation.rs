//! The allocation cycle: the `proportional` allocator on one large view, compiled natively and as the wasm
//! component `berth` embeds, measured side by side in one run.
//!
//! Native and wasm calls alternate so that both see the same machine noise; the figures are medians. The
//! wasm figure is the whole call as the master makes it: the delta from the view the instance holds
//! (computed by the host), lowering it into the guest, applying it there, the policy, and lifting the grants
//! back. The host is given each node's revision, as the master gives it, so it reads only the nodes that
//! changed. Successive cycles alternate between a view and the same view after its grants (nodes granted on
//! have less available, frameworks granted to hold more), so each delta carries what a real cycle changes.
//! The whole-view call (`allocate`, what the master made before views were incremental) is measured too.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_host::bundled;
use berth_host::runtime::bindings as abi;
use berth_host::runtime::{
    AllocatorInstance, NewVersion, Plugin, PluginKind, PluginLimits, Registry, Runtime,
};
use berth_plugin_proportional::policy;
use berth_plugin_sdk as sdk;

use super::median;

/// One point of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct Matrix {
    pub nodes: u32,
    pub frameworks: u32,
    /// Alternating native/wasm rounds.
    pub rounds: u32,
}

/// What one point measured.
#[derive(Clone, Debug)]
pub struct Cycle {
    pub setup: Matrix,
    /// Tasks of demand in the view, and grants the policy made.
    pub demand: u64,
    pub grants: usize,
    pub native: Duration,
    pub wasm: Duration,
    /// The wasm call with the whole view lowered every time.
    pub wasm_whole: Duration,
    /// Nodes in each delta (the nodes granted on), median.
    pub delta_nodes: usize,
}

impl Cycle {
    pub fn ratio(&self) -> f64 {
        self.wasm.as_secs_f64() / self.native.as_secs_f64()
    }
}

/// A deterministic pseudo-random sequence (a 64-bit LCG), so every run measures the same view.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// `nodes` nodes of 32 cores and 128 GiB with two attributes each, partly used; `frameworks` frameworks
/// with weights 1-4 in 10 roles, each holding some resources already and wanting 1-3 task shapes, 20 tasks
/// of each.
pub fn cluster(nodes: u32, frameworks: u32) -> sdk::ClusterView {
    let mut rng = Lcg(42);
    let nodes = (0..nodes)
        .map(|id| {
            let total = sdk::Resources::new(32_000, 128 * 1024)
                .with_ports(vec![sdk::PortRange { begin: 31_000, end: 32_000 }]);
            let mut available = total.clone();
            available.milli_cpus -= rng.next(16) * 1_000;
            sdk::Node {
                id,
                hostname: format!("node-{id:05}.cluster.example"),
                total,
                available,
                attributes: vec![
                    sdk::Attribute { name: "rack".into(), value: format!("r{}", id / 40) },
                    sdk::Attribute { name: "zone".into(), value: format!("z{}", id % 3) },
                ],
            }
        })
        .collect();
    let frameworks = (0..frameworks)
        .map(|id| sdk::FrameworkInfo {
            id,
            name: format!("framework-{id}"),
            role: format!("role-{}", id % 10),
            weight: (1 + rng.next(4)) as f64,
            allocated: sdk::Resources::new(rng.next(64) * 1_000, rng.next(64) * 1_024),
            suppressed: false,
            demand: (0..1 + rng.next(3))
                .map(|_| sdk::TaskShape {
                    ports: rng.next(2) as u32,
                    ..sdk::TaskShape::new(250 * (1 + rng.next(8)), 256 * (1 + rng.next(16)), 20)
                })
                .collect(),
        })
        .collect();
    sdk::ClusterView { nodes, frameworks, filters: vec![], now_ms: 1_700_000_000_000 }
}

/// The same view in the host's ABI types, as the master hands it to an allocator component.
pub fn to_abi(view: &sdk::ClusterView) -> abi::ClusterView {
    let resources = |r: &sdk::Resources| abi::Resources {
        milli_cpus: r.milli_cpus,
        mem_mib: r.mem_mib,
        disk_mib: r.disk_mib,
        gpus: r.gpus,
        ports: r.ports.iter().map(|p| abi::PortRange { begin: p.begin, end: p.end }).collect(),
    };
    abi::ClusterView {
        nodes: view
            .nodes
            .iter()
            .map(|n| abi::Node {
                id: n.id,
                hostname: n.hostname.clone(),
                total: resources(&n.total),
                available: resources(&n.available),
                attributes: n
                    .attributes
                    .iter()
                    .map(|a| abi::Attribute { name: a.name.clone(), value: a.value.clone() })
                    .collect(),
            })
            .collect(),
        frameworks: view
            .frameworks
            .iter()
            .map(|f| abi::Framework {
                id: f.id,
                name: f.name.clone(),
                role: f.role.clone(),
                weight: f.weight,
                allocated: resources(&f.allocated),
                suppressed: f.suppressed,
                demand: f
                    .demand
                    .iter()
                    .map(|s| abi::TaskShape {
                        milli_cpus: s.milli_cpus,
                        mem_mib: s.mem_mib,
                        disk_mib: s.disk_mib,
                        gpus: s.gpus,
                        ports: s.ports,
                        count: s.count,
                    })
                    .collect(),
            })
            .collect(),
        filters: view
            .filters
            .iter()
            .map(|f| abi::DeclineFilter { framework: f.framework, node: f.node, expires_ms: f.expires_ms })
            .collect(),
        now_ms: view.now_ms,
    }
}

/// A registry holding the bundled `proportional` allocator, with limits that let a 10k-node view through
/// (the master's defaults are for its own cycles, which it keeps smaller by batching).
pub fn registry() -> Registry {
    let registry = Registry::new(Runtime::new(None).expect("the plugin runtime"));
    registry.load(proportional(None)).expect("loading the bundled allocator");
    registry
}

/// The bundled `proportional` allocator as a new version (`number` or the next one).
pub fn proportional(number: Option<u32>) -> NewVersion<'static> {
    NewVersion {
        name: "proportional",
        kind: PluginKind::Allocator,
        bytes: bundled::PROPORTIONAL,
        config: String::new(),
        limits: PluginLimits { memory_mib: 1024, deadline_ms: 60_000 },
        number,
    }
}

/// `view` after `grants`: what the granted nodes have left and what the granted frameworks hold, as the
/// master's next view shows them while the offers are out.
pub fn after(view: &sdk::ClusterView, grants: &[sdk::Grant]) -> sdk::ClusterView {
    let mut next = view.clone();
    let nodes: HashMap<u32, usize> = next.nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    let frameworks: HashMap<u32, usize> =
        next.frameworks.iter().enumerate().map(|(i, f)| (f.id, i)).collect();
    for grant in grants {
        next.nodes[nodes[&grant.node]].available.remove(&grant.resources);
        next.frameworks[frameworks[&grant.framework]].allocated.add(&grant.resources);
    }
    next
}

/// A grant as a plain tuple (framework, node, CPU, memory, port ranges), to compare the native policy's
/// grants with the component's.
pub type Plain = (u32, u32, u64, u64, Vec<(u16, u16)>);

/// The native policy's grants as [`Plain`] tuples.
pub fn plain_native(grants: &[sdk::Grant]) -> Vec<Plain> {
    let ports = |r: &sdk::Resources| r.ports.iter().map(|p| (p.begin, p.end)).collect();
    grants
        .iter()
        .map(|g| (g.framework, g.node, g.resources.milli_cpus, g.resources.mem_mib, ports(&g.resources)))
        .collect()
}

/// The component's grants as [`Plain`] tuples.
pub fn plain_wasm(grants: &abi::Grants) -> Vec<Plain> {
    grants
        .iter()
        .map(|g| {
            let ports = g.ports.iter().map(|&[begin, end]| (begin, end)).collect();
            (g.framework, g.node, g.scalars.milli_cpus, g.scalars.mem_mib, ports)
        })
        .collect()
}

/// The two views a point of the matrix alternates between, as the native policy and the component see them,
/// with each node's revision as the master passes it.
struct Views {
    native: [sdk::ClusterView; 2],
    wasm: [abi::ClusterView; 2],
    revisions: [Vec<u64>; 2],
    /// The native policy's grants on each view, which every wasm call must match.
    expected: [Vec<Plain>; 2],
}

impl Views {
    fn new(setup: Matrix, config: &policy::Config) -> Views {
        let first = cluster(setup.nodes, setup.frameworks);
        let grants = policy::allocate(&first, config);
        let second = after(&first, &grants);
        let native = [first, second];
        let wasm = [to_abi(&native[0]), to_abi(&native[1])];
        // The nodes granted on change between the two views. A revision names one state of one node:
        // node i's in the first view is 2i + 1, and 2i + 2 in the second if it changed.
        let granted: BTreeSet<u32> = grants.iter().map(|g| g.node).collect();
        let revisions = [
            (0..native[0].nodes.len() as u64).map(|i| 2 * i + 1).collect(),
            (native[1].nodes.iter().enumerate())
                .map(|(i, n)| 2 * i as u64 + 1 + u64::from(granted.contains(&n.id)))
                .collect(),
        ];
        let expected = [plain_native(&grants), plain_native(&policy::allocate(&native[1], config))];
        Views { native, wasm, revisions, expected }
    }

    /// The master's call on the view of `round` (they alternate).
    fn call(&self, plugin: &Plugin, round: usize) -> abi::Grants {
        let (_, grants) = plugin
            .allocate_revised(&self.wasm[round % 2], Some(&self.revisions[round % 2]))
            .expect("wasm allocate");
        grants
    }

    /// Panics unless `plugin` decides what the native policy decides, on both views: the two must agree
    /// before their speed is worth comparing.
    fn check(&self, plugin: &Plugin) {
        for round in 0..2 {
            assert!(
                self.expected[round] == plain_wasm(&self.call(plugin, round)),
                "native and wasm disagree"
            );
        }
    }
}

/// Measures one point of the matrix.
pub fn run(registry: &Registry, setup: Matrix) -> Cycle {
    let config = policy::Config::default();
    let views = Views::new(setup, &config);
    let plugin = registry.get("proportional").expect("the allocator is loaded");
    let mut whole = AllocatorInstance::create(&plugin.active()).expect("an allocator instance");
    views.check(&plugin);
    for (expected, wasm_view) in views.expected.iter().zip(&views.wasm) {
        let whole = whole.allocate_whole(wasm_view).expect("wasm allocate, whole view");
        assert!(*expected == plain_wasm(&whole), "native and wasm (whole view) disagree");
    }
    let demand = views.native[0].frameworks.iter().flat_map(|f| &f.demand).map(|s| u64::from(s.count)).sum();

    let (mut native, mut wasm, mut wasm_whole) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..setup.rounds as usize {
        let started = Instant::now();
        std::hint::black_box(policy::allocate(&views.native[round % 2], &config));
        native.push(started.elapsed());
        let started = Instant::now();
        std::hint::black_box(views.call(&plugin, round));
        wasm.push(started.elapsed());
        let started = Instant::now();
        std::hint::black_box(
            whole.allocate_whole(&views.wasm[round % 2]).expect("wasm allocate, whole view"),
        );
        wasm_whole.push(started.elapsed());
    }
    Cycle {
        setup,
        demand,
        grants: views.expected[0].len(),
        native: median(&mut native),
        wasm: median(&mut wasm),
        wasm_whole: median(&mut wasm_whole),
        delta_nodes: views.revisions[0].iter().zip(&views.revisions[1]).filter(|(a, b)| a != b).count(),
    }
}

/// What [`compare`] measured for one build: the fastest and the median of its rounds, per call.
#[derive(Clone, Debug)]
pub struct Build {
    pub label: String,
    pub fastest: Duration,
    pub median: Duration,
}

/// Compares builds of the `proportional` component (`(label, bytes)`) with each other and with the native
/// policy, on one point of the matrix, in one process: each round makes `calls` calls with the native
/// policy and then with each build in turn, so that all see the same machine. Each build must decide what
/// the native policy decides. Returns the native policy's figures first.
///
/// Made for trying a change to the policy or the SDK: on these machines the same binary can run half as
/// fast again an hour later, so times from separate runs cannot be compared; side by side, a few percent
/// show.
pub fn compare(setup: Matrix, calls: u32, builds: &[(String, Vec<u8>)]) -> Vec<Build> {
    let config = policy::Config::default();
    let views = Views::new(setup, &config);
    let registry = Registry::new(Runtime::new(None).expect("the plugin runtime"));
    let plugins: Vec<Arc<Plugin>> = builds
        .iter()
        .enumerate()
        .map(|(i, (label, bytes))| {
            let name = format!("build-{i}");
            registry
                .load(NewVersion { name: &name, bytes, ..proportional(None) })
                .unwrap_or_else(|e| panic!("loading {label}: {e}"));
            let plugin = registry.get(&name).expect("just loaded");
            views.check(&plugin);
            plugin
        })
        .collect();
    let mut times = vec![Vec::new(); plugins.len() + 1];
    for _ in 0..setup.rounds {
        let started = Instant::now();
        for round in 0..calls as usize {
            std::hint::black_box(policy::allocate(&views.native[round % 2], &config));
        }
        times[0].push(started.elapsed() / calls);
        for (plugin, times) in plugins.iter().zip(&mut times[1..]) {
            let started = Instant::now();
            for round in 0..calls as usize {
                std::hint::black_box(views.call(plugin, round));
            }
            times.push(started.elapsed() / calls);
        }
    }
    let labels = std::iter::once("native").chain(builds.iter().map(|(label, _)| label.as_str()));
    labels
        .zip(&mut times)
        .map(|(label, times)| Build {
            label: label.to_string(),
            fastest: *times.iter().min().expect("at least one round"),
            median: median(times),
        })
        .collect()
}
