//! What a plugin costs in each language: component size, compile time, loading the precompiled artifact,
//! instantiating (with `init`), and calling, measured side by side in one run.
//!
//! `cargo bench -p berth-tests --bench languages` (needs the Python and C toolchains, see plugin-sdk/README.md).
//!
//! Allocators: `proportional` (Rust), `binpack-c` (C), `priority-py` (Python), each allocating on the same view
//! (100 nodes x 10 frameworks with demand). Frameworks: `marathon` (Rust) and `batch-py` (Python), each
//! answering a read of its HTTP API. The policies differ, so call times compare languages loosely; sizes,
//! compile, load and instantiate times compare them well.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_host::master::{FrameworkKv, Progress};
use berth_host::runtime::bindings::{ClusterView, HttpRequest};
use berth_host::runtime::{
    AllocatorInstance, ArtifactCache, FrameworkInstance, KvBackend, NewVersion, PluginKind, PluginLimits,
    Registry, Runtime, Version,
};
use berth_host::store::Store;
use berth_tests::bench::median;
use berth_tests::languages::build_example;
use berth_tests::views::{framework, node, shape, view};

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

struct Row {
    name: &'static str,
    language: &'static str,
    kind: PluginKind,
    bytes: Vec<u8>,
}

/// Loads through a fresh cache (compiles), then again through a second runtime on the same cache (loads the
/// precompiled artifact). Returns the second registry's version.
fn load(row: &Row, cache: &Path) -> (Duration, Duration, Arc<Version>) {
    let limits = PluginLimits { memory_mib: 512, deadline_ms: 60_000 };
    let new = || NewVersion {
        name: row.name,
        kind: row.kind,
        bytes: &row.bytes,
        config: String::new(),
        limits,
        number: None,
    };
    let first = Registry::new(Runtime::new(Some(ArtifactCache::open(cache, None).unwrap())).unwrap());
    let compiled = first.prepare(new()).unwrap();
    assert!(!compiled.from_cache);
    let second = Registry::new(Runtime::new(Some(ArtifactCache::open(cache, None).unwrap())).unwrap());
    let loaded = second.prepare(new()).unwrap();
    assert!(loaded.from_cache);
    let plugin = second.activate(loaded.clone());
    std::mem::forget(second); // keep the runtime alive for the calls below
    (compiled.compile_time, loaded.compile_time, plugin.active())
}

fn main() {
    let rows = vec![
        Row {
            name: "proportional",
            language: "Rust",
            kind: PluginKind::Allocator,
            bytes: berth_host::bundled::PROPORTIONAL.to_vec(),
        },
        Row {
            name: "binpack",
            language: "C",
            kind: PluginKind::Allocator,
            bytes: std::fs::read(build_example("plugins/binpack-c")).unwrap(),
        },
        Row {
            name: "priority",
            language: "Python",
            kind: PluginKind::Allocator,
            bytes: std::fs::read(build_example("plugins/priority-py")).unwrap(),
        },
        Row {
            name: "marathon",
            language: "Rust",
            kind: PluginKind::Framework,
            bytes: berth_host::bundled::MARATHON.to_vec(),
        },
        Row {
            name: "batch",
            language: "Python",
            kind: PluginKind::Framework,
            bytes: std::fs::read(build_example("plugins/batch-py")).unwrap(),
        },
    ];
    let cluster: ClusterView = view(
        (0..100).map(|i| node(i, 16_000, 65_536)).collect(),
        (0..10)
            .map(|i| framework(i, &format!("f{i}"), 1.0 + f64::from(i % 3), vec![shape(500, 512, 20)]))
            .collect(),
    );
    let request = |path: &str| HttpRequest {
        method: "GET".into(),
        path: path.into(),
        query: String::new(),
        headers: vec![],
        body: vec![],
    };

    println!(
        "| plugin | language | kind | size | compile | load precompiled | instantiate + init | call (median of 50) |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    for row in &rows {
        let cache = tempfile::tempdir().unwrap();
        let (compile, load, version) = load(row, cache.path());
        let (instantiate, call) = match row.kind {
            PluginKind::Allocator => {
                let mut instantiations: Vec<Duration> = (0..10)
                    .map(|_| {
                        let t = Instant::now();
                        AllocatorInstance::create(&version).unwrap();
                        t.elapsed()
                    })
                    .collect();
                let mut instance = AllocatorInstance::create(&version).unwrap();
                let mut calls: Vec<Duration> = (0..50)
                    .map(|_| {
                        let t = Instant::now();
                        instance.allocate(&cluster).unwrap();
                        t.elapsed()
                    })
                    .collect();
                (median(&mut instantiations), format!("{} allocate", ms(median(&mut calls))))
            }
            PluginKind::Framework => {
                let plugin = Registry::new(version.runtime().clone()).activate(version.clone());
                // Frameworks persist their state: give them the master's key-value backend, on a store of
                // its own (nothing is committed here, so every write stays in the backend's memory).
                let dir = tempfile::tempdir().unwrap();
                let store = Arc::new(Store::open(dir.path()).unwrap());
                let kv = || -> Option<Arc<dyn KvBackend>> {
                    let progress = Arc::new(Progress::default());
                    Some(Arc::new(FrameworkKv::new(
                        row.name,
                        Default::default(),
                        64 << 20,
                        store.clone(),
                        progress,
                    )))
                };
                let mut instantiations: Vec<Duration> = (0..10)
                    .map(|_| {
                        let t = Instant::now();
                        FrameworkInstance::new(plugin.clone(), String::new(), kv(), None).unwrap();
                        t.elapsed()
                    })
                    .collect();
                let mut instance = FrameworkInstance::new(plugin, String::new(), kv(), None).unwrap();
                let path = if row.name == "marathon" { "/v2/apps" } else { "/jobs" };
                let mut calls: Vec<Duration> = (0..50)
                    .map(|_| {
                        let t = Instant::now();
                        instance.handle(&request(path)).unwrap();
                        t.elapsed()
                    })
                    .collect();
                (median(&mut instantiations), format!("{} `GET {path}`", ms(median(&mut calls))))
            }
        };
        println!(
            "| {} | {} | {} | {:.1} KiB | {} | {} | {} | {} |",
            row.name,
            row.language,
            row.kind,
            row.bytes.len() as f64 / 1024.0,
            ms(compile),
            ms(load),
            ms(instantiate),
            call
        );
    }
}
