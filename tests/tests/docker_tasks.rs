//! Tasks as Docker containers, against the real engine: limits and labels, how tasks end, ports and
//! health checks, kills with grace periods, logs, and an agent that restarts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_tests::cluster::{Agent, Master, eventually};
use berth_tests::{docker, guests};
use serde_json::{Value, json};

/// A master whose local agent runs Docker, with the launcher framework added.
fn master() -> Master {
    docker::require();
    let master = Master::start(&[]);
    master.load_plugin("framework", "launcher", guests::LAUNCHER);
    master.ok(&["framework", "add", "l", "--plugin", "launcher"]);
    master
}

fn submit(master: &Master, task: Value) {
    let (status, body) = master.request("POST", "/frameworks/l/tasks", &task.to_string());
    assert_eq!(status, 201, "{body}");
}

fn records(master: &Master) -> BTreeMap<String, Value> {
    serde_json::from_str(&master.request("GET", "/frameworks/l/tasks", "").1).unwrap()
}

/// Waits until task `id`'s last state is `state` and returns its record.
fn wait_state(master: &Master, id: &str, state: &str, timeout: Duration) -> Value {
    eventually(&format!("task {id} to be {state}"), timeout, || {
        let record = records(master).remove(id)?;
        (record["history"].as_array()?.last()? == state).then_some(record)
    })
}

fn container_of(agent: &str, task: &str) -> String {
    let ids = docker::containers(&[&format!("berth.agent={agent}"), &format!("berth.task={task}")]);
    assert_eq!(ids.len(), 1, "exactly one container for task {task}: {ids:?}");
    ids[0].clone()
}

#[test]
fn a_task_runs_as_a_container_with_its_limits_and_labels() {
    let master = master();
    submit(
        &master,
        json!({"id": "limited", "image": docker::busybox(), "command": "sleep 3600", "milli_cpus": 500, "mem_mib": 64}),
    );
    wait_state(&master, "limited", "running", Duration::from_secs(60));

    let agent = master.local_agent_id().unwrap();
    let c = docker::inspect(&container_of(&agent, "limited"));
    assert_eq!(c["State"]["Running"], true);
    let host = &c["HostConfig"];
    assert_eq!(host["CpuPeriod"], 100_000);
    assert_eq!(host["CpuQuota"], 50_000, "0.5 CPU is half of each period");
    assert_eq!(host["CpuShares"], 512);
    assert_eq!(host["Memory"], 64 * 1024 * 1024);
    assert_eq!(host["MemorySwap"], 64 * 1024 * 1024, "no swap: a hard limit");
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["berth.task"], "limited");
    assert_eq!(labels["berth.framework"], "l");
    assert_eq!(labels["berth.agent"], agent.as_str());
    assert!(c["Name"].as_str().unwrap().starts_with("/berth-l-limited-"), "{}", c["Name"]);
}

#[test]
fn exit_codes_oom_missing_images_and_failed_forced_pulls_end_tasks_with_their_reason() {
    let master = master();
    let image = docker::busybox();
    submit(&master, json!({"id": "zero", "image": image, "command": "exit 0"}));
    submit(&master, json!({"id": "three", "image": image, "command": "exit 3"}));
    // `tail` of an endless file without newlines holds everything it reads: it grows until the kernel
    // stops it at the limit.
    submit(&master, json!({"id": "hungry", "image": image, "command": "tail /dev/zero", "mem_mib": 16}));
    submit(&master, json!({"id": "ghost", "image": "berth-test/does-not-exist:1.0", "command": "true"}));
    // A forced pull goes to the registry even though the engine has the image; there is none to reach
    // (and the image was never pushed anywhere), so the task fails at the pull, before any create.
    submit(&master, json!({"id": "forced", "image": image, "command": "true", "force_pull": true}));

    let zero = wait_state(&master, "zero", "finished", Duration::from_secs(60));
    assert_eq!(zero["exit_code"], 0);

    let three = wait_state(&master, "three", "failed", Duration::from_secs(60));
    assert_eq!(three["exit_code"], 3);
    assert_eq!(three["reason"], "commandfailed");

    let hungry = wait_state(&master, "hungry", "failed", Duration::from_secs(60));
    assert_eq!(hungry["reason"], "memorylimit", "{hungry}");
    assert!(hungry["message"].as_str().unwrap().contains("memory limit of 16 MiB"), "{hungry}");

    let ghost = wait_state(&master, "ghost", "failed", Duration::from_secs(60));
    assert_eq!(ghost["reason"], "imagepullfailed", "{ghost}");
    let message = ghost["message"].as_str().unwrap();
    assert!(
        message.starts_with("pulling berth-test/does-not-exist:1.0:") && message.len() > 40,
        "the engine's error: {message}"
    );

    let forced = wait_state(&master, "forced", "failed", Duration::from_secs(60));
    assert_eq!(forced["reason"], "imagepullfailed", "{forced}");
    assert!(forced["message"].as_str().unwrap().starts_with(&format!("pulling {image}")), "{forced}");

    // The same reasons through the master's own API.
    let failed = master.json(&["task", "ls", "--framework", "l", "--state", "failed"]);
    let reasons: BTreeMap<String, String> = failed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["task"].as_str().unwrap().into(), t["reason"].as_str().unwrap().into()))
        .collect();
    assert_eq!(reasons["hungry"], "memory-limit");
    assert_eq!(reasons["ghost"], "image-pull-failed");
    assert_eq!(reasons["three"], "command-failed");
}

#[test]
fn an_http_workload_is_reachable_on_its_offered_port_and_its_health_check_follows_it() {
    let master = master();
    // httpd runs in the background so the test can stop it while the container keeps running.
    let command =
        "mkdir -p /www && echo hello from berth > /www/index.html && httpd -p 80 -h /www && sleep 3600";
    let health =
        json!({"kind": "http", "path": "/", "port_index": 0, "interval_ms": 300, "timeout_ms": 1000});
    submit(
        &master,
        json!({"id": "web", "image": docker::busybox(), "command": command, "container_ports": [80], "health": [health]}),
    );
    let record = eventually("the web task to turn healthy", Duration::from_secs(60), || {
        let record = records(&master).remove("web")?;
        (record["healthy"] == true).then_some(record)
    });
    let port = record["ports"][0].as_u64().unwrap();
    let node = &master.get("/v1/nodes")[0];
    let offered = &node["total"]["ports"][0];
    assert!(
        offered["begin"].as_u64().unwrap() <= port && port <= offered["end"].as_u64().unwrap(),
        "a port from the offer: {port}"
    );
    let body =
        ureq::get(&format!("http://127.0.0.1:{port}/")).call().unwrap().into_body().read_to_string().unwrap();
    assert_eq!(body, "hello from berth\n");

    // Stop the server inside the container: the check fails and the task turns unhealthy.
    let agent = master.local_agent_id().unwrap();
    let out = docker::docker(&["exec", &container_of(&agent, "web"), "killall", "httpd"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record = eventually("the web task to turn unhealthy", Duration::from_secs(30), || {
        let record = records(&master).remove("web")?;
        (record["healthy"] == false).then_some(record)
    });
    assert_eq!(record["history"].as_array().unwrap().last().unwrap(), "running", "unhealthy, still running");
    assert_eq!(record["reason"], "healthchanged");
}

/// A command health check runs inside the task's container: healthy while it exits 0, unhealthy once it
/// does not.
#[test]
fn a_command_health_check_runs_in_the_container_and_follows_its_exit_code() {
    let master = master();
    let health =
        json!({"kind": "command", "command": ["test", "-e", "/ok"], "interval_ms": 300, "timeout_ms": 2000});
    submit(
        &master,
        json!({"id": "checked", "image": docker::busybox(), "command": "touch /ok && sleep 3600", "health": [health]}),
    );
    eventually("the task to turn healthy", Duration::from_secs(60), || {
        (records(&master).remove("checked")?["healthy"] == true).then_some(())
    });
    let agent = master.local_agent_id().unwrap();
    let out = docker::docker(&["exec", &container_of(&agent, "checked"), "rm", "/ok"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record = eventually("the task to turn unhealthy", Duration::from_secs(30), || {
        let record = records(&master).remove("checked")?;
        (record["healthy"] == false).then_some(record)
    });
    assert_eq!(record["history"].as_array().unwrap().last().unwrap(), "running", "{record}");
}

#[test]
fn a_task_killed_by_failing_health_checks_ends_with_that_reason() {
    let master = master();
    let health =
        json!({"kind": "tcp", "port_index": 0, "interval_ms": 200, "timeout_ms": 500, "max_failures": 3});
    // Nothing listens on the port: three failures and the agent kills the task.
    submit(
        &master,
        json!({"id": "deaf", "image": docker::busybox(), "command": "sleep 3600", "container_ports": [80], "health": [health], "grace_ms": 500}),
    );
    let record = wait_state(&master, "deaf", "killed", Duration::from_secs(60));
    assert_eq!(record["reason"], "healthcheckfailed", "{record}");
}

#[test]
fn kill_honours_the_grace_period() {
    let master = master();
    let image = docker::busybox();
    submit(
        &master,
        json!({"id": "polite", "image": image, "command": "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.2; done", "grace_ms": 10000}),
    );
    submit(
        &master,
        json!({"id": "stubborn", "image": image, "command": "trap '' TERM; while true; do sleep 0.2; done", "grace_ms": 2000}),
    );
    wait_state(&master, "polite", "running", Duration::from_secs(60));
    wait_state(&master, "stubborn", "running", Duration::from_secs(60));
    // RUNNING means Docker started the container, not that its shell has reached `trap`. The shell
    // is PID 1, and the kernel drops a signal PID 1 has no handler for: a SIGTERM sent before the
    // trap is set would be lost and the task would wait out its grace period. Kill only once the
    // handler is in place.
    eventually("the polite task to set its SIGTERM handler", Duration::from_secs(30), || {
        let out = master.cli(&["task", "logs", "polite"]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout) == "ready\n").then_some(())
    });

    let asked = Instant::now();
    assert_eq!(master.request("POST", "/frameworks/l/kill?polite", "").0, 202);
    assert_eq!(master.request("POST", "/frameworks/l/kill?stubborn", "").0, 202);

    // The polite task handles SIGTERM and exits 0, well inside its 10 s grace period.
    let polite = wait_state(&master, "polite", "killed", Duration::from_secs(30));
    let polite_took = asked.elapsed();
    assert_eq!(polite["exit_code"], 0, "it exited on its own after SIGTERM: {polite}");
    assert!(polite_took < Duration::from_secs(9), "it did not wait for SIGKILL: {polite_took:?}");
    let out = master.cli(&["task", "logs", "polite"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\nbye\n", "its SIGTERM handler ran");

    // The stubborn one ignores SIGTERM and is killed with SIGKILL when its 2 s run out.
    let stubborn = wait_state(&master, "stubborn", "killed", Duration::from_secs(30));
    let stubborn_took = asked.elapsed();
    assert_eq!(stubborn["exit_code"], 137, "SIGKILL: {stubborn}");
    assert!(
        stubborn_took >= Duration::from_millis(1900),
        "not killed before its grace period ended: {stubborn_took:?}"
    );
    assert_eq!(stubborn["reason"], "killedbyframework");
}

#[test]
fn a_restarted_agent_adopts_its_containers_and_removes_strays() {
    docker::require();
    let master = Master::start(&["--no-local-agent"]);
    let mut agent = Agent::start(&master, "dock", &[]);
    eventually("the agent to join", Duration::from_secs(30), || {
        master
            .get("/v1/nodes")
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["hostname"] == "dock" && n["connected"] == true)
            .then_some(())
    });
    master.load_plugin("framework", "launcher", guests::LAUNCHER);
    master.ok(&["framework", "add", "l", "--plugin", "launcher"]);
    submit(&master, json!({"id": "a", "image": docker::busybox(), "command": "sleep 3600"}));
    submit(&master, json!({"id": "b", "image": docker::busybox(), "command": "sleep 3600"}));
    wait_state(&master, "a", "running", Duration::from_secs(60));
    wait_state(&master, "b", "running", Duration::from_secs(60));
    let agent_id = agent.agent_id().unwrap();
    let before = (container_of(&agent_id, "a"), container_of(&agent_id, "b"));

    // A container with this agent's labels that no task of the master's owns.
    let out = docker::docker(&[
        "run",
        "-d",
        "--label",
        &format!("berth.agent={agent_id}"),
        "--label",
        "berth.framework=l",
        "--label",
        "berth.task=stray",
        docker::busybox(),
        "sleep",
        "3600",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    agent.restart();
    eventually("the stray container to be removed", Duration::from_secs(60), || {
        docker::containers(&[&format!("berth.agent={agent_id}"), "berth.task=stray"]).is_empty().then_some(())
    });
    assert_eq!(
        (container_of(&agent_id, "a"), container_of(&agent_id, "b")),
        before,
        "the same containers, adopted"
    );
    assert_eq!(
        docker::containers(&[&format!("berth.agent={agent_id}")]).len(),
        2,
        "no duplicate was started"
    );
    assert!(agent.logs().contains("adopting a running container"), "{}", agent.logs());
    for id in ["a", "b"] {
        let record = &records(&master)[id];
        assert_eq!(record["history"].as_array().unwrap().last().unwrap(), "running", "{id}: {record}");
    }
    eventually("the agent to report two running tasks", Duration::from_secs(10), || {
        (master.get("/v1/nodes")[0]["agent_running_tasks"] == 2).then_some(())
    });
}

/// `berth serve` killed with SIGKILL while its local agent runs containers: on restart the agent adopts the
/// container that still runs (the same container, no second one), and the one that exited while the
/// master was down is reported to the framework exactly once, with its exit code.
#[test]
fn a_serve_killed_with_sigkill_adopts_its_containers_and_reports_an_exit_while_down_once() {
    let mut master = master();
    submit(&master, json!({"id": "steady", "image": docker::busybox(), "command": "sleep 3600"}));
    // Exits with 3 once the test creates /go inside it: while the master is down.
    let waits = "while [ ! -e /go ]; do sleep 0.1; done; exit 3";
    submit(&master, json!({"id": "waits", "image": docker::busybox(), "command": waits}));
    wait_state(&master, "steady", "running", Duration::from_secs(60));
    wait_state(&master, "waits", "running", Duration::from_secs(60));
    let agent = master.local_agent_id().unwrap();
    let steady = container_of(&agent, "steady");
    let waits_container = container_of(&agent, "waits");

    master.kill9();
    let out = docker::docker(&["exec", &waits_container, "touch", "/go"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("the container to exit while the master is down", Duration::from_secs(30), || {
        (docker::inspect(&waits_container)["State"]["Running"] == false).then_some(())
    });
    assert_eq!(docker::inspect(&steady)["State"]["Running"], true, "SIGKILL of berth leaves containers be");

    master.restart();
    let ended = wait_state(&master, "waits", "failed", Duration::from_secs(60));
    assert_eq!(ended["exit_code"], 3, "{ended}");
    assert_eq!(container_of(&agent, "steady"), steady, "the running container is adopted, not replaced");
    assert_eq!(docker::inspect(&steady)["State"]["Running"], true);
    eventually("the agent to report its one running task", Duration::from_secs(30), || {
        (master.get("/v1/nodes")[0]["agent_running_tasks"] == 1).then_some(())
    });
    // Let several status rounds pass (the agent re-sends what the master has not acknowledged): the
    // framework has still seen each state once.
    master.wait_cycles(3);
    let records = records(&master);
    for (id, last) in [("steady", "running"), ("waits", "failed")] {
        let history: Vec<&str> =
            records[id]["history"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert_eq!(history.last(), Some(&last), "{id}: {history:?}");
        let mut seen = std::collections::BTreeSet::new();
        assert!(history.iter().all(|s| seen.insert(*s)), "{id}: a state reported twice: {history:?}");
    }
    assert_eq!(docker::containers(&[&format!("berth.agent={agent}"), "berth.task=steady"]).len(), 1);
    let tasks = master.tasks("l");
    assert_eq!(tasks.len(), 2, "no task was launched again: {tasks:?}");
    assert!(!master.logs().contains(berth_host::agent::DUPLICATE_LAUNCH), "{}", master.logs());
}

/// The agent samples a running container's use from the engine (every 5 s) and the master lists it next
/// to the task's limits: a task that spins on a CPU limited to half a core uses about half a core.
#[test]
fn a_containers_cpu_and_memory_use_is_sampled_and_listed_next_to_its_limits() {
    let master = master();
    submit(
        &master,
        json!({"id": "spinner", "image": docker::busybox(), "command": "while :; do :; done", "milli_cpus": 500, "mem_mib": 64}),
    );
    wait_state(&master, "spinner", "running", Duration::from_secs(60));
    // The first sample of a container has no earlier reading to measure CPU against; wait for a busy one.
    let usage = eventually("a sample showing the spinning core", Duration::from_secs(60), || {
        let tasks = master.get("/v1/tasks?framework=l");
        let task = tasks.as_array()?.iter().find(|t| t["id"] == "spinner")?.clone();
        let usage = task["usage"].clone();
        (usage["cpus"].as_f64()? > 0.3).then_some(usage)
    });
    let cpus = usage["cpus"].as_f64().unwrap();
    assert!(cpus <= 0.6, "the quota holds it near half a core: {usage}");
    let mem = usage["mem_mib"].as_f64().unwrap();
    assert!(mem > 0.0 && mem <= 64.0, "some memory, within its limit: {usage}");
    let row = master
        .json(&["task", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == "spinner")
        .cloned()
        .unwrap();
    assert!(row["usage"].as_str().unwrap().starts_with("cpu 0."), "{row}");
    assert!(row["usage"].as_str().unwrap().ends_with("/64 MiB"), "{row}");
}

/// `berth task logs --follow` streams a running container's output as it is written, until stopped.
#[test]
fn task_logs_follow_streams_new_output_as_the_container_writes_it() {
    use std::io::BufRead as _;
    let master = master();
    submit(
        &master,
        json!({"id": "ticker", "image": docker::busybox(), "command": "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"}),
    );
    wait_state(&master, "ticker", "running", Duration::from_secs(60));
    let mut follow = std::process::Command::new(berth_tests::cluster::berth_bin())
        .args(["task", "logs", "ticker", "--follow"])
        .env("BERTH_MASTER", &master.url)
        .env("BERTH_TOKEN", master.token())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let at = Instant::now();
            if tx.send((line, at)).is_err() {
                return;
            }
        }
    });
    // Lines keep arriving, in order, spread over time rather than in one burst at the end.
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 15 && Instant::now() < deadline {
        if let Ok((line, at)) = rx.recv_timeout(Duration::from_secs(5)) {
            let n = line
                .strip_prefix("tick ")
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("{line:?}"));
            seen.push((n, at));
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen.len() >= 15, "followed output arrived: {seen:?}");
    assert!(seen.windows(2).all(|w| w[1].0 == w[0].0 + 1), "in order, none missing: {seen:?}");
    let spread = seen.last().unwrap().1 - seen[seen.len() - 6].1;
    assert!(spread >= Duration::from_millis(500), "the last lines came as they were written: {spread:?}");
}
