//! Putting an agent together from its settings: the backend (Docker or simulated), the node's resources
//! (detected or given) and attributes. One assembly for the agent `berth serve` runs in its own process and
//! for `berth agent`, from one settings struct with one set of defaults.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use berth_proto::v1 as pb;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::container::Policy;
use super::docker::{DockerBackend, DockerOptions};
use super::simulated::SimulatedBackend;
use super::{AgentConfig, Backend};
use crate::config::parse_ports;

/// Which backend an agent runs tasks with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The local Docker engine.
    Docker,
    /// No containers (scale tests and benchmarks only).
    Simulated,
}

/// An agent's settings: the `[agent]` section of `berth serve`'s configuration, and `berth agent`'s flags.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// `berth serve` only: run an agent in the master's process (`false`: agents join with `berth agent`).
    pub enabled: bool,
    /// `berth serve` only: run this many simulated agents in-process instead (scale tests and benchmarks).
    pub simulate_nodes: u32,
    pub backend: BackendKind,
    /// CPUs to offer [default: what the engine reports; 8 simulated].
    pub cpus: Option<f64>,
    /// Memory to offer, MiB [default: what the engine reports, less a reserve; 32 GiB simulated].
    pub mem_mib: Option<u64>,
    /// Disk to offer, MiB.
    pub disk_mib: u64,
    /// Host ports to offer, e.g. `31000-32000`.
    pub ports: String,
    /// Node attributes (placement constraints use them).
    pub attributes: BTreeMap<String, String>,
    /// Run privileged containers when a task asks.
    pub allow_privileged: bool,
    /// Bind-mount host paths when a task asks.
    pub allow_host_mounts: bool,
    /// Run tasks on the host's network when they ask (Marathon's default network mode).
    pub allow_host_network: bool,
    /// The node's hostname as the master shows it [default: this machine's].
    pub hostname: Option<String>,
    /// How long exited containers (and their logs) are kept, seconds.
    pub log_retention_s: u64,
}

/// CPUs a simulated node offers unless told otherwise.
const SIMULATED_CPUS: f64 = 8.0;
/// Memory a simulated node offers unless told otherwise, MiB.
const SIMULATED_MEM_MIB: u64 = 32 * 1024;

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            enabled: true,
            simulate_nodes: 0,
            backend: BackendKind::Docker,
            cpus: None,
            mem_mib: None,
            disk_mib: 100 * 1024,
            ports: "31000-32000".into(),
            attributes: BTreeMap::new(),
            allow_privileged: false,
            allow_host_mounts: false,
            allow_host_network: true,
            hostname: None,
            log_retention_s: 900,
        }
    }
}

impl AgentSettings {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        parse_ports(&self.ports).context("agent.ports")?;
        if let Some(cpus) = self.cpus
            && !(cpus > 0.0 && cpus.is_finite())
        {
            anyhow::bail!("agent.cpus must be above 0, got {cpus}");
        }
        Ok(())
    }

    /// The hostname: as set, or this machine's.
    pub fn hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(machine_hostname)
    }
}

/// An agent ready to run: who it is, its backend, and the backend's status updates.
pub struct Assembled {
    pub config: AgentConfig,
    pub backend: Arc<dyn Backend>,
    pub events: mpsc::UnboundedReceiver<Box<pb::TaskStatus>>,
}

/// Creates the backend and works out the node's resources.
pub async fn assemble(
    settings: &AgentSettings,
    agent_id: &str,
    hostname: &str,
    credential_file: Option<std::path::PathBuf>,
) -> anyhow::Result<Assembled> {
    let (tx, events) = mpsc::unbounded_channel();
    let (backend, cpus, mem_mib): (Arc<dyn Backend>, f64, u64) = match settings.backend {
        BackendKind::Simulated => (
            Arc::new(SimulatedBackend::new(agent_id, hostname, tx)),
            settings.cpus.unwrap_or(SIMULATED_CPUS),
            settings.mem_mib.unwrap_or(SIMULATED_MEM_MIB),
        ),
        BackendKind::Docker => {
            let options = DockerOptions {
                policy: Policy {
                    allow_privileged: settings.allow_privileged,
                    allow_host_mounts: settings.allow_host_mounts,
                    allow_host_network: settings.allow_host_network,
                    disk_quota: false,
                },
                retention: Duration::from_secs(settings.log_retention_s),
            };
            let (backend, detected) = DockerBackend::connect(agent_id, hostname, options, tx).await?;
            let cpus = settings.cpus.unwrap_or(detected.milli_cpus as f64 / 1000.0);
            (Arc::new(backend), cpus, settings.mem_mib.unwrap_or_else(|| offered_memory(detected.mem_mib)))
        }
    };
    let ports = parse_ports(&settings.ports)?
        .into_iter()
        .map(|(b, e)| pb::PortRange { begin: b.into(), end: e.into() })
        .collect();
    let config = AgentConfig {
        agent_id: agent_id.to_string(),
        hostname: hostname.to_string(),
        resources: pb::Resources {
            milli_cpus: (cpus * 1000.0).round() as u64,
            mem_mib,
            disk_mib: settings.disk_mib,
            gpus: 0,
            ports,
        },
        attributes: settings
            .attributes
            .iter()
            .map(|(name, value)| pb::Attribute { name: name.clone(), value: value.clone() })
            .collect(),
        allow_privileged: settings.allow_privileged,
        allow_host_mounts: settings.allow_host_mounts,
        allow_host_network: settings.allow_host_network,
        credential_file,
    };
    Ok(Assembled { config, backend, events })
}

/// Memory to offer from what the machine has: all but a reserve for the system (1 GiB or 10%, the
/// smaller).
pub fn offered_memory(total_mib: u64) -> u64 {
    total_mib.saturating_sub((total_mib / 10).min(1024))
}

/// This machine's hostname.
pub fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The agent's id: kept in its work directory so a restarted agent is the same node.
pub fn agent_id(work_dir: &std::path::Path, hostname: &str) -> anyhow::Result<String> {
    let path = work_dir.join("agent-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let safe: String =
        hostname.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let id = format!("{safe}-{}", hex::encode(bytes));
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}
