//! The default framework: Marathon's API and behaviour, on the real Docker engine, driven by HTTP, by the
//! `marathon` client library from PyPI, and observed through berth's task stream.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_host::bundled;
use berth_host::master::{FrameworkKv, Progress};
use berth_host::runtime::bindings::{Action, HttpRequest};
use berth_host::runtime::{FrameworkInstance, KvBackend, NewVersion, PluginKind, Registry, Runtime};
use berth_host::store::Store;
use berth_tests::cluster::{Master, berth_bin, eventually};
use berth_tests::{docker, guests};
use serde_json::{Value, json};

fn master() -> Master {
    docker::require();
    Master::start(&[])
}

fn app(master: &Master, id: &str) -> Value {
    let (status, body) = master.request("GET", &format!("/v2/apps/{id}"), "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["app"].clone()
}

fn deployments(master: &Master) -> Vec<Value> {
    serde_json::from_str(&master.request("GET", "/v2/deployments", "").1).unwrap()
}

/// `berth task watch --json` for the marathon framework, collecting every update it prints.
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Watch {
    fn start(master: &Master) -> Watch {
        let mut child = Command::new(berth_bin())
            .args(["task", "watch", "--framework", "marathon", "--json"])
            .env("BERTH_MASTER", &master.url)
            .env("BERTH_TOKEN", master.token())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Watch { child, lines }
    }

    fn updates(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_developers_md_app_runs_on_docker_after_a_post_to_v2_apps() {
    let master = master();
    docker::my_app();
    let definition = r#"{"id": "my-app", "cpus": 1, "mem": 256, "instances": 1,
 "container": {"type": "DOCKER", "docker": {"image": "my-app:latest", "command": "my-app"}}}"#;
    let (status, body) = master.request("POST", "/v2/apps", definition);
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["id"], "/my-app");

    let task = eventually("my-app to run", Duration::from_secs(60), || {
        let tasks = app(&master, "my-app")["tasks"].as_array().cloned()?;
        tasks.into_iter().find(|t| t["state"] == "TASK_RUNNING")
    });
    let port = task["ports"][0].as_u64().unwrap();
    let body = eventually("my-app to answer on its port", Duration::from_secs(30), || {
        ureq::get(&format!("http://127.0.0.1:{port}/")).call().ok()?.into_body().read_to_string().ok()
    });
    assert_eq!(body, "hello from my-app\n");
    let agent = master.local_agent_id().unwrap();
    let containers = docker::containers(&[&format!("berth.agent={agent}"), "berth.framework=marathon"]);
    assert_eq!(containers.len(), 1, "{containers:?}");
    // Marathon's environment: the agent's standard variables and the framework's own.
    let env: Vec<String> =
        serde_json::from_value(docker::inspect(&containers[0])["Config"]["Env"].clone()).unwrap();
    let has = |var: String| assert!(env.contains(&var), "{var} is not in {env:?}");
    has(format!("PORT0={port}"));
    has(format!("PORT={port}"));
    has(format!("PORTS={port}"));
    has(format!("HOST={}", task["host"].as_str().unwrap()));
    has(format!("MESOS_TASK_ID={}", task["id"].as_str().unwrap()));
    has("MARATHON_APP_ID=/my-app".into());
    has(format!("MARATHON_APP_VERSION={}", task["version"].as_str().unwrap()));
    eventually("the deployment to finish", Duration::from_secs(30), || {
        deployments(&master).is_empty().then_some(())
    });
}

/// A Docker network the test made, removed when it ends (after the master, which removes its containers).
struct UserNetwork(String);

impl UserNetwork {
    fn create() -> UserNetwork {
        let name = format!("berth-test-{}-{}", std::process::id(), berth_tests::cluster::free_port());
        let out = docker::docker(&["network", "create", &name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        UserNetwork(name)
    }
}

impl Drop for UserNetwork {
    fn drop(&mut self) {
        let _ = docker::docker(&["network", "rm", &self.0]);
    }
}

/// An app on a user-defined network (Marathon's `container` mode with a name) runs attached to that
/// network, and its HTTP health check reaches it there.
#[test]
fn an_app_on_a_user_network_runs_attached_to_it_and_is_health_checked_there() {
    let network = UserNetwork::create();
    let master = master();
    let definition = json!({
        "id": "/usernet", "instances": 1, "cpus": 0.05, "mem": 16,
        "cmd": "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www",
        "networks": [{"mode": "container", "name": network.0}],
        "container": {"docker": {"image": docker::busybox()}, "portMappings": [{"containerPort": 80}]},
        "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 30,
                          "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}],
    });
    let (status, body) = master.request("POST", "/v2/apps", &definition.to_string());
    assert_eq!(status, 201, "{body}");
    eventually("the task to turn healthy", Duration::from_secs(60), || {
        (app(&master, "usernet")["tasksHealthy"] == 1).then_some(())
    });
    let agent = master.local_agent_id().unwrap();
    let containers = docker::containers(&[&format!("berth.agent={agent}"), "berth.framework=marathon"]);
    assert_eq!(containers.len(), 1, "{containers:?}");
    let networks = docker::inspect(&containers[0])["NetworkSettings"]["Networks"].clone();
    let attached: Vec<&String> = networks.as_object().unwrap().keys().collect();
    assert_eq!(attached, [&network.0], "attached to the user network only");
}

#[test]
fn the_marathon_python_client_works_unchanged() {
    let master = master();
    let image = docker::busybox();
    // The `marathon` client library from PyPI, in the tests' own virtual environment.
    let python = berth_tests::provision::python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/marathon_client.py");
    let out = Command::new(python).args([script, &master.url, &master.token(), image]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the client script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "get_metrics",
        "rollback_app",
        "list_endpoints",
        "delete_deployment",
        "rollback_group",
        "health check failures",
        "event_stream read every event",
    ] {
        assert!(stdout.contains(part), "{part}:\n{stdout}");
    }
    println!("{stdout}");
}

#[test]
fn a_rolling_update_never_drops_below_the_minimum_healthy_capacity() {
    let master = master();
    let definition = json!({
        "id": "/rolling", "instances": 4, "cpus": 0.05, "mem": 16,
        "cmd": "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p $PORT0 -h /www",
        "container": {"docker": {"image": docker::busybox()}},
        "env": {"RELEASE": "1"},
        "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 10,
                          "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}],
        // Replacing means killing first here: no room above 4 instances, at least 2 healthy.
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0},
    });
    assert_eq!(master.request("POST", "/v2/apps", &definition.to_string()).0, 201);
    eventually("4 healthy tasks", Duration::from_secs(90), || {
        (deployments(&master).is_empty() && app(&master, "rolling")["tasksHealthy"] == 4).then_some(())
    });

    let watch = Watch::start(&master);
    eventually("the watch to show the 4 tasks", Duration::from_secs(10), || {
        (watch.updates().len() >= 4).then_some(())
    });
    let (status, body) =
        master.request("PUT", "/v2/apps/rolling", &json!({"env": {"RELEASE": "2"}}).to_string());
    assert_eq!(status, 200, "{body}");
    let version = serde_json::from_str::<Value>(&body).unwrap()["version"].as_str().unwrap().to_string();
    eventually("the rolling update to finish", Duration::from_secs(120), || {
        let a = app(&master, "rolling");
        let done = deployments(&master).is_empty()
            && a["tasksHealthy"] == 4
            && a["tasks"].as_array()?.iter().all(|t| t["version"] == version.as_str());
        done.then_some(())
    });
    // The stream may trail the API by a moment: wait until it shows the four old tasks killed.
    eventually("the watch to show the old tasks killed", Duration::from_secs(10), || {
        (watch.updates().iter().filter(|u| u["state"] == "killed").count() >= 4).then_some(())
    });

    // Replay the stream: after every update, how many tasks are running and healthy, and how many are
    // alive at all (launched and not yet ended, killing included)?
    let mut tasks: std::collections::BTreeMap<String, (String, bool)> = Default::default();
    let (mut lowest, mut highest, mut ended, mut replayed) = (usize::MAX, 0, 0, 0);
    for update in watch.updates() {
        let id = update["task"].as_str().unwrap().to_string();
        let state = update["state"].as_str().unwrap().to_string();
        ended += usize::from(state == "killed");
        tasks.insert(id, (state, update["healthy"] == true));
        let healthy = tasks.values().filter(|(s, h)| s == "running" && *h).count();
        let over = ["killed", "failed", "finished", "lost", "error"];
        let alive = tasks.values().filter(|(s, _)| !over.contains(&s.as_str())).count();
        replayed += 1;
        if replayed > 4 {
            lowest = lowest.min(healthy);
        }
        highest = highest.max(alive);
    }
    assert_eq!(ended, 4, "the 4 old tasks were replaced");
    assert!(tasks.len() >= 8, "4 new tasks appeared: {tasks:?}");
    assert!(lowest >= 2, "healthy tasks fell to {lowest} during the deployment");
    assert_eq!(highest, 4, "maximumOverCapacity 0: never more than 4 tasks alive at once");
}

#[test]
fn a_crashing_app_backs_off_by_its_factor_instead_of_restarting_in_a_hot_loop() {
    let master = master();
    let watch = Watch::start(&master);
    let definition = json!({
        "id": "/crash", "instances": 1, "cpus": 0.05, "mem": 16, "cmd": "exit 1",
        "container": {"docker": {"image": docker::busybox(), "network": "BRIDGE"}},
        "backoffSeconds": 1, "backoffFactor": 2, "maxLaunchDelaySeconds": 3600,
    });
    assert_eq!(master.request("POST", "/v2/apps", &definition.to_string()).0, 201);

    // Per task: when it first appeared and when it ended. The backoff is the wait from one task's failure
    // to the next task's launch, so the tasks' own run times (longer on a loaded machine) do not blur it.
    let lives = eventually("five launches", Duration::from_secs(90), || {
        let mut lives: Vec<(String, u64, Option<u64>)> = Vec::new();
        for u in watch.updates() {
            let id = u["task"].as_str().unwrap().to_string();
            let at = u["timestamp_ms"].as_u64().unwrap();
            let index = match lives.iter().position(|(t, ..)| *t == id) {
                Some(index) => index,
                None => {
                    lives.push((id, at, None));
                    lives.len() - 1
                }
            };
            if u["state"] == "failed" {
                lives[index].2 = Some(at);
            }
        }
        (lives.len() >= 5).then_some(lives)
    });
    let gaps: Vec<f64> = lives
        .windows(2)
        .map(|w| {
            let failed =
                w[0].2.unwrap_or_else(|| panic!("task {} relaunched before it failed: {lives:?}", w[0].0));
            (w[1].1 as f64 - failed as f64) / 1000.0
        })
        .collect();
    // Delays of 1, 2, 4, 8 s. Each relaunch waits at least its delay, and not much longer: the framework
    // notices the end of a delay on its next tick (every second) and the offer comes with the next
    // allocation cycle (every second), so up to about 2 s more, plus slack for a loaded machine.
    for (i, gap) in gaps.iter().enumerate() {
        let delay = 2f64.powi(i as i32);
        assert!(
            *gap >= delay * 0.95 && *gap <= delay + 3.5,
            "relaunch {} waited {gap:.2}s, its delay is {delay}s: {gaps:?}",
            i + 1
        );
    }
    let failure = &app(&master, "crash")["lastTaskFailure"];
    assert_eq!(failure["state"], "TASK_FAILED", "{failure}");
    assert!(failure["message"].as_str().unwrap().contains("exited with code 1"), "{failure}");
}

#[test]
fn hot_swapping_the_marathon_plugin_mid_deployment_lets_the_deployment_complete() {
    let master = master();
    let definition = json!({
        "id": "/steady", "instances": 3, "cpus": 0.05, "mem": 16,
        "cmd": "sleep 2 && mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p $PORT0 -h /www",
        "container": {"docker": {"image": docker::busybox()}},
        "healthChecks": [{"protocol": "HTTP", "portIndex": 0, "gracePeriodSeconds": 10, "intervalSeconds": 1,
                          "timeoutSeconds": 1, "maxConsecutiveFailures": 5}],
    });
    // Uploaded (compiled) before the deployment starts and activated during it: compiling takes seconds on
    // a loaded machine, long enough for the deployment to finish first if the swap compiled in between.
    let uploaded = master.json(&["plugin", "swap", "marathon", guests::MARATHON_REBUILT, "--inactive"]);
    assert_eq!(
        (uploaded["version"].as_u64(), uploaded["active"].as_bool()),
        (Some(2), Some(false)),
        "{uploaded}"
    );
    assert_eq!(master.request("POST", "/v2/apps", &definition.to_string()).0, 201);
    assert_eq!(deployments(&master).len(), 1, "the deployment is under way");

    let swapped = master.json(&["plugin", "activate", "marathon", "2"]);
    assert_eq!(swapped["version"], 2);
    assert_eq!(swapped["active"], true);
    assert!(!deployments(&master).is_empty(), "the swap happened mid-deployment");

    eventually("the deployment to complete on the new version", Duration::from_secs(90), || {
        (deployments(&master).is_empty() && app(&master, "steady")["tasksHealthy"] == 3).then_some(())
    });
    let (_, info) = master.request("GET", "/v2/info", "");
    assert_eq!(serde_json::from_str::<Value>(&info).unwrap()["buildref"], "berth-marathon-rebuilt");
    let frameworks = master.json(&["framework", "ls"]);
    let marathon = frameworks.as_array().unwrap().iter().find(|f| f["name"] == "marathon").unwrap();
    assert_eq!(marathon["plugin"], "marathon@v2", "{frameworks}");
}

#[test]
fn berth_app_deploys_lists_scales_and_removes_and_says_why_a_deployment_fails() {
    let master = master();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let definition = json!({"id": "/cli-app", "instances": 2, "cpus": 0.05, "mem": 16, "cmd": "sleep 3600",
        "container": {"docker": {"image": docker::busybox(), "network": "BRIDGE"}}});
    std::fs::write(&good, definition.to_string()).unwrap();
    let deployed = master.json(&["app", "deploy", good.to_str().unwrap(), "--timeout", "90"]);
    assert_eq!(deployed["result"], "succeeded", "{deployed}");
    let apps = master.json(&["app", "ls"]);
    assert_eq!(apps[0]["id"], "/cli-app");
    assert_eq!(apps[0]["running"], 2);

    master.ok(&["app", "scale", "cli-app", "3"]);
    eventually("3 running", Duration::from_secs(60), || {
        (app(&master, "cli-app")["tasksRunning"] == 3).then_some(())
    });

    // A deployment that cannot succeed: the CLI gives up and says why, with the engine's words.
    let bad = dir.path().join("bad.json");
    let broken = json!({"id": "/broken", "cpus": 0.05, "mem": 16, "cmd": "true",
        "container": {"docker": {"image": "berth-test/nowhere:1", "network": "BRIDGE"}}});
    std::fs::write(&bad, broken.to_string()).unwrap();
    let out = master.cli(&["app", "deploy", bad.to_str().unwrap(), "--timeout", "20"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not succeed")
            && err.contains("TASK_FAILED")
            && err.contains("pulling berth-test/nowhere:1"),
        "{err}"
    );

    master.ok(&["app", "rm", "cli-app"]);
    master.ok(&["app", "rm", "broken", "--force"]);
    eventually("the apps to be gone", Duration::from_secs(60), || {
        master.json(&["app", "ls"]).as_array().unwrap().is_empty().then_some(())
    });
    let invalid = dir.path().join("invalid.json");
    std::fs::write(&invalid, r#"{"id": "/x", "cpus": -1, "container": {"docker": {"image": "a"}}}"#).unwrap();
    let out = master.cli(&["app", "deploy", invalid.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Object is not valid; /cpus: must be greater than 0 (HTTP 422)"), "{err}");
}

#[test]
fn marathon_builds_events_only_while_something_receives_them() {
    // The bundled component, on the master's key-value backend, with its `events.watched` import answered
    // by a flag. Posting an app starts a deployment, which Marathon announces with `deployment_info`.
    let registry = Registry::new(Runtime::new(None).unwrap());
    let version = NewVersion {
        name: "marathon",
        kind: PluginKind::Framework,
        bytes: bundled::MARATHON,
        config: String::new(),
        limits: Default::default(),
        number: None,
    };
    let plugin = registry.load(version).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let kv: Arc<dyn KvBackend> = Arc::new(FrameworkKv::new(
        "marathon",
        Default::default(),
        64 << 20,
        store,
        Arc::new(Progress::default()),
    ));
    let watched = Arc::new(AtomicBool::new(false));
    let flag = watched.clone();
    let mut marathon = FrameworkInstance::new(
        plugin,
        String::new(),
        Some(kv),
        Some(Arc::new(move || flag.load(Ordering::SeqCst))),
    )
    .unwrap();
    let mut post = |id: &str| {
        let app = json!({"id": id, "cmd": "sleep 60", "container": {"docker": {"image": "app:1"}}});
        let request = HttpRequest {
            method: "POST".into(),
            path: "/v2/apps".into(),
            query: String::new(),
            headers: vec![],
            body: app.to_string().into_bytes(),
        };
        let reply = marathon.handle(&request).unwrap();
        assert_eq!(reply.response.status, 201, "{}", String::from_utf8_lossy(&reply.response.body));
        let published: Vec<String> = reply
            .actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Publish(event) => Some(event.kind),
                _ => None,
            })
            .collect();
        published
    };
    assert_eq!(post("/unwatched"), Vec::<String>::new(), "nothing receives events: none are built");
    watched.store(true, Ordering::SeqCst);
    let published = post("/watched");
    assert!(
        published.contains(&"deployment_info".to_string()),
        "watched: the events are built: {published:?}"
    );
}
