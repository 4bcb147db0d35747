//! Versions: atomic hot swap under load, rollback, and the precompiled-artifact cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_host::bundled;
use berth_host::runtime::{
    ArtifactCache, LoadError, NewVersion, PluginKind, PluginLimits, Registry, Runtime,
};
use berth_tests::guests;
use berth_tests::views::{framework, node, shape, view};

fn tagged(tag: u64) -> NewVersion<'static> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let bytes = BYTES.get_or_init(|| guests::read(guests::TAGGED));
    NewVersion {
        name: "alloc",
        kind: PluginKind::Allocator,
        bytes,
        config: tag.to_string(),
        limits: PluginLimits::default(),
        number: None,
    }
}

#[test]
fn swapping_under_load_loses_no_call_and_each_call_is_answered_by_one_version() {
    const CALLS: usize = 10_000;
    let registry = Arc::new(Registry::new(Runtime::new(None).unwrap()));
    let plugin = registry.load(tagged(1)).unwrap();
    let nodes = (0..20).map(|i| node(i, 1_000, 1_000)).collect();
    let cluster = view(nodes, vec![framework(0, "f", 1.0, vec![shape(1, 1, 1)])]);

    let done = Arc::new(AtomicBool::new(false));
    let caller = {
        let plugin = plugin.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut answers = Vec::with_capacity(CALLS);
            for _ in 0..CALLS {
                let (version, grants) = plugin.allocate(&cluster).expect("no call may fail during a swap");
                let grants = grants.to_vec();
                assert_eq!(grants.len(), 20, "a whole answer");
                let tag = grants[0].resources.milli_cpus;
                assert!(
                    grants.iter().all(|g| g.resources.milli_cpus == tag),
                    "an answer mixed versions: {grants:?}"
                );
                answers.push((version, tag));
            }
            done.store(true, Ordering::Relaxed);
            answers
        })
    };

    // Swap between two versions (a new upload, then rollbacks and re-activations) while the calls run.
    let v2 = registry.prepare(tagged(2)).unwrap();
    let mut swaps = 0;
    registry.activate(v2);
    while !done.load(Ordering::Relaxed) {
        registry.rollback("alloc").unwrap();
        registry.activate_number("alloc", 2).unwrap();
        swaps += 2;
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let answers = caller.join().expect("the caller saw no failure");
    assert_eq!(answers.len(), CALLS);
    // The version a call reports and the tag in its grants agree: version 1 answers with tag 1, 2 with 2.
    assert!(answers.iter().all(|&(version, tag)| u64::from(version) == tag), "version and answer disagree");
    assert!(
        answers.iter().any(|&(v, _)| v == 1) && answers.iter().any(|&(v, _)| v == 2),
        "both versions answered"
    );
    assert!(swaps > 0);

    // Roll back to version 1; new calls are answered by it.
    registry.activate_number("alloc", 2).unwrap();
    let back = registry.rollback("alloc").unwrap();
    assert_eq!(back.number, 1);
    let (version, grants) = plugin.allocate(&view(vec![node(7, 1, 1)], vec![])).unwrap();
    assert_eq!((version, grants.to_vec()[0].resources.milli_cpus), (1, 1));
    let stats: u64 = plugin.info().iter().map(|v| v.stats.calls).sum();
    assert!(stats >= CALLS as u64);
}

#[test]
fn rollback_walks_back_through_activations_and_stops_at_the_first() {
    let registry = Registry::new(Runtime::new(None).unwrap());
    let plugin = registry.load(tagged(1)).unwrap();
    registry.load(tagged(2)).unwrap();
    registry.load(tagged(3)).unwrap();
    assert_eq!(plugin.active().number, 3);
    assert_eq!(registry.rollback("alloc").unwrap().number, 2);
    assert_eq!(registry.rollback("alloc").unwrap().number, 1);
    let error = registry.rollback("alloc").unwrap_err();
    assert!(matches!(error, LoadError::NoEarlierVersion(_)), "{error}");
    assert_eq!(plugin.active().number, 1);
    assert_eq!(plugin.info().len(), 3, "rolled-back versions stay loaded");
}

#[test]
fn a_new_version_that_fails_its_probe_leaves_the_active_one_in_place() {
    let registry = Registry::new(Runtime::new(None).unwrap());
    let plugin = registry.load(tagged(1)).unwrap();
    let mut bad = tagged(2);
    bad.config = "not a number".into();
    let error = registry.load(bad).unwrap_err();
    assert!(matches!(error, LoadError::InitRefused(ref m) if m.contains("must be a number")), "{error}");
    assert_eq!(plugin.active().number, 1);
    let mut framework_bytes = tagged(2);
    let probe = guests::read(guests::SANDBOX_PROBE);
    framework_bytes.bytes = &probe;
    let error = registry.load(framework_bytes).unwrap_err();
    assert!(matches!(error, LoadError::MissingExports { .. }), "{error}");
    assert_eq!(plugin.active().number, 1);
}

#[test]
fn compiled_artifacts_are_cached_across_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Registry::new(Runtime::new(Some(ArtifactCache::open(dir.path(), None).unwrap())).unwrap());
    let load = |registry: &Registry| {
        registry
            .load(NewVersion {
                name: "proportional",
                kind: PluginKind::Allocator,
                bytes: bundled::PROPORTIONAL,
                config: String::new(),
                limits: PluginLimits::default(),
                number: None,
            })
            .unwrap()
    };
    let first = open();
    assert!(!load(&first).active().from_cache, "first load compiles");
    let second = open();
    let plugin = load(&second);
    assert!(plugin.active().from_cache, "a new runtime loads the artifact the first compiled");
    let artifacts: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let (_, grants) = plugin
        .allocate(&view(vec![node(1, 1_000, 1_000)], vec![framework(1, "f", 1.0, vec![shape(100, 64, 1)])]))
        .unwrap();
    assert_eq!(grants.len(), 1);
}
