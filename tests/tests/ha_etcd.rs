//! Several masters on a real 3-member etcd cluster (Debian's etcd 3.4, started by the tests on loopback):
//! a leader killed mid-deployment, a leader paused past its lease, etcd members lost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_tests::cluster::{Agent, Master, eventually};
use berth_tests::etcd::{self, EtcdCluster, leader, leader_index};
use serde_json::{Value, json};

fn connected_nodes(master: &Master) -> usize {
    master
        .get("/v1/nodes")
        .as_array()
        .map(|nodes| nodes.iter().filter(|n| n["connected"] == true).count())
        .unwrap_or(0)
}

/// Running tasks of a Marathon app, as `/v2/apps/<id>` counts them, and whether a deployment is under way.
fn app_state(master: &Master, id: &str) -> Option<(u64, bool)> {
    let (status, body) = master.request("GET", &format!("/v2/apps/{id}"), "");
    if status != 200 {
        return None;
    }
    let app: Value = serde_json::from_str(&body).ok()?;
    let running = app["app"]["tasksRunning"].as_u64()?;
    let deploying = !app["app"]["deployments"].as_array()?.is_empty();
    Some((running, deploying))
}

fn assert_no_duplicate_launch(agents: &[Agent]) {
    let duplicate = berth_host::agent::DUPLICATE_LAUNCH;
    for agent in agents {
        assert!(!agent.logs().contains(duplicate), "a duplicate launch on {}:\n{}", agent.name, agent.logs());
    }
}

fn post_app(master: &Master, app: &Value) {
    let (status, body) = master.request("POST", "/v2/apps", &app.to_string());
    assert_eq!(status, 201, "{body}");
}

fn sim_agents(masters: &[Master], n: usize) -> Vec<Agent> {
    (1..=n)
        .map(|i| {
            Agent::start_on_all(
                masters,
                &format!("node-{i}"),
                &["--simulate", "--cpus", "16", "--mem", "65536"],
            )
        })
        .collect()
}

#[test]
fn a_leader_killed_during_a_thousand_task_deployment_is_replaced_in_seconds_and_no_task_is_lost_or_run_twice()
{
    let etcd = EtcdCluster::start(3);
    // Launches per cycle are capped so that the deployment is still under way when the leader dies.
    let mut masters =
        etcd::masters(&etcd, 3, "[master]\nmax_launches_per_cycle = 40\nagent_timeout_ms = 30000");
    let first = leader_index(&masters);
    let standby = (first + 1) % 3;
    let agents = sim_agents(&masters, 4);
    eventually("four nodes", Duration::from_secs(30), || {
        (connected_nodes(&masters[first]) == 4).then_some(())
    });

    // Posted through a standby: it proxies to the leader.
    let app = json!({"id": "big", "instances": 1000, "cpus": 0.02, "mem": 8, "cmd": "sleep 3600",
        "portDefinitions": [], "container": {"docker": {"image": "busybox"}}});
    post_app(&masters[standby], &app);
    eventually("200 tasks running", Duration::from_secs(60), || {
        app_state(&masters[first], "big").filter(|(running, _)| *running >= 200).map(|_| ())
    });
    let (running_at_kill, deploying) = app_state(&masters[first], "big").unwrap();
    assert!(deploying && running_at_kill < 1000, "the deployment is under way when the leader dies");

    let old_address = masters[first].url.clone();
    let killed = Instant::now();
    masters[first].kill9();
    let next = eventually("a new leader", Duration::from_secs(30), || {
        masters.iter().filter(|m| m.pid().is_some()).find_map(|m| {
            let (_, address) = leader(m)?;
            (address != old_address).then(|| masters.iter().position(|m| m.url == address))?
        })
    });
    let failover = killed.elapsed();
    eprintln!(
        "failover: a new leader {failover:?} after the leader was killed ({running_at_kill} tasks running)"
    );
    assert!(failover < Duration::from_secs(10), "a new leader within seconds (took {failover:?})");

    // The new leader starts from the copy of the state it kept while it stood by, not from a read of etcd.
    let new = &masters[next];
    eventually("the new leader to start", Duration::from_secs(30), || {
        new.logs().contains("taking over with the state followed while standing by").then_some(())
    });
    // It finishes the deployment: every task once, none lost.
    eventually("1000 tasks running and the deployment done", Duration::from_secs(120), || {
        (app_state(new, "big")? == (1000, false)).then_some(())
    });
    let tasks = new.tasks("marathon");
    let ids: BTreeSet<&str> = tasks.iter().map(|t| t["task"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), tasks.len(), "task ids are unique");
    let ended: Vec<&Value> = tasks.iter().filter(|t| t["state"] != "running").collect();
    assert!(ended.is_empty(), "no task lost or ended: {:?}", &ended[..ended.len().min(5)]);
    assert_eq!(tasks.len(), 1000);
    eventually("the agents to run exactly 1000 tasks", Duration::from_secs(30), || {
        (new.agents_running_tasks() == 1000).then_some(())
    });
    new.wait_cycles(3);
    assert_eq!(new.agents_running_tasks(), 1000, "no task was launched again");
    assert_no_duplicate_launch(&agents);

    // The CLI, given the dead master's address first and then a standby's, reaches the leader through the
    // standby (its gRPC proxied).
    let standby = (0..3).find(|i| *i != first && *i != next).unwrap();
    let out = std::process::Command::new(berth_tests::cluster::berth_bin())
        .args(["node", "ls", "--json", "--master", &format!("{old_address},{}", masters[standby].url)])
        .env("BERTH_TOKEN", etcd::TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let nodes: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 4, "{nodes}");

    // The killed master comes back as a standby, and shows in /v1/masters.
    masters[first].restart();
    let view = masters[first].get("/v1/masters");
    let listed = view["masters"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{view}");
    assert_eq!(listed.iter().filter(|m| m["leader"] == true).count(), 1, "{view}");
    assert_eq!(view["leader"]["address"], masters[next].url.as_str(), "{view}");
}

#[test]
fn a_leader_paused_past_its_lease_never_acts_as_leader_again() {
    let etcd = EtcdCluster::start(3);
    // The default agent timeout (15 s): agents that stayed with the frozen leader would lose their tasks.
    let mut masters = etcd::masters(&etcd, 3, "");
    let first = leader_index(&masters);
    let agents = sim_agents(&masters, 2);
    eventually("two nodes", Duration::from_secs(30), || {
        (connected_nodes(&masters[first]) == 2).then_some(())
    });
    let app = json!({"id": "web", "instances": 2, "cpus": 0.1, "mem": 16, "cmd": "sleep 3600",
        "portDefinitions": [], "container": {"docker": {"image": "busybox"}}});
    post_app(&masters[first], &app);
    eventually("two tasks running", Duration::from_secs(30), || {
        (app_state(&masters[first], "web")? == (2, false)).then_some(())
    });

    masters[first].signal("-STOP");
    let old_address = masters[first].url.clone();
    let next = eventually("a new leader while the old one is paused", Duration::from_secs(30), || {
        masters.iter().enumerate().filter(|(i, _)| *i != first).find_map(|(_, m)| {
            let (_, address) = leader(m)?;
            (address != old_address).then(|| masters.iter().position(|m| m.url == address))?
        })
    });
    // The agents leave the frozen leader (it answers no HTTP/2 ping) for the new one well within their
    // timeout, so their tasks are not lost.
    eventually("the agents to re-register with the new leader", Duration::from_secs(15), || {
        (connected_nodes(&masters[next]) == 2).then_some(())
    });
    // The new leader changes the app while the old one sleeps (once its framework has started).
    eventually("the new leader to serve the app", Duration::from_secs(30), || {
        (app_state(&masters[next], "web")? == (2, false)).then_some(())
    });
    let (status, body) = masters[next].request("PUT", "/v2/apps/web", &json!({"instances": 3}).to_string());
    assert!(status == 200 || status == 201, "{status}: {body}");
    eventually("three tasks running", Duration::from_secs(60), || {
        (app_state(&masters[next], "web")? == (3, false)).then_some(())
    });
    let before: BTreeSet<String> =
        masters[next].tasks("marathon").iter().map(|t| format!("{}:{}", t["task"], t["state"])).collect();

    // Woken up, the old leader exits before it does anything as leader.
    masters[first].signal("-CONT");
    let exit = masters[first].wait_exit(Duration::from_secs(10)).expect("the deposed leader exits");
    assert_eq!(exit.code(), Some(berth_host::store::etcd::EXIT_DEPOSED), "{}", masters[first].logs());
    assert!(masters[first].logs().contains("no longer the leader"), "{}", masters[first].logs());

    // Nothing it held changed anything: the same tasks, each run once, and the new leader still leads.
    masters[next].wait_cycles(5);
    let after: BTreeSet<String> =
        masters[next].tasks("marathon").iter().map(|t| format!("{}:{}", t["task"], t["state"])).collect();
    assert_eq!(after, before);
    assert_eq!(masters[next].agents_running_tasks(), 3);
    assert_eq!(leader(&masters[next]).map(|(_, a)| a), Some(masters[next].url.clone()));
    assert_no_duplicate_launch(&agents);
}

/// A request that may fail at the transport (a master that exits while it answers): its status and body,
/// or the error.
fn try_request(master: &Master, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent();
    let url = format!("{}{path}", master.url);
    let auth = format!("Bearer {}", etcd::TOKEN);
    let response = match method {
        "POST" => agent.post(&url).header("authorization", &auth).send(body),
        _ => agent.get(&url).header("authorization", &auth).call(),
    };
    let response = response.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().read_to_string().unwrap_or_default()))
}

#[test]
fn scheduling_survives_one_etcd_member_lost_and_stops_safely_without_a_quorum_losing_nothing() {
    let mut etcd = EtcdCluster::start(3);
    let mut masters = etcd::masters(&etcd, 3, "[master]\nagent_timeout_ms = 60000");
    let first = leader_index(&masters);
    let agents = sim_agents(&masters, 2);
    eventually("two nodes", Duration::from_secs(30), || {
        (connected_nodes(&masters[first]) == 2).then_some(())
    });
    let app = |id: &str, instances: u32| {
        json!({"id": id, "instances": instances, "cpus": 0.1, "mem": 16, "cmd": "sleep 3600",
            "portDefinitions": [], "container": {"docker": {"image": "busybox"}}})
    };
    post_app(&masters[first], &app("web", 2));
    eventually("two tasks running", Duration::from_secs(30), || {
        (app_state(&masters[first], "web")? == (2, false)).then_some(())
    });

    // One member of three lost: etcd keeps its quorum, and berth keeps scheduling.
    etcd.kill(0);
    let (status, body) = masters[first].request("PUT", "/v2/apps/web", &json!({"instances": 4}).to_string());
    assert!(status == 200 || status == 201, "{status}: {body}");
    eventually("four tasks running with one etcd member down", Duration::from_secs(60), || {
        let live = masters.iter().find(|m| m.pid().is_some())?;
        (app_state(live, "web")? == (4, false)).then_some(())
    });
    let leading = leader_index(&masters);

    // Two lost: no quorum. A write is not acknowledged; the leader, unable to renew its lease, exits
    // rather than act on a lease that may have expired; the standbys say why they cannot elect one.
    etcd.kill(1);
    let posted = try_request(&masters[leading], "POST", "/v2/apps", &app("during-outage", 1).to_string());
    let acknowledged = matches!(posted, Ok((201, _)));
    eprintln!("a POST while etcd has no quorum: {posted:?}");
    let exit =
        masters[leading].wait_exit(Duration::from_secs(20)).expect("the leader exits without a quorum");
    assert_eq!(exit.code(), Some(berth_host::store::etcd::EXIT_DEPOSED), "{}", masters[leading].logs());
    assert!(masters[leading].logs().contains("no longer the leader"), "{}", masters[leading].logs());
    let standby = (leading + 1) % 3;
    eventually("a standby to say etcd is unreachable", Duration::from_secs(20), || {
        let health = masters[standby].get("/health");
        health["etcd"].as_str()?.starts_with("unreachable").then_some(())
    });
    let (status, body) = try_request(&masters[standby], "POST", "/v2/apps", &app("refused", 1).to_string())
        .expect("a standby answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot reach etcd"), "{body}");

    // The members return: a standby leads, and everything acknowledged is there, run once.
    etcd.restart(0);
    etcd.restart(1);
    etcd.wait_healthy();
    let next = eventually("a new leader after the quorum returns", Duration::from_secs(60), || {
        masters
            .iter()
            .filter(|m| m.pid().is_some())
            .find_map(leader)
            .and_then(|(_, address)| masters.iter().position(|m| m.url == address && m.pid().is_some()))
    });
    assert_ne!(next, leading);
    eventually("the four tasks running under the new leader", Duration::from_secs(60), || {
        (app_state(&masters[next], "web")? == (4, false)).then_some(())
    });
    // A write whose answer never came may still have been applied (etcd may commit a proposal it had taken
    // in before it lost its quorum, and the leader's fence still held then): the app is there or not, but
    // if it was acknowledged it is there, and either way it runs once.
    let during = app_state(&masters[next], "during-outage").is_some();
    assert!(during || !acknowledged, "an acknowledged app is not lost");
    if during {
        eventually("the app posted during the outage to run", Duration::from_secs(60), || {
            (app_state(&masters[next], "during-outage")? == (1, false)).then_some(())
        });
    }
    masters[next].wait_cycles(3);
    assert_eq!(masters[next].agents_running_tasks(), 4 + u64::from(during));
    assert_no_duplicate_launch(&agents);

    // The exited master, restarted as a supervisor would, joins as a standby.
    masters[leading].restart();
    let view = masters[leading].get("/v1/masters");
    assert_eq!(view["masters"].as_array().unwrap().len(), 3, "{view}");
    assert_eq!(view["leader"]["address"], masters[next].url.as_str(), "{view}");
}

#[test]
fn a_leader_killed_with_docker_agents_leaves_their_containers_running_and_adopted() {
    berth_tests::docker::require();
    let etcd = EtcdCluster::start(3);
    let mut masters = etcd::masters(&etcd, 3, "[master]\nagent_timeout_ms = 30000");
    let first = leader_index(&masters);
    let agents: Vec<Agent> = (1..=2)
        .map(|i| Agent::start_on_all(&masters, &format!("dock-{i}"), &["--cpus", "2", "--mem", "2048"]))
        .collect();
    eventually("two Docker nodes", Duration::from_secs(60), || {
        (connected_nodes(&masters[first]) == 2).then_some(())
    });
    let app = json!({"id": "sleepers", "instances": 4, "cpus": 0.1, "mem": 16, "cmd": "sleep 3600",
        "portDefinitions": [], "container": {"docker": {"image": berth_tests::docker::busybox()}}});
    post_app(&masters[first], &app);
    eventually("four containers running", Duration::from_secs(120), || {
        (app_state(&masters[first], "sleepers")? == (4, false)).then_some(())
    });
    let agent_ids: Vec<String> = agents.iter().map(|a| a.agent_id().unwrap()).collect();
    // Each container of the agents, with the time it started.
    let containers = || -> BTreeSet<(String, String)> {
        agent_ids
            .iter()
            .flat_map(|id| berth_tests::docker::containers(&[&format!("berth.agent={id}")]))
            .map(|c| {
                let inspect = berth_tests::docker::inspect(&c);
                (c, inspect["State"]["StartedAt"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let before = containers();
    assert_eq!(before.len(), 4);
    let tasks_before: BTreeSet<String> =
        masters[first].tasks("marathon").iter().map(|t| t["task"].as_str().unwrap().to_string()).collect();

    let old = masters[first].url.clone();
    masters[first].kill9();
    let next = eventually("a new leader", Duration::from_secs(30), || {
        masters.iter().filter(|m| m.pid().is_some()).find_map(leader).and_then(|(_, address)| {
            (address != old).then(|| masters.iter().position(|m| m.url == address))?
        })
    });
    eventually("the agents to re-register with the new leader", Duration::from_secs(30), || {
        (connected_nodes(&masters[next]) == 2).then_some(())
    });
    eventually("the new leader to serve the app", Duration::from_secs(30), || {
        (app_state(&masters[next], "sleepers")? == (4, false)).then_some(())
    });
    masters[next].wait_cycles(5);
    assert_eq!(app_state(&masters[next], "sleepers"), Some((4, false)));
    let tasks_after: BTreeSet<String> =
        masters[next].tasks("marathon").iter().map(|t| t["task"].as_str().unwrap().to_string()).collect();
    assert_eq!(tasks_after, tasks_before, "the same tasks");
    assert_eq!(containers(), before, "the same containers, never restarted, and no new one");
    assert_no_duplicate_launch(&agents);
    drop(agents);
    for id in &agent_ids {
        berth_tests::docker::remove_agent_containers(id);
    }
}

#[test]
fn masters_reach_an_etcd_that_requires_tls_client_certificates_and_one_without_a_certificate_cannot() {
    let pki = berth_tests::pki::Pki::new();
    let etcd = EtcdCluster::start_tls(3, &pki);
    let prefix = etcd::unique_prefix();
    let tls = format!(
        "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"",
        pki.arg("ca.pem"),
        pki.arg("client.pem"),
        pki.arg("client.key")
    );
    let masters: Vec<Master> = (0..2)
        .map(|_| {
            let file = etcd::config_file_with(&etcd, &prefix, "", &tls);
            Master::start_prepared(
                &["--no-local-agent", "--config", file.to_str().unwrap()],
                etcd::write_tokens,
            )
        })
        .collect();
    let first = leader_index(&masters);
    let _agents = sim_agents(&masters, 1);
    eventually("the node", Duration::from_secs(30), || (connected_nodes(&masters[first]) == 1).then_some(()));
    let app = json!({"id": "tls", "instances": 2, "cpus": 0.1, "mem": 16, "cmd": "sleep 3600",
        "portDefinitions": [], "container": {"docker": {"image": "busybox"}}});
    post_app(&masters[first], &app);
    eventually("two tasks running", Duration::from_secs(30), || {
        (app_state(&masters[first], "tls")? == (2, false)).then_some(())
    });

    // Without a client certificate, etcd lets nobody in: the master stands by and says why.
    let file = etcd::config_file_with(&etcd, &prefix, "", &format!("ca = \"{}\"", pki.arg("ca.pem")));
    let outsider =
        Master::start_prepared(&["--no-local-agent", "--config", file.to_str().unwrap()], etcd::write_tokens);
    eventually(
        "the master without a certificate to say etcd is unreachable",
        Duration::from_secs(30),
        || {
            let health = outsider.get("/health");
            (health["status"] == "standby" && health["etcd"].as_str()?.starts_with("unreachable"))
                .then_some(())
        },
    );
    assert_eq!(leader(&masters[first]).map(|(_, a)| a), Some(masters[first].url.clone()));
}

#[test]
fn the_leader_compacts_etcds_history_and_a_standby_still_takes_over_with_everything() {
    let etcd = EtcdCluster::start(3);
    let prefix = etcd::unique_prefix();
    let mut masters: Vec<Master> = (0..2)
        .map(|_| {
            let file = etcd::config_file_with(
                &etcd,
                &prefix,
                "[master]\nagent_timeout_ms = 30000",
                "compact_interval_s = 1",
            );
            Master::start_prepared(
                &["--no-local-agent", "--config", file.to_str().unwrap()],
                etcd::write_tokens,
            )
        })
        .collect();
    let first = leader_index(&masters);
    let agents = sim_agents(&masters, 1);
    eventually("the node", Duration::from_secs(30), || (connected_nodes(&masters[first]) == 1).then_some(()));
    let app = json!({"id": "kept", "instances": 3, "cpus": 0.1, "mem": 16, "cmd": "sleep 3600",
        "portDefinitions": [], "container": {"docker": {"image": "busybox"}}});
    post_app(&masters[first], &app);
    eventually("three tasks running", Duration::from_secs(30), || {
        (app_state(&masters[first], "kept")? == (3, false)).then_some(())
    });

    // Old revisions are gone: etcd says so when asked for the first one (through its JSON gateway).
    eventually("etcd's history to be compacted", Duration::from_secs(30), || {
        let response = ureq::post(&format!("{}/v3/kv/range", etcd.client_url(0)))
            .config()
            .http_status_as_error(false)
            .build()
            .send(json!({"key": "Lw==", "revision": "2"}).to_string())
            .ok()?;
        response.into_body().read_to_string().ok()?.contains("compacted").then_some(())
    });
    assert!(masters[first].logs().contains("etcd's history compacted"), "{}", masters[first].logs());

    // The standby followed the state across the compactions, and takes over with all of it.
    masters[first].kill9();
    let next = 1 - first;
    eventually("the standby to lead", Duration::from_secs(30), || {
        (leader(&masters[next])?.1 == masters[next].url).then_some(())
    });
    eventually("the three tasks under the new leader", Duration::from_secs(30), || {
        (app_state(&masters[next], "kept")? == (3, false)).then_some(())
    });
    masters[next].wait_cycles(3);
    assert_eq!(masters[next].agents_running_tasks(), 3);
    assert_no_duplicate_launch(&agents);
}
