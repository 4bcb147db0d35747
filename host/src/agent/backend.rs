//! Where an agent runs tasks. The agent loop (registration, heartbeats, status updates and their
//! retries) is the same for every backend; a backend only launches, kills, and reports.

use std::time::Duration;

use berth_proto::v1 as pb;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

/// How often a backend samples (or, simulated, makes up) its tasks' resource use.
pub const USAGE_INTERVAL: Duration = Duration::from_secs(5);

/// Where a backend sends its status changes. Boxed, because an unbounded channel keeps a block of 32
/// slots for its whole life: 8 bytes a slot instead of a status's 176 (at 10,000 simulated agents in one
/// process, 50 MB).
pub type StatusSender = mpsc::UnboundedSender<Box<pb::TaskStatus>>;

/// Runs tasks on one node. Status changes are sent on the channel the backend was created with, in
/// order per task; the agent forwards them to the master until acknowledged.
pub trait Backend: Send + Sync + 'static {
    /// `docker` or `simulated`, for listings.
    fn name(&self) -> &'static str;

    /// Starts a task. Idempotent: a task id the backend already runs is ignored (the master re-sends
    /// launches it is not sure arrived).
    fn launch(&self, framework: String, task: pb::TaskSpec);

    /// Stops a task: SIGTERM, then SIGKILL after `grace`. Ends with a `killed` status carrying `reason`.
    fn kill(&self, framework: &str, task_id: &str, grace: Duration, reason: pb::TaskReason);

    /// The tasks the backend runs now (non-terminal), and how those that ended while the agent was away
    /// ended, for (re-)registration.
    fn tasks(&self) -> BoxFuture<'_, Vec<pb::TaskStatus>>;

    /// How many tasks run now, for heartbeats.
    fn running(&self) -> u32;

    /// The resource use sampled since the last call (empty when no new sample was taken), for heartbeats.
    fn usage(&self) -> Vec<pb::TaskUsage>;

    /// A task's output (also of tasks that ended, while the backend keeps it), from the last `tail` lines
    /// (all when 0), following new output when `follow`.
    fn logs(
        &self,
        framework: &str,
        task_id: &str,
        follow: bool,
        tail: u32,
    ) -> BoxStream<'static, Result<pb::LogChunk, String>>;
}
