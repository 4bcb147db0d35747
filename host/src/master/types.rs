//! The master's shared vocabulary: its configuration, its errors, its events, and the key and map types the
//! parts share. A leaf: it imports nothing from the rest of the master.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc};

use crate::runtime::PluginLimits;
use crate::runtime::bindings as abi;

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
    /// How long an offer may go unanswered before it is rescinded.
    pub offer_timeout: Duration,
    /// How long a cycle waits for frameworks' fresh demand before it allocates with what it has.
    pub demand_wait: Duration,
    /// Worker threads for plugin calls.
    pub plugin_threads: usize,
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
            offer_timeout: Duration::from_secs(10),
            demand_wait: Duration::from_millis(200),
            // One per core, at least two (so one slow plugin leaves another worker free), at most eight.
            plugin_threads: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8),
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

/// A task, keyed by its framework's compact id and its own id.
pub type TaskKey = (u32, String);

/// The maps on the master's per-task path. Task and agent ids come from plugins and agents, so the
/// hasher is seeded per process (foldhash: several times faster than the standard SipHash on these short
/// keys, and not predictable from outside).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A set with the hasher of [`FastMap`].
pub type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
