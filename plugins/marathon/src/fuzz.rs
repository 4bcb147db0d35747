//! Fuzz targets for what the Marathon plugin reads from outside (`berth-fuzz`, run by `cargo test` at a
//! fixed budget; corpora in `tests/fuzz/corpus/marathon-*`):
//!
//! - `marathon-app`: an app definition as a client posts it. What parses must render and parse again.
//! - `marathon-api`: requests (`METHOD /path?query`, a newline, the body) against one long-lived framework
//!   that is also offered resources and told of task states between requests, as the host does. What the
//!   API accepted must be stored so that it loads again.
//! - `marathon-store`: a record of the framework's own store (`key`, a newline, the value), as a damaged or
//!   hostile disk may hold it: loading refuses it or loads it, and the loaded state serves the API.

use berth_plugin_sdk::{HttpRequest, Offer, PortRange, Resources, TaskState, TaskStatus};
use serde_json::Value;

use crate::app::{parse, to_json};
use crate::model::testing::MemoryStoreForTests;
use crate::model::{Persist, State};
use crate::scheduler::{Config, Marathon};

const APP_TOKENS: &[&str] = &[
    "\"id\"",
    "\"cpus\"",
    "\"mem\"",
    "\"disk\"",
    "\"gpus\"",
    "\"instances\"",
    "\"cmd\"",
    "\"args\"",
    "\"container\"",
    "\"docker\"",
    "\"image\"",
    "\"network\"",
    "\"BRIDGE\"",
    "\"HOST\"",
    "\"USER\"",
    "\"portMappings\"",
    "\"containerPort\"",
    "\"hostPort\"",
    "\"servicePort\"",
    "\"portDefinitions\"",
    "\"port\"",
    "\"protocol\"",
    "\"constraints\"",
    "\"UNIQUE\"",
    "\"CLUSTER\"",
    "\"GROUP_BY\"",
    "\"MAX_PER\"",
    "\"LIKE\"",
    "\"hostname\"",
    "\"healthChecks\"",
    "\"HTTP\"",
    "\"TCP\"",
    "\"COMMAND\"",
    "\"path\"",
    "\"portIndex\"",
    "\"gracePeriodSeconds\"",
    "\"intervalSeconds\"",
    "\"maxConsecutiveFailures\"",
    "\"labels\"",
    "\"env\"",
    "\"upgradeStrategy\"",
    "\"minimumHealthCapacity\"",
    "\"maximumOverCapacity\"",
    "\"backoffSeconds\"",
    "\"backoffFactor\"",
    "\"maxLaunchDelaySeconds\"",
    "\"volumes\"",
    "\"hostPath\"",
    "\"mode\"",
    "\"networks\"",
    "\"name\"",
    "\"killSelection\"",
    "\"taskKillGracePeriodSeconds\"",
    "\"version\"",
    "\"apps\"",
    "\"groups\"",
    "\"scaleBy\"",
    "\"privileged\"",
    "\"parameters\"",
    "\"/\"",
    "\"..\"",
    "\"a/b/c\"",
    "[]",
    "{}",
    "null",
    "true",
    "false",
    "[{",
    "}]",
    "\"berth.minHealthySeconds\"",
];

const API_TOKENS: &[&str] = &[
    "GET ",
    "POST ",
    "PUT ",
    "PATCH ",
    "DELETE ",
    "HEAD ",
    "/v2/apps",
    "/v2/apps/web",
    "/v2/apps/web/tasks",
    "/v2/apps/web/restart",
    "/v2/apps/web/versions",
    "/v2/groups",
    "/v2/groups/g",
    "/v2/groups/g/versions",
    "/v2/deployments",
    "/v2/tasks",
    "/v2/tasks/delete",
    "/v2/queue",
    "/v2/queue/web/delay",
    "/v2/info",
    "/v2/leader",
    "/metrics",
    "/ping",
    "?force=true",
    "?embed=apps.tasks",
    "&embed=app.lastTaskFailure",
    "?label=a==b",
    "?scale=true",
    "?wipe=true",
    "?dryRun=true",
    "?partialUpdate=false",
    "?cmd=x",
    "\n",
];

/// A generous offer, so that whatever the API accepted is placed if it can be.
fn offer(id: u64) -> Offer {
    Offer {
        id,
        node: (id % 3) as u32 + 1,
        hostname: format!("h{}", id % 3),
        attributes: vec![],
        resources: Resources {
            milli_cpus: 8_000,
            mem_mib: 16_384,
            disk_mib: 10_000,
            gpus: 1,
            ports: vec![PortRange { begin: 31000, end: 31100 }],
        },
    }
}

fn request(input: &[u8]) -> HttpRequest {
    let text = String::from_utf8_lossy(input);
    let (line, body) = text.split_once('\n').unwrap_or((&text, ""));
    let (method, target) = line.split_once(' ').unwrap_or(("GET", line));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    HttpRequest {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers: vec![],
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn fuzz_app_definitions() {
    berth_fuzz::run("marathon-app", APP_TOKENS, 30_000, |input| {
        let Ok(body) = serde_json::from_slice::<Value>(input) else { return };
        let Ok(app) = parse(&body, None) else { return };
        let rendered = to_json(&app, "2026-01-01T00:00:00.000Z");
        let again = parse(&rendered, None)
            .unwrap_or_else(|e| panic!("an accepted app renders as one that is refused: {e:?}\n{rendered}"));
        assert_eq!(again.id, app.id);
    });
}

#[test]
fn fuzz_the_api_with_offers_and_statuses_between_requests() {
    let mut marathon = Marathon::new(State::default(), Config::default(), 1_000);
    let mut store = MemoryStoreForTests::default();
    let mut calls = 0u64;
    berth_fuzz::run("marathon-api", API_TOKENS, 4_000, |input| {
        calls += 1;
        let reply = marathon.handle(request(input), &store);
        assert!((100..600).contains(&reply.response.status), "status {}", reply.response.status);
        marathon.state.flush(&mut store).expect("a memory store takes every write");
        // The host's side: demand, an offer, and the launched tasks running (or failing, every fifth).
        marathon.demand();
        let mut updates = Vec::new();
        for decision in marathon.offers(vec![offer(calls)]) {
            if let berth_plugin_sdk::Decision::Launch(launch) = decision {
                for task in launch.tasks {
                    updates.push(TaskStatus {
                        task_id: task.id,
                        state: if calls.is_multiple_of(5) { TaskState::Failed } else { TaskState::Running },
                        reason: None,
                        message: String::new(),
                        healthy: None,
                        exit_code: None,
                        node: Some(1),
                        hostname: Some("h1".into()),
                        ports: vec![],
                        timestamp_ms: marathon.now_ms,
                    });
                }
            }
        }
        marathon.status(updates);
        marathon.now_ms += 1_000;
        marathon.state.flush(&mut store).expect("a memory store takes every write");
        // What was accepted loads again; every 500 calls the framework starts over from its store.
        let loaded = State::load(&store).unwrap_or_else(|e| panic!("the stored state does not load: {e}"));
        if calls.is_multiple_of(500) {
            marathon = Marathon::new(loaded, Config::default(), marathon.now_ms);
        }
    });
}

#[test]
fn fuzz_stored_records() {
    berth_fuzz::run("marathon-store", APP_TOKENS, 20_000, |input| {
        let text = String::from_utf8_lossy(input);
        let (key, value) = text.split_once('\n').unwrap_or(("meta", &text));
        let mut store = MemoryStoreForTests::default();
        store.put(key, value.as_bytes().to_vec()).unwrap();
        let Ok(state) = State::load(&store) else { return };
        let mut marathon = Marathon::new(state, Config::default(), 1_000);
        for path in ["/v2/apps", "/v2/tasks", "/v2/deployments", "/v2/queue", "/v2/groups"] {
            let reply = marathon.handle(request(format!("GET {path}?embed=apps.tasks").as_bytes()), &store);
            assert!((100..600).contains(&reply.response.status));
        }
        marathon.demand();
        marathon.offers(vec![offer(1)]);
    });
}

/// Writes `marathon-store`'s corpus: the records the framework stores after the `marathon-api` corpus
/// ran. Run by hand after the records change shape:
/// `cargo test -p berth-plugin-marathon write_the_store_corpus -- --ignored`.
#[test]
#[ignore = "writes the corpus; run by hand"]
fn write_the_store_corpus() {
    let mut marathon = Marathon::new(State::default(), Config::default(), 1_000);
    let mut store = MemoryStoreForTests::default();
    let mut dir: Vec<_> = std::fs::read_dir(berth_fuzz::corpus_dir("marathon-api"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dir.sort();
    for (n, path) in dir.iter().enumerate() {
        if path.ends_with("delete.txt") || path.ends_with("delete-group.txt") {
            continue;
        }
        marathon.handle(request(&std::fs::read(path).unwrap()), &store);
        marathon.demand();
        let decisions = marathon.offers(vec![offer(n as u64)]);
        for decision in decisions {
            if let berth_plugin_sdk::Decision::Launch(launch) = decision {
                let updates = launch
                    .tasks
                    .into_iter()
                    .map(|task| TaskStatus {
                        task_id: task.id,
                        state: TaskState::Running,
                        reason: None,
                        message: String::new(),
                        healthy: Some(true),
                        exit_code: None,
                        node: Some(1),
                        hostname: Some("h1".into()),
                        ports: vec![],
                        timestamp_ms: marathon.now_ms,
                    })
                    .collect();
                marathon.status(updates);
            }
        }
        marathon.now_ms += 1_000;
        marathon.state.flush(&mut store).unwrap();
    }
    let out = berth_fuzz::corpus_dir("marathon-store");
    std::fs::create_dir_all(&out).unwrap();
    let mut kinds = std::collections::BTreeMap::new();
    for (key, value) in &store.0 {
        let kind = key.split('/').next().unwrap().to_string();
        let count = kinds.entry(kind.clone()).or_insert(0);
        *count += 1;
        if *count <= 3 {
            let mut bytes = format!("{key}\n").into_bytes();
            bytes.extend_from_slice(value);
            std::fs::write(out.join(format!("{kind}-{count}")), bytes).unwrap();
        }
    }
    assert!(kinds.len() >= 3, "{kinds:?}");
}
