//! Decline filters at the master, seen from the framework's side: a node declined for `refuse_seconds` is
//! not offered to that framework again until the filter expires, the filter survives a master restart,
//! and a revive (here through the CLI) clears it. A framework that declines with no filter, on the same
//! node in the same cycles, is the control: it is offered the node every cycle.

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
