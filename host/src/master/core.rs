//! The master thread: the parts of the master's state, the commands it takes, and its loop.
//!
//! Each loop iteration handles what has arrived (API calls, agents' messages, plugin calls that finished),
//! runs housekeeping (agent timeouts, expired offers and filters, framework ticks), moves the offer cycle
//! along, hands idle frameworks their next call, and then hands the iteration's writes to the store writer,
//! which sends replies, launches and acknowledgements only once they are committed.
//!
//! The thread never runs plugin code (`calls.rs` does, on workers) and never waits for it: it is always
//! free to answer the API and the agents.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_proto::v1 as pb;
use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::calls::{Calls, Done};
use super::effects::Effects;
use super::frameworks::Frameworks;
use super::history::{Cycles, Stage};
use super::metrics::Metrics;
use super::nodes::Nodes;
use super::offers::Offers;
use super::streams::LogStreams;
use super::tasks::Tasks;
use super::types::{Events, MasterConfig, ToAgent};
use crate::runtime::Registry;
use crate::store::Store;

/// A closure run against the master's state on its thread (the API's operations, see `handle.rs`).
pub(crate) type Job = Box<dyn FnOnce(&mut Master) + Send>;

/// What the master thread receives.
// Agents' messages are most of the commands (every status update and heartbeat): boxing them would cost an
// allocation each on the master's hottest path, while the channel reuses its slots.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    /// Run a closure against the state.
    Run(Job),
    /// An agent connected (`true`: `berth serve`'s own, in this process); its messages follow with the same id.
    AgentConnected(u64, ToAgent, bool),
    /// A message from an agent, with when it arrived (a heartbeat counts from then, however long the
    /// master takes to get to it).
    AgentMessage(u64, pb::AgentMessage, Instant),
    AgentDisconnected(u64),
    /// A plugin call finished on a worker.
    Done(Box<Done>),
    Shutdown,
}

/// How many commands one loop iteration handles at most before it moves the cycle along and commits, so a
/// flood of agent messages cannot delay cycles indefinitely.
const MAX_COMMANDS_PER_ITERATION: usize = 20_000;
/// How often timeouts, filters and ticks are checked.
pub(super) const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(100);

/// Which plugins the master uses, beyond the registry's list.
#[derive(Default)]
pub struct Choices {
    /// The allocator plugin in use.
    pub allocator: String,
    /// Plugin versions that came from the binary (`name`, `version`), so upgrades replace only those.
    pub bundled_versions: HashSet<(String, u32)>,
    /// Whether the default framework was added once (so a removed one is not added again).
    pub default_framework_added: bool,
    /// Calls that failed in a row, by plugin version (`plugins.rs` rolls a version back after a few).
    pub failure_streaks: std::collections::HashMap<(String, u32), u64>,
}

/// The master's state: one part per concern, each keeping its own invariants. Only the master thread
/// touches it.
pub struct Master {
    pub(super) config: MasterConfig,
    pub(super) store: Arc<Store>,
    pub(super) registry: Arc<Registry>,
    pub(super) choices: Choices,
    pub(super) nodes: Nodes,
    pub(super) frameworks: Frameworks,
    pub(super) tasks: Tasks,
    pub(super) offers: Offers,
    pub(super) cycles: Cycles,
    /// Events counted for `/metrics`.
    pub(super) metrics: Arc<Metrics>,
    pub(super) logs: LogStreams,
    pub(super) effects: Effects,
    pub(super) calls: Calls,
    last_housekeeping: Instant,
    stop: bool,
}

impl Master {
    /// A master with empty state over `store`, its writer and its plugin workers started; `restore.rs`
    /// fills it from the store.
    pub(super) fn new(
        config: MasterConfig,
        store: Arc<Store>,
        registry: Arc<Registry>,
        events: Events,
        done: Arc<dyn Fn(Done) + Send + Sync>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Master> {
        let effects = Effects::start(store.clone(), events, metrics.clone())?;
        let calls = Calls::start(config.plugin_threads, done)?;
        Ok(Master {
            config,
            store,
            registry,
            choices: Choices::default(),
            nodes: Nodes::default(),
            frameworks: Frameworks::default(),
            tasks: Tasks::default(),
            offers: Offers::default(),
            cycles: Cycles::new(metrics.clone()),
            metrics,
            logs: LogStreams::default(),
            effects,
            calls,
            last_housekeeping: Instant::now(),
            stop: false,
        })
    }

    pub(super) fn run(&mut self, commands: Receiver<Command>) {
        tracing::info!(target: "berth.master", "master running");
        while !self.stop {
            let wait = self.next_wakeup().saturating_duration_since(Instant::now());
            match commands.recv_timeout(wait) {
                Ok(command) => {
                    self.handle(command);
                    for command in commands.try_iter().take(MAX_COMMANDS_PER_ITERATION) {
                        self.handle(command);
                        if self.stop {
                            break;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.stop = true,
            }
            let now = Instant::now();
            if now.duration_since(self.last_housekeeping) >= HOUSEKEEPING_EVERY {
                self.last_housekeeping = now;
                self.housekeeping(now);
            }
            self.advance_cycle(now);
            self.dispatch_all(now);
            self.effects.flush();
        }
        // Commits everything handed over, then stops the writer.
        self.effects.stop();
        tracing::info!(target: "berth.master", "master stopped");
    }

    fn next_wakeup(&self) -> Instant {
        let mut at = self.last_housekeeping + HOUSEKEEPING_EVERY;
        match &self.cycles.stage {
            Stage::Idle => {
                let gap =
                    if self.cycles.wanted { self.config.cycle_min_gap } else { self.config.cycle_interval };
                at = at.min(self.cycles.last_start + gap);
            }
            Stage::Demand { until, .. } => at = at.min(*until),
            Stage::Allocating => {}
        }
        at
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Run(job) => job(self),
            Command::AgentConnected(id, tx, local) => self.nodes.connected(id, tx, local),
            Command::AgentMessage(id, message, at) => self.agent_message(id, message, at),
            Command::AgentDisconnected(id) => self.agent_disconnected(id),
            Command::Done(done) => self.call_done(*done),
            Command::Shutdown => self.stop = true,
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.check_agents(now);
        self.expire_offers(now);
        self.expire_filters();
        self.forget_old_tasks(now);
        self.finish_removals();
    }

    /// Queues a message to a node's agent; it is sent after the next commit.
    pub(super) fn send_to_node(&mut self, node: u32, message: pb::master_message::Message) {
        if let Some((_, tx)) = self.nodes.get(node).and_then(|n| n.connection.as_ref()) {
            let tx = tx.clone();
            self.effects.send(tx, message);
        }
    }
}
