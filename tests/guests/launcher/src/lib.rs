//! Test guest: a framework that launches exactly the tasks a test posts to it, each once, and records
//! every status update. Used by the Docker tests to run precise workloads.
//!
//! - `POST /tasks` with a task template (see [`Template`]): queued, launched on the first offer it fits.
//! - `GET /tasks`: every task's state history and last status.
//! - `POST /kill?<id>` and `POST /kill?<id>&<grace-ms>`: kill a task.
//! - A template with `"trap_on": "<state>"`: `status` records the task's updates, saves them, and then
//!   panics (a trap) while an update of that task in that state is among them, until `POST /untrap?<id>`.

use std::collections::BTreeMap;

use berth_plugin_sdk::{
    Action, ApiReply, ContainerSpec, Decision, Framework, HealthCheck, HttpProbe, HttpRequest, HttpResponse,
    KeyValue, KillTask, Launch, Network, Offer, PortMapping, PortRange, Probe, Protocol, Resources,
    TaskShape, TaskSpec, TaskState, TaskStatus, export_framework, store,
};
use serde::{Deserialize, Serialize};

/// What a test posts.
#[derive(Serialize, Deserialize, Clone)]
struct Template {
    id: String,
    image: String,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default = "default_cpus")]
    milli_cpus: u64,
    #[serde(default = "default_mem")]
    mem_mib: u64,
    /// Container ports to publish, each on a host port from the offer.
    #[serde(default)]
    container_ports: Vec<u16>,
    /// Host ports to take without mapping (host networking).
    #[serde(default)]
    host_ports: u32,
    #[serde(default)]
    host_network: bool,
    #[serde(default)]
    health: Vec<Health>,
    #[serde(default = "default_grace")]
    grace_ms: u32,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    force_pull: bool,
    #[serde(default)]
    trap_on: Option<String>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Health {
    /// `http`, `tcp` or `command`.
    kind: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    port_index: u32,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    grace_ms: u32,
    #[serde(default = "default_interval")]
    interval_ms: u32,
    #[serde(default = "default_interval")]
    timeout_ms: u32,
    #[serde(default)]
    max_failures: u32,
}

fn default_cpus() -> u64 {
    100
}
fn default_mem() -> u64 {
    32
}
fn default_grace() -> u32 {
    3000
}
fn default_interval() -> u32 {
    500
}

#[derive(Serialize, Deserialize, Default, Clone)]
struct Record {
    history: Vec<String>,
    reason: Option<String>,
    message: String,
    healthy: Option<bool>,
    exit_code: Option<i32>,
    hostname: Option<String>,
    ports: Vec<u16>,
    /// The agent's timestamp of the task's STARTING status: when the launch reached it.
    starting_ms: Option<u64>,
    timestamp_ms: u64,
}

struct Launcher {
    queue: Vec<Template>,
    tasks: BTreeMap<String, Record>,
    /// Task id → the state whose update makes `status` trap.
    traps: BTreeMap<String, String>,
}

fn plain(debug: String) -> String {
    debug.rsplit("::").next().unwrap_or_default().to_ascii_lowercase()
}

fn save(launcher: &Launcher) {
    store::put("queue", &serde_json::to_vec(&launcher.queue).unwrap()).unwrap();
    store::put("tasks", &serde_json::to_vec(&launcher.tasks).unwrap()).unwrap();
    store::put("traps", &serde_json::to_vec(&launcher.traps).unwrap()).unwrap();
}

/// Takes `n` ports from the offer's free ranges.
fn take_ports(free: &mut Vec<PortRange>, n: u32) -> Option<Vec<u16>> {
    let mut ports = Vec::new();
    while ports.len() < n as usize {
        let range = free.first_mut()?;
        ports.push(range.begin);
        if range.begin == range.end {
            free.remove(0);
        } else {
            range.begin += 1;
        }
    }
    Some(ports)
}

fn spec(t: &Template, ports: &[u16]) -> TaskSpec {
    let mut resources = Resources::new(t.milli_cpus, t.mem_mib)
        .with_ports(ports.iter().map(|&p| PortRange { begin: p, end: p }).collect());
    resources.disk_mib = 0;
    let port_mappings = if t.host_network {
        vec![]
    } else {
        t.container_ports
            .iter()
            .zip(ports)
            .map(|(&c, &h)| PortMapping {
                container_port: c,
                host_port: h,
                protocol: Protocol::Tcp,
                name: None,
            })
            .collect()
    };
    TaskSpec {
        id: t.id.clone(),
        name: t.id.clone(),
        resources,
        container: ContainerSpec {
            image: t.image.clone(),
            force_pull: t.force_pull,
            command: t.command.clone(),
            args: t.args.clone(),
            entrypoint: None,
            env: vec![],
            labels: t.labels.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect(),
            port_mappings,
            network: if t.host_network { Network::Host } else { Network::Bridge },
            volumes: vec![],
            working_dir: None,
            user: None,
            privileged: false,
        },
        health_checks: t
            .health
            .iter()
            .map(|h| HealthCheck {
                probe: match h.kind.as_str() {
                    "http" => Probe::Http(HttpProbe {
                        port_index: h.port_index,
                        path: h.path.clone(),
                        https: false,
                    }),
                    "tcp" => Probe::Tcp(h.port_index),
                    _ => Probe::Command(h.command.clone()),
                },
                grace_period_ms: h.grace_ms,
                interval_ms: h.interval_ms,
                timeout_ms: h.timeout_ms,
                max_consecutive_failures: h.max_failures,
            })
            .collect(),
        kill_grace_period_ms: t.grace_ms,
    }
}

impl Framework for Launcher {
    fn init(_config: &str) -> Result<Self, String> {
        let queue = store::get("queue").map(|b| serde_json::from_slice(&b).unwrap()).unwrap_or_default();
        let tasks = store::get("tasks").map(|b| serde_json::from_slice(&b).unwrap()).unwrap_or_default();
        let traps = store::get("traps").map(|b| serde_json::from_slice(&b).unwrap()).unwrap_or_default();
        Ok(Launcher { queue, tasks, traps })
    }

    fn demand(&mut self) -> Vec<TaskShape> {
        self.queue
            .iter()
            .map(|t| TaskShape {
                ports: t.container_ports.len() as u32 + t.host_ports,
                ..TaskShape::new(t.milli_cpus, t.mem_mib, 1)
            })
            .collect()
    }

    fn offers(&mut self, offers: Vec<Offer>) -> Vec<Decision> {
        let mut decisions = Vec::new();
        for offer in offers {
            let mut free = offer.resources.clone();
            let mut tasks = Vec::new();
            let mut waiting = Vec::new();
            for t in std::mem::take(&mut self.queue) {
                let wanted = t.container_ports.len() as u32 + t.host_ports;
                let fits = free.milli_cpus >= t.milli_cpus && free.mem_mib >= t.mem_mib;
                let mut ports_left = free.ports.clone();
                match (fits, take_ports(&mut ports_left, wanted)) {
                    (true, Some(ports)) => {
                        free.milli_cpus -= t.milli_cpus;
                        free.mem_mib -= t.mem_mib;
                        free.ports = ports_left;
                        let record = Record {
                            history: vec!["staging".into()],
                            ports: ports.clone(),
                            ..Default::default()
                        };
                        self.tasks.insert(t.id.clone(), record);
                        tasks.push(spec(&t, &ports));
                    }
                    _ => waiting.push(t),
                }
            }
            self.queue = waiting;
            if !tasks.is_empty() {
                decisions.push(Decision::Launch(Launch { offer: offer.id, tasks }));
            }
        }
        save(self);
        decisions
    }

    fn status(&mut self, updates: Vec<TaskStatus>) -> Vec<Action> {
        let trap = updates.iter().find(|u| {
            self.traps.get(&u.task_id).is_some_and(|state| *state == plain(format!("{:?}", u.state)))
        });
        let trap = trap.map(|u| u.task_id.clone());
        for u in updates {
            let record = self.tasks.entry(u.task_id.clone()).or_default();
            record.history.push(plain(format!("{:?}", u.state)));
            record.reason = u.reason.map(|r| plain(format!("{r:?}")));
            record.message = u.message;
            record.healthy = u.healthy;
            record.exit_code = u.exit_code;
            record.hostname = u.hostname;
            record.timestamp_ms = u.timestamp_ms;
            if u.state == TaskState::Starting && record.starting_ms.is_none() {
                record.starting_ms = Some(u.timestamp_ms);
            }
        }
        save(self);
        if let Some(task) = trap {
            panic!("asked to trap on this update of task {task}");
        }
        vec![]
    }

    fn handle(&mut self, request: HttpRequest) -> ApiReply {
        let mut actions = vec![];
        let response = match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/tasks") => HttpResponse::json(200, serde_json::to_vec(&self.tasks).unwrap()),
            ("POST", "/tasks") => match serde_json::from_slice::<Template>(&request.body) {
                Ok(t) => {
                    if let Some(state) = &t.trap_on {
                        self.traps.insert(t.id.clone(), state.clone());
                    }
                    self.queue.push(t);
                    save(self);
                    actions.push(Action::Revive);
                    HttpResponse::json(201, "{}")
                }
                Err(e) => HttpResponse::text(422, &e.to_string()),
            },
            ("POST", "/kill") => {
                let mut parts = request.query.split('&');
                let id = parts.next().unwrap_or_default().to_string();
                let grace = parts.next().and_then(|g| g.parse().ok());
                actions.push(Action::Kill(KillTask { task_id: id, grace_period_ms: grace }));
                HttpResponse::json(202, "{}")
            }
            ("POST", "/untrap") => {
                self.traps.remove(&request.query);
                save(self);
                HttpResponse::json(200, "{}")
            }
            _ => HttpResponse::text(404, "no such endpoint"),
        };
        ApiReply { response, actions }
    }
}

export_framework!(Launcher);
