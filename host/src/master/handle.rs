//! [`MasterHandle`]: the master's API, one typed method per operation, for the network API and the local
//! agent. Each method runs its operation on the master thread and answers once what it wrote is committed;
//! work that may take long (compiling a plugin, probing a framework version) runs off that thread first.
//!
//! Also [`start`], which opens the master on its thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use berth_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::admin::NewFramework;
use super::calls::Done;
use super::core::{Command, Master};
use super::metrics::Metrics;
use super::types::{ApiError, Event, Events, MasterConfig};
use super::views::{CycleView, FrameworkView, NodeView, PluginView, TaskFilter, TaskView};
use crate::runtime::bindings::{HttpRequest, HttpResponse, TaskStatus};
use crate::runtime::{NewVersion, PluginKind, PluginLimits, Registry, VersionInfo};
use crate::store::Store;

/// A connection from an agent: what the master sends it, and a sender for what it says.
#[derive(Debug)]
pub struct AgentConnection {
    /// Receives what the master sends this agent; ends when the master drops the connection.
    pub outbound: mpsc::UnboundedReceiver<Box<pb::MasterMessage>>,
    /// Hands the agent's messages to the master; dropping it tells the master the agent is gone.
    pub sender: AgentSender,
}

/// The agent's side of a connection.
#[derive(Debug)]
pub struct AgentSender {
    id: u64,
    handle: MasterHandle,
}

impl AgentSender {
    /// Hands a message from the agent to the master, stamped with when it arrived.
    pub fn send(&self, message: pb::AgentMessage) -> Result<(), ApiError> {
        use pb::agent_message::Message as M;
        let queued = self.handle.commands.len();
        if queued >= MAX_QUEUED_AGENT_MESSAGES_STALLED
            && matches!(message.message, Some(M::Heartbeat(_) | M::Status(_)))
            && (queued >= MAX_QUEUED_AGENT_MESSAGES || self.handle.progress.failure().is_some())
        {
            tracing::debug!(target: "berth.master", queued, "the master is behind: an agent's heartbeat or status dropped (it is sent again)");
            return Ok(());
        }
        self.handle.send(Command::AgentMessage(self.id, message, Instant::now()))
    }
}

impl Drop for AgentSender {
    fn drop(&mut self) {
        let _ = self.handle.send(Command::AgentDisconnected(self.id));
    }
}

/// A plugin component to load.
#[derive(Debug)]
pub struct Upload {
    pub name: String,
    pub kind: PluginKind,
    pub bytes: Vec<u8>,
    pub config: String,
    pub limits: PluginLimits,
    /// Make it the active version (a hot swap when the plugin is in use).
    pub activate: bool,
}

/// A cheap, cloneable handle to the master thread.
#[derive(Clone, Debug)]
pub struct MasterHandle {
    commands: crossbeam_channel::Sender<Command>,
    events: Events,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    next_connection: Arc<AtomicU64>,
    /// Uploads of one plugin must not race for a version number.
    uploads: Arc<tokio::sync::Mutex<()>>,
    /// The store writer's progress: whether the store can be written.
    progress: Arc<super::Progress>,
}

/// Requests waiting for the master thread, at most; more are refused with 503 (the master is behind:
/// its store cannot be written, say) rather than piling up in memory.
const MAX_QUEUED_CALLS: usize = 10_000;
/// Agent messages waiting, at most. Beyond, heartbeats and status updates are dropped (agents send
/// heartbeats again and retry status updates until acknowledged); registrations, log chunks and
/// disconnections are kept. Lower while the store cannot be written, when nothing moves anyway.
const MAX_QUEUED_AGENT_MESSAGES: usize = 1_000_000;
const MAX_QUEUED_AGENT_MESSAGES_STALLED: usize = 10_000;

fn stopped<T>(_: T) -> ApiError {
    ApiError::Unavailable("the master stopped before answering".into())
}

impl MasterHandle {
    fn send(&self, command: Command) -> Result<(), ApiError> {
        self.commands.send(command).map_err(|_| ApiError::Unavailable("the master has stopped".into()))
    }

    /// Sends a request unless too many wait already.
    fn send_call(&self, command: Command) -> Result<(), ApiError> {
        let queued = self.commands.len();
        if queued >= MAX_QUEUED_CALLS {
            let why = match self.progress.failure() {
                Some((error, _)) => format!("; its store cannot be written ({error}): see /health"),
                None => String::new(),
            };
            return Err(ApiError::Unavailable(format!(
                "the master is behind by {queued} requests{why}; try again later"
            )));
        }
        self.send(command)
    }

    /// Why the store cannot be written, and since when (ms since the epoch), while it cannot.
    pub fn store_failure(&self) -> Option<(String, u64)> {
        self.progress.failure()
    }

    /// Runs `f` on the master thread and returns its result once the writes it made are committed.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Master) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.send_call(Command::Run(Box::new(move |master| {
            let result = f(master);
            master.effects.after_commit(Box::new(move || {
                let _ = tx.send(result);
            }));
        })))?;
        rx.await.map_err(stopped)
    }

    /// Like [`MasterHandle::call`], for operations that can be refused.
    async fn try_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Master) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.call(f).await?
    }

    /// Runs `f` on the master thread and answers at once (reads that wrote nothing).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Master) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.send_call(Command::Run(Box::new(move |master| {
            let _ = tx.send(f(master));
        })))?;
        rx.await.map_err(stopped)
    }

    /// Answers once the master thread has gone round its loop: it is alive and serving.
    pub async fn health(&self) -> Result<(), ApiError> {
        self.read(|_| ()).await
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ApiError> {
        self.read(Master::nodes_view).await
    }

    pub async fn frameworks(&self) -> Result<Vec<FrameworkView>, ApiError> {
        self.read(Master::frameworks_view).await
    }

    /// One framework as listed.
    pub async fn framework(&self, name: String) -> Result<FrameworkView, ApiError> {
        self.read(move |m| {
            m.frameworks_view()
                .into_iter()
                .find(|f| f.name == name)
                .ok_or_else(|| ApiError::NotFound(format!("no framework named `{name}`")))
        })
        .await?
    }

    pub async fn tasks(&self, filter: TaskFilter) -> Result<Vec<TaskView>, ApiError> {
        self.read(move |m| m.tasks_view(&filter).map_err(ApiError::InvalidArgument)).await?
    }

    /// The plugins and the allocator in use.
    pub async fn plugins(&self) -> Result<(Vec<PluginView>, String), ApiError> {
        self.read(|m| (m.plugins_view(), m.allocator().to_string())).await
    }

    /// The Prometheus exposition: the master's state read in one pass on its thread, encoded here.
    pub async fn metrics(&self) -> Result<String, ApiError> {
        let gauges = self.read(Master::gauges).await?;
        Ok(super::metrics::encode(self.metrics.clone(), gauges, &self.registry))
    }

    pub async fn cycles(&self) -> Result<Vec<CycleView>, ApiError> {
        self.read(Master::cycles_view).await
    }

    /// The current statuses of the tasks matching `filter`, for the start of a watch.
    pub async fn statuses(&self, filter: TaskFilter) -> Result<Vec<(String, String, TaskStatus)>, ApiError> {
        self.read(move |m| m.statuses(&filter).map_err(ApiError::InvalidArgument)).await?
    }

    /// Adds a framework; answers once its plugin's `init` has accepted it and it is persisted.
    pub async fn add_framework(&self, new: NewFramework) -> Result<FrameworkView, ApiError> {
        let name = new.name.clone();
        let (tx, rx) = oneshot::channel();
        self.send(Command::Run(Box::new(move |m| m.add_framework(new, tx))))?;
        rx.await.map_err(stopped)??;
        self.framework(name).await
    }

    pub async fn set_weight(&self, name: String, weight: f64) -> Result<FrameworkView, ApiError> {
        let n = name.clone();
        self.try_call(move |m| m.set_weight(&n, weight)).await?;
        self.framework(name).await
    }

    /// Stops (`true`) or resumes offers to a framework.
    pub async fn set_suppressed(&self, name: String, suppressed: bool) -> Result<FrameworkView, ApiError> {
        let n = name.clone();
        self.try_call(move |m| m.set_suppressed(&n, suppressed)).await?;
        self.framework(name).await
    }

    /// Removes a framework; returns how many tasks were killed.
    pub async fn remove_framework(&self, name: String) -> Result<u32, ApiError> {
        self.try_call(move |m| m.remove_framework(&name)).await
    }

    /// Drains a node (by id, agent id or hostname).
    /// Sets what tasks on a node may do; `None` leaves a setting as it is.
    pub async fn set_node_policy(
        &self,
        name: String,
        privileged: Option<bool>,
        host_mounts: Option<bool>,
        host_network: Option<bool>,
    ) -> Result<NodeView, ApiError> {
        self.try_call(move |m| {
            let id = m.nodes.find(&name).ok_or_else(|| ApiError::NotFound(format!("no node `{name}`")))?;
            m.set_node_policy(id, privileged, host_mounts, host_network);
            Ok(m.nodes_view().into_iter().find(|n| n.id == id).expect("node exists"))
        })
        .await
    }

    pub async fn drain_node(&self, name: String) -> Result<NodeView, ApiError> {
        self.try_call(move |m| {
            let id = m.nodes.find(&name).ok_or_else(|| ApiError::NotFound(format!("no node `{name}`")))?;
            m.drain_node(id);
            Ok(m.nodes_view().into_iter().find(|n| n.id == id).expect("node exists"))
        })
        .await
    }

    /// Kills a task (`framework` may be empty when the id is unique).
    pub async fn kill_task(
        &self,
        framework: String,
        task_id: String,
        grace_ms: Option<u32>,
    ) -> Result<(), ApiError> {
        self.try_call(move |m| {
            let key = m.resolve_task(&framework, &task_id)?;
            m.kill_task(&key, grace_ms)
        })
        .await
    }

    /// Opens a stream of a task's output.
    pub async fn open_logs(
        &self,
        framework: String,
        task_id: String,
        follow: bool,
        tail: u32,
    ) -> Result<mpsc::Receiver<pb::LogChunk>, ApiError> {
        self.try_call(move |m| m.open_logs(&framework, &task_id, follow, tail)).await
    }

    /// Compiles, checks and loads a plugin component (and, for a framework plugin being activated, checks
    /// it can run every framework on the plugin), off the master thread; then records it.
    pub async fn upload(&self, upload: Upload) -> Result<VersionInfo, ApiError> {
        let _serial = self.uploads.lock().await;
        let registry = self.registry.clone();
        let Upload { name, kind, bytes, config, limits, activate } = upload;
        let bytes = Arc::new(bytes);
        let compile = bytes.clone();
        // Compiling takes tens of milliseconds to seconds.
        let version = tokio::task::spawn_blocking(move || {
            registry.prepare(NewVersion { name: &name, kind, bytes: &compile, config, limits, number: None })
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("compilation failed: {e}")))??;
        if activate {
            self.probe(version.clone()).await?;
        }
        self.try_call(move |m| m.add_version(version, &bytes, activate)).await
    }

    /// Checks `version` against every framework that would run it, off the master thread.
    async fn probe(&self, version: Arc<crate::runtime::Version>) -> Result<(), ApiError> {
        let inputs = self.read(move |m| m.probe_inputs(version)).await?;
        tokio::task::spawn_blocking(move || inputs.probe())
            .await
            .map_err(|e| ApiError::Unavailable(format!("probing failed: {e}")))?
    }

    /// Makes a loaded version active.
    pub async fn activate_version(&self, name: String, number: u32) -> Result<VersionInfo, ApiError> {
        let n = name.clone();
        let version = self.read(move |m| m.version(&n, number)).await??;
        self.probe(version).await?;
        self.try_call(move |m| m.activate_version(&name, number)).await
    }

    /// Goes back to the previously active version.
    pub async fn rollback_plugin(&self, name: String) -> Result<VersionInfo, ApiError> {
        let registry = self.registry.clone();
        let target = registry.rollback_target(&name).map_err(ApiError::from)?;
        let number = target.number;
        self.probe(target).await?;
        self.try_call(move |m| m.rollback_plugin(&name, number)).await
    }

    pub async fn remove_plugin(&self, name: String) -> Result<(), ApiError> {
        self.try_call(move |m| m.remove_plugin(&name)).await
    }

    /// Chooses the allocator; returns the previous one.
    pub async fn use_allocator(&self, name: String) -> Result<String, ApiError> {
        self.try_call(move |m| m.use_allocator(&name)).await
    }

    /// Serves one request to a framework's HTTP API through its plugin's `handle`. An anonymous one
    /// (`authenticated` false) may read but changes nothing: its store writes and actions are dropped.
    pub async fn framework_http(
        &self,
        name: String,
        request: HttpRequest,
        authenticated: bool,
    ) -> Result<HttpResponse, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Run(Box::new(move |m| m.framework_http(&name, request, authenticated, tx))))?;
        rx.await.map_err(stopped)?
    }

    /// Opens a connection for an agent over the network; its first message must be `Register`.
    pub fn connect_agent(&self) -> Result<AgentConnection, ApiError> {
        self.connect(false)
    }

    /// Opens a connection for `berth serve`'s own agent, in this process: what it says of its node's policy
    /// is the operator's configuration, and is believed.
    pub fn connect_local_agent(&self) -> Result<AgentConnection, ApiError> {
        self.connect(true)
    }

    fn connect(&self, local: bool) -> Result<AgentConnection, ApiError> {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let (tx, outbound) = mpsc::unbounded_channel();
        self.send(Command::AgentConnected(id, tx, local))?;
        Ok(AgentConnection { outbound, sender: AgentSender { id, handle: self.clone() } })
    }

    /// Status updates and framework events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Publishes an event to watchers (the host's own, such as an event stream detaching).
    pub fn publish(&self, event: Event) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Arc::new(event));
        }
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Asks the master to finish its iteration, commit, and stop.
    pub fn shutdown(&self) {
        let _ = self.send(Command::Shutdown);
    }
}

/// Restores the master from `store` and starts its thread. A panic on the master thread, its store
/// writer's or a plugin worker's ends the process (crash-only: the store and recovery make a restart
/// safe, where a process that answers nothing is not).
pub fn start(
    config: MasterConfig,
    store: Arc<Store>,
    registry: Arc<Registry>,
) -> anyhow::Result<(MasterHandle, std::thread::JoinHandle<()>)> {
    crash_on_panic();
    let (commands, rx) = crossbeam_channel::unbounded();
    let (events, _) = broadcast::channel(16_384);
    let metrics = Arc::new(Metrics::default());
    let done: Arc<dyn Fn(Done) + Send + Sync> = {
        let commands = commands.clone();
        Arc::new(move |done| {
            let _ = commands.send(Command::Done(Box::new(done)));
        })
    };
    let loaded = store.load().context("reading the store")?;
    let mut master = Master::new(config, store, registry.clone(), events.clone(), done, metrics.clone())
        .context("starting the master's threads")?;
    let handle = MasterHandle {
        commands,
        events,
        registry,
        metrics,
        next_connection: Arc::new(AtomicU64::new(1)),
        uploads: Arc::default(),
        progress: master.effects.progress().clone(),
    };
    // Compiling stored plugins is the slow part of a start; it happens here, before the API serves.
    master.restore(loaded);
    master.install_bundled()?;
    master.effects.flush();
    let thread = std::thread::Builder::new()
        .name("berth-master".into())
        .spawn(move || master.run(rx))
        .context("spawning the master thread")?;
    Ok((handle, thread))
}

/// Makes a panic on one of the master's threads end the process.
fn crash_on_panic() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let thread = std::thread::current();
            let name = thread.name().unwrap_or_default();
            if name == "berth-master" || name == "berth-store" || name.starts_with("berth-plugin-") {
                eprintln!(
                    "berth: the {name} thread panicked; exiting so that a restart recovers from the store"
                );
                std::process::exit(70);
            }
        }));
    });
}
