//! Several masters on etcd: placement with the state on a 3-member etcd next to the same placement on
//! redb (one run, side by side), and the time a failover takes over repeated kills of the leader.
//!
//! A failover is timed from the `kill -9` of the leader to (1) another master showing itself as leader at
//! `/v1/masters` ("elected"), and (2) that master answering the Marathon API with the app and both agents
//! registered again ("serving"). The killed master is restarted as a standby after each kill, so three
//! masters run before every kill, and it is given time to compile the plugins ahead, as a standby that has
//! been up for a while has.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::placement::{self, Placed, Placement};
use crate::cluster::{Agent, Master, eventually};
use crate::etcd::{self, EtcdCluster};

/// Placement on redb, then the same on etcd.
pub fn placement_side_by_side(setup: Placement) -> (Placed, Placed) {
    let redb = {
        let master = placement::master(setup.nodes);
        placement::run(&master, setup)
    };
    let cluster = EtcdCluster::start(3);
    let on_etcd = {
        let config = etcd::config_file(&cluster, &etcd::unique_prefix(), "");
        let master =
            placement::master_with(setup.nodes, &["--config", config.to_str().unwrap()], etcd::write_tokens);
        placement::run(&master, setup)
    };
    (redb, on_etcd)
}

/// The failover times measured.
#[derive(Debug, Default)]
pub struct Failovers {
    pub elected: Vec<Duration>,
    pub serving: Vec<Duration>,
}

fn leader_address(master: &Master) -> Option<String> {
    let response = master.http().get(&format!("{}/v1/masters", master.url)).call().ok()?;
    let body: Value = serde_json::from_str(&response.into_body().read_to_string().ok()?).ok()?;
    body["leader"]["address"].as_str().map(String::from)
}

fn serving(master: &Master) -> bool {
    let (status, body) = master.request("GET", "/v2/apps/steady", "");
    let running = serde_json::from_str::<Value>(&body).ok().and_then(|a| a["app"]["tasksRunning"].as_u64());
    let nodes = master.get("/v1/nodes");
    let connected = nodes.as_array().map_or(0, |n| n.iter().filter(|n| n["connected"] == true).count());
    status == 200 && running == Some(20) && connected == 2
}

/// Kills the leader `kills` times and times each failover.
pub fn failovers(kills: usize) -> Failovers {
    let cluster = EtcdCluster::start(3);
    let mut masters = etcd::quiet_masters(&cluster, 3, "[master]\nagent_timeout_ms = 60000");
    let _agents: Vec<Agent> = (1..=2)
        .map(|i| {
            Agent::start_on_all(
                &masters,
                &format!("node-{i}"),
                &["--simulate", "--cpus", "8", "--mem", "8192"],
            )
        })
        .collect();
    let first = etcd::leader_index(&masters);
    let app = json!({"id": "steady", "instances": 20, "cpus": 0.1, "mem": 16, "cmd": "sleep 3600",
        "portDefinitions": [], "container": {"docker": {"image": "busybox"}}});
    let (status, body) = masters[first].request("POST", "/v2/apps", &app.to_string());
    assert_eq!(status, 201, "{body}");
    eventually("the app to run", Duration::from_secs(60), || serving(&masters[first]).then_some(()));
    // Every standby compiles the plugins ahead (see `ha::warm_plugins`).
    std::thread::sleep(Duration::from_secs(8));

    let mut measured = Failovers::default();
    for kill in 0..kills {
        let leader = etcd::leader_index(&masters);
        let old = masters[leader].url.clone();
        let killed = Instant::now();
        masters[leader].kill9();
        let next = loop {
            let found = masters.iter().filter(|m| m.pid().is_some()).find_map(|m| {
                let address = leader_address(m)?;
                (address != old).then(|| masters.iter().position(|m| m.url == address))?
            });
            if let Some(next) = found {
                break next;
            }
            assert!(killed.elapsed() < Duration::from_secs(60), "no new leader a minute after kill {kill}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let elected = killed.elapsed();
        while !serving(&masters[next]) {
            assert!(
                killed.elapsed() < Duration::from_secs(120),
                "the new leader is not serving after kill {kill}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let serving_after = killed.elapsed();
        eprintln!("kill {kill}: elected after {elected:?}, serving after {serving_after:?}");
        measured.elected.push(elected);
        measured.serving.push(serving_after);
        masters[leader].restart();
        std::thread::sleep(Duration::from_secs(8));
    }
    measured
}
