//! `berth agent`: joins a master and runs its tasks on this node. Its flags are the `[agent]` settings of
//! `berth serve`'s configuration (`agent::AgentSettings`), with the same defaults.

use std::path::PathBuf;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::agent::{self, AgentSettings, Assembled, BackendKind, Transport};
use crate::config::default_data_dir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The master's API address; with several masters, every master's, comma-separated (the agent
    /// tries them in turn and re-registers with whichever leads).
    #[arg(long, env = "BERTH_MASTER", default_value = "http://127.0.0.1:8080")]
    master: String,
    /// The CA that issued an `https://` master's certificate (PEM) [default: the system's roots].
    #[arg(long, env = "BERTH_CA")]
    ca: Option<PathBuf>,
    /// A client certificate to present to the master (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
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
    /// CPUs to offer [default: detected; 8 simulated].
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory to offer, MiB [default: detected, less a reserve; 32768 simulated].
    #[arg(long)]
    mem: Option<u64>,
    /// Disk to offer, MiB [default: 102400].
    #[arg(long)]
    disk: Option<u64>,
    /// Host ports to offer [default: 31000-32000].
    #[arg(long)]
    ports: Option<String>,
    /// A node attribute, `name=value`; repeatable.
    #[arg(long = "attribute", value_name = "NAME=VALUE")]
    attributes: Vec<String>,
    /// Let this machine run privileged containers. The master must allow the node too
    /// (`berth node allow NODE --privileged true`): an agent cannot grant itself privileges.
    #[arg(long)]
    allow_privileged: bool,
    /// Let this machine bind-mount host paths. The master must allow the node too
    /// (`berth node allow NODE --host-mounts true`).
    #[arg(long)]
    allow_host_mounts: bool,
    /// Refuse tasks on the host's network, whatever the master allows.
    #[arg(long)]
    deny_host_network: bool,
    /// How long exited containers (and their logs) are kept, seconds [default: 900].
    #[arg(long)]
    log_retention_s: Option<u64>,
}

impl Args {
    /// The flags as agent settings, on top of the defaults.
    fn settings(&self) -> anyhow::Result<AgentSettings> {
        let mut settings = AgentSettings {
            backend: if self.simulate { BackendKind::Simulated } else { BackendKind::Docker },
            cpus: self.cpus,
            mem_mib: self.mem,
            hostname: self.hostname.clone(),
            allow_privileged: self.allow_privileged,
            allow_host_mounts: self.allow_host_mounts,
            allow_host_network: !self.deny_host_network,
            ..AgentSettings::default()
        };
        if let Some(disk) = self.disk {
            settings.disk_mib = disk;
        }
        if let Some(ports) = &self.ports {
            settings.ports = ports.clone();
        }
        if let Some(seconds) = self.log_retention_s {
            settings.log_retention_s = seconds;
        }
        for a in &self.attributes {
            let (name, value) =
                a.split_once('=').with_context(|| format!("--attribute `{a}` is not NAME=VALUE"))?;
            settings.attributes.insert(name.trim().into(), value.trim().into());
        }
        settings.validate()?;
        Ok(settings)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    super::init_tracing();
    let settings = args.settings()?;
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir("berth-agent")?,
    };
    std::fs::create_dir_all(&work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
    let hostname = settings.hostname();
    let agent_id = agent::agent_id(&work_dir, &hostname)?;
    if settings.backend == BackendKind::Simulated {
        tracing::warn!(target: "berth.agent", "simulated backend: tasks run no containers");
    }
    let credential = work_dir.join("agent-credential");
    let Assembled { config, backend, events } =
        agent::assemble(&settings, &agent_id, &hostname, Some(credential)).await?;
    tracing::info!(target: "berth.agent", agent = %config.agent_id, master = %args.master, "agent starting");
    let (stop_tx, stop_rx) = watch::channel(false);
    let tls = crate::api::tls::ClientTls {
        ca: args.ca.clone(),
        identity: args.tls_cert.clone().zip(args.tls_key.clone()),
    };
    let endpoints = args.master.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
    let transport = Transport::Remote { endpoints, token: args.token.clone(), tls };
    let agent = tokio::spawn(agent::run(config, backend, events, transport, stop_rx));
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        result = agent => return result.context("the agent task failed")?,
    }
    let _ = stop_tx.send(true);
    Ok(())
}
