//! The sandbox as a running master shows it: whatever a plugin does within its deadline (here: sleeping, in
//! Rust, Python and C), the master keeps answering its API and hearing its agents; a hot swap to a version
//! that keeps failing is rolled back by itself; a plugin that floods the log is rate-limited; a framework
//! that traps in `status` gets the update again, with its writes undone, after a growing backoff.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::cluster::{Agent, Master, eventually};
use berth_tests::guests;
use berth_tests::languages::require_tools;
use berth_tests::metrics;
use serde_json::Value;

/// The version `version` of plugin `name` as `berth plugin ls --json` lists it.
fn version(master: &Master, name: &str, version: u64) -> Option<Value> {
    let plugins = master.json(&["plugin", "ls"]);
    plugins.as_array()?.iter().find(|p| p["name"] == name && p["version"] == version).cloned()
}

/// Builds a test guest in another language with its `build.sh`; the C one gets WASI preview 1's adapter.
fn build(guest: &str) -> PathBuf {
    let path = require_tools();
    let dir = tempfile::tempdir().unwrap().keep();
    let out = dir.join(format!("{guest}.wasm"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/foreign-guests");
    let mut command = Command::new("sh");
    command.arg(format!("{script}/{guest}/build.sh")).arg(&out).env("PATH", path);
    if guest == "sleep-c" {
        let adapter = dir.join("wasi_snapshot_preview1.reactor.wasm");
        std::fs::write(
            &adapter,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .unwrap();
        command.arg(&adapter);
    }
    let result = command.output().unwrap();
    assert!(
        result.status.success(),
        "building {guest}: {}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

/// Asks `/health` and `/v1/nodes` every 50 ms for `span` and returns the slowest answer; every answer
/// must be a success.
fn slowest_answer(master: &Master, span: Duration) -> Duration {
    let agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().new_agent();
    let mut slowest = Duration::ZERO;
    let end = Instant::now() + span;
    while Instant::now() < end {
        for path in ["/health", "/v1/nodes"] {
            let started = Instant::now();
            let response = agent.get(&format!("{}{path}", master.url)).call().expect("the master answers");
            assert_eq!(response.status(), 200, "{path}");
            slowest = slowest.max(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    slowest
}

#[test]
fn the_master_keeps_serving_while_plugins_in_rust_python_and_c_sleep_past_their_deadline() {
    let python = build("sleep-py");
    let c = build("sleep-c");
    // Agents in processes of their own, so their heartbeats cross the network as in production; a timeout
    // of 3 s, shorter than the plugins' 4 s deadline: a master that stalls for a plugin's call would lose them.
    let master = Master::start(&["--no-local-agent", "--agent-timeout-ms", "3000"]);
    let _agents: Vec<Agent> =
        (1..=2).map(|i| Agent::start(&master, &format!("node-{i}"), &["--simulate"])).collect();
    eventually("two nodes", Duration::from_secs(30), || {
        (master.get("/v1/nodes").as_array()?.len() == 2).then_some(())
    });
    for (name, file, config) in [
        ("sleep-rust", PathBuf::from(guests::HOSTILE), "sleep"),
        ("sleep-python", python, ""),
        ("sleep-c", c, ""),
    ] {
        let file = file.to_str().unwrap();
        master.ok(&[
            "plugin",
            "load",
            "--kind",
            "allocator",
            name,
            file,
            "--config",
            config,
            "--deadline-ms",
            "4000",
        ]);
        master.ok(&["allocator", "use", name]);
        // The allocator is called every cycle (the default framework is in the view) and sleeps each time.
        let slowest = slowest_answer(&master, Duration::from_secs(9));
        assert!(
            slowest < Duration::from_secs(1),
            "{name}: an answer took {slowest:?} while the plugin slept (its deadline is 4 s)"
        );
        let v = eventually(&format!("{name} to be stopped at its deadline"), Duration::from_secs(30), || {
            version(&master, name, 1).filter(|v| v["deadline_exceeded"].as_u64() >= Some(1))
        });
        assert_eq!(v["traps"], 0, "{name} was stopped by its deadline, nothing else: {v}");
        let nodes = master.get("/v1/nodes");
        for node in nodes.as_array().unwrap() {
            assert_eq!(node["state"], "active", "{name}: no agent is lost while the plugin sleeps: {node}");
        }
    }
    master.ok(&["allocator", "use", "proportional"]);
}

#[test]
fn a_hot_swap_to_a_version_that_keeps_failing_is_rolled_back_by_itself() {
    let master = Master::start(&["--simulate-nodes", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("proportional.wasm");
    std::fs::write(&good, berth_host::bundled::PROPORTIONAL).unwrap();
    master.ok(&["plugin", "load", "--kind", "allocator", "policy", good.to_str().unwrap()]);
    master.ok(&["allocator", "use", "policy"]);
    master.ok(&["plugin", "load", "--kind", "framework", "workers", guests::WORKERS]);

    // Version 2 sleeps past its deadline on every call.
    master.ok(&["plugin", "swap", "policy", guests::HOSTILE, "--config", "sleep", "--deadline-ms", "300"]);
    let bad = eventually("version 2 to be rolled back", Duration::from_secs(60), || {
        version(&master, "policy", 2).filter(|v| v["rolled_back"].as_str().is_some_and(|r| !r.is_empty()))
    });
    let reason = bad["rolled_back"].as_str().unwrap();
    assert!(reason.contains("rolled back to version 1 after 3 failed calls in a row"), "{reason}");
    assert!(reason.contains("deadline"), "{reason}");
    assert_eq!(bad["active"], false);
    assert_eq!(bad["deadline_exceeded"], 3, "rolled back at the third failure: {bad}");
    assert_eq!(version(&master, "policy", 1).unwrap()["active"], true);
    // `/metrics` says the same, per version.
    let samples = metrics::scrape(&master);
    let v = |n: &'static str| [("plugin", "policy"), ("version", n)];
    assert_eq!(metrics::value(&samples, "berth_plugin_deadline_exceeded_total", &v("2")), Some(3.0));
    assert_eq!(metrics::value(&samples, "berth_plugin_traps_total", &v("2")), Some(0.0));
    assert_eq!(metrics::value(&samples, "berth_plugin_active", &v("2")), Some(0.0));
    assert_eq!(metrics::value(&samples, "berth_plugin_active", &v("1")), Some(1.0));

    // Version 1 decides again: a framework's tasks are placed.
    master.ok(&["framework", "add", "w", "--plugin", "workers", "--config", r#"{"instances": 2}"#]);
    eventually("version 1 to place the tasks", Duration::from_secs(30), || {
        let running = master.tasks("w").iter().filter(|t| t["state"] == "running").count();
        (running == 2).then_some(())
    });
    // And the rollback survives a restart.
    let mut master = master;
    master.restart();
    let bad = version(&master, "policy", 2).unwrap();
    assert!(bad["rolled_back"].as_str().unwrap().contains("after 3 failed calls"), "{bad}");
    assert_eq!(version(&master, "policy", 1).unwrap()["active"], true);
}

#[test]
fn a_plugin_that_floods_the_log_is_rate_limited() {
    let master = Master::start(&["--simulate-nodes", "1"]);
    master.ok(&["plugin", "load", "--kind", "allocator", "flood", guests::HOSTILE, "--config", "log-flood"]);
    master.ok(&["allocator", "use", "flood"]);
    let started = Instant::now();
    eventually("four calls", Duration::from_secs(30), || {
        version(&master, "flood", 1).filter(|v| v["calls"].as_u64() >= Some(4))
    });
    master.ok(&["allocator", "use", "proportional"]);
    let seconds = started.elapsed().as_secs() + 2;
    let logs = master.logs();
    let lines = logs.lines().filter(|l| l.contains("flood line")).count() as u64;
    // Three calls tried to log 300,000 lines; 200 a second get through.
    assert!(lines <= 200 * (seconds + 1), "{lines} lines in about {seconds} s");
    assert!(lines >= 100, "the first lines of each second are kept: {lines}");
    assert!(logs.contains("plugin log lines were dropped: over the rate limit"), "the drop is reported");
}

/// Reads the `backoff=` of each "framework plugin call failed" event of a master's log, in order (the
/// event's error, a wasm backtrace, spans lines).
fn backoffs(log: &str) -> Vec<Duration> {
    log.split("framework plugin call failed")
        .skip(1)
        .filter_map(|event| {
            let value = event.split_whitespace().find_map(|w| w.strip_prefix("backoff="))?;
            let (number, unit) = value.split_at(value.find(|c: char| c.is_ascii_alphabetic())?);
            let number: f64 = number.parse().ok()?;
            let seconds = match unit {
                "ms" => number / 1e3,
                "s" => number,
                _ => return None,
            };
            Some(Duration::from_secs_f64(seconds))
        })
        .collect()
}

/// A framework plugin that traps in `status`: what it wrote to its store in that call is undone, its
/// calls back off longer after each failure, and the update is delivered again (once it stops trapping,
/// it has seen the update exactly once, and the task runs once).
#[test]
fn a_framework_trapping_in_status_gets_its_updates_again_its_writes_undone_and_a_growing_backoff() {
    let master = Master::start(&["--simulate-nodes", "1"]);
    master.load_plugin("framework", "launcher", guests::LAUNCHER);
    master.ok(&["framework", "add", "l", "--plugin", "launcher"]);
    let task =
        serde_json::json!({"id": "t", "image": "busybox", "command": "sleep 3600", "trap_on": "running"});
    let (status, body) = master.request("POST", "/frameworks/l/tasks", &task.to_string());
    assert_eq!(status, 201, "{body}");

    let backoffs = eventually("four failed status calls", Duration::from_secs(60), || {
        let backoffs = backoffs(&master.logs());
        (backoffs.len() >= 4).then_some(backoffs)
    });
    assert!(backoffs.windows(2).take(3).all(|w| w[1] > w[0]), "each failure backs off longer: {backoffs:?}");
    // The framework's API is a different kind of call: it answers between the failed ones (perhaps after
    // a backoff), from the state as it was before the trapping call.
    let history = |master: &Master| -> Option<Vec<String>> {
        let (status, body) = master.request("GET", "/frameworks/l/tasks", "");
        let tasks: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        Some(tasks["t"]["history"].as_array()?.iter().map(|s| s.as_str().unwrap().to_string()).collect())
    };
    let before = eventually("the framework to answer", Duration::from_secs(30), || history(&master));
    assert!(!before.contains(&"running".to_string()), "the trapping call's write is undone: {before:?}");

    eventually("the framework to take /untrap", Duration::from_secs(30), || {
        (master.request("POST", "/frameworks/l/untrap?t", "").0 == 200).then_some(())
    });
    let after = eventually("the running update to be delivered again", Duration::from_secs(30), || {
        history(&master).filter(|h| h.last().map(String::as_str) == Some("running"))
    });
    assert_eq!(after.iter().filter(|s| *s == "running").count(), 1, "seen once: {after:?}");
    let tasks = master.tasks("l");
    assert_eq!(tasks.len(), 1, "launched once: {tasks:?}");
    assert_eq!(tasks[0]["state"], "running", "{tasks:?}");
}
