//! The sandbox: deadlines, memory caps, traps, bad components, and no filesystem or network.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use berth_host::bundled;
use berth_host::runtime::bindings::HttpRequest;
use berth_host::runtime::{
    AllocatorInstance, CallError, FrameworkInstance, LoadError, NewVersion, Plugin, PluginKind, PluginLimits,
    Registry, Runtime,
};
use berth_tests::guests;
use berth_tests::views::{framework, node, shape, view};

fn registry() -> Registry {
    Registry::new(Runtime::new(None).expect("runtime"))
}

fn load(
    registry: &Registry,
    name: &str,
    kind: PluginKind,
    bytes: &[u8],
    config: &str,
    limits: PluginLimits,
) -> Result<Arc<Plugin>, LoadError> {
    registry.load(NewVersion { name, kind, bytes, config: config.into(), limits, number: None })
}

fn small_view() -> berth_host::runtime::bindings::ClusterView {
    view(vec![node(1, 4_000, 4_096)], vec![framework(1, "f", 1.0, vec![shape(1_000, 128, 2)])])
}

#[test]
fn a_plugin_that_loops_forever_is_stopped_at_its_deadline_and_others_keep_working() {
    stops_at_its_deadline("");
}

/// A loop that reads and writes no memory and calls nothing: only the deadline check at the loop's head,
/// which berth compiles itself (a patched copy of wasmtime's, host/vendor/README.md), can stop it.
#[test]
fn a_plugin_that_loops_in_registers_is_stopped_at_its_deadline() {
    stops_at_its_deadline("registers");
}

/// Calls without a loop (2^64 of them): only the check at each function's entry can stop these.
#[test]
fn a_plugin_that_recurses_without_loops_is_stopped_at_its_deadline() {
    stops_at_its_deadline("calls");
}

/// Loads the looper guest with `config`, checks that its `allocate` is stopped at the deadline twice, and
/// that another plugin answers in between.
fn stops_at_its_deadline(config: &str) {
    let registry = registry();
    let limits = PluginLimits { deadline_ms: 100, ..PluginLimits::default() };
    let looper =
        load(&registry, "looper", PluginKind::Allocator, &guests::read(guests::LOOPER), config, limits)
            .unwrap();
    let proportional =
        load(&registry, "proportional", PluginKind::Allocator, bundled::PROPORTIONAL, "", limits).unwrap();

    // On a thread of its own, so that a call the deadline does not stop fails the test instead of hanging it.
    // Not a speed check: a generous bound that fails only if the deadline did not stop the loop.
    let (sender, receiver) = std::sync::mpsc::channel();
    let first = looper.clone();
    std::thread::spawn(move || sender.send(first.allocate(&small_view()).map(|_| ())));
    let error = receiver
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!("looper ({config:?}) was not interrupted within 30 s of a 100 ms deadline")
        })
        .unwrap_err();
    assert_eq!(error, CallError::Deadline(Duration::from_millis(100)));

    let (_, grants) = proportional.allocate(&small_view()).expect("another plugin still works");
    assert_eq!(grants.len(), 1);
    assert_eq!(looper.allocate(&small_view()).unwrap_err(), CallError::Deadline(Duration::from_millis(100)));
    let stats = looper.active().stats();
    assert!(stats.deadline_exceeded >= 2, "{stats:?}");
}

#[test]
fn a_plugin_that_loops_in_init_is_refused_at_load() {
    let registry = registry();
    let limits = PluginLimits { deadline_ms: 50, ..PluginLimits::default() };
    let error = load(
        &registry,
        "looper",
        PluginKind::Allocator,
        &guests::read(guests::LOOPER),
        "loop-in-init",
        limits,
    )
    .expect_err("load must fail");
    assert!(matches!(error, LoadError::InitFailed(CallError::Deadline(_))), "{error}");
    assert!(registry.get("looper").is_none(), "nothing is registered after a failed load");
}

#[test]
fn a_plugin_that_grows_memory_past_its_cap_traps() {
    let registry = registry();
    let limits = PluginLimits { memory_mib: 64, ..PluginLimits::default() };
    let hog = load(&registry, "hog", PluginKind::Allocator, &guests::read(guests::HOG), "", limits).unwrap();
    match hog.allocate(&small_view()).unwrap_err() {
        CallError::Memory { asked_mib, cap_mib } => {
            assert_eq!(cap_mib, 64);
            assert!(asked_mib > 64, "asked for {asked_mib} MiB");
        }
        other => panic!("expected the memory cap to stop the call, got: {other}"),
    }
    let stats = hog.active().stats();
    assert_eq!(stats.memory_exceeded, 1, "{stats:?}");
    assert!(stats.peak_memory_bytes <= 64 << 20, "{stats:?}");
}

#[test]
fn a_plugin_that_traps_is_reinstantiated_and_its_next_call_works() {
    let registry = registry();
    let trapper = load(
        &registry,
        "trapper",
        PluginKind::Allocator,
        &guests::read(guests::TRAPPER),
        "",
        PluginLimits::default(),
    )
    .unwrap();
    let mut trap = small_view();
    trap.nodes[0].hostname = "trap".into();
    match trapper.allocate(&trap).unwrap_err() {
        CallError::Trap(message) => assert!(message.contains("wasm"), "{message}"),
        other => panic!("expected a trap, got: {other}"),
    }
    let (_, grants) = trapper.allocate(&small_view()).expect("the next call works");
    assert_eq!(grants.len(), 1);
    let stats = trapper.active().stats();
    assert_eq!(stats.traps, 1, "{stats:?}");
}

#[test]
fn bytes_that_are_not_a_component_are_refused_with_the_reason() {
    let registry = registry();
    let load = |bytes: &[u8], kind| {
        load(&registry, "bad", kind, bytes, "", PluginLimits::default()).expect_err("must be refused")
    };

    let error = load(b"#!/bin/sh\necho hello\n", PluginKind::Allocator);
    assert!(matches!(error, LoadError::NotWasm(_)), "{error}");
    assert!(error.to_string().contains("not a WebAssembly file"), "{error}");

    let core = wat::parse_str("(module (func (export \"allocate\")))").unwrap();
    let error = load(&core, PluginKind::Allocator);
    assert!(matches!(error, LoadError::CoreModule), "{error}");
    assert!(error.to_string().contains("not a component"), "{error}");

    let truncated = &bundled::PROPORTIONAL[..bundled::PROPORTIONAL.len() / 2];
    let error = load(truncated, PluginKind::Allocator);
    assert!(matches!(error, LoadError::Invalid(_)), "{error}");

    assert!(registry.get("bad").is_none());
}

#[test]
fn an_allocate_delta_of_other_types_is_not_used_and_allocate_gets_whole_views() {
    // As from a plugin built against another version of the ABI: the component exports `allocate-delta`,
    // but not with this berth's types. It loads as a plain allocator instead of being refused, and its
    // `allocate-delta` (which traps if called) is never called.
    let registry = registry();
    let limits = PluginLimits::default();
    let bytes = guests::read(guests::OLD_DELTA);
    let plugin = load(&registry, "old-delta", PluginKind::Allocator, &bytes, "", limits).expect("loaded");
    assert!(!AllocatorInstance::create(&plugin.active()).expect("an instance").incremental());

    let frameworks = vec![framework(1, "a", 1.0, vec![]), framework(2, "b", 1.0, vec![])];
    let view = view(vec![node(7, 4_000, 4_096)], frameworks);
    for _ in 0..3 {
        let (_, grants) = plugin.allocate(&view).expect("`allocate` with the whole view");
        let placed: Vec<_> = grants.iter().map(|g| (g.framework, g.node, g.scalars.milli_cpus)).collect();
        assert_eq!(placed, vec![(1, 7, 100), (2, 7, 100)]);
    }
    assert_eq!(plugin.active().stats().traps, 0);
}

#[test]
fn a_component_without_the_worlds_exports_is_refused_naming_what_is_missing() {
    let registry = registry();
    let load = |bytes: &[u8], kind| {
        load(&registry, "bad", kind, bytes, "", PluginLimits::default()).expect_err("must be refused")
    };

    let error = load(&guests::read(guests::MISSING_EXPORT), PluginKind::Allocator);
    let message = error.to_string();
    assert!(matches!(error, LoadError::MissingExports { .. }), "{message}");
    assert!(message.contains("does not export `allocate`"), "{message}");
    assert!(message.contains("it exports `init`"), "{message}");

    let error = load(&guests::read(guests::SANDBOX_PROBE), PluginKind::Allocator);
    let message = error.to_string();
    assert!(message.contains("`allocate`") && message.contains("--kind framework"), "{message}");

    let error = load(bundled::PROPORTIONAL, PluginKind::Framework);
    let message = error.to_string();
    assert!(message.contains("`demand`, `offers`, `status`, `tick`, `handle`"), "{message}");
    assert!(message.contains("--kind allocator"), "{message}");
}

fn probe(instance: &mut FrameworkInstance, path: &str, query: &str) -> String {
    let request = HttpRequest {
        method: "GET".into(),
        path: path.into(),
        query: query.into(),
        headers: vec![],
        body: vec![],
    };
    let reply = instance.handle(&request).expect("the probe answers");
    assert_eq!(reply.response.status, 200);
    String::from_utf8(reply.response.body).unwrap()
}

#[test]
fn a_plugin_cannot_open_files_or_sockets_or_read_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "the host's data").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    // SAFETY-free way to be sure the host has an environment the guest could have inherited.
    assert!(std::env::vars().count() > 0);

    let registry = registry();
    let plugin = load(
        &registry,
        "probe",
        PluginKind::Framework,
        &guests::read(guests::SANDBOX_PROBE),
        "",
        PluginLimits::default(),
    )
    .unwrap();
    let mut probe_instance = FrameworkInstance::new(plugin, String::new(), None, None).unwrap();

    let read = probe(&mut probe_instance, "/read", secret.to_str().unwrap());
    assert!(read.starts_with("denied:"), "{read}");
    let escape = dir.path().join("escaped");
    let write = probe(&mut probe_instance, "/write", escape.to_str().unwrap());
    assert!(write.starts_with("denied:"), "{write}");
    assert!(!escape.exists(), "the guest created a file on the host");
    let list = probe(&mut probe_instance, "/list", "");
    assert!(list.starts_with("denied:"), "{list}");
    let env = probe(&mut probe_instance, "/env", "");
    assert!(env.starts_with("denied:"), "{env}");

    let connect = probe(&mut probe_instance, "/connect", &address);
    assert!(connect.starts_with("denied:"), "{connect}");
    match listener.accept() {
        Ok((mut stream, peer)) => {
            let mut buf = Vec::new();
            let _ = stream.read_to_end(&mut buf);
            panic!("the guest reached the host's listener from {peer}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
}

/// The deadline check that the tests above rely on, and that the benchmarks measure, is compiled by berth's
/// patched copy of `wasmtime-internal-cranelift` (host/vendor/README.md). A wasmtime upgrade that the copy
/// does not match would leave `[patch.crates-io]` unused, with only a warning from cargo: this says so.
#[test]
fn the_engine_is_built_with_the_patched_cranelift_glue_of_the_same_wasmtime_release() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
    let packages: Vec<&str> = lock.split("[[package]]").collect();
    let find = |name: &str| -> Vec<&str> {
        packages.iter().copied().filter(|p| p.lines().any(|l| l == format!("name = \"{name}\""))).collect()
    };
    let version = |package: &str| -> String {
        package.lines().find_map(|l| l.strip_prefix("version = ")).unwrap().trim_matches('"').to_string()
    };
    let glue = find("wasmtime-internal-cranelift");
    assert_eq!(glue.len(), 1, "one wasmtime-internal-cranelift in Cargo.lock: {glue:?}");
    assert!(
        !glue[0].contains("source = "),
        "wasmtime-internal-cranelift comes from a registry, not from host/vendor: {}",
        glue[0]
    );
    let wasmtime = find("wasmtime");
    assert_eq!(wasmtime.len(), 1, "{wasmtime:?}");
    assert_eq!(version(glue[0]), version(wasmtime[0]), "the patched copy is of another wasmtime release");
}

/// Every file of a directory tree, by path relative to its root, with its bytes.
fn tree(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let name = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// The vendored copy is exactly the registry's release with `berth.patch` applied (plus the patch itself
/// and a `rustfmt.toml` that keeps upstream's formatting): nothing drifts in unseen. The release comes from
/// crates.io through cargo, which checks it against the index's checksum.
#[test]
fn the_vendored_cranelift_glue_is_the_registry_release_plus_berth_patch() {
    let vendored = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../host/vendor/wasmtime-internal-cranelift"
    ));
    let manifest = std::fs::read_to_string(vendored.join("Cargo.toml")).unwrap();
    let version = manifest
        .split("[package]")
        .nth(1)
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("fetch");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(project.join("src/lib.rs"), "").unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n[workspace]\n\
             [dependencies]\nwasmtime-internal-cranelift = \"={version}\"\n"
        ),
    )
    .unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let fetch = std::process::Command::new(&cargo).arg("fetch").current_dir(&project).output().unwrap();
    assert!(fetch.status.success(), "cargo fetch: {}", String::from_utf8_lossy(&fetch.stderr));
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let crate_file = std::fs::read_dir(home.join("registry/cache"))
        .unwrap()
        .map(|d| d.unwrap().path().join(format!("wasmtime-internal-cranelift-{version}.crate")))
        .find(|p| p.exists())
        .expect("cargo fetch put the release in the registry cache");
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = std::process::Command::new("tar").arg("xzf").arg(&crate_file).arg("-C").arg(&unpacked).status();
    assert!(tar.unwrap().success(), "unpacking {}", crate_file.display());
    let release = unpacked.join(format!("wasmtime-internal-cranelift-{version}"));
    let apply = std::process::Command::new("git")
        .args(["apply", "-p1"])
        .arg(vendored.join("berth.patch"))
        .current_dir(&release)
        .output()
        .unwrap();
    assert!(
        apply.status.success(),
        "berth.patch does not apply to the release: {}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let mut ours = tree(vendored);
    for extra in ["berth.patch", "rustfmt.toml"] {
        ours.remove(extra)
            .unwrap_or_else(|| panic!("host/vendor/wasmtime-internal-cranelift/{extra} is missing"));
    }
    let theirs = tree(&release);
    let names = |t: &std::collections::BTreeMap<String, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&theirs), "the vendored copy has other files than the release");
    let differ: Vec<&String> =
        ours.iter().filter(|(name, bytes)| theirs[*name] != **bytes).map(|(n, _)| n).collect();
    assert!(differ.is_empty(), "these files differ from the release plus berth.patch: {differ:?}");
}

/// Runs `allocate` of the hostile guest in `mode` on a thread of its own and returns the error and how
/// long the call took; a call that outlives 30 s fails the test rather than hanging it.
fn hostile(mode: &str, limits: PluginLimits) -> (Result<(), CallError>, Duration) {
    let registry = registry();
    let plugin =
        load(&registry, "hostile", PluginKind::Allocator, &guests::read(guests::HOSTILE), mode, limits)
            .expect("the hostile guest loads");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let result = plugin.allocate(&small_view()).map(drop);
        sender.send((result, started.elapsed())).unwrap();
    });
    receiver.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("`{mode}` ran past 30 s"))
}

#[test]
fn a_plugin_that_sleeps_or_waits_on_a_far_clock_is_stopped_at_its_deadline() {
    let limits = PluginLimits { deadline_ms: 300, ..PluginLimits::default() };
    for mode in ["sleep", "poll-far-clock", "block-far-clock"] {
        let (result, took) = hostile(mode, limits);
        assert_eq!(result, Err(CallError::Deadline(Duration::from_millis(300))), "{mode}");
        // Not a speed check: far below the 60 s or the hour the guest asked for.
        assert!(took < Duration::from_secs(10), "{mode} took {took:?}");
    }
    let (result, _) = hostile("sleep-briefly", limits);
    assert_eq!(result, Ok(()), "a wait well inside the deadline is allowed");
}

#[test]
fn a_plugin_that_hoards_wasi_timers_is_stopped_at_the_resource_limit() {
    let (result, _) = hostile("timers", PluginLimits::default());
    match result {
        Err(CallError::Limit(reason)) => assert!(reason.contains("1024 WASI resources"), "{reason}"),
        other => panic!("expected the resource limit, got {other:?}"),
    }
}

#[test]
fn ten_million_grants_are_refused_by_the_memory_budget_or_the_return_limit() {
    let (result, _) = hostile("grants", PluginLimits::default());
    assert!(matches!(result, Err(CallError::Memory { cap_mib: 256, .. })), "under 256 MiB: {result:?}");
    let roomy = PluginLimits { memory_mib: 2048, deadline_ms: 10_000 };
    let (result, _) = hostile("grants", roomy);
    match result {
        Err(CallError::Limit(reason)) => assert!(reason.contains("more than 64 MiB"), "{reason}"),
        other => panic!("expected the return limit, got {other:?}"),
    }
}

#[test]
fn a_response_body_of_a_gibibyte_is_refused_with_the_limit_it_broke() {
    let request = |query: &str| HttpRequest {
        method: "GET".into(),
        path: "/body".into(),
        query: query.into(),
        headers: vec![],
        body: vec![],
    };
    let registry = registry();
    let bytes = guests::read(guests::SANDBOX_PROBE);
    let tight = load(&registry, "tight", PluginKind::Framework, &bytes, "", PluginLimits::default()).unwrap();
    let mut instance = FrameworkInstance::new(tight, String::new(), None, None).unwrap();
    assert!(matches!(instance.handle(&request("1024")), Err(CallError::Memory { cap_mib: 256, .. })));
    let roomy = PluginLimits { memory_mib: 2048, deadline_ms: 10_000 };
    let plugin = load(&registry, "roomy", PluginKind::Framework, &bytes, "", roomy).unwrap();
    let mut instance = FrameworkInstance::new(plugin, String::new(), None, None).unwrap();
    assert_eq!(instance.handle(&request("1")).expect("a MiB is fine").response.body.len(), 1 << 20);
    match instance.handle(&request("1024")) {
        Err(CallError::Limit(reason)) => assert!(reason.contains("more than 64 MiB"), "{reason}"),
        other => panic!("expected the return limit, got {:?}", other.map(|r| r.response.body.len())),
    }
}

/// The resident memory of this process, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// A component whose core module has `memories` linear memories of `pages` 64 KiB pages each, with an
/// allocator's exports (which never run: instantiating is what is refused). Built with the provisioned
/// `wasm-tools` from the WIT package.
fn many_memories(memories: usize, pages: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut wat = format!("(module\n  (memory (export \"memory\") {pages})\n");
    for _ in 1..memories {
        wat.push_str(&format!("  (memory {pages})\n"));
    }
    wat.push_str(
        "  (func (export \"cabi_realloc\") (param i32 i32 i32 i32) (result i32) i32.const 8)\n\
         (func (export \"init\") (param i32 i32) (result i32) i32.const 16)\n\
         (func (export \"allocate\") (param i32 i32 i32 i32 i32 i32 i64) (result i32) i32.const 16)\n)\n",
    );
    let core = dir.path().join("core.wat");
    std::fs::write(&core, wat).unwrap();
    let path = berth_tests::provision::plugin_toolchains_path();
    let wit = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/wit");
    let embedded = dir.path().join("embedded.wasm");
    let component = dir.path().join("component.wasm");
    for args in [
        vec![
            "component",
            "embed",
            wit,
            "--world",
            "allocator",
            core.to_str().unwrap(),
            "-o",
            embedded.to_str().unwrap(),
        ],
        vec!["component", "new", embedded.to_str().unwrap(), "-o", component.to_str().unwrap()],
    ] {
        let out = std::process::Command::new("wasm-tools").args(&args).env("PATH", &path).output().unwrap();
        assert!(
            out.status.success(),
            "wasm-tools {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::read(component).unwrap()
}

#[test]
fn a_component_with_many_memories_is_refused_and_holds_no_memory() {
    let registry = registry();
    let before = rss();
    // Eight memories of 200 MiB: more memories than an instance may have.
    let error =
        load(&registry, "eight", PluginKind::Allocator, &many_memories(8, 3200), "", PluginLimits::default())
            .expect_err("eight memories are refused");
    assert!(matches!(error, LoadError::InitFailed(_)), "{error}");
    // Two of 200 MiB: few enough, but together past the 256 MiB budget.
    let error =
        load(&registry, "two", PluginKind::Allocator, &many_memories(2, 3200), "", PluginLimits::default())
            .expect_err("two memories of 200 MiB are past the budget");
    assert!(matches!(error, LoadError::InitFailed(CallError::Memory { cap_mib: 256, .. })), "{error}");
    // The refused instances held nothing: the process grew by less than the budget plus 64 MiB of margin
    // (the compiled code and the runtime's own structures), not by the 1.6 GB the memories would take.
    let grown = rss().saturating_sub(before);
    assert!(grown < (256 + 64) << 20, "RSS grew by {} MiB", grown >> 20);
}
