//! The master: nodes and their agents, frameworks, tasks, offers, and the offer cycle that runs the
//! plugins. It owns all scheduling state and the store.
//!
//! All of it lives on one thread (`berth-master`), which takes commands from a channel: API calls (as
//! closures run against the state), agent connections and their messages. Each loop iteration handles
//! what has arrived, runs housekeeping (agent timeouts, filters, framework ticks), an offer cycle when
//! one is due, and the delivery of status updates to frameworks; then it commits the iteration's writes
//! in one transaction and only then sends replies, launches and acknowledgements. Plugin calls run on
//! this thread too: it is not part of the async runtime, which wasmtime's synchronous WASI requires.
//!
//! It does not own plugin execution (the runtime does), containers (agents do), or the network API
//! (the `api` module does).

mod agents;
mod core;
mod cycle;
mod frameworks;
mod kv;
mod logs;
mod plugins;
mod query;
mod state;
mod tasks;
pub(crate) mod validate;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use core::Master;
pub use frameworks::NewFramework;
pub use kv::FrameworkKv;
pub use query::{CycleView, FrameworkView, NodeView, PluginView, TaskFilter, TaskView};
pub use writer::Progress;

use crate::runtime::bindings as abi;
use crate::runtime::{PluginLimits, Registry};

/// The default of [`MasterConfig::max_launches_per_cycle`].
pub const MAX_LAUNCHES_PER_CYCLE: u32 = 1_000;

/// How the master behaves. Read once at start.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// Where the store and plugin components live.
    pub data_dir: PathBuf,
    /// Longest time between offer cycles when nothing triggers one.
    pub cycle_interval: Duration,
    /// Shortest time between two event-triggered cycles, so a burst of events makes one cycle.
    pub cycle_min_gap: Duration,
    /// The most tasks a framework's demand may ask for in one cycle; the rest is asked for in the next
    /// cycles. Bounds a cycle's work, so status updates and API calls are not held behind one huge cycle.
    pub max_launches_per_cycle: u32,
    /// How long an agent may stay silent before its node is unreachable and its tasks lost.
    pub agent_timeout: Duration,
    /// How often agents send heartbeats.
    pub heartbeat_interval: Duration,
    /// How long finished tasks stay listed (and known to reconciliation).
    pub task_retention: Duration,
    /// Limits for plugins uploaded without their own.
    pub default_limits: PluginLimits,
    /// Bytes of key-value data each framework may store.
    pub kv_quota_bytes: u64,
    /// Filter installed for offers a framework neither uses nor declines, seconds.
    pub default_refuse_seconds: u32,
}

impl MasterConfig {
    /// Defaults for everything but the data directory.
    pub fn new(data_dir: PathBuf) -> MasterConfig {
        MasterConfig {
            data_dir,
            cycle_interval: Duration::from_secs(1),
            cycle_min_gap: Duration::from_millis(5),
            max_launches_per_cycle: MAX_LAUNCHES_PER_CYCLE,
            agent_timeout: Duration::from_secs(15),
            heartbeat_interval: Duration::from_secs(1),
            task_retention: Duration::from_secs(15 * 60),
            default_limits: PluginLimits::default(),
            kv_quota_bytes: 256 * 1024 * 1024,
            default_refuse_seconds: 5,
        }
    }
}

/// Why a master operation was refused. Nothing was changed when one of these is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is wrong; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the current state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The master is shutting down or failed.
    #[error("{0}")]
    Unavailable(String),
}

/// Something that happened, for watchers (`berth task watch`, event streams).
#[derive(Clone, Debug)]
pub enum Event {
    /// A task status update, as the framework sees it.
    Status {
        /// Framework name.
        framework: String,
        /// The agent running the task.
        agent_id: String,
        /// The status.
        status: abi::TaskStatus,
    },
    /// An event a framework published.
    Framework {
        /// Framework name.
        framework: String,
        /// The event.
        event: abi::Event,
    },
}

/// Where the master publishes events. Shared, not cloned per watcher, and small in the channel, which
/// keeps every slot for its whole life (16,384 of them: 3.5 MB of events, 0.8 MB of pointers).
pub type Events = broadcast::Sender<Arc<Event>>;

/// The master's side of an agent connection. Messages are boxed because a channel keeps a block of 32
/// slots per connection for its whole life: a boxed slot is 8 bytes where a message is 440, which is
/// 14 KiB less per agent (140 MB at 10,000 agents).
pub type ToAgent = mpsc::UnboundedSender<Box<pb::MasterMessage>>;

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
    /// Hands a message from the agent to the master.
    pub fn send(&self, message: pb::AgentMessage) -> Result<(), ApiError> {
        self.handle.send(core::Command::AgentMessage(self.id, message))
    }
}

impl Drop for AgentSender {
    fn drop(&mut self) {
        let _ = self.handle.send(core::Command::AgentDisconnected(self.id));
    }
}

type Job = Box<dyn FnOnce(&mut core::Master) + Send>;

/// A cheap, cloneable handle to the master thread.
#[derive(Clone, Debug)]
pub struct MasterHandle {
    commands: crossbeam_channel::Sender<core::Command>,
    events: Events,
    registry: Arc<Registry>,
    next_connection: Arc<std::sync::atomic::AtomicU64>,
}

impl MasterHandle {
    fn send(&self, command: core::Command) -> Result<(), ApiError> {
        self.commands.send(command).map_err(|_| ApiError::Unavailable("the master has stopped".into()))
    }

    /// Runs `f` on the master thread and returns its result once the writes it made are committed.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut core::Master) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |master| {
            let result = f(master);
            master.reply_after_commit(Box::new(move || {
                let _ = tx.send(result);
            }));
        });
        self.send(core::Command::Run(job))?;
        rx.await.map_err(|_| ApiError::Unavailable("the master stopped before answering".into()))
    }

    /// Like [`MasterHandle::call`], for operations that can be refused.
    pub async fn try_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut core::Master) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.call(f).await?
    }

    /// Opens a connection for an agent; its first message must be `Register`.
    pub fn connect_agent(&self) -> Result<AgentConnection, ApiError> {
        let id = self.next_connection.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, outbound) = mpsc::unbounded_channel();
        self.send(core::Command::AgentConnected(id, tx))?;
        Ok(AgentConnection { outbound, sender: AgentSender { id, handle: self.clone() } })
    }

    /// Status updates and framework events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// The plugin registry (for compiling uploads off the master thread).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Asks the master to finish its iteration, commit, and stop.
    pub fn shutdown(&self) {
        let _ = self.send(core::Command::Shutdown);
    }
}

/// Opens the store, restores every plugin, framework, task and filter, and starts the master thread.
pub fn start(
    config: MasterConfig,
    registry: Arc<Registry>,
) -> anyhow::Result<(MasterHandle, std::thread::JoinHandle<()>)> {
    core::start(config, registry)
}
