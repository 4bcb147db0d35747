//! Marathon's deployments tell the truth: a crash-looping app is not reported deployed (against the real
//! Docker engine, with `berth app deploy` as a script would run it), and a rolling update of an app with a
//! `hostname:UNIQUE` constraint moves onto the free node and completes.

use std::process::Command;
use std::time::Duration;

use berth_tests::cluster::{Master, berth_bin, eventually};
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
