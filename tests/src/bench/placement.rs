//! End-to-end placement: the real `berth serve` with simulated agents in-process, Marathon apps posted to
//! the bundled `marathon` framework, the bundled `proportional` allocator deciding. Everything a real
//! launch goes through runs (the HTTP API, the framework plugin, allocation cycles, launch checks, the
//! store commits, the agents' status updates and their acknowledgement), except containers.
//!
//! A task's latency runs from the POST of its app to the task's RUNNING status (the agent's timestamp,
//! which the framework reports as `startedAt`); the throughput is all tasks over the time from the first
//! POST to the last RUNNING. The master's memory is read from `/proc` once every task runs, and so is the
//! CPU time its threads used since just before the first POST.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{parse_iso_ms, quantile, rss_mib, thread_cpu, unix_ms};
use crate::cluster::{Master, eventually};

/// What to place.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// Simulated nodes, each 8 cpus, 32 GiB and ports 31000-32000.
    pub nodes: u32,
    /// Marathon apps, posted from `clients` threads at once.
    pub apps: u32,
    /// Instances of each app (0.1 cpu, 32 MiB, one port each).
    pub instances: u32,
    /// Concurrent API clients.
    pub clients: u32,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Placed {
    pub setup: Placement,
    pub tasks: usize,
    /// First POST to last RUNNING.
    pub elapsed: Duration,
    pub tasks_per_s: f64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    /// The master's resident memory with every node joined, before any app.
    pub idle_rss_mib: f64,
    /// ... and with every task running.
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    /// Allocation cycles recorded during the run (at most the last 256), their p50 and p99 durations.
    pub cycle_p50_ms: f64,
    pub cycle_p99_ms: f64,
    pub cycles: u64,
    /// CPU time from just before the first POST until every task is seen running (so including the
    /// API's answers to the polls of `/v2/apps`, every 200 ms): the master's thread (plugins, offer
    /// cycles, launch checks, status handling) and the whole process (with the store writer, the HTTP API
    /// and the simulated agents, which share it).
    pub master_cpu: Duration,
    pub process_cpu: Duration,
    /// The same by thread name, largest first.
    pub cpu_by_thread: Vec<(String, Duration)>,
    /// With `BERTH_BENCH_SCRAPE_METRICS` set, `/metrics` is scraped every second during the run, as
    /// Prometheus would: how many scrapes, the slowest, and the size of the last.
    pub scrapes: usize,
    pub slowest_scrape_ms: f64,
    pub scrape_bytes: usize,
}

impl Placed {
    /// CPU milliseconds per 1,000 tasks placed: (master thread, whole process).
    pub fn cpu_ms_per_1000(&self) -> (f64, f64) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / self.tasks as f64;
        (per(self.master_cpu), per(self.process_cpu))
    }
}

/// The master a placement runs against: `nodes` simulated agents, warnings-only logs.
pub fn master(nodes: u32) -> Master {
    master_with(nodes, &[], |_| {})
}

/// Like [`master`], with `extra` arguments (`--config` of a store on etcd, say) and `prepare` called with
/// the data directory before the master starts.
pub fn master_with(nodes: u32, extra: &[&str], prepare: impl FnOnce(&std::path::Path)) -> Master {
    let nodes_arg = nodes.to_string();
    let mut args =
        vec!["--simulate-nodes", &nodes_arg, "--agent-ports", "31000-32000", "--agent-timeout-ms", "60000"];
    args.extend_from_slice(extra);
    let master = Master::start_for_benchmark_prepared(&args, prepare);
    eventually("every simulated node to join", Duration::from_secs(300), || {
        let joined = master.get("/v1/nodes").as_array().map_or(0, |n| n.len());
        (joined >= nodes as usize).then_some(())
    });
    master
}

fn app_id(i: u32) -> String {
    format!("/bench/app-{i:04}")
}

/// Posts the apps, waits for every task to run, and reads the tasks back.
pub fn run(master: &Master, setup: Placement) -> Placed {
    let pid = master.pid().expect("the master runs");
    let (idle_rss_mib, _) = rss_mib(pid);
    let cycles_before = last_cycle(master);
    let cpu_before = thread_cpu(pid);

    let stop_scraping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = std::env::var_os("BERTH_BENCH_SCRAPE_METRICS").map(|_| {
        let (url, stop) = (format!("{}/metrics", master.url), stop_scraping.clone());
        std::thread::spawn(move || {
            let mut scrapes: Vec<(Duration, usize)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let at = Instant::now();
                let body =
                    ureq::get(&url).call().expect("GET /metrics").into_body().read_to_string().unwrap();
                scrapes.push((at.elapsed(), body.len()));
                std::thread::sleep(Duration::from_secs(1).saturating_sub(at.elapsed()));
            }
            scrapes
        })
    });

    // With `BERTH_BENCH_CONSOLE` set, the web console's overview is open in headless Chromium during the
    // run, polling as it does for a user (every two seconds: nodes, frameworks, plugins, cycles).
    let console = std::env::var_os("BERTH_BENCH_CONSOLE").map(|_| {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let browser = runtime.block_on(async {
            let browser = crate::browser::Browser::start(1280, 800).await;
            browser.client.goto(&format!("{}/ui/#/overview", master.url)).await.expect("opening the console");
            let b = &browser;
            b.wait("the console's overview", Duration::from_secs(60), move || async move {
                b.text("#nodes-table").await.filter(|t| !t.is_empty())
            })
            .await;
            browser
        });
        (runtime, browser)
    });

    let posted: Mutex<BTreeMap<String, u64>> = Mutex::default();
    let next = std::sync::atomic::AtomicU32::new(0);
    let first_post = unix_ms();
    std::thread::scope(|s| {
        for _ in 0..setup.clients {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= setup.apps {
                        break;
                    }
                    let id = app_id(i);
                    let app = json!({
                        "id": id, "instances": setup.instances, "cpus": 0.1, "mem": 32,
                        "cmd": "sleep 3600", "container": {"docker": {"image": "bench:latest"}},
                    });
                    let at = unix_ms();
                    let (status, body) = master.request("POST", "/v2/apps", &app.to_string());
                    assert_eq!(status, 201, "posting {id}: {body}");
                    posted.lock().unwrap().insert(id, at);
                }
            });
        }
    });
    let posted = posted.into_inner().unwrap();
    let total = setup.apps as usize * setup.instances as usize;

    let deadline = Duration::from_secs(900);
    let started = Instant::now();
    loop {
        let (status, body) = master.request("GET", "/v2/apps", "");
        if status == 200 {
            let apps: Value = serde_json::from_str(&body).expect("/v2/apps is JSON");
            let running: u64 = apps["apps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["tasksRunning"].as_u64().unwrap_or(0))
                .sum();
            if running as usize >= total {
                break;
            }
        }
        assert!(started.elapsed() < deadline, "not every task ran within {deadline:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (rss_mib, peak_rss_mib) = rss_mib(pid);
    let cpu_after = thread_cpu(pid);
    stop_scraping.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some((runtime, browser)) = console {
        let refreshed =
            runtime.block_on(browser.client.execute("return document.body.dataset.refreshed", vec![]));
        assert!(refreshed.is_ok_and(|v| v.as_str().is_some()), "the console kept polling during the run");
        drop(browser);
        drop(runtime);
    }
    let scrapes = scraper.map(|s| s.join().expect("the scraper")).unwrap_or_default();
    let used = |name: Option<&str>| -> Duration {
        let spent = |cpu: &BTreeMap<String, Duration>| -> Duration {
            cpu.iter().filter(|(n, _)| name.is_none_or(|name| *n == name)).map(|(_, d)| *d).sum()
        };
        spent(&cpu_after).saturating_sub(spent(&cpu_before))
    };
    let (master_cpu, process_cpu) = (used(Some("berth-master")), used(None));
    let mut cpu_by_thread: Vec<(String, Duration)> =
        cpu_after.keys().map(|name| (name.clone(), used(Some(name)))).filter(|(_, d)| !d.is_zero()).collect();
    cpu_by_thread.sort_by_key(|(_, d)| std::cmp::Reverse(*d));

    // Every task's RUNNING time, app by app (one app's tasks per request keeps responses small).
    let mut latencies = Vec::with_capacity(total);
    let mut last_running = 0;
    for (id, at) in &posted {
        let (status, body) = master.request("GET", &format!("/v2/apps{id}/tasks"), "");
        assert_eq!(status, 200, "{body}");
        let tasks: Value = serde_json::from_str(&body).unwrap();
        let (mut lo, mut hi) = (u64::MAX, 0);
        for task in tasks["tasks"].as_array().unwrap() {
            let running =
                task["startedAt"].as_str().and_then(parse_iso_ms).expect("a running task has startedAt");
            latencies.push(running.saturating_sub(*at));
            last_running = last_running.max(running);
            lo = lo.min(running);
            hi = hi.max(running);
        }
        if std::env::var_os("BERTH_BENCH_TRACE").is_some() {
            eprintln!(
                "{id}: posted +{} ms, running +{}..+{} ms",
                at - first_post,
                lo - first_post,
                hi - first_post
            );
        }
    }
    assert_eq!(latencies.len(), total, "every task was listed");
    let elapsed = Duration::from_millis(last_running.saturating_sub(first_post));

    let mut cycle_ms: Vec<f64> = cycles_since(master, cycles_before)
        .iter()
        .filter(|c| c["launched"].as_u64().unwrap_or(0) > 0 || c["grants"].as_u64().unwrap_or(0) > 0)
        .map(|c| c["duration_us"].as_f64().unwrap() / 1e3)
        .collect();
    let cycles = cycle_ms.len() as u64;
    let (cycle_p50_ms, cycle_p99_ms) = if cycle_ms.is_empty() {
        (0.0, 0.0)
    } else {
        (quantile(&mut cycle_ms, 0.5), quantile(&mut cycle_ms, 0.99))
    };
    Placed {
        setup,
        tasks: total,
        elapsed,
        tasks_per_s: total as f64 / elapsed.as_secs_f64(),
        p50_ms: quantile(&mut latencies, 0.5),
        p99_ms: quantile(&mut latencies, 0.99),
        idle_rss_mib,
        rss_mib,
        peak_rss_mib,
        cycle_p50_ms,
        cycle_p99_ms,
        cycles,
        master_cpu,
        process_cpu,
        cpu_by_thread,
        scrapes: scrapes.len(),
        slowest_scrape_ms: scrapes.iter().map(|(d, _)| d.as_secs_f64() * 1e3).fold(0.0, f64::max),
        scrape_bytes: scrapes.last().map_or(0, |(_, bytes)| *bytes),
    }
}

fn last_cycle(master: &Master) -> u64 {
    master.get("/v1/cycles").as_array().and_then(|c| c.last()).and_then(|c| c["number"].as_u64()).unwrap_or(0)
}

fn cycles_since(master: &Master, number: u64) -> Vec<Value> {
    master
        .get("/v1/cycles")
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["number"].as_u64().unwrap() > number)
        .cloned()
        .collect()
}
