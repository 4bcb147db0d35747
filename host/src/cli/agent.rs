//! `berth agent`: joins a master and runs its tasks on this node.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use berth_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use crate::agent::container::Policy;
use crate::agent::docker::{DockerBackend, DockerOptions};
use crate::agent::simulated::SimulatedBackend;
use crate::agent::{self, AgentConfig, Backend, Transport};
use crate::config::{default_data_dir, parse_ports};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The master's API address.
    #[arg(long, env = "BERTH_MASTER", default_value = "http://127.0.0.1:8080")]
    master: String,
    /// The agent token (the master's `<data-dir>/agent-token`).
    #[arg(long, env = "BERTH_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where the agent keeps its id [default: ~/.local/share/berth-agent].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The node's hostname as the master shows it [default: this machine's].
    #[arg(long)]
    hostname: Option<String>,
    /// Run tasks without containers (scale tests and benchmarks only).
    #[arg(long)]
    simulate: bool,
    /// CPUs to offer [default: detected].
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory to offer, MiB [default: detected].
    #[arg(long)]
    mem: Option<u64>,
    /// Disk to offer, MiB.
    #[arg(long, default_value_t = 100 * 1024)]
    disk: u64,
    /// Host ports to offer.
    #[arg(long, default_value = "31000-32000")]
    ports: String,
    /// A node attribute, `name=value`; repeatable.
    #[arg(long = "attribute", value_name = "NAME=VALUE")]
    attributes: Vec<String>,
    /// Run privileged containers when a task asks.
    #[arg(long)]
    allow_privileged: bool,
    /// Bind-mount host paths when a task asks.
    #[arg(long)]
    allow_host_mounts: bool,
    /// How long exited containers (and their logs) are kept, seconds.
    #[arg(long, default_value_t = 900)]
    log_retention_s: u64,
}

/// This machine's hostname.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The agent's id: kept in the work directory so a restarted agent is the same node.
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

pub async fn run(args: Args) -> anyhow::Result<()> {
    super::init_tracing();
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir("berth-agent")?,
    };
    std::fs::create_dir_all(&work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
    let hostname = args.hostname.clone().unwrap_or_else(hostname);
    let agent_id = agent_id(&work_dir, &hostname)?;
    let mut attributes = Vec::new();
    for a in &args.attributes {
        let (name, value) =
            a.split_once('=').with_context(|| format!("--attribute `{a}` is not NAME=VALUE"))?;
        attributes.push(pb::Attribute { name: name.trim().into(), value: value.trim().into() });
    }
    let ports = parse_ports(&args.ports)
        .context("--ports")?
        .into_iter()
        .map(|(b, e)| pb::PortRange { begin: b.into(), end: e.into() })
        .collect();

    let (tx, rx) = mpsc::unbounded_channel();
    let (backend, cpus, mem): (Arc<dyn Backend>, f64, u64) = if args.simulate {
        tracing::warn!(target: "berth.agent", "simulated backend: tasks run no containers");
        (
            Arc::new(SimulatedBackend::new(&agent_id, &hostname, tx)),
            args.cpus.unwrap_or(4.0),
            args.mem.unwrap_or(8 * 1024),
        )
    } else {
        let options = DockerOptions {
            policy: Policy {
                allow_privileged: args.allow_privileged,
                allow_host_mounts: args.allow_host_mounts,
            },
            retention: std::time::Duration::from_secs(args.log_retention_s),
        };
        let (backend, detected) = DockerBackend::connect(&agent_id, &hostname, options, tx).await?;
        let cpus = args.cpus.unwrap_or(detected.milli_cpus as f64 / 1000.0);
        (Arc::new(backend), cpus, args.mem.unwrap_or_else(|| super::serve::offered_memory(detected.mem_mib)))
    };
    let config = AgentConfig {
        agent_id,
        hostname,
        resources: pb::Resources {
            milli_cpus: (cpus * 1000.0).round() as u64,
            mem_mib: mem,
            disk_mib: args.disk,
            gpus: 0,
            ports,
        },
        attributes,
        allow_privileged: args.allow_privileged,
        allow_host_mounts: args.allow_host_mounts,
    };
    tracing::info!(target: "berth.agent", agent = %config.agent_id, master = %args.master, "agent starting");
    let (stop_tx, stop_rx) = watch::channel(false);
    let transport = Transport::Remote { endpoint: args.master.clone(), token: args.token.clone() };
    let agent = tokio::spawn(agent::run(config, backend, rx, transport, stop_rx));
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        result = agent => return result.context("the agent task failed")?,
    }
    let _ = stop_tx.send(true);
    Ok(())
}
