//! The master's offer cycle across real processes: weighted fairness between frameworks, and hot-swapping
//! the allocator while tasks keep launching.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_tests::cluster::{Agent, Master, eventually};
use berth_tests::guests;
use serde_json::Value;

fn running(master: &Master, framework: &str) -> usize {
    master.tasks(framework).iter().filter(|t| t["state"] == "running").count()
}

fn active_nodes(master: &Master) -> usize {
    master
        .get("/v1/nodes")
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "active" && n["connected"] == true)
        .count()
}

#[test]
fn weights_one_and_three_share_a_full_cluster_one_to_three() {
    let master = Master::start(&["--no-local-agent"]);
    master.load_plugin("framework", "workers", guests::WORKERS);
    let config = r#"{"milli_cpus": 500, "mem_mib": 64}"#;
    master.ok(&["framework", "add", "light", "--plugin", "workers", "--weight", "1", "--config", config]);
    master.ok(&["framework", "add", "heavy", "--plugin", "workers", "--weight", "3", "--config", config]);

    // Three agents, each a separate process with 4 CPUs: room for 24 tasks of half a CPU.
    let _agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::start(&master, &format!("node-{i}"), &["--simulate", "--cpus", "4", "--mem", "4096"]))
        .collect();
    eventually("three nodes", Duration::from_secs(30), || (active_nodes(&master) == 3).then_some(()));

    let (light, heavy) = eventually("the cluster to fill", Duration::from_secs(60), || {
        let (light, heavy) = (running(&master, "light"), running(&master, "heavy"));
        (light + heavy == 24).then_some((light, heavy))
    });
    assert_eq!((light, heavy), (6, 18), "weights 1:3 share 24 slots 6:18");

    // Full means full: no node has room for another task, and nothing more is launched.
    for node in master.get("/v1/nodes").as_array().unwrap() {
        assert!(node["available"]["milli_cpus"].as_u64().unwrap() < 500, "{node}");
    }
    let shares: BTreeMap<String, f64> = master
        .json(&["framework", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_string(), f["share"].as_str().unwrap().parse().unwrap()))
        .collect();
    assert!((shares["light"] - shares["heavy"]).abs() < 1e-9, "equal weighted shares: {shares:?}");
}

#[test]
fn hot_swapping_the_allocator_while_tasks_launch_loses_nothing_and_the_new_version_decides_next() {
    let master = Master::start(&["--no-local-agent"]);
    let _agents: Vec<Agent> = (1..=2)
        .map(|i| Agent::start(&master, &format!("node-{i}"), &["--simulate", "--cpus", "4", "--mem", "4096"]))
        .collect();
    master.load_plugin("framework", "workers", guests::WORKERS);
    // Twelve tasks that each finish after 300 ms and are replaced: a steady stream of launches.
    let config = r#"{"instances": 12, "milli_cpus": 500, "mem_mib": 64, "labels": {"berth.simulate.exit-after-ms": "300"}}"#;
    master.ok(&["framework", "add", "churn", "--plugin", "workers", "--config", config]);

    let tasks = |m: &Master| -> BTreeMap<String, Value> {
        serde_json::from_str(&m.request("GET", "/frameworks/churn/tasks", "").1).unwrap()
    };
    eventually("30 launches", Duration::from_secs(60), || (tasks(&master).len() >= 30).then_some(()));

    // Swap to a new version of the allocator (the same policy with another configuration) through the CLI.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proportional.wasm");
    std::fs::write(&file, berth_host::bundled::PROPORTIONAL).unwrap();
    let swapped = master.json(&[
        "plugin",
        "swap",
        "proportional",
        file.to_str().unwrap(),
        "--config",
        r#"{"min_allocatable": {"milli_cpus": 20, "mem_mib": 16}}"#,
    ]);
    assert_eq!(swapped["version"], 2);
    assert_eq!(swapped["active"], true);
    let last_before = master
        .get("/v1/cycles")
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["number"].as_u64().unwrap())
        .max()
        .unwrap();

    let launched_at_swap = tasks(&master).len();
    eventually("30 more launches", Duration::from_secs(60), || {
        (tasks(&master).len() >= launched_at_swap + 30).then_some(())
    });

    let cycles = master.get("/v1/cycles");
    let cycles = cycles.as_array().unwrap();
    let after: Vec<&Value> = cycles.iter().filter(|c| c["number"].as_u64().unwrap() > last_before).collect();
    assert!(
        after.iter().all(|c| c["allocator_version"] == 2 || c["nodes"] == 0),
        "a cycle after the swap used the old version"
    );
    assert!(after.iter().any(|c| c["launched"].as_u64().unwrap() > 0), "the new version launched tasks");
    assert!(cycles.iter().any(|c| c["allocator_version"] == 1), "cycles before the swap used version 1");

    // No task lost, refused, or launched twice: each ran once and finished (or still runs).
    for (id, record) in tasks(&master) {
        let history: Vec<&str> =
            record["history"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert!(!history.contains(&"lost") && !history.contains(&"error"), "{id}: {history:?}");
        assert!(history.iter().filter(|s| **s == "running").count() <= 1, "{id} ran twice: {history:?}");
        assert!(history.iter().filter(|s| **s == "starting").count() <= 1, "{id} started twice: {history:?}");
    }
    let lost = master.json(&["task", "ls", "--framework", "churn", "--state", "lost"]);
    assert!(lost.as_array().unwrap().is_empty(), "{lost}");
}

fn last_cycle(master: &Master) -> u64 {
    master.get("/v1/cycles").as_array().and_then(|c| c.last()).and_then(|c| c["number"].as_u64()).unwrap_or(0)
}

#[test]
fn a_backlog_larger_than_the_cluster_launches_in_capped_cycles_without_spinning() {
    // One node with 20 host ports: 20 tasks of one port each fit. The app wants 3,000, above the 1,000
    // tasks of demand a framework may state per cycle, so every cycle's demand is capped.
    let master = Master::start(&["--simulate-nodes", "1"]);
    let app = serde_json::json!({
        "id": "/big", "instances": 3000, "cpus": 0.1, "mem": 32, "cmd": "sleep 3600",
        "container": {"docker": {"image": "big:1"}},
    });
    let (status, body) = master.request("POST", "/v2/apps", &app.to_string());
    assert_eq!(status, 201, "{body}");
    eventually("the node to fill up", Duration::from_secs(60), || {
        (master.get("/v2/apps/big")["app"]["tasksRunning"].as_u64() == Some(20)).then_some(())
    });

    // Nothing more fits: cycles come back to the interval (about one a second), instead of one every
    // few milliseconds because demand was cut.
    let before = last_cycle(&master);
    std::thread::sleep(Duration::from_secs(3));
    let cycles = last_cycle(&master) - before;
    let recent: Vec<Value> =
        master.get("/v1/cycles").as_array().unwrap().iter().rev().take(3).cloned().collect();
    assert!(cycles <= 15, "{cycles} cycles in 3 s with nothing left to launch; the last: {recent:?}");
    assert_eq!(master.get("/v2/apps/big")["app"]["tasksRunning"].as_u64(), Some(20));
}
