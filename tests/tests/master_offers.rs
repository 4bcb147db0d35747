//! Decline filters at the master, seen from the framework's side: a node declined for `refuse_seconds` is
//! not offered to that framework again until the filter expires, the filter survives a master restart,
//! and a revive (here through the CLI) clears it. A framework that declines with no filter, on the same
//! node in the same cycles, is the control: it is offered the node every cycle. Offers left unanswered
//! are declined with the master's default filter; a suppressed framework is offered nothing until it
//! revives (by the CLI, and by the Marathon framework itself as its launches come and go).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_tests::cluster::{Master, eventually};
use berth_tests::guests;

/// Offers the framework's instance has received since it started, over all nodes (an anonymous read:
/// it can neither write nor revive).
fn offers(master: &Master, framework: &str) -> u32 {
    let seen: BTreeMap<String, u32> = ureq::get(&format!("{}/frameworks/{framework}/offers", master.url))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    seen.values().sum()
}

/// Waits `span` while the control framework keeps being offered the node, so cycles demonstrably ran.
fn while_cycles_run(master: &Master, span: Duration) {
    let start = Instant::now();
    let before = offers(master, "eager");
    std::thread::sleep(span);
    let offered = offers(master, "eager") - before;
    assert!(
        offered >= 3,
        "the control framework was offered the node {offered} times in {:?}",
        start.elapsed()
    );
}

#[test]
fn a_declined_node_waits_out_its_filter_across_a_restart_and_a_revive_clears_it() {
    let mut master = Master::start(&["--simulate-nodes", "1"]);
    master.load_plugin("framework", "workers", guests::WORKERS);
    for (name, refuse) in [("picky", 30), ("eager", 0)] {
        let config = format!(r#"{{"instances": 1, "decline_all": true, "refuse_seconds": {refuse}}}"#);
        master.ok(&["framework", "add", name, "--plugin", "workers", "--config", &config]);
    }
    eventually("the first offer to each", Duration::from_secs(30), || {
        (offers(&master, "picky") >= 1 && offers(&master, "eager") >= 1).then_some(())
    });
    let first = offers(&master, "picky");
    while_cycles_run(&master, Duration::from_secs(6));
    assert_eq!(offers(&master, "picky"), first, "offered again inside its 30 s filter");

    // The filter is in the store: after a restart the node is still not offered to `picky`.
    master.restart();
    eventually("the control offered again after the restart", Duration::from_secs(30), || {
        (offers(&master, "eager") >= 1).then_some(())
    });
    while_cycles_run(&master, Duration::from_secs(5));
    assert_eq!(offers(&master, "picky"), 0, "offered after a restart inside its filter");

    // A revive clears the framework's filters: the node is offered at the next cycle.
    let revived = Instant::now();
    master.ok(&["framework", "revive", "picky"]);
    eventually("an offer after the revive", Duration::from_secs(5), || {
        (offers(&master, "picky") == 1).then_some(())
    });
    assert!(revived.elapsed() < Duration::from_secs(5), "long before the 30 s filter ran out");
}

/// Starts a master with one simulated node, `default_refuse_seconds` set, and the control framework.
fn master_with_default_filter(seconds: u32) -> Master {
    let dir = tempfile::tempdir().unwrap().keep();
    let config = dir.join("berth.toml");
    std::fs::write(&config, format!("[master]\ndefault_refuse_seconds = {seconds}\n")).unwrap();
    let master = Master::start(&["--simulate-nodes", "1", "--config", config.to_str().unwrap()]);
    master.load_plugin("framework", "workers", guests::WORKERS);
    let eager = r#"{"instances": 1, "decline_all": true, "refuse_seconds": 0}"#;
    master.ok(&["framework", "add", "eager", "--plugin", "workers", "--config", eager]);
    master
}

#[test]
fn an_offer_left_unanswered_is_declined_with_the_default_filter() {
    let master = master_with_default_filter(8);
    master.ok(&["framework", "add", "silent", "--plugin", "workers", "--config", r#"{"answer_none": true}"#]);
    let first = eventually("the first offer", Duration::from_secs(30), || {
        (offers(&master, "silent") == 1).then(Instant::now)
    });
    while_cycles_run(&master, Duration::from_secs(5));
    assert_eq!(offers(&master, "silent"), 1, "offered again inside the default filter");
    eventually("an offer once the 8 s filter ran out", Duration::from_secs(30), || {
        (offers(&master, "silent") == 2).then_some(())
    });
    let gap = first.elapsed();
    assert!(
        gap >= Duration::from_secs(7),
        "offered again after {gap:?}, before the 8 s default filter ran out"
    );
}

#[test]
fn a_suppressed_framework_is_offered_nothing_until_it_revives() {
    let master = master_with_default_filter(5);
    eventually("offers to the control", Duration::from_secs(30), || {
        (offers(&master, "eager") >= 1).then_some(())
    });
    master.ok(&["framework", "suppress", "eager"]);
    let suppressed = |name: &str| -> bool {
        let frameworks = master.json(&["framework", "ls"]);
        frameworks.as_array().unwrap().iter().any(|f| f["name"] == name && f["suppressed"] == true)
    };
    assert!(suppressed("eager"));
    // An offer may have been on its way as the call landed; after that, none.
    master.wait_cycles(2);
    let before = offers(&master, "eager");
    master.wait_cycles(5);
    assert_eq!(offers(&master, "eager"), before, "offered while suppressed");
    master.ok(&["framework", "revive", "eager"]);
    eventually("an offer after the revive", Duration::from_secs(30), || {
        (offers(&master, "eager") > before).then_some(())
    });
    assert!(!suppressed("eager"));

    // Marathon suppresses itself with nothing to launch and revives when an app needs launches.
    eventually("marathon to suppress itself", Duration::from_secs(30), || {
        suppressed("marathon").then_some(())
    });
    let app = serde_json::json!({"id": "wake", "instances": 1, "cpus": 0.1, "mem": 16, "cmd": "sleep 3600",
        "container": {"docker": {"image": "busybox"}}});
    assert_eq!(master.request("POST", "/v2/apps", &app.to_string()).0, 201);
    eventually("the app's task to run", Duration::from_secs(30), || {
        (master.get("/v2/apps/wake")["app"]["tasksRunning"] == 1).then_some(())
    });
    eventually("marathon to suppress itself again", Duration::from_secs(30), || {
        suppressed("marathon").then_some(())
    });
}
