//! Marathon's deployments tell the truth: a crash-looping app is not reported deployed (against the real
//! Docker engine, with `berth app deploy` as a script would run it), and a rolling update of an app with a
//! `hostname:UNIQUE` constraint moves onto the free node and completes; constraints decide placement.

use std::process::Command;
use std::time::Duration;

use berth_tests::cluster::{Agent, Master, berth_bin, eventually};
use berth_tests::docker;
use serde_json::{Value, json};

fn deployments(master: &Master, embed: &str) -> Vec<Value> {
    serde_json::from_str(&master.request("GET", &format!("/v2/deployments{embed}"), "").1).unwrap()
}

/// `berth app deploy` run as a script runs it: no terminal, its output captured.
fn deploy(master: &Master, definition: &Value, timeout: u64) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(&file, definition.to_string()).unwrap();
    Command::new(berth_bin())
        .args(["app", "deploy", file.to_str().unwrap(), "--timeout", &timeout.to_string()])
        .env("BERTH_MASTER", &master.url)
        .env("BERTH_TOKEN", master.token())
        .output()
        .unwrap()
}

#[test]
fn a_crash_looping_app_is_not_reported_deployed_and_a_steady_one_is() {
    docker::require();
    let master = Master::start(&[]);
    let image = docker::busybox();

    // Exits at once, every time: `berth app deploy` must fail at its timeout naming the failure.
    let crash = json!({"id": "crash", "instances": 1, "cpus": 0.1, "mem": 32, "backoffSeconds": 0.5,
        "container": {"type": "DOCKER", "docker": {"image": image, "command": "exit 3"}}});
    let out = deploy(&master, &crash, 20);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a crash loop is not a successful deployment:\n{stdout}\n{stderr}");
    assert!(stderr.contains("did not succeed in 20s") && stderr.contains("TASK_FAILED"), "{stderr}");
    assert!(stdout.lines().count() >= 2, "a line per change of state without a terminal:\n{stdout}");
    let pending = deployments(&master, "?embed=lastFailure");
    assert_eq!(pending.len(), 1, "the deployment stays: {pending:?}");
    assert_eq!(pending[0]["affectedApps"], json!(["/crash"]));
    assert_eq!(pending[0]["lastFailure"]["state"], "TASK_FAILED", "{pending:?}");
    assert!(
        deployments(&master, "")[0].get("lastFailure").is_none(),
        "only when asked: clients refuse fields they do not know"
    );

    // Stays up: succeeds once it has run for the minimum healthy time, and says so.
    let steady = json!({"id": "steady", "instances": 1, "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": image, "command": "sleep 3600"}}});
    let out = deploy(&master, &steady, 60);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("deployment") && stdout.contains("succeeded: 1/1 instances up"), "{stdout}");
}

#[test]
fn a_health_checks_kill_is_named_by_berth_app_deploy() {
    docker::require();
    let master = Master::start(&[]);
    let image = docker::busybox();
    let unhealthy = json!({"id": "unhealthy", "instances": 1, "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": image, "command": "sleep 3600"}},
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "exit 1"}, "gracePeriodSeconds": 0,
                          "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 1}]});
    let out = deploy(&master, &unhealthy, 20);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("killed by its health check"), "{stderr}");
}

#[test]
fn a_rolling_update_with_hostname_unique_moves_onto_the_free_node_and_completes() {
    let master = Master::start(&["--simulate-nodes", "3"]);
    eventually("three nodes", Duration::from_secs(30), || {
        (master.get("/v1/nodes").as_array()?.len() == 3).then_some(())
    });
    let app = json!({"id": "unique", "instances": 2, "cpus": 1, "mem": 64, "cmd": "sleep 3600",
        "constraints": [["hostname", "UNIQUE"]], "container": {"docker": {"image": "busybox"}}});
    let (status, body) = master.request("POST", "/v2/apps", &app.to_string());
    assert_eq!(status, 201, "{body}");
    let hosts = |version: Option<&str>| -> Vec<String> {
        let (_, body) = master.request("GET", "/v2/apps/unique/tasks", "");
        let tasks: Value = serde_json::from_str(&body).unwrap();
        let mut hosts: Vec<String> = tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING" && version.is_none_or(|v| t["version"] == v))
            .map(|t| t["host"].as_str().unwrap().to_string())
            .collect();
        hosts.sort();
        hosts
    };
    eventually("the first deployment", Duration::from_secs(60), || {
        (deployments(&master, "").is_empty() && hosts(None).len() == 2).then_some(())
    });

    let (status, body) =
        master.request("PUT", "/v2/apps/unique", &json!({"env": {"RELEASE": "2"}}).to_string());
    assert_eq!(status, 200, "{body}");
    let version = serde_json::from_str::<Value>(&body).unwrap()["version"].as_str().unwrap().to_string();
    let done = eventually("the rolling update to complete", Duration::from_secs(90), || {
        let new = hosts(Some(&version));
        (deployments(&master, "").is_empty() && new.len() == 2).then_some(new)
    });
    let mut unique = done.clone();
    unique.dedup();
    assert_eq!(unique, done, "still one task per host: {done:?}");
}

/// Marathon's constraint operators as they act on real offers from six simulated nodes in three racks
/// (two `gpu`-class nodes): each app's running tasks land only where its constraint allows, and an app
/// that asks for more than the constraint admits runs what it can and no more.
#[test]
fn constraints_decide_which_offers_take_an_apps_tasks() {
    let master = Master::start(&["--no-local-agent"]);
    let nodes = [("n1", "r1", "gpu"), ("n2", "r1", "cpu"), ("n3", "r2", "gpu"), ("n4", "r2", "cpu")];
    let nodes = nodes.into_iter().chain([("n5", "r3", "cpu"), ("n6", "r3", "cpu")]);
    let rack_of: std::collections::BTreeMap<&str, &str> = nodes.clone().map(|(n, r, _)| (n, r)).collect();
    let _agents: Vec<Agent> = nodes
        .map(|(name, rack, class)| {
            let (rack, class) = (format!("rack={rack}"), format!("class={class}"));
            let args =
                ["--simulate", "--cpus", "8", "--mem", "8192", "--attribute", &rack, "--attribute", &class];
            Agent::start(&master, name, &args)
        })
        .collect();
    eventually("six nodes", Duration::from_secs(30), || {
        let nodes = master.get("/v1/nodes");
        (nodes.as_array()?.iter().filter(|n| n["connected"] == true).count() == 6).then_some(())
    });
    // Running tasks per app, as the hosts they run on.
    let hosts = |id: &str| -> Vec<String> {
        let (_, body) = master.request("GET", &format!("/v2/apps/{id}/tasks"), "");
        let tasks: Value = serde_json::from_str(&body).unwrap();
        let mut hosts: Vec<String> = tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .map(|t| t["host"].as_str().unwrap().to_string())
            .collect();
        hosts.sort();
        hosts
    };
    let post = |id: &str, instances: u32, constraints: &Value| {
        let app = json!({"id": id, "instances": instances, "cpus": 0.1, "mem": 16, "cmd": "sleep 3600",
            "constraints": constraints, "container": {"docker": {"image": "busybox"}}});
        let (status, body) = master.request("POST", "/v2/apps", &app.to_string());
        assert_eq!(status, 201, "{id}: {body}");
    };

    let apps: [(&str, u32, Value); 9] = [
        ("unique", 7, json!([["hostname", "UNIQUE"]])),
        ("cluster", 3, json!([["rack", "CLUSTER", "r2"]])),
        ("cluster-first", 3, json!([["rack", "CLUSTER"]])),
        ("group", 6, json!([["rack", "GROUP_BY", "3"]])),
        ("group-uncounted", 6, json!([["rack", "GROUP_BY"]])),
        ("like", 4, json!([["class", "LIKE", "gp.*"]])),
        ("unlike", 4, json!([["class", "UNLIKE", "gpu"]])),
        ("max-per", 4, json!([["rack", "MAX_PER", "1"]])),
        ("is", 2, json!([["hostname", "IS", "n5"]])),
    ];
    for (id, instances, constraints) in &apps {
        post(id, *instances, constraints);
    }
    // What each app can run: all it asks for, but for UNIQUE over six hosts and MAX_PER 1 over three racks.
    let runnable = |id: &str, instances: u32| match id {
        "unique" => 6,
        "max-per" => 3,
        _ => instances as usize,
    };
    eventually("every app to run what its constraint admits", Duration::from_secs(60), || {
        apps.iter().all(|(id, n, _)| hosts(id).len() == runnable(id, *n)).then_some(())
    });
    // Some cycles later nothing more has been placed.
    master.wait_cycles(5);

    let racks = |hosts: &[String]| -> Vec<&str> {
        let mut racks: Vec<&str> = hosts.iter().map(|h| rack_of[h.as_str()]).collect();
        racks.sort();
        racks
    };
    let per_rack = |hosts: &[String]| -> Vec<usize> {
        ["r1", "r2", "r3"].iter().map(|r| racks(hosts).iter().filter(|x| *x == r).count()).collect()
    };
    let unique = hosts("unique");
    assert_eq!(unique, ["n1", "n2", "n3", "n4", "n5", "n6"], "one task per host and no seventh");
    assert!(hosts("cluster").iter().all(|h| rack_of[h.as_str()] == "r2"), "{:?}", hosts("cluster"));
    let first = racks(&hosts("cluster-first"));
    assert!(first.iter().all(|r| *r == first[0]), "all on the rack the first task got: {first:?}");
    assert_eq!(per_rack(&hosts("group")), [2, 2, 2], "{:?}", hosts("group"));
    // Without a count, GROUP_BY knows only the values in use (Marathon's rule, unit-tested in
    // `constraints.rs`): offers sized to the demand put the first tasks on one value, which then always
    // has the fewest. Marathon's docs warn of the same; the count is what spreads.
    let uncounted = per_rack(&hosts("group-uncounted"));
    assert_eq!(uncounted.iter().sum::<usize>(), 6, "{uncounted:?}");
    assert!(hosts("like").iter().all(|h| h == "n1" || h == "n3"), "{:?}", hosts("like"));
    assert!(hosts("unlike").iter().all(|h| h != "n1" && h != "n3"), "{:?}", hosts("unlike"));
    assert_eq!(per_rack(&hosts("max-per")), [1, 1, 1], "{:?}", hosts("max-per"));
    assert_eq!(hosts("is"), ["n5", "n5"]);
    // The app that cannot be fully placed says why, in Marathon's words.
    let (_, queue) = master.request("GET", "/v2/queue", "");
    assert!(queue.contains("UnfulfilledConstraint"), "{queue}");
}

/// Scaling down kills by the app's `killSelection`: the youngest tasks by default, the oldest when asked.
#[test]
fn scaling_down_kills_the_tasks_the_kill_selection_names() {
    let master = Master::start(&["--simulate-nodes", "1"]);
    // Running task ids of app `id`, oldest first.
    let running = |id: &str| -> Vec<String> {
        let (_, body) = master.request("GET", &format!("/v2/apps/{id}/tasks"), "");
        let tasks: Value = serde_json::from_str(&body).unwrap();
        let mut running: Vec<(String, String)> = tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .map(|t| (t["stagedAt"].as_str().unwrap().to_string(), t["id"].as_str().unwrap().to_string()))
            .collect();
        running.sort();
        running.into_iter().map(|(_, id)| id).collect()
    };
    let scale = |id: &str, instances: usize| {
        let body = json!({"instances": instances}).to_string();
        let (status, reply) = master.request("PUT", &format!("/v2/apps/{id}"), &body);
        assert_eq!(status, 200, "{reply}");
        eventually(&format!("{id}: {instances} running, no deployment"), Duration::from_secs(60), || {
            (running(id).len() == instances && deployments(&master, "").is_empty()).then_some(())
        });
    };
    for (id, selection) in [("young", None), ("old", Some("OLDEST_FIRST"))] {
        let mut app = json!({"id": id, "instances": 1, "cpus": 0.1, "mem": 16, "cmd": "sleep 3600",
            "container": {"docker": {"image": "busybox"}}});
        if let Some(selection) = selection {
            app["killSelection"] = json!(selection);
        }
        assert_eq!(master.request("POST", "/v2/apps", &app.to_string()).0, 201);
        eventually("the first deployment", Duration::from_secs(60), || {
            (running(id).len() == 1 && deployments(&master, "").is_empty()).then_some(())
        });
        // One task more per deployment: each staged later than the ones before.
        for n in 2..=4 {
            scale(id, n);
        }
    }

    let young = running("young");
    scale("young", 2);
    assert_eq!(running("young"), young[..2], "YOUNGEST_FIRST (the default) killed the two newest");
    let old = running("old");
    scale("old", 2);
    assert_eq!(running("old"), old[2..], "OLDEST_FIRST killed the two oldest");
}
