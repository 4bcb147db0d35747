//! Submit → RUNNING through berth vs raw Engine API create+start of the same image and limits, side by side
//! in one run, `n` at a time.
//!
//! - raw: bollard `create_container` + `start_container` for each container concurrently; a container's
//!   latency runs from the first request to the engine's `start` event reaching the client, as berth's
//!   agent sees it (the `start` call's reply is reported beside it; here it comes in the same millisecond).
//! - berth: the real `berth serve` with its local Docker agent and the `launcher` test framework; all tasks
//!   are posted to the framework's API at once; a task's latency runs from the first post to its RUNNING
//!   status (the agent's timestamp of the engine's `start` event), so it includes the HTTP request, the
//!   framework plugin, an offer cycle, the store commit, the agent and the engine.
//!
//! Rounds alternate raw and berth so both see the same machine noise, each side first in every other
//! round. Figures are medians over rounds of each round's median and slowest task.
//!
//! berth's own share of a launch is also measured directly, free of the engine's variance: from the first
//! post to the task's STARTING status, which the agent stamps when the launch reaches it, right before its
//! first engine call. Everything after that is the engine's work, as on the raw side.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt as _;
use serde_json::{Value, json};

use super::{median, unix_ms};
use crate::cluster::{Master, eventually};
use crate::{docker, guests};

/// One concurrency level's figures, in milliseconds.
#[derive(Clone, Debug)]
pub struct Launches {
    pub concurrent: usize,
    pub rounds: usize,
    pub raw_p50: f64,
    /// The raw side measured to the `start` call's reply instead of the `start` event.
    pub raw_reply_p50: f64,
    pub berth_p50: f64,
    pub raw_slowest: f64,
    pub berth_slowest: f64,
    /// Submit → STARTING (the launch reaching the agent), median over rounds of each round's median.
    pub berth_dispatch_p50: f64,
    /// Submit → STARTING of each round's last task to reach the agent, median over rounds.
    pub berth_dispatch_slowest: f64,
}

impl Launches {
    pub fn p50_ratio(&self) -> f64 {
        self.berth_p50 / self.raw_p50
    }
    pub fn slowest_ratio(&self) -> f64 {
        self.berth_slowest / self.raw_slowest
    }
}

/// The two sides of the comparison: an engine client and a `berth serve` running the `launcher`.
pub struct Bench {
    runtime: tokio::runtime::Runtime,
    engine: Docker,
    master: Master,
    image: &'static str,
    round: usize,
}

impl Bench {
    /// Needs the Docker engine; builds the busybox image and starts `berth serve` with its local agent.
    pub fn start() -> Bench {
        docker::require();
        let image = docker::busybox();
        let master = Master::start(&[]);
        master.load_plugin("framework", "launcher", guests::LAUNCHER);
        master.ok(&["framework", "add", "l", "--plugin", "launcher"]);
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let engine = runtime.block_on(async {
            Docker::connect_with_local_defaults().expect("the engine's socket").negotiate_version().await
        });
        let mut bench =
            Bench { runtime, engine: engine.expect("the engine's API version"), master, image, round: 0 };
        // Warm up both paths (image layers, plugin instances).
        bench.raw(2);
        bench.berth(2);
        bench
    }

    /// `rounds` alternating rounds of `n` launches each way.
    pub fn run(&mut self, n: usize, rounds: usize) -> Launches {
        let (mut raw_p50, mut berth_p50, mut raw_max, mut berth_max) = (vec![], vec![], vec![], vec![]);
        let (mut dispatch_p50, mut dispatch_max, mut reply_p50) = (vec![], vec![], vec![]);
        let slowest = |xs: &[f64]| xs.iter().copied().fold(0.0, f64::max);
        for i in 0..rounds {
            // Each side goes first in every other round, so that neither always runs right after the
            // other's clean-up (the two end their rounds differently, BENCHMARKS-HISTORY.md's Docker section).
            let ((mut r, mut reply), (mut b, mut d)) = if i % 2 == 0 {
                (self.raw(n), self.berth(n))
            } else {
                let berth = self.berth(n);
                (self.raw(n), berth)
            };
            reply_p50.push(median(&mut reply));
            raw_max.push(slowest(&r));
            berth_max.push(slowest(&b));
            dispatch_max.push(slowest(&d));
            raw_p50.push(median(&mut r));
            berth_p50.push(median(&mut b));
            dispatch_p50.push(median(&mut d));
        }
        Launches {
            concurrent: n,
            rounds,
            raw_p50: median(&mut raw_p50),
            raw_reply_p50: median(&mut reply_p50),
            berth_p50: median(&mut berth_p50),
            raw_slowest: median(&mut raw_max),
            berth_slowest: median(&mut berth_max),
            berth_dispatch_p50: median(&mut dispatch_p50),
            berth_dispatch_slowest: median(&mut dispatch_max),
        }
    }

    /// Per-container latencies (ms) of `n` raw create+start calls made at once: to the engine's `start` event
    /// reaching this client, and to the `start` call's reply.
    fn raw(&mut self, n: usize) -> (Vec<f64>, Vec<f64>) {
        self.round += 1;
        let round = self.round;
        let (engine, image) = (&self.engine, self.image);
        self.runtime.block_on(async move {
            let label = format!("berth.bench.round={round}");
            let filters = HashMap::from([
                ("type", vec!["container".to_string()]),
                ("event", vec!["start".to_string()]),
                ("label", vec![label]),
            ]);
            let mut events = engine.events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
            // The request is sent when the stream is first polled: polling it for 200 ms sends it and lets the
            // engine register the subscription before any container is created. Nothing may arrive yet.
            let first = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
            assert!(first.is_err(), "an event before any container of round {round}: {first:?}");
            let start = Instant::now();
            let started = async {
                let mut at = HashMap::new();
                while at.len() < n {
                    let event = events.next().await.expect("the event stream ended").expect("an event");
                    let name = event.actor.and_then(|a| a.attributes?.remove("name")).expect("a name");
                    at.insert(name, start.elapsed().as_secs_f64() * 1000.0);
                }
                at
            };
            let launches = (0..n).map(|i| {
                let name = format!("berth-bench-raw-{round}-{i}");
                let body = ContainerCreateBody {
                    image: Some(image.to_string()),
                    entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
                    cmd: Some(vec!["sleep 600".into()]),
                    labels: Some(
                        [
                            ("berth.bench".to_string(), "raw".to_string()),
                            ("berth.bench.round".to_string(), round.to_string()),
                        ]
                        .into(),
                    ),
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
                    let created = engine.create_container(Some(options), body).await.expect("create");
                    engine.start_container(&created.id, None).await.expect("start");
                    (name, start.elapsed().as_secs_f64() * 1000.0, created.id)
                }
            });
            let (results, started) = tokio::join!(futures::future::join_all(launches), started);
            for (_, _, id) in &results {
                let options = RemoveContainerOptionsBuilder::new().force(true).build();
                let _ = engine.remove_container(id, Some(options)).await;
            }
            results.into_iter().map(|(name, reply, _)| (started[&name], reply)).unzip()
        })
    }

    /// Per-task latencies (ms) of `n` tasks posted to berth at once: submit → RUNNING, and submit → STARTING.
    fn berth(&mut self, n: usize) -> (Vec<f64>, Vec<f64>) {
        self.round += 1;
        let master = &self.master;
        let ids: Vec<String> = (0..n).map(|i| format!("bench-{}-{i}", self.round)).collect();
        let submitted = unix_ms();
        for id in &ids {
            let task = json!({"id": id, "image": self.image, "command": "sleep 600", "milli_cpus": 10, "mem_mib": 16});
            let (status, body) = master.request("POST", "/frameworks/l/tasks", &task.to_string());
            assert_eq!(status, 201, "{body}");
        }
        let tasks = |master: &Master| -> Option<BTreeMap<String, Value>> {
            serde_json::from_str(&master.request("GET", "/frameworks/l/tasks", "").1).ok()
        };
        let records = eventually("all tasks running", Duration::from_secs(300), || {
            let records = tasks(master)?;
            ids.iter()
                .all(|id| {
                    records
                        .get(id)
                        .is_some_and(|r| r["history"].as_array().unwrap().contains(&json!("running")))
                })
                .then_some(records)
        });
        let since = |ms: &Value, id: &str| {
            let ms = ms.as_u64().unwrap_or_else(|| panic!("{id}: no timestamp in {}", records[id]));
            ms.saturating_sub(submitted) as f64
        };
        let (latencies, dispatched) = ids
            .iter()
            .map(|id| {
                let record = &records[id];
                // The status after RUNNING may be newer; RUNNING is the one we want.
                assert_eq!(
                    record["history"].as_array().unwrap().last().unwrap(),
                    "running",
                    "{id}: {record}"
                );
                (since(&record["timestamp_ms"], id), since(&record["starting_ms"], id))
            })
            .unzip();
        for id in &ids {
            master.request("POST", &format!("/frameworks/l/kill?{id}&0"), "");
        }
        eventually("all bench tasks killed", Duration::from_secs(120), || {
            let records = tasks(master)?;
            ids.iter()
                .all(|id| records[id]["history"].as_array().unwrap().last().unwrap() == "killed")
                .then_some(())
        });
        // The agent keeps exited containers for their logs; remove them so each round meets the same engine.
        docker::remove_agent_containers(&master.local_agent_id().unwrap());
        (latencies, dispatched)
    }
}
