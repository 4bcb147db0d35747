//! Failures across real processes: an agent that dies, and a master killed with SIGKILL mid-run (with
//! tasks running, and with tasks launched that no agent has answered for yet); and a node drained.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_tests::cluster::{Agent, Master, eventually};
use berth_tests::guests;
use serde_json::Value;

fn tasks_in(master: &Master, framework: &str, state: &str) -> Vec<Value> {
    master.tasks(framework).into_iter().filter(|t| t["state"] == state).collect()
}

fn connected_nodes(master: &Master) -> usize {
    master
        .get("/v1/nodes")
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "active" && n["connected"] == true)
        .count()
}

/// Fails if a backend (the agents', or the master's own simulated ones) was asked to launch a task it
/// already ran: launches are idempotent at the agent, so this is how a master launching twice shows.
fn assert_no_duplicate_launch(master: &Master, agents: &[Agent]) {
    let duplicate = berth_host::agent::DUPLICATE_LAUNCH;
    assert!(!master.logs().contains(duplicate), "a duplicate launch:\n{}", master.logs());
    for agent in agents {
        assert!(!agent.logs().contains(duplicate), "a duplicate launch on {}:\n{}", agent.name, agent.logs());
    }
}

#[test]
fn a_killed_agents_tasks_become_lost_and_are_relaunched_on_the_others() {
    let master = Master::start(&["--no-local-agent", "--agent-timeout-ms", "3000"]);
    let mut agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::start(&master, &format!("node-{i}"), &["--simulate", "--cpus", "2", "--mem", "2048"]))
        .collect();
    eventually("three nodes", Duration::from_secs(30), || (connected_nodes(&master) == 3).then_some(()));
    master.load_plugin("framework", "workers", guests::WORKERS);
    master.ok(&[
        "framework",
        "add",
        "svc",
        "--plugin",
        "workers",
        "--config",
        r#"{"instances": 6, "milli_cpus": 500}"#,
    ]);
    let running = eventually("six tasks running", Duration::from_secs(30), || {
        let running = tasks_in(&master, "svc", "running");
        (running.len() == 6).then_some(running)
    });

    // Kill the agent that runs the most tasks.
    let victim = agents
        .iter()
        .map(|a| a.name.clone())
        .max_by_key(|name| running.iter().filter(|t| t["hostname"] == name.as_str()).count())
        .unwrap();
    let doomed: BTreeSet<String> = running
        .iter()
        .filter(|t| t["hostname"] == victim.as_str())
        .map(|t| t["task"].as_str().unwrap().to_string())
        .collect();
    assert!(!doomed.is_empty());
    agents.iter_mut().find(|a| a.name == victim).unwrap().kill9();

    // Its tasks are lost within the timeout (3 s, plus housekeeping), with the reason.
    eventually("the dead agent's tasks to be lost", Duration::from_secs(20), || {
        let lost = tasks_in(&master, "svc", "lost");
        let ids: BTreeSet<String> = lost.iter().map(|t| t["task"].as_str().unwrap().to_string()).collect();
        (ids == doomed).then_some(())
    });
    for task in tasks_in(&master, "svc", "lost") {
        assert_eq!(task["reason"], "agent-lost", "{task}");
    }
    let node = master
        .json(&["node", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["hostname"] == victim.as_str())
        .cloned()
        .unwrap();
    assert_eq!(node["state"], "unreachable");

    // The framework relaunches them on the other two nodes.
    let relaunched = eventually("six tasks running again", Duration::from_secs(30), || {
        let running = tasks_in(&master, "svc", "running");
        (running.len() == 6).then_some(running)
    });
    assert!(relaunched.iter().all(|t| t["hostname"] != victim.as_str()), "{relaunched:?}");
}

#[test]
fn a_master_killed_with_sigkill_comes_back_with_everything_and_no_task_runs_twice() {
    let mut master = Master::start(&["--no-local-agent", "--agent-timeout-ms", "20000"]);
    let agents: Vec<Agent> = (1..=2)
        .map(|i| Agent::start(&master, &format!("node-{i}"), &["--simulate", "--cpus", "4", "--mem", "4096"]))
        .collect();
    eventually("two nodes", Duration::from_secs(30), || (connected_nodes(&master) == 2).then_some(()));
    master.load_plugin("framework", "workers", guests::WORKERS);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proportional.wasm");
    std::fs::write(&file, berth_host::bundled::PROPORTIONAL).unwrap();
    master.ok(&["plugin", "swap", "proportional", file.to_str().unwrap(), "--config", "{}"]);
    master.ok(&[
        "framework",
        "add",
        "svc",
        "--plugin",
        "workers",
        "--weight",
        "2.5",
        "--config",
        r#"{"instances": 4}"#,
    ]);
    let before: BTreeSet<String> = eventually("four tasks running", Duration::from_secs(30), || {
        let running = tasks_in(&master, "svc", "running");
        (running.len() == 4)
            .then(|| running.iter().map(|t| t["task"].as_str().unwrap().to_string()).collect())
    });
    let plugins_before = master.json(&["plugin", "ls"]);

    master.restart();

    // Frameworks, plugin versions and tasks are back.
    let frameworks = master.json(&["framework", "ls"]);
    let svc =
        frameworks.as_array().unwrap().iter().find(|f| f["name"] == "svc").expect("framework svc is back");
    assert_eq!(svc["weight"], 2.5);
    let plugins_after = master.json(&["plugin", "ls"]);
    let versions = |v: &Value| -> Vec<(String, u64, bool)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().into(),
                    p["version"].as_u64().unwrap(),
                    p["active"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(versions(&plugins_after), versions(&plugins_before));
    assert!(versions(&plugins_after).contains(&("proportional".into(), 2, true)));

    // The agents re-register; the same four tasks run, once each, and nothing new was launched.
    eventually("the agents to re-register", Duration::from_secs(30), || {
        (connected_nodes(&master) == 2).then_some(())
    });
    let after: BTreeSet<String> =
        tasks_in(&master, "svc", "running").iter().map(|t| t["task"].as_str().unwrap().to_string()).collect();
    assert_eq!(after, before);
    master.wait_cycles(3);
    let all: Vec<Value> = master.tasks("svc");
    assert_eq!(all.len(), 4, "no task was launched again: {all:?}");
    let agent_running = master.agents_running_tasks();
    assert_eq!(agent_running, 4, "the agents run each task once");
    assert_no_duplicate_launch(&master, &agents);

    // Cycles resume: scaling up launches more.
    let (status, body) = master.request("PUT", "/frameworks/svc/instances?6", "");
    assert_eq!(status, 200, "{body}");
    eventually("six tasks running", Duration::from_secs(30), || {
        (tasks_in(&master, "svc", "running").len() == 6).then_some(())
    });
    drop(agents);
}

#[test]
fn tasks_launched_but_not_yet_started_survive_a_master_killed_with_sigkill() {
    let mut master = Master::start(&["--no-local-agent", "--agent-timeout-ms", "60000"]);
    let agent = Agent::start(&master, "node-1", &["--simulate", "--cpus", "4", "--mem", "4096"]);
    eventually("the node", Duration::from_secs(30), || (connected_nodes(&master) == 1).then_some(()));
    // The agent receives the launches but cannot start the tasks or say anything about them: they stay
    // staging, the state a launch is stored in.
    agent.freeze();
    let app = r#"{"id": "web", "instances": 2, "cpus": 0.5, "mem": 64, "cmd": "sleep 3600",
        "portDefinitions": [{"port": 0}], "container": {"docker": {"image": "web:latest"}}}"#;
    let (status, body) = master.request("POST", "/v2/apps", app);
    assert_eq!(status, 201, "{body}");
    let staging = eventually("two tasks staging", Duration::from_secs(30), || {
        let tasks = master.tasks("marathon");
        (tasks.len() == 2 && tasks.iter().all(|t| t["state"] == "staging")).then_some(tasks)
    });
    assert!(staging.iter().all(|t| t["ports"].as_array().is_some_and(|p| p.len() == 1)), "{staging:?}");

    master.restart();

    // Back as they were: the same tasks, staging on the same node with the same ports, launched at the
    // same time.
    let key = |t: &Value| t["task"].as_str().unwrap().to_string();
    let mut before = staging.clone();
    before.sort_by_key(key);
    let mut after = master.tasks("marathon");
    after.sort_by_key(key);
    assert_eq!(after, before);

    // Once the agent runs again and re-registers, the app's two tasks run, once each.
    agent.thaw();
    eventually("two tasks running", Duration::from_secs(60), || {
        let running = tasks_in(&master, "marathon", "running");
        (running.len() == 2).then_some(())
    });
    let agent_running = master.agents_running_tasks();
    assert_eq!(agent_running, 2, "the agent runs each task once");
    assert_no_duplicate_launch(&master, std::slice::from_ref(&agent));
}

#[test]
fn a_drained_nodes_tasks_end_with_the_reason_run_elsewhere_and_the_node_is_offered_no_more() {
    let master = Master::start(&["--no-local-agent"]);
    let _agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::start(&master, &format!("node-{i}"), &["--simulate", "--cpus", "4", "--mem", "4096"]))
        .collect();
    eventually("three nodes", Duration::from_secs(30), || (connected_nodes(&master) == 3).then_some(()));
    master.load_plugin("framework", "workers", guests::WORKERS);
    master.ok(&[
        "framework",
        "add",
        "svc",
        "--plugin",
        "workers",
        "--config",
        r#"{"instances": 6, "milli_cpus": 500}"#,
    ]);
    let running = eventually("six tasks running", Duration::from_secs(30), || {
        let running = tasks_in(&master, "svc", "running");
        (running.len() == 6).then_some(running)
    });
    let victim = ["node-1", "node-2", "node-3"]
        .into_iter()
        .max_by_key(|name| running.iter().filter(|t| t["hostname"] == *name).count())
        .unwrap();
    let doomed: BTreeSet<String> = running
        .iter()
        .filter(|t| t["hostname"] == victim)
        .map(|t| t["task"].as_str().unwrap().to_string())
        .collect();
    assert!(!doomed.is_empty());

    master.ok(&["node", "drain", victim]);
    // Its tasks end, killed with the drain as the reason, and run again on the other two nodes.
    eventually("the drained node's tasks to be killed", Duration::from_secs(20), || {
        let killed: BTreeSet<String> = tasks_in(&master, "svc", "killed")
            .iter()
            .filter(|t| t["reason"] == "node-drained")
            .map(|t| t["task"].as_str().unwrap().to_string())
            .collect();
        (killed == doomed).then_some(())
    });
    let relaunched = eventually("six tasks running again", Duration::from_secs(30), || {
        let running = tasks_in(&master, "svc", "running");
        (running.len() == 6).then_some(running)
    });
    assert!(relaunched.iter().all(|t| t["hostname"] != victim), "{relaunched:?}");
    let node = |name: &str| {
        master.get("/v1/nodes").as_array().unwrap().iter().find(|n| n["hostname"] == name).cloned()
    };
    assert_eq!(node(victim).unwrap()["state"], "draining");

    // More demand than the other two nodes can hold: they fill up (8 cores, 3 taken: ten more tasks of
    // half a core), and the drained node, with all its 4 cores free, gets nothing over many cycles.
    master.ok(&[
        "framework",
        "add",
        "more",
        "--plugin",
        "workers",
        "--config",
        r#"{"instances": 14, "milli_cpus": 500}"#,
    ]);
    eventually("the other two nodes full", Duration::from_secs(30), || {
        (tasks_in(&master, "more", "running").len() == 10).then_some(())
    });
    let cycle = |m: &Master| {
        m.get("/v1/cycles").as_array().unwrap().last().map_or(0, |c| c["number"].as_u64().unwrap())
    };
    let from = cycle(&master);
    eventually("ten more offer cycles", Duration::from_secs(60), || {
        (cycle(&master) >= from + 10).then_some(())
    });
    assert_eq!(tasks_in(&master, "more", "running").len(), 10);
    let drained = node(victim).unwrap();
    assert_eq!(drained["active_tasks"], 0, "{drained}");
    assert_eq!(drained["available"]["milli_cpus"], 4000, "{drained}");
    let samples = berth_tests::metrics::scrape(&master);
    assert_eq!(berth_tests::metrics::value(&samples, "berth_nodes", &[("state", "draining")]), Some(1.0));
    assert_eq!(
        berth_tests::metrics::value(&samples, "berth_node_cpus", &[("node", victim), ("kind", "used")]),
        Some(0.0)
    );
}

#[test]
fn a_master_killed_during_a_burst_of_app_posts_loses_no_acknowledged_app_and_runs_no_task_twice() {
    let mut master = Master::start(&["--no-local-agent", "--agent-timeout-ms", "30000"]);
    let agents: Vec<Agent> = (1..=3)
        .map(|i| {
            Agent::start(&master, &format!("node-{i}"), &["--simulate", "--cpus", "64", "--mem", "262144"])
        })
        .collect();
    eventually("three nodes", Duration::from_secs(30), || (connected_nodes(&master) == 3).then_some(()));

    // Four clients post apps as fast as they are answered while earlier apps' tasks launch and report
    // their statuses; the master is killed in the middle of it.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (url, token, acknowledged) = (master.url.clone(), master.token(), acknowledged.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    let id = format!("burst-{client}-{i}");
                    let app = serde_json::json!({"id": id, "instances": 3, "cpus": 0.01, "mem": 8,
                        "portDefinitions": [], "container": {"type": "DOCKER", "docker": {"image": "burst:1"}}, "cmd": "serve"});
                    let response = ureq::post(&format!("{url}/v2/apps"))
                        .header("authorization", &format!("Bearer {token}"))
                        .config()
                        .http_status_as_error(false)
                        .build()
                        .send_json(&app);
                    match response {
                        Ok(r) if r.status() == 201 => {
                            acknowledged.lock().unwrap().insert(format!("/{id}"));
                        }
                        Ok(r) => panic!("{id}: {}", r.status()),
                        Err(_) => return, // the master is gone
                    }
                }
            })
        })
        .collect();
    eventually("a burst under way", Duration::from_secs(30), || {
        (acknowledged.lock().unwrap().len() >= 40).then_some(())
    });
    master.kill9();
    for client in clients {
        client.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    master.restart();
    let apps: Value = serde_json::from_str(&master.request("GET", "/v2/apps", "").1).unwrap();
    let ids: BTreeSet<String> =
        apps["apps"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    let lost: Vec<&String> = acknowledged.difference(&ids).collect();
    assert!(lost.is_empty(), "acknowledged apps lost by the kill: {lost:?}");
    // An app that was written but whose reply the kill cut off may be there too; every app present runs
    // its three instances, once each.
    let expected = 3 * ids.len();
    let mut last = (0, 0, 0);
    let settled = std::time::Instant::now();
    while settled.elapsed() < Duration::from_secs(90) {
        last = (
            connected_nodes(&master),
            tasks_in(&master, "marathon", "running").len(),
            master.agents_running_tasks(),
        );
        if last == (3, expected, expected as u64) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        last,
        (3, expected, expected as u64),
        "(nodes, running at the master, running at the agents) for {} apps:\n{}",
        ids.len(),
        master.logs()
    );
    master.wait_cycles(3);
    let tasks = master.tasks("marathon");
    let running: Vec<&Value> = tasks.iter().filter(|t| t["state"] == "running").collect();
    assert_eq!(running.len(), expected, "no task launched twice");
    let unique: BTreeSet<&str> = running.iter().map(|t| t["task"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), expected);
    assert_eq!(master.agents_running_tasks(), expected as u64, "the agents run each task once");
    assert_no_duplicate_launch(&master, &agents);
}

/// A task that ended stays listed for `task_retention_s` (its logs and status readable), then is forgotten.
#[test]
fn an_ended_task_is_listed_for_its_retention_period_and_then_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "[master]\ntask_retention_s = 3\n").unwrap();
    let master = Master::start(&["--simulate-nodes", "1", "--config", config.to_str().unwrap()]);
    let app = serde_json::json!({"id": "brief", "instances": 1, "cpus": 0.1, "mem": 16, "cmd": "true",
        "container": {"type": "DOCKER", "docker": {"image": "brief:1"}},
        "labels": {"berth.simulate.exit-after-ms": "200"}});
    let (status, body) = master.request("POST", "/v2/apps", &app.to_string());
    assert_eq!(status, 201, "{body}");
    let finished = || -> Vec<String> {
        master
            .get("/v1/tasks?framework=marathon&state=finished")
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (first, seen_at) = eventually("a finished task", Duration::from_secs(30), || {
        finished().first().cloned().map(|id| (id, Instant::now()))
    });
    // Still listed well inside its 3 s retention…
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(seen_at.elapsed()));
    assert!(finished().contains(&first), "{first} is listed during its retention");
    // …and forgotten once it has passed (the sweep runs with the offer cycles, every second).
    eventually("the finished task to be forgotten", Duration::from_secs(15), || {
        (!finished().contains(&first)).then_some(())
    });
    assert!(seen_at.elapsed() >= Duration::from_secs(2), "not forgotten before its retention ran out");
}
