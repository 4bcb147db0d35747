//! `berth serve`: a master, its API, and a local agent, with the bundled plugins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::agent::{self, AgentSettings, Assembled, BackendKind, Transport};
use crate::api::{self, Auth};
use crate::config::{ServeConfig, StoreBackend, token_file};
use crate::ha;
use crate::master::{self, MasterHandle};
use crate::runtime::{ArtifactCache, ArtifactLedger, Registry, Runtime};
use crate::store::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A TOML configuration file (every setting has a default; flags override the file).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where state lives [default: $BERTH_DATA_DIR, else ~/.local/share/berth].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// API address (gRPC and HTTP) [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Do not run a local agent (agents join with `berth agent`).
    #[arg(long)]
    no_local_agent: bool,
    /// Instead of the Docker agent, run this many simulated agents in-process (scale tests and
    /// benchmarks only: they run no containers).
    #[arg(long)]
    simulate_nodes: Option<u32>,
    /// How long an agent may be silent before its tasks are lost, milliseconds.
    #[arg(long)]
    agent_timeout_ms: Option<u64>,
    /// Require the operator token for reads too.
    #[arg(long)]
    protect_reads: bool,
    /// Serve the API over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Accept client certificates issued by this CA (PEM): agents may present one.
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// Host ports the local agent offers [default: 31000-32000].
    #[arg(long)]
    agent_ports: Option<String>,
    /// Where compiled plugins are cached [default: <data-dir>/plugins/cache].
    #[arg(long)]
    artifact_cache: Option<PathBuf>,
}

impl Args {
    fn config(&self) -> anyhow::Result<ServeConfig> {
        let mut config = ServeConfig::read(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = Some(dir.clone());
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if self.no_local_agent {
            config.agent.enabled = false;
        }
        if let Some(n) = self.simulate_nodes {
            config.agent.simulate_nodes = n;
        }
        if let Some(ms) = self.agent_timeout_ms {
            config.master.agent_timeout_ms = ms;
        }
        config.protect_reads |= self.protect_reads;
        if let Some(cert) = &self.tls_cert {
            config.tls.cert = Some(cert.clone());
        }
        if let Some(key) = &self.tls_key {
            config.tls.key = Some(key.clone());
        }
        if let Some(ca) = &self.tls_client_ca {
            config.tls.client_ca = Some(ca.clone());
        }
        if let Some(dir) = &self.artifact_cache {
            config.artifact_cache = Some(dir.clone());
        }
        if let Some(ports) = &self.agent_ports {
            config.agent.ports = ports.clone();
        }
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    super::init_tracing();
    let config = args.config()?;
    let data_dir = config.data_dir()?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let auth = Auth {
        token: match &config.token {
            Some(t) => t.clone(),
            None => token_file(&data_dir.join("token"), "operator token")?,
        },
        agent_token: match &config.agent_token {
            Some(t) => t.clone(),
            None => token_file(&data_dir.join("agent-token"), "agent token")?,
        },
        protect_reads: config.protect_reads,
        allowed_hosts: {
            let mut names = config.allowed_hosts.clone();
            names.push(crate::agent::machine_hostname());
            names
        },
    };

    let store = Arc::new(match config.store.backend {
        StoreBackend::Redb => {
            Store::open(&data_dir).with_context(|| format!("opening the store in {}", data_dir.display()))?
        }
        StoreBackend::Etcd => {
            let etcd = crate::store::etcd::Etcd::connect(&config.store.etcd).context("connecting to etcd")?;
            Store::open_with_etcd(&data_dir, etcd)
                .with_context(|| format!("opening the local store in {}", data_dir.display()))?
        }
    });
    let cache_dir = config.artifact_cache.clone().unwrap_or_else(|| data_dir.join("plugins/cache"));
    let ledger: Arc<dyn ArtifactLedger> = store.clone();
    let cache = ArtifactCache::open(&cache_dir, Some(ledger))
        .with_context(|| format!("opening the artifact cache {}", cache_dir.display()))?;
    let runtime = Runtime::new(Some(cache))?;
    let registry = Arc::new(Registry::new(runtime.clone()));
    let tls = config.tls.server_config()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let advertise = config.advertise.clone().unwrap_or_else(|| format!("{scheme}://{address}"));

    // With several masters: stand by (proxying the API to the leader) until this one leads.
    let mut election = None;
    let (listener, masters) = match config.store.backend {
        StoreBackend::Redb => (listener, single_master(advertise)),
        StoreBackend::Etcd => {
            let elected = ha::Election::start(store.clone(), advertise).await?;
            election = Some(elected.clone());
            let election = elected;
            tokio::spawn(ha::warm_plugins(election.clone(), runtime));
            let listener = listener.into_std()?;
            let standby_listener = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (stop_standby, standby_stopped) = tokio::sync::oneshot::channel::<()>();
            tracing::info!(target: "berth", %address, id = %election.me().id, "standing by: the API is proxied to the leader");
            tokio::spawn(api::serve_standby(
                standby_listener,
                ha::proxy::router(election.clone()),
                auth.clone(),
                tls.clone(),
                async move {
                    let _ = standby_stopped.await;
                },
            ));
            tokio::select! {
                _ = election.won() => {}
                _ = wait_for_signal() => {
                    tracing::info!(target: "berth", "shutting down");
                    election.resign().await;
                    return Ok(());
                }
            }
            // Connections the standby accepted stay with it; new ones reach the leader's API below.
            let _ = stop_standby.send(());
            let routes = axum::Router::new().route(
                "/v1/masters",
                axum::routing::get(move || {
                    let election = election.clone();
                    async move { ha::proxy::masters_reply(&election).await }
                }),
            );
            (listener, routes)
        }
    };

    let master_config = config.master_config(data_dir.clone());
    // Restoring compiles the stored plugins (or loads their artifacts): off the async runtime.
    let (handle, master_thread) =
        tokio::task::spawn_blocking(move || master::start(master_config, store, registry))
            .await
            .context("starting the master")??;
    tracing::info!(target: "berth", %address, scheme, data_dir = %data_dir.display(), "berth is serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut agents = tokio::task::JoinSet::new();
    start_local_agents(&config, &handle, &stop_rx, &mut agents).await?;

    let shutdown = {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    };
    let server =
        tokio::spawn(api::serve(listener, handle.clone(), auth, config.plugins, masters, tls, shutdown));
    wait_for_signal().await;
    tracing::info!(target: "berth", "shutting down");
    let _ = stop_tx.send(true);
    while agents.join_next().await.is_some() {}
    let _ = server.await;
    handle.shutdown();
    let _ = tokio::task::spawn_blocking(move || master_thread.join()).await;
    // Only once the master has stopped: nothing it decided can be sent after another master leads.
    if let Some(election) = election {
        election.resign().await;
    }
    Ok(())
}

/// `/v1/masters` with the redb store: this master alone, leading since it started.
fn single_master(address: String) -> axum::Router {
    let since = crate::model::unix_ms();
    let body = serde_json::json!({
        "backend": "redb",
        "leader": { "id": "local", "address": address, "since_ms": since },
        "masters": [{ "id": "local", "address": address, "startedMs": since, "leader": true,
                      "leaderSinceMs": since, "self": true }],
    });
    axum::Router::new().route("/v1/masters", axum::routing::get(move || async move { axum::Json(body) }))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn start_local_agents(
    config: &ServeConfig,
    handle: &MasterHandle,
    stop: &watch::Receiver<bool>,
    agents: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let settings = &config.agent;
    if settings.simulate_nodes > 0 || (settings.enabled && settings.backend == BackendKind::Simulated) {
        let nodes = settings.simulate_nodes.max(1);
        let simulated = AgentSettings { backend: BackendKind::Simulated, ..settings.clone() };
        tracing::warn!(target: "berth", nodes, "running simulated agents: tasks run no containers");
        for i in 1..=nodes {
            let id = format!("sim-{i:05}");
            let Assembled { config, backend, events } = agent::assemble(&simulated, &id, &id, None).await?;
            agents.spawn(agent::run(config, backend, events, Transport::Local(handle.clone()), stop.clone()));
        }
        return Ok(());
    }
    if !settings.enabled {
        return Ok(());
    }
    let hostname = settings.hostname();
    let agent_id = agent::agent_id(&config.data_dir()?, &hostname)?;
    let credential = config.data_dir()?.join("agent-credential");
    let Assembled { config: agent, backend, events } =
        agent::assemble(settings, &agent_id, &hostname, Some(credential))
            .await
            .context("starting the local Docker agent (use --no-local-agent to run without one)")?;
    tracing::info!(target: "berth", agent = %agent_id, cpus = agent.resources.milli_cpus as f64 / 1000.0,
        mem_mib = agent.resources.mem_mib, "local Docker agent");
    agents.spawn(agent::run(agent, backend, events, Transport::Local(handle.clone()), stop.clone()));
    Ok(())
}
