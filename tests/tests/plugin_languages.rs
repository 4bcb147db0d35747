//! Plugins in other languages, built from source here and hot-loaded into a running master with the CLI:
//! an allocator in C (bin packing), an allocator in Python (strict role priority, DRF inside a role), a
//! framework in Python (batch jobs with retries), and the projects `berth plugin new` creates.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_tests::cluster::{Agent, Master, berth_bin, eventually};
use berth_tests::languages::{build_example, require_tools, root};
use berth_tests::{docker, guests};
use serde_json::{Value, json};

/// Running tasks of a framework, by host.
fn hosts(master: &Master, framework: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for t in master.tasks(framework).iter().filter(|t| t["state"] == "running") {
        *out.entry(t["hostname"].as_str().unwrap().to_string()).or_default() += 1;
    }
    out
}

fn running(master: &Master, framework: &str) -> usize {
    hosts(master, framework).values().sum()
}

/// Three simulated nodes of 8 CPUs: 24 one-CPU slots, and placement is easy to read.
fn cluster() -> Master {
    let master = Master::start(&["--simulate-nodes", "3"]);
    eventually("three nodes", Duration::from_secs(30), || {
        (master.get("/v1/nodes").as_array()?.len() == 3).then_some(())
    });
    master.load_plugin("framework", "workers", guests::WORKERS);
    master
}

#[test]
fn the_c_bin_packing_allocator_fills_a_node_before_opening_the_next() {
    let binpack = build_example("plugins/binpack-c");
    let master = cluster();
    master.load_plugin("allocator", "binpack", binpack.to_str().unwrap());
    master.ok(&["allocator", "use", "binpack"]);
    master.ok(&[
        "framework",
        "add",
        "ten",
        "--plugin",
        "workers",
        "--config",
        r#"{"instances": 10, "milli_cpus": 1000}"#,
    ]);
    eventually("ten tasks", Duration::from_secs(30), || (running(&master, "ten") == 10).then_some(()));
    let mut per_node: Vec<usize> = hosts(&master, "ten").into_values().collect();
    per_node.sort_unstable();
    assert_eq!(per_node, vec![2, 8], "one node full, one started, one empty");

    // Another framework packs into what is left: the partly used node first, the empty one untouched.
    let partly = hosts(&master, "ten").into_iter().find(|(_, n)| *n == 2).unwrap().0;
    master.ok(&[
        "framework",
        "add",
        "six",
        "--plugin",
        "workers",
        "--config",
        r#"{"instances": 6, "milli_cpus": 1000}"#,
    ]);
    eventually("six more tasks", Duration::from_secs(30), || (running(&master, "six") == 6).then_some(()));
    let six = hosts(&master, "six");
    assert_eq!(six.into_iter().collect::<Vec<_>>(), vec![(partly, 6)], "all on the partly used node");
    let cycles = master.get("/v1/cycles");
    let last = cycles.as_array().unwrap().last().unwrap();
    assert_eq!(last["allocator"], "binpack", "the C allocator decided the cycles: {last}");
}

#[test]
fn the_python_priority_allocator_serves_roles_in_order_and_shares_fairly_inside_one() {
    let priority = build_example("plugins/priority-py");
    // Nodes join after every framework is added: allocation does not preempt, so a framework added alone
    // would take the cluster before the others exist.
    let master = Master::start(&["--no-local-agent"]);
    master.load_plugin("framework", "workers", guests::WORKERS);
    let file = priority.to_str().unwrap();
    let out = master.ok(&[
        "plugin",
        "load",
        "--kind",
        "allocator",
        "priority",
        file,
        "--config",
        r#"{"roles": ["prod"]}"#,
    ]);
    assert!(out.contains("priority"), "{out}");
    master.ok(&["allocator", "use", "priority"]);
    let unbounded = r#"{"milli_cpus": 1000, "mem_mib": 64}"#;
    master.ok(&[
        "framework",
        "add",
        "batch",
        "--plugin",
        "workers",
        "--role",
        "batch",
        "--config",
        unbounded,
    ]);
    master.ok(&[
        "framework",
        "add",
        "web",
        "--plugin",
        "workers",
        "--role",
        "prod",
        "--weight",
        "1",
        "--config",
        unbounded,
    ]);
    master.ok(&[
        "framework",
        "add",
        "api",
        "--plugin",
        "workers",
        "--role",
        "prod",
        "--weight",
        "3",
        "--config",
        unbounded,
    ]);
    let _agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::start(&master, &format!("node-{i}"), &["--simulate", "--cpus", "8", "--mem", "8192"]))
        .collect();
    let (web, api, batch) = eventually("prod to take the cluster", Duration::from_secs(60), || {
        let counts = (running(&master, "web"), running(&master, "api"), running(&master, "batch"));
        (counts.0 + counts.1 + counts.2 == 24 && counts.2 == 0).then_some(counts)
    });
    assert_eq!((web, api, batch), (6, 18, 0), "prod first, DRF 1:3 inside prod, batch nothing");

    // With prod gone, the lower role gets the cluster.
    master.ok(&["framework", "rm", "web"]);
    master.ok(&["framework", "rm", "api"]);
    eventually("batch to take the cluster", Duration::from_secs(60), || {
        (running(&master, "batch") == 24).then_some(())
    });
}

#[test]
fn the_python_batch_framework_runs_jobs_to_completion_with_retries() {
    let batch = build_example("plugins/batch-py");
    docker::require();
    let master = Master::start(&[]);
    master.load_plugin("framework", "batch", batch.to_str().unwrap());
    let config = json!({"image": docker::busybox(), "retries": 1}).to_string();
    master.ok(&["framework", "add", "batch", "--plugin", "batch", "--config", &config]);
    for job in [
        json!({"name": "ok", "command": "echo done"}),
        json!({"name": "bad", "command": "exit 3"}),
        json!({"name": "flaky", "command": "[ \"$BATCH_ATTEMPT\" = 2 ] || exit 1"}),
    ] {
        let (status, body) = master.request("POST", "/frameworks/batch/jobs", &job.to_string());
        assert_eq!(status, 201, "{body}");
    }
    let jobs: BTreeMap<String, Value> = eventually("every job to end", Duration::from_secs(90), || {
        let list: Vec<Value> =
            serde_json::from_str(&master.request("GET", "/frameworks/batch/jobs", "").1).ok()?;
        let ended = list.iter().all(|j| j["state"] == "succeeded" || j["state"] == "failed");
        ended.then(|| list.into_iter().map(|j| (j["name"].as_str().unwrap().to_string(), j)).collect())
    });
    assert_eq!((&jobs["ok"]["state"], &jobs["ok"]["attempts"]), (&json!("succeeded"), &json!(1)));
    assert_eq!(
        (&jobs["flaky"]["state"], &jobs["flaky"]["attempts"]),
        (&json!("succeeded"), &json!(2)),
        "retried once"
    );
    assert_eq!(
        (&jobs["bad"]["state"], &jobs["bad"]["exit_codes"]),
        (&json!("failed"), &json!([3, 3])),
        "retries used up"
    );
    let logs = master.cli(&["task", "logs", "ok.1", "--framework", "batch"]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "done\n");
}

/// Makes a project with `berth plugin new`, run as a user would: a copy of the `berth` binary in a scratch
/// directory outside the source tree, the project created there. Checks that nothing in the project points
/// into berth's tree (the Rust SDK comes with it), then builds it exactly as its README says.
fn scaffold_and_build(dir: &Path, lang: &str, kind: &str) -> std::path::PathBuf {
    let bin = dir.join("bin/berth");
    if !bin.exists() {
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::copy(berth_bin(), &bin).unwrap();
    }
    let name = format!("my-{lang}-{kind}");
    let project = dir.join(&name);
    let out = Command::new(&bin)
        .args(["plugin", "new", "--lang", lang, "--kind", kind, &name])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "berth plugin new: {}", String::from_utf8_lossy(&out.stderr));

    let tree = root().display().to_string();
    for file in files(&project) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(!text.contains(&tree), "{} names berth's source tree ({tree})", file.display());
    }
    if lang == "rust" {
        // Every crate the project builds from source is inside the project.
        let metadata = Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--offline", "--no-deps"])
            .current_dir(&project)
            .output()
            .unwrap();
        assert!(metadata.status.success(), "{}", String::from_utf8_lossy(&metadata.stderr));
        let metadata: Value = serde_json::from_slice(&metadata.stdout).unwrap();
        let local: Vec<&str> = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["manifest_path"].as_str().unwrap())
            .collect();
        assert!(local.len() >= 3, "the project, the SDK and proto: {local:?}");
        let inside = project.canonicalize().unwrap().display().to_string();
        assert!(local.iter().all(|p| p.starts_with(&inside)), "{local:?} outside {inside}");
    }

    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    // Build exactly as the project's README says.
    let build = readme.lines().skip_while(|l| *l != "```sh").nth(1).unwrap().to_string();
    let mut command = Command::new("sh");
    command.args(["-c", &build]).current_dir(&project).env("PATH", require_tools());
    if lang == "rust" {
        // One target directory for every scaffold build, kept between runs.
        command.env("CARGO_TARGET_DIR", std::env::temp_dir().join("berth-scaffold-target"));
        command.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS");
    }
    let result = command.output().unwrap();
    assert!(
        result.status.success(),
        "{lang} {kind}: `{build}` failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    match lang {
        "rust" => std::env::temp_dir()
            .join("berth-scaffold-target/wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_"))),
        _ => project.join(format!("{name}.wasm")),
    }
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files(&path)) } else { out.push(path) }
    }
    out
}

/// The active version of a plugin, and how many calls it has served.
fn active(master: &Master, name: &str) -> (u64, u64) {
    let plugins = master.json(&["plugin", "ls"]);
    let plugin =
        plugins.as_array().unwrap().iter().find(|p| p["name"] == name && p["active"] == true).unwrap();
    (plugin["version"].as_u64().unwrap(), plugin["calls"].as_u64().unwrap())
}

#[test]
fn berth_plugin_new_creates_projects_that_build_load_and_hot_swap_outside_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let master = cluster();
    for lang in ["c", "python", "rust"] {
        let allocator = scaffold_and_build(dir.path(), lang, "allocator");
        let name = format!("my-{lang}-allocator");
        master.ok(&["plugin", "load", "--kind", "allocator", &name, allocator.to_str().unwrap()]);
        master.ok(&["allocator", "use", &name]);
        let fw = format!("w-{lang}");
        master.ok(&["framework", "add", &fw, "--plugin", "workers", "--config", r#"{"instances": 2}"#]);
        eventually(&format!("the {lang} allocator to place tasks"), Duration::from_secs(60), || {
            (running(&master, &fw) == 2).then_some(())
        });
        // A hot swap to a new version of the same build: it takes over the cycles.
        master.ok(&["plugin", "swap", &name, allocator.to_str().unwrap()]);
        master.ok(&[
            "framework",
            "add",
            &format!("{fw}-2"),
            "--plugin",
            "workers",
            "--config",
            r#"{"instances": 1}"#,
        ]);
        eventually(&format!("version 2 of the {lang} allocator to decide"), Duration::from_secs(60), || {
            let (version, calls) = active(&master, &name);
            (version == 2 && calls > 0 && running(&master, &format!("{fw}-2")) == 1).then_some(())
        });
        let cycles = master.get("/v1/cycles");
        let last = cycles.as_array().unwrap().last().unwrap().clone();
        assert_eq!((&last["allocator"], &last["allocator_version"]), (&json!(name), &json!(2)), "{last}");

        let framework = scaffold_and_build(dir.path(), lang, "framework");
        let name = format!("my-{lang}-framework");
        master.ok(&["plugin", "load", "--kind", "framework", &name, framework.to_str().unwrap()]);
        master.ok(&["framework", "add", &name, "--plugin", &name]);
        eventually(&format!("the {lang} framework to run its 2 tasks"), Duration::from_secs(60), || {
            (running(&master, &name) == 2).then_some(())
        });
        master.ok(&["plugin", "swap", &name, framework.to_str().unwrap()]);
        eventually(&format!("the {lang} framework to move to version 2"), Duration::from_secs(60), || {
            let frameworks = master.json(&["framework", "ls"]);
            let f = frameworks.as_array()?.iter().find(|f| f["name"] == name.as_str())?.clone();
            (f["plugin"] == format!("{name}@v2").as_str() && running(&master, &name) == 2).then_some(())
        });
    }
}
