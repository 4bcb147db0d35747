//! What the master refuses: invalid launches from a framework, and calls without the right token.

use std::time::Duration;

use berth_tests::cluster::{Agent, Master, eventually};
use berth_tests::guests;
use serde_json::Value;

fn statuses(master: &Master, framework: &str) -> Vec<Value> {
    let (status, body) = master.request("GET", &format!("/frameworks/{framework}/statuses"), "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Vec<Value>>(&body).unwrap()
}

#[test]
fn an_invalid_launch_is_refused_with_a_reason_and_nothing_is_launched() {
    let master = Master::start(&["--no-local-agent"]);
    let _agent = Agent::start(&master, "node-1", &["--simulate", "--cpus", "2", "--mem", "2048"]);
    master.load_plugin("framework", "rogue", guests::ROGUE);
    master.ok(&["framework", "add", "greedy", "--plugin", "rogue", "--config", "over-offer"]);
    master.ok(&["framework", "add", "ghost", "--plugin", "rogue", "--config", "unknown-offer"]);

    let greedy = eventually("the over-offer launch to be refused", Duration::from_secs(30), || {
        statuses(&master, "greedy").into_iter().next()
    });
    assert_eq!(greedy["task"], "greedy-1");
    assert_eq!(greedy["state"], "Error");
    assert_eq!(greedy["reason"], "InvalidLaunch");
    let message = greedy["message"].as_str().unwrap();
    assert!(message.contains("the launch needs") && message.contains("the offer has"), "{message}");

    let ghost = eventually("the unknown-offer launch to be refused", Duration::from_secs(30), || {
        statuses(&master, "ghost").into_iter().next()
    });
    assert_eq!(ghost["reason"], "InvalidLaunch");
    assert!(ghost["message"].as_str().unwrap().contains("is unknown, expired, or already used"), "{ghost}");

    // Nothing was launched anywhere, even some allocation cycles later.
    assert!(master.tasks("greedy").is_empty() && master.tasks("ghost").is_empty());
    master.wait_cycles(3);
    let node = &master.get("/v1/nodes")[0];
    assert_eq!(node["agent_running_tasks"], 0, "{node}");
    assert_eq!(node["active_tasks"], 0, "{node}");
}

#[test]
fn mutating_calls_need_the_operator_token_and_reads_say_what_they_need() {
    let master = Master::start(&["--simulate-nodes", "1"]);

    let out = master.cli_with_token(&["framework", "add", "x", "--plugin", "workers"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: this call needs the operator token"), "{err}");

    let out = master.cli_with_token(&["allocator", "use", "proportional"], Some("wrong"));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not the operator token"), "{err}");

    let out = master.cli_with_token(&["node", "ls"], None);
    assert!(out.status.success(), "reads are open by default");

    let response = ureq::post(&format!("{}/frameworks/anything/v2/apps", master.url))
        .config()
        .http_status_as_error(false)
        .build()
        .send("{}")
        .unwrap();
    assert_eq!(response.status(), 401);

    // An agent with the wrong token cannot join.
    let stranger = berth_tests::cluster::Agent::start_with_token(
        &master,
        "stranger",
        "not-the-agent-token",
        &["--simulate"],
    );
    eventually("the stranger to be refused", Duration::from_secs(30), || {
        stranger.logs().contains("the agent token").then_some(())
    });
    let nodes = master.get("/v1/nodes");
    assert!(nodes.as_array().unwrap().iter().all(|n| n["hostname"] != "stranger"), "{nodes}");
    assert!(stranger.logs().contains("the agent token"), "{}", stranger.logs());
}

#[test]
fn with_protected_reads_a_read_without_the_token_says_what_it_needs() {
    let master = Master::start(&["--no-local-agent", "--protect-reads"]);
    let out = master.cli_with_token(&["plugin", "ls"], None);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("this call needs the operator token") && err.contains("BERTH_TOKEN"), "{err}");
    master.ok(&["plugin", "ls"]);
    let response = ureq::get(&format!("{}/v1/nodes", master.url))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(response.status(), 401);
}
