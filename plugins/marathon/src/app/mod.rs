//! App definitions as Marathon clients send them, checked and turned into [`App`], the canonical form the
//! scheduler works from (every default filled in), and back into Marathon's JSON.
//!
//! Parsing is lenient where Marathon clients are sloppy (nulls, fields berth does not use) and strict where a
//! wrong value would run something other than what was asked: those get Marathon's 422 shape with the path
//! of each problem.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod json;
mod parse;

pub use json::{health_check_json, to_json};
pub use parse::{normalize_id, parse};

use crate::constraints::Constraint;

/// One problem with a definition: Marathon's `{"path": "/cpus", "errors": ["…"]}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    pub path: String,
    pub errors: Vec<String>,
}

/// Why a definition was refused, as Marathon answers (HTTP 422).
#[derive(Clone, Debug, PartialEq)]
pub struct Invalid(pub Vec<Problem>);

impl Invalid {
    pub fn one(path: &str, error: impl Into<String>) -> Invalid {
        Invalid(vec![Problem { path: path.into(), errors: vec![error.into()] }])
    }

    pub fn body(&self) -> Value {
        json!({ "message": "Object is not valid", "details": self.0 })
    }
}

/// How tasks reach the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    Host,
    Bridge,
    None,
    User(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub container_port: u16,
    /// 0: any port from the offer.
    pub host_port: u16,
    /// The port clients (load balancers) reach the app on; assigned by the framework when 0.
    #[serde(default)]
    pub service_port: u16,
    pub protocol: String,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortDefinition {
    /// The service port (assigned by the framework when 0); with `requirePorts`, also the host port.
    pub port: u16,
    pub protocol: String,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub container_path: String,
    pub host_path: String,
    pub read_only: bool,
}

/// A health check with Marathon's fields and defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `HTTP`, `HTTPS`, `TCP` or `COMMAND` (`MESOS_*` are accepted and run by the agent the same way).
    pub protocol: String,
    pub path: String,
    pub port_index: u32,
    pub command: Option<String>,
    pub grace_period_seconds: u32,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub max_consecutive_failures: u32,
    pub delay_seconds: u32,
    pub ignore_http1xx: bool,
}

/// Which tasks go first when scaling down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillSelection {
    YoungestFirst,
    OldestFirst,
}

/// An app, canonical.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct App {
    /// Absolute path, e.g. `/shop/web`.
    pub id: String,
    pub cmd: Option<String>,
    pub args: Vec<String>,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
    pub instances: u32,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub force_pull_image: bool,
    pub privileged: bool,
    pub network: NetworkMode,
    pub port_mappings: Vec<PortMapping>,
    pub port_definitions: Vec<PortDefinition>,
    pub require_ports: bool,
    pub volumes: Vec<Volume>,
    pub constraints: Vec<Constraint>,
    pub health_checks: Vec<HealthCheck>,
    pub backoff_seconds: f64,
    pub backoff_factor: f64,
    pub max_launch_delay_seconds: f64,
    pub minimum_health_capacity: f64,
    pub maximum_over_capacity: f64,
    pub kill_selection: KillSelection,
    pub task_kill_grace_period_seconds: Option<f64>,
    pub user: Option<String>,
    /// Marathon's `container.docker.parameters`, kept to echo back (berth does not pass them to Docker).
    pub docker_parameters: Vec<Value>,
}

/// The label that sets an app's minimum healthy time, seconds (a berth extension: Marathon's clients
/// know no such field, so it travels as a label).
pub const MIN_HEALTHY_LABEL: &str = "berth.minHealthySeconds";

impl App {
    /// How long a new task must stay ready before it counts toward a deployment, when the app sets it
    /// (label [`MIN_HEALTHY_LABEL`]).
    pub fn min_healthy_ms(&self) -> Option<u64> {
        let seconds: f64 = self.labels.get(MIN_HEALTHY_LABEL)?.trim().parse().ok()?;
        (seconds.is_finite() && seconds >= 0.0).then_some((seconds * 1000.0) as u64)
    }

    /// Thousandths of a core per task.
    pub fn milli_cpus(&self) -> u64 {
        ((self.cpus * 1000.0).ceil() as u64).max(1)
    }

    /// MiB of memory per task.
    pub fn mem_mib(&self) -> u64 {
        self.mem.ceil() as u64
    }

    pub fn disk_mib(&self) -> u64 {
        self.disk.ceil() as u64
    }

    /// The app's service ports, in port order (Marathon's `ports`).
    pub fn service_ports(&self) -> Vec<u16> {
        match self.network {
            NetworkMode::Host => self.port_definitions.iter().map(|p| p.port).collect(),
            NetworkMode::Bridge | NetworkMode::User(_) => {
                self.port_mappings.iter().map(|m| m.service_port).collect()
            }
            NetworkMode::None => Vec::new(),
        }
    }

    /// The service ports, to set in place (see [`App::service_ports`]).
    pub fn service_ports_mut(&mut self) -> Vec<&mut u16> {
        match self.network {
            NetworkMode::Host => self.port_definitions.iter_mut().map(|p| &mut p.port).collect(),
            NetworkMode::Bridge | NetworkMode::User(_) => {
                self.port_mappings.iter_mut().map(|m| &mut m.service_port).collect()
            }
            NetworkMode::None => Vec::new(),
        }
    }

    /// Host ports each task needs.
    pub fn port_count(&self) -> usize {
        match self.network {
            NetworkMode::Host => self.port_definitions.len(),
            NetworkMode::Bridge | NetworkMode::User(_) => self.port_mappings.len(),
            NetworkMode::None => 0,
        }
    }

    /// Host ports each task must have exactly (0 where any will do), in port order.
    pub fn fixed_ports(&self) -> Vec<u16> {
        match self.network {
            NetworkMode::Host => {
                self.port_definitions.iter().map(|p| if self.require_ports { p.port } else { 0 }).collect()
            }
            NetworkMode::Bridge | NetworkMode::User(_) => {
                self.port_mappings.iter().map(|m| m.host_port).collect()
            }
            NetworkMode::None => Vec::new(),
        }
    }

    /// Whether two definitions differ in anything but the instance count (a config change, which means a
    /// new version and a rolling restart; an instance change is a scaling).
    pub fn config_differs(&self, other: &App) -> bool {
        let mut a = self.clone();
        a.instances = other.instances;
        a != *other
    }

    /// The kill grace period for tasks, in milliseconds.
    pub fn kill_grace_ms(&self) -> u32 {
        self.task_kill_grace_period_seconds.map(|s| (s * 1000.0) as u32).unwrap_or(3_000)
    }
}
