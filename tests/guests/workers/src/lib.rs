//! Test guest: a framework that keeps `instances` tasks of one shape running (all it can get when
//! `instances` is absent), replacing tasks that end, and records every task's life in its store.
//!
//! Configuration (JSON): `{"instances": 6, "milli_cpus": 500, "mem_mib": 64, "image": "busybox",
//! "labels": {"k": "v"}}`; every field is optional.
//!
//! HTTP API: `GET /tasks` (each task's state history), `GET /summary` (tasks by state), `PUT
//! /instances?N` (change how many to run).

use std::collections::BTreeMap;

use berth_plugin_sdk::{
    Action, ApiReply, ContainerSpec, Decision, Decline, Framework, HttpRequest, HttpResponse, KeyValue,
    Launch, Offer, Resources, TaskShape, TaskSpec, TaskState, TaskStatus, export_framework, store,
};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Config {
    instances: Option<u32>,
    milli_cpus: Option<u64>,
    mem_mib: Option<u64>,
    image: Option<String>,
    labels: BTreeMap<String, String>,
    /// Decline every offer (with `refuse_seconds`), to exercise the master's decline filters.
    decline_all: bool,
    /// The filter a decline asks for, 1 s unless set.
    refuse_seconds: Option<u32>,
    /// Leave every offer unanswered (no decision at all), to exercise the master's default filter.
    answer_none: bool,
}

#[derive(Serialize, Deserialize, Clone)]
struct Record {
    history: Vec<String>,
    hostname: Option<String>,
    reason: Option<String>,
}

struct Workers {
    config: Config,
    instances: Option<u32>,
    tasks: BTreeMap<String, Record>,
    next: u64,
    /// Offers received since this instance started, by hostname.
    offers_seen: BTreeMap<String, u32>,
}

fn state_name(s: TaskState) -> &'static str {
    match s {
        TaskState::Staging => "staging",
        TaskState::Starting => "starting",
        TaskState::Running => "running",
        TaskState::Killing => "killing",
        TaskState::Finished => "finished",
        TaskState::Failed => "failed",
        TaskState::Killed => "killed",
        TaskState::Lost => "lost",
        TaskState::Error => "error",
    }
}

fn active(r: &Record) -> bool {
    matches!(r.history.last().map(String::as_str), Some("staging" | "starting" | "running" | "killing"))
}

fn save<T: Serialize>(key: &str, value: &T) {
    store::put(key, &serde_json::to_vec(value).expect("serializes")).expect("store write");
}

impl Workers {
    fn shape(&self) -> (u64, u64) {
        (self.config.milli_cpus.unwrap_or(500), self.config.mem_mib.unwrap_or(64))
    }

    fn wanted(&self) -> u32 {
        let active = self.tasks.values().filter(|r| active(r)).count() as u32;
        match self.instances {
            Some(n) => n.saturating_sub(active),
            None => 1_000_000,
        }
    }

    fn spec(&mut self) -> TaskSpec {
        self.next += 1;
        save("next", &self.next);
        let (milli_cpus, mem_mib) = self.shape();
        TaskSpec {
            id: format!("w-{:06}", self.next),
            name: "worker".into(),
            resources: Resources::new(milli_cpus, mem_mib),
            container: ContainerSpec {
                command: Some("sleep 3600".into()),
                labels: self
                    .config
                    .labels
                    .iter()
                    .map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() })
                    .collect(),
                ..ContainerSpec::new(self.config.image.clone().unwrap_or_else(|| "busybox:latest".into()))
            },
            health_checks: vec![],
            kill_grace_period_ms: 1_000,
        }
    }
}

impl Framework for Workers {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(config).map_err(|e| e.to_string())?
        };
        let mut tasks = BTreeMap::new();
        for key in store::keys("task/") {
            let record: Record =
                serde_json::from_slice(&store::get(&key).unwrap()).map_err(|e| e.to_string())?;
            tasks.insert(key["task/".len()..].to_string(), record);
        }
        let next = store::get("next").map(|b| serde_json::from_slice(&b).unwrap()).unwrap_or(0);
        let instances = match store::get("instances") {
            Some(b) => serde_json::from_slice(&b).unwrap(),
            None => config.instances,
        };
        Ok(Workers { config, instances, tasks, next, offers_seen: BTreeMap::new() })
    }

    fn demand(&mut self) -> Vec<TaskShape> {
        let (milli_cpus, mem_mib) = self.shape();
        match self.wanted() {
            0 => vec![],
            n => vec![TaskShape::new(milli_cpus, mem_mib, n)],
        }
    }

    fn offers(&mut self, offers: Vec<Offer>) -> Vec<Decision> {
        let (milli_cpus, mem_mib) = self.shape();
        let mut wanted = self.wanted();
        let mut decisions = Vec::new();
        for offer in offers {
            *self.offers_seen.entry(offer.hostname.clone()).or_default() += 1;
            if self.config.answer_none {
                continue;
            }
            if self.config.decline_all {
                let refuse_seconds = self.config.refuse_seconds.unwrap_or(1);
                decisions.push(Decision::Decline(Decline { offer: offer.id, refuse_seconds }));
                continue;
            }
            let mut free = offer.resources.clone();
            let mut tasks = Vec::new();
            while wanted > 0 && free.milli_cpus >= milli_cpus && free.mem_mib >= mem_mib {
                free.milli_cpus -= milli_cpus;
                free.mem_mib -= mem_mib;
                wanted -= 1;
                let spec = self.spec();
                let record = Record {
                    history: vec!["staging".into()],
                    hostname: Some(offer.hostname.clone()),
                    reason: None,
                };
                save(&format!("task/{}", spec.id), &record);
                self.tasks.insert(spec.id.clone(), record);
                tasks.push(spec);
            }
            if tasks.is_empty() {
                let refuse_seconds = self.config.refuse_seconds.unwrap_or(1);
                decisions.push(Decision::Decline(Decline { offer: offer.id, refuse_seconds }));
            } else {
                decisions.push(Decision::Launch(Launch { offer: offer.id, tasks }));
            }
        }
        decisions
    }

    fn status(&mut self, updates: Vec<TaskStatus>) -> Vec<Action> {
        for update in updates {
            let record = self.tasks.entry(update.task_id.clone()).or_insert(Record {
                history: vec![],
                hostname: None,
                reason: None,
            });
            record.history.push(state_name(update.state).into());
            if update.hostname.is_some() {
                record.hostname = update.hostname.clone();
            }
            record.reason = update.reason.map(|r| format!("{r:?}"));
            let record = record.clone();
            save(&format!("task/{}", update.task_id), &record);
        }
        vec![Action::Revive]
    }

    fn handle(&mut self, request: HttpRequest) -> ApiReply {
        if (request.method.as_str(), request.path.as_str()) == ("GET", "/offers") {
            // A read that must not revive: reviving clears the decline filters it is there to watch.
            let response = HttpResponse::json(200, serde_json::to_vec(&self.offers_seen).unwrap());
            return ApiReply { response, actions: vec![] };
        }
        let response = match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/tasks") => HttpResponse::json(200, serde_json::to_vec(&self.tasks).unwrap()),
            ("GET", "/summary") => {
                let mut by_state: BTreeMap<String, u32> = BTreeMap::new();
                for r in self.tasks.values() {
                    *by_state.entry(r.history.last().cloned().unwrap_or_default()).or_default() += 1;
                }
                HttpResponse::json(200, serde_json::to_vec(&by_state).unwrap())
            }
            ("PUT", "/instances") => match request.query.parse::<u32>() {
                Ok(n) => {
                    self.instances = Some(n);
                    save("instances", &n);
                    HttpResponse::json(200, format!("{{\"instances\":{n}}}"))
                }
                Err(e) => HttpResponse::text(400, &format!("instances must be a number: {e}")),
            },
            _ => HttpResponse::text(404, "no such endpoint"),
        };
        ApiReply { response, actions: vec![Action::Revive] }
    }
}

export_framework!(Workers);
