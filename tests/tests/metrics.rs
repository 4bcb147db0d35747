//! `/metrics`: Prometheus' text exposition, parsed with a Prometheus parser (`prometheus-parse`), scraped
//! during a Marathon deployment on simulated nodes and checked against what `/v1/*` says at the same
//! moment.

use std::time::Duration;

use berth_tests::cluster::{Master, eventually};
use berth_tests::metrics::{count, scrape, sum, value};
use prometheus_parse::Sample;
use serde_json::{Value, json};

#[test]
fn metrics_agree_with_the_api_during_and_after_a_deployment() {
    let master = Master::start(&["--simulate-nodes", "4"]);
    let app = json!({"id": "web", "instances": 6, "cpus": 0.5, "mem": 64,
        "container": {"type": "DOCKER", "docker": {"image": "web:1"}}, "cmd": "serve"});
    let (status, body) = master.request("POST", "/v2/apps", &app.to_string());
    assert_eq!(status, 201, "{body}");

    // During the deployment: whatever moment the scrape catches, tasks by state match the API's list once
    // nothing moves between the two reads (a read of each, then the scrape again, until they agree).
    eventually("six running tasks, seen the same by /metrics and /v1/tasks", Duration::from_secs(60), || {
        let before = scrape(&master);
        let tasks = master.get("/v1/tasks?framework=marathon");
        let after = scrape(&master);
        let running =
            |s: &[Sample]| value(s, "berth_tasks", &[("framework", "marathon"), ("state", "running")]);
        if running(&before) != running(&after) {
            return None;
        }
        let listed = tasks.as_array().unwrap().iter().filter(|t| t["status"]["state"] == "Running").count();
        assert_eq!(running(&after).unwrap_or(0.0), listed as f64, "berth_tasks against /v1/tasks");
        (listed == 6).then_some(())
    });

    // Settled: every figure against its API.
    let (samples, cycles) =
        eventually("two scrapes with no cycle between them", Duration::from_secs(30), || {
            let before = scrape(&master);
            let cycles = master.get("/v1/cycles");
            let after = scrape(&master);
            let n = |s: &[Sample]| value(s, "berth_offer_cycles_total", &[]);
            (n(&before) == n(&after)).then_some((after, cycles))
        });
    let cycles = cycles.as_array().unwrap();
    assert!(cycles.len() < 256, "every cycle is still listed");
    let total = |field: &str| cycles.iter().map(|c| c[field].as_f64().unwrap()).sum::<f64>();
    assert_eq!(value(&samples, "berth_offer_cycles_total", &[]), Some(cycles.len() as f64));
    assert_eq!(count(&samples, "berth_offer_cycle_duration_seconds", &[]), cycles.len() as f64);
    assert_eq!(value(&samples, "berth_launches_total", &[]), Some(6.0));
    assert_eq!(value(&samples, "berth_launches_total", &[]), Some(total("launched")));
    assert_eq!(value(&samples, "berth_grants_total", &[]), Some(total("grants")));
    assert_eq!(value(&samples, "berth_offers_total", &[]), Some(total("offers")));
    assert_eq!(value(&samples, "berth_agents_connected", &[]), Some(4.0));
    assert_eq!(value(&samples, "berth_agent_registrations_total", &[]), Some(4.0));
    assert_eq!(value(&samples, "berth_nodes", &[("state", "active")]), Some(4.0));
    assert!(count(&samples, "berth_store_commit_duration_seconds", &[]) > 0.0);
    assert_eq!(value(&samples, "berth_allocator", &[("allocator", "proportional")]), Some(1.0));

    let frameworks = master.get("/v1/frameworks");
    let marathon = frameworks.as_array().unwrap().iter().find(|f| f["name"] == "marathon").unwrap();
    let share = value(&samples, "berth_framework_share", &[("framework", "marathon")]).unwrap();
    assert!((share - marathon["share"].as_f64().unwrap()).abs() < 1e-9, "share {share} against {marathon}");
    assert!(share > 0.0);
    assert_eq!(value(&samples, "berth_framework_cpus", &[("framework", "marathon")]), Some(3.0));

    let nodes = master.get("/v1/nodes");
    let mut used_cpus = 0.0;
    for node in nodes.as_array().unwrap() {
        let host = node["hostname"].as_str().unwrap();
        let total = node["total"]["milli_cpus"].as_f64().unwrap() / 1000.0;
        let used = total - node["available"]["milli_cpus"].as_f64().unwrap() / 1000.0;
        assert_eq!(value(&samples, "berth_node_cpus", &[("node", host), ("kind", "total")]), Some(total));
        assert_eq!(
            value(&samples, "berth_node_cpus", &[("node", host), ("kind", "used")]),
            Some(used),
            "{host}"
        );
        used_cpus += used;
    }
    assert_eq!(used_cpus, 3.0);
    assert_eq!(sum(&samples, "berth_node_cpus", &[("kind", "used")]), 3.0);

    // Plugin calls, per version, against `/v1/plugins` (read between two scrapes that agree).
    let plugins = eventually("plugin figures that hold still", Duration::from_secs(30), || {
        let before = scrape(&master);
        let plugins = master.get("/v1/plugins");
        let after = scrape(&master);
        let calls = |s: &[Sample]| sum(s, "berth_plugin_calls_total", &[]);
        (calls(&before) == calls(&after)).then_some((after, plugins))
    });
    let (samples, plugins) = plugins;
    let mut versions = 0;
    for plugin in plugins.as_array().unwrap() {
        for version in plugin["versions"].as_array().unwrap() {
            let number = version["version"].to_string();
            let labels = [("plugin", version["name"].as_str().unwrap()), ("version", number.as_str())];
            let calls = version["stats"]["calls"].as_f64().unwrap();
            assert_eq!(value(&samples, "berth_plugin_calls_total", &labels), Some(calls), "{version}");
            assert_eq!(count(&samples, "berth_plugin_call_duration_seconds", &labels), calls, "{version}");
            assert_eq!(
                value(&samples, "berth_plugin_active", &labels),
                Some(if version["active"] == true { 1.0 } else { 0.0 })
            );
            versions += 1;
        }
    }
    assert!(versions >= 2, "the bundled allocator and framework at least");
    assert!(value(&samples, "berth_plugin_calls_total", &[("plugin", "proportional")]).unwrap() > 0.0);

    // A weight set through the CLI shows at the next scrape.
    master.ok(&["framework", "weight", "marathon", "3"]);
    assert_eq!(value(&scrape(&master), "berth_framework_weight", &[("framework", "marathon")]), Some(3.0));

    // Labels stay bounded: no task id is a label value.
    let ids: Vec<String> =
        master.tasks("marathon").iter().map(|t| t["task"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 6);
    for sample in scrape(&master) {
        for (_, v) in sample.labels.iter() {
            assert!(!ids.contains(v), "a task id as a label: {} {:?}", sample.metric, sample.labels);
        }
    }

    // Marathon's own clients still get Marathon's JSON metrics when they ask for JSON.
    let json: Value = ureq::get(&format!("{}/metrics", master.url))
        .header("accept", "application/json")
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert!(json.get("gauges").is_some() || json.get("counters").is_some(), "{json}");
}

/// Sampled use (synthetic on simulated nodes) reaches every reader: `/v1/tasks` next to the limits, the
/// node sums in `/v1/nodes`, the per-framework and per-node gauges, and `berth task ls`.
#[test]
fn task_resource_use_agrees_across_the_api_the_metrics_and_the_cli() {
    let master = Master::start(&["--simulate-nodes", "2"]);
    let app = json!({"id": "busy", "instances": 4, "cpus": 0.5, "mem": 128,
        "container": {"type": "DOCKER", "docker": {"image": "busy:1"}}, "cmd": "work"});
    let (status, body) = master.request("POST", "/v2/apps", &app.to_string());
    assert_eq!(status, 201, "{body}");

    // Every running task gets a sample within a sampling interval (5 s) and a heartbeat.
    let (samples, tasks, nodes) =
        eventually("use sampled for all four tasks, held still", Duration::from_secs(30), || {
            let before = scrape(&master);
            let tasks = master.get("/v1/tasks?framework=marathon&state=running");
            let nodes = master.get("/v1/nodes");
            let after = scrape(&master);
            let sampled = tasks.as_array()?.iter().filter(|t| !t["usage"].is_null()).count();
            let in_use = |s: &[Sample]| value(s, "berth_framework_cpus_in_use", &[("framework", "marathon")]);
            (sampled == 4 && in_use(&before) == in_use(&after)).then_some((after, tasks, nodes))
        });
    let tasks = tasks.as_array().unwrap();
    let (mut cpus, mut mem) = (0.0, 0.0);
    for t in tasks {
        let u = &t["usage"];
        let (c, m) = (u["cpus"].as_f64().unwrap(), u["mem_mib"].as_f64().unwrap());
        assert!(c > 0.0 && c <= 0.5, "within the task's 0.5 CPU: {t}");
        assert!(m > 0.0 && m <= 128.0, "within the task's 128 MiB: {t}");
        assert!(u["at_ms"].as_u64().unwrap() > 0);
        cpus += c;
        mem += m;
    }
    let close = |a: f64, b: f64| (a - b).abs() < 1e-3 * b.max(1.0);
    let metric_cpus = value(&samples, "berth_framework_cpus_in_use", &[("framework", "marathon")]).unwrap();
    assert!(close(metric_cpus, cpus), "{metric_cpus} against {cpus} from /v1/tasks");
    let metric_mem =
        value(&samples, "berth_framework_memory_in_use_bytes", &[("framework", "marathon")]).unwrap();
    assert!(close(metric_mem, mem * 1024.0 * 1024.0), "{metric_mem} against {mem} MiB");
    let mut node_cpus = 0.0;
    for node in nodes.as_array().unwrap() {
        let host = node["hostname"].as_str().unwrap();
        let listed = node["in_use"]["cpus"].as_f64().unwrap();
        let metric = value(&samples, "berth_node_cpus_in_use", &[("node", host)]).unwrap();
        assert!(close(metric, listed), "{host}: {metric} against {listed}");
        node_cpus += listed;
    }
    assert!(close(node_cpus, cpus), "the nodes' sums add up to the tasks': {node_cpus} against {cpus}");

    // The CLI prints the use next to the limits.
    let table = master.ok(&["task", "ls"]);
    assert!(table.contains("USAGE") && table.contains("/0.5 mem ") && table.contains("/128 MiB"), "{table}");
    let listed = master.json(&["task", "ls"]);
    for row in listed.as_array().unwrap() {
        assert!(row["usage_sample"]["cpus"].as_f64().unwrap() > 0.0, "{row}");
    }
}
