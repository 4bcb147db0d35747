//! Submit → RUNNING through berth vs raw Engine API create+start of the same image and limits, side by side
//! in one run, 1 and 50 at a time.
//!
//! `cargo bench -p berth-tests --bench docker_launch [-- ROUNDS]` (default 3 rounds per size; needs Docker).
//!
//! - raw: bollard `create_container` + `start_container` for each container concurrently; a container's
//!   latency is from the first request to its `start` returning.
//! - berth: the real `berth serve` (release build of the binary the tests use) with its local Docker agent
//!   and the `launcher` framework; all tasks are posted to the framework's API at once; a task's latency is
//!   from the first post to the RUNNING status (the agent's timestamp of the engine's `start` event).
//!
//! Rounds alternate raw and berth so both see the same machine noise. Figures are medians over rounds of
//! each round's median and slowest task.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_tests::cluster::{Master, eventually};
use berth_tests::{docker, guests};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use serde_json::{Value, json};

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Per-task latencies (ms) of `n` raw create+start calls made at once.
async fn raw(docker: &Docker, image: &str, n: usize, round: usize) -> Vec<f64> {
    let start = Instant::now();
    let launches = (0..n).map(|i| {
        let docker = docker.clone();
        let name = format!("berth-bench-raw-{round}-{i}");
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec!["sleep 600".into()]),
            labels: Some([("berth.bench".to_string(), "raw".to_string())].into()),
            host_config: Some(HostConfig {
                cpu_period: Some(100_000),
                cpu_quota: Some(1_000),
                cpu_shares: Some(10),
                memory: Some(16 << 20),
                memory_swap: Some(16 << 20),
                network_mode: Some("bridge".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        async move {
            let options = CreateContainerOptionsBuilder::new().name(&name).build();
            let created = docker.create_container(Some(options), body).await.expect("create");
            docker.start_container(&created.id, None).await.expect("start");
            (start.elapsed().as_secs_f64() * 1000.0, created.id)
        }
    });
    let results = futures::future::join_all(launches).await;
    for (_, id) in &results {
        let _ =
            docker.remove_container(id, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
    }
    results.into_iter().map(|(ms, _)| ms).collect()
}

/// Per-task latencies (ms) of `n` tasks posted to berth at once.
fn berth(master: &Master, image: &str, n: usize, round: usize) -> Vec<f64> {
    let ids: Vec<String> = (0..n).map(|i| format!("bench-{round}-{i}")).collect();
    let submitted = unix_ms();
    for id in &ids {
        let task = json!({"id": id, "image": image, "command": "sleep 600", "milli_cpus": 10, "mem_mib": 16});
        let (status, body) = master.request("POST", "/frameworks/l/tasks", &task.to_string());
        assert_eq!(status, 201, "{body}");
    }
    let records: BTreeMap<String, Value> = eventually("all tasks running", Duration::from_secs(300), || {
        let records: BTreeMap<String, Value> =
            serde_json::from_str(&master.request("GET", "/frameworks/l/tasks", "").1).ok()?;
        ids.iter()
            .all(|id| {
                records.get(id).is_some_and(|r| r["history"].as_array().unwrap().contains(&json!("running")))
            })
            .then_some(records)
    });
    let latencies = ids
        .iter()
        .map(|id| {
            let record = &records[id];
            // The status after RUNNING may be newer; RUNNING is the one we want, so read it from the history.
            assert_eq!(record["history"].as_array().unwrap().last().unwrap(), "running", "{id}: {record}");
            (record["timestamp_ms"].as_u64().unwrap() - submitted) as f64
        })
        .collect();
    for id in &ids {
        master.request("POST", &format!("/frameworks/l/kill?{id}&0"), "");
    }
    eventually("all bench tasks killed", Duration::from_secs(120), || {
        let records: BTreeMap<String, Value> =
            serde_json::from_str(&master.request("GET", "/frameworks/l/tasks", "").1).ok()?;
        ids.iter()
            .all(|id| records[id]["history"].as_array().unwrap().last().unwrap() == "killed")
            .then_some(())
    });
    // The agent keeps exited containers for their logs; remove them so each round meets the same engine.
    docker::remove_agent_containers(&master.local_agent_id().unwrap());
    latencies
}

/// Builds the release `berth` next to this bench and points the harness at it, so one command measures
/// the current source.
fn build_berth() {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "berth-host", "--bin", "berth"])
        .status()
        .expect("running cargo");
    assert!(status.success(), "building the release berth binary failed");
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(std::path::Path::parent).unwrap().join("berth");
    // SAFETY: single-threaded here, before any other thread starts.
    unsafe { std::env::set_var("BERTH_BIN", bin) };
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3);
    build_berth();
    docker::require();
    let image = docker::busybox();
    let master = Master::start(&[]);
    master.load_plugin("framework", "launcher", guests::LAUNCHER);
    master.ok(&["framework", "add", "l", "--plugin", "launcher"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = runtime.block_on(async {
        Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap()
    });

    // Warm up both paths (image layers, plugin instances).
    runtime.block_on(raw(&engine, image, 2, 999));
    berth(&master, image, 2, 999);

    println!("submit -> RUNNING, berth vs raw Engine API create+start, {rounds} alternating rounds per size");
    println!(
        "| concurrent | raw p50 | berth p50 | p50 ratio | raw slowest | berth slowest | slowest ratio |"
    );
    println!(
        "|-----------:|--------:|----------:|----------:|------------:|--------------:|--------------:|"
    );
    for n in [1usize, 50] {
        let (mut raw_p50, mut berth_p50, mut raw_max, mut berth_max) = (vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            let r = runtime.block_on(raw(&engine, image, n, round));
            let b = berth(&master, image, n, round + n * 100);
            raw_max.push(r.iter().cloned().fold(0.0, f64::max));
            berth_max.push(b.iter().cloned().fold(0.0, f64::max));
            raw_p50.push(median(r));
            berth_p50.push(median(b));
        }
        let (rp, bp, rm, bm) = (median(raw_p50), median(berth_p50), median(raw_max), median(berth_max));
        println!(
            "| {n:>10} | {rp:>5.0} ms | {bp:>7.0} ms | {:>8.2}x | {rm:>9.0} ms | {bm:>11.0} ms | {:>12.2}x |",
            bp / rp,
            bm / rm
        );
    }
}
