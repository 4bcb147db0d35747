//! The master thread: its state, its loop, restoring from the store, and the commit-then-acknowledge rule.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_proto::v1 as pb;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::{broadcast, mpsc};

use super::Events;
use super::cycle::NodeViews;
use super::query::CycleView;
use super::state::{FastMap, Framework, Node, Tasks};
use super::writer::{Outgoing, Progress, Reply, Writer};
use super::{Event, Job, MasterConfig, MasterHandle, ToAgent};
use crate::bundled;
use crate::model::unix_ms;
use crate::runtime::{NewVersion, Registry};
use crate::store::{Batch, Loaded, PluginRecord, PluginVersionRecord, Store};

/// What the master thread receives.
pub(crate) enum Command {
    /// Run a closure against the state (API calls).
    Run(Job),
    /// An agent connected; its messages follow with the same id.
    AgentConnected(u64, ToAgent),
    AgentMessage(u64, pb::AgentMessage),
    AgentDisconnected(u64),
    Shutdown,
}

/// How many commands one loop iteration handles at most before it runs a cycle and commits, so a flood
/// of agent messages cannot delay cycles indefinitely.
const MAX_COMMANDS_PER_ITERATION: usize = 20_000;
/// How often timeouts, filters and ticks are checked.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(100);
/// Recent cycles kept for `/v1/cycles`.
const CYCLES_KEPT: usize = 256;

/// The master's state. Only the master thread touches it; API calls reach it as closures.
pub struct Master {
    pub(super) config: MasterConfig,
    pub(super) store: Arc<Store>,
    pub(super) batch: Batch,
    outbox: Vec<Outgoing>,
    replies: Vec<Reply>,
    /// Commits batches off this thread; `None` only while the master is being built.
    writer: Option<Writer>,
    pub(super) registry: Arc<Registry>,
    /// The allocator plugin in use.
    pub(super) allocator: String,
    pub(super) nodes: BTreeMap<u32, Node>,
    /// The allocator's view of the schedulable nodes, kept between cycles.
    pub(super) node_views: NodeViews,
    /// Agent id to node id.
    pub(super) agents: FastMap<String, u32>,
    /// Connections that have not registered yet.
    pub(super) pending_connections: HashMap<u64, ToAgent>,
    /// Registered connections to their node.
    pub(super) connections: HashMap<u64, u32>,
    pub(super) next_node_id: u32,
    /// The last revision given to a node ([`Node::revision`](super::state::Node::revision)).
    pub(super) last_revision: u64,
    pub(super) frameworks: BTreeMap<u32, Framework>,
    pub(super) framework_names: HashMap<String, u32>,
    pub(super) next_framework_id: u32,
    pub(super) tasks: Tasks,
    /// Decline filters: (framework, agent id) to expiry, ms since the epoch.
    pub(super) filters: FastMap<(u32, String), u64>,
    pub(super) next_offer_id: u64,
    pub(super) cycle_wanted: bool,
    pub(super) last_cycle: Instant,
    pub(super) cycles: VecDeque<CycleView>,
    pub(super) cycle_count: u64,
    pub(super) events: Events,
    /// How far the store writer has got (framework data is read back from the store once committed).
    pub(super) progress: Arc<Progress>,
    last_housekeeping: Instant,
    /// Open log streams: request id to the node serving it and the client's channel.
    pub(super) log_streams: HashMap<u64, (u32, mpsc::UnboundedSender<pb::LogChunk>)>,
    pub(super) next_log_request: u64,
    /// Whether the default framework was added once (so a removed one is not added again).
    default_framework_added: bool,
    /// Plugin versions that came from the binary (`name`, `version`), so upgrades replace only those.
    pub(super) bundled_versions: std::collections::HashSet<(String, u32)>,
    stop: bool,
}

pub(super) fn start(
    config: MasterConfig,
    registry: Arc<Registry>,
) -> anyhow::Result<(MasterHandle, std::thread::JoinHandle<()>)> {
    let (commands, rx) = crossbeam_channel::unbounded();
    let (events, _) = broadcast::channel(16_384);
    let handle = MasterHandle {
        commands,
        events: events.clone(),
        registry: registry.clone(),
        next_connection: Arc::new(std::sync::atomic::AtomicU64::new(1)),
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // Restoring runs plugin code (framework `init`), which must happen off the async runtime: do it on
    // the master thread itself and wait for the outcome.
    let thread = std::thread::Builder::new()
        .name("berth-master".into())
        .spawn(move || {
            let master = Master::open(config, registry, events);
            match master {
                Ok(mut master) => {
                    let _ = ready_tx.send(Ok(()));
                    master.run(rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .context("spawning the master thread")?;
    ready_rx.recv().context("the master thread died while starting")??;
    Ok((handle, thread))
}

impl Master {
    fn open(config: MasterConfig, registry: Arc<Registry>, events: Events) -> anyhow::Result<Master> {
        let store = Arc::new(
            Store::open(&config.data_dir)
                .with_context(|| format!("opening the store in {}", config.data_dir.display()))?,
        );
        let loaded = store.load().context("reading the store")?;
        let writer = Writer::start(store.clone()).context("starting the store writer thread")?;
        let progress = writer.progress().clone();
        let now = Instant::now();
        let mut master = Master {
            config,
            store,
            batch: Batch::default(),
            outbox: Vec::new(),
            replies: Vec::new(),
            writer: Some(writer),
            progress,
            registry,
            allocator: String::new(),
            nodes: BTreeMap::new(),
            node_views: NodeViews::default(),
            agents: FastMap::default(),
            pending_connections: HashMap::new(),
            connections: HashMap::new(),
            next_node_id: 1,
            last_revision: 0,
            frameworks: BTreeMap::new(),
            framework_names: HashMap::new(),
            next_framework_id: 1,
            tasks: Tasks::default(),
            filters: FastMap::default(),
            next_offer_id: 1,
            cycle_wanted: true,
            last_cycle: now,
            cycles: VecDeque::new(),
            cycle_count: 0,
            events,
            last_housekeeping: now,
            log_streams: HashMap::new(),
            default_framework_added: false,
            next_log_request: 1,
            bundled_versions: Default::default(),
            stop: false,
        };
        master.restore(loaded)?;
        master.install_bundled()?;
        master.flush();
        Ok(master)
    }

    /// Rebuilds the state from the store: plugin versions (recompiled or taken from the artifact cache),
    /// agents (unreachable until they re-register), frameworks (their plugins' `init` run again), tasks
    /// and their undelivered status updates, decline filters.
    fn restore(&mut self, loaded: Loaded) -> anyhow::Result<()> {
        let Loaded { meta, plugins, plugin_versions, frameworks, tasks, mut kv, filters, agents } = loaded;
        for ((name, number), record) in &plugin_versions {
            let bytes = match self.store.component(&record.sha256) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(target: "berth.master", plugin = %name, version = number, error = %e,
                        "a stored plugin version cannot be read; skipping it");
                    continue;
                }
            };
            let new = NewVersion {
                name,
                kind: record.kind,
                bytes: &bytes,
                config: record.config.clone(),
                limits: record.limits,
                number: Some(*number),
            };
            if record.bundled {
                self.bundled_versions.insert((name.clone(), *number));
            }
            match self.registry.prepare(new) {
                Ok(version) => drop(self.registry.insert(version)),
                Err(e) => {
                    tracing::error!(target: "berth.master", plugin = %name, version = number, error = %e,
                    "a stored plugin version no longer loads; skipping it")
                }
            }
        }
        for (name, record) in &plugins {
            let Some(plugin) = self.registry.get(name) else { continue };
            if let Some(&last) = record.activations.iter().rev().find(|n| plugin.version(**n).is_some()) {
                self.registry.restore_activations(name, &record.activations, last);
            }
        }
        self.allocator = meta.get("allocator").cloned().unwrap_or_default();
        self.default_framework_added = meta.contains_key("default-framework-added");

        for (agent_id, record) in agents {
            self.restore_node(agent_id, record);
        }

        let mut frameworks: Vec<_> = frameworks.into_iter().collect();
        frameworks.sort_by_key(|(_, r)| r.id);
        for (name, record) in frameworks {
            let data = kv.remove(&name).unwrap_or_default();
            self.next_framework_id = self.next_framework_id.max(record.id + 1);
            self.restore_framework(name, record, data);
        }

        for ((framework, task_id), (record, status)) in tasks {
            self.restore_task(&framework, task_id, record, status);
        }

        let now_ms = unix_ms();
        for (framework, agent, expires) in filters {
            match self.framework_names.get(&framework) {
                Some(&id) if expires > now_ms => {
                    self.filters.insert((id, agent), expires);
                }
                _ => self.batch.filter(&framework, &agent, None),
            }
        }
        tracing::info!(target: "berth.master", frameworks = self.frameworks.len(), tasks = self.tasks.len(),
            nodes = self.nodes.len(), plugins = self.registry.plugins().len(), "state restored");
        Ok(())
    }

    /// Loads the plugins built into the binary: once on a fresh store, and again as a new version when
    /// the binary carries a different build than the active version that came from it. A version an
    /// operator uploaded is never replaced.
    fn install_bundled(&mut self) -> anyhow::Result<()> {
        for (name, kind, bytes) in bundled::PLUGINS {
            let sha256 = sha256(bytes);
            let stored = self.registry.get(name).map(|p| p.active());
            let replace = match &stored {
                None => true,
                Some(active) => {
                    self.bundled_versions.contains(&(name.to_string(), active.number))
                        && active.sha256 != sha256
                }
            };
            if !replace {
                continue;
            }
            let new = NewVersion {
                name,
                kind: *kind,
                bytes,
                config: String::new(),
                limits: self.config.default_limits,
                number: None,
            };
            let version =
                self.registry.prepare(new).with_context(|| format!("loading the bundled plugin `{name}`"))?;
            self.persist_new_version(&version, bytes, true)?;
            self.bundled_versions.insert((name.to_string(), version.number));
            self.registry.activate(version.clone());
            self.persist_activations(name);
            tracing::info!(target: "berth.master", plugin = %name, version = version.number, "bundled plugin installed");
        }
        if self.allocator.is_empty() {
            self.allocator = bundled::DEFAULT_ALLOCATOR.to_string();
            self.batch.meta("allocator", Some(&self.allocator));
        }
        // The default framework is added once; an operator who removes it keeps it removed.
        if !self.default_framework_added {
            let name = bundled::DEFAULT_FRAMEWORK.to_string();
            if !self.framework_names.contains_key(&name) {
                let new = super::NewFramework {
                    name: name.clone(),
                    plugin: name.clone(),
                    role: String::new(),
                    weight: 1.0,
                    config: String::new(),
                };
                self.add_framework(new).map_err(|e| anyhow::anyhow!("adding the default framework: {e}"))?;
            }
            self.default_framework_added = true;
            self.batch.meta("default-framework-added", Some("true"));
        }
        Ok(())
    }

    /// Writes a new plugin version's component and record.
    pub(super) fn persist_new_version(
        &mut self,
        version: &crate::runtime::Version,
        bytes: &[u8],
        bundled: bool,
    ) -> anyhow::Result<()> {
        self.store.put_component(&version.sha256, bytes)?;
        self.batch.put_plugin_version(
            &version.name,
            version.number,
            &PluginVersionRecord {
                kind: version.kind,
                sha256: version.sha256.clone(),
                config: version.config.clone(),
                limits: version.limits,
                loaded_at_ms: version.loaded_at_ms,
                bundled,
            },
        );
        Ok(())
    }

    /// Writes a plugin's activation history as the registry has it now.
    pub(super) fn persist_activations(&mut self, name: &str) {
        if let Some(plugin) = self.registry.get(name) {
            self.batch
                .put_plugin(name, &PluginRecord { kind: plugin.kind, activations: plugin.activations() });
            for gone in plugin.take_dropped_versions() {
                self.batch.delete_plugin_version(name, gone);
            }
        }
    }

    fn run(&mut self, commands: Receiver<Command>) {
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
            if self.cycle_due(now) {
                // What the commands wrote is handed to the writer first, so their replies and the agents'
                // acknowledgements leave while the cycle runs rather than after it: an API call waits for
                // its own commit, not for the next allocation.
                self.flush();
                self.cycle();
            }
            self.deliver_statuses();
            self.flush();
        }
        self.flush();
        // Waits for the writer to commit everything handed over.
        drop(self.writer.take());
        tracing::info!(target: "berth.master", "master stopped");
    }

    fn next_wakeup(&self) -> Instant {
        let mut at = self.last_housekeeping + HOUSEKEEPING_EVERY;
        let cycle_at = if self.cycle_wanted {
            self.last_cycle + self.config.cycle_min_gap
        } else {
            self.last_cycle + self.config.cycle_interval
        };
        at = at.min(cycle_at);
        if self.frameworks.values().any(|f| !f.pending.is_empty()) {
            at = Instant::now();
        }
        at
    }

    fn cycle_due(&self, now: Instant) -> bool {
        let since = now.duration_since(self.last_cycle);
        (self.cycle_wanted && since >= self.config.cycle_min_gap) || since >= self.config.cycle_interval
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Run(job) => job(self),
            Command::AgentConnected(id, tx) => {
                self.pending_connections.insert(id, tx);
            }
            Command::AgentMessage(id, message) => self.agent_message(id, message),
            Command::AgentDisconnected(id) => self.agent_disconnected(id),
            Command::Shutdown => self.stop = true,
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.check_agents(now);
        self.expire_filters();
        self.forget_old_tasks(now);
        self.tick_frameworks(now);
    }

    fn expire_filters(&mut self) {
        let now_ms = unix_ms();
        let expired: Vec<(u32, String)> =
            self.filters.iter().filter(|&(_, &expires)| expires <= now_ms).map(|(k, _)| k.clone()).collect();
        for (framework, agent) in expired {
            self.filters.remove(&(framework, agent.clone()));
            if let Some(f) = self.frameworks.get(&framework) {
                self.batch.filter(&f.name, &agent, None);
            }
            self.cycle_wanted = true;
        }
    }

    /// Queues a message to a node's agent; it is sent after the next commit.
    pub(super) fn send_to_node(&mut self, node: u32, message: pb::master_message::Message) {
        if let Some(Some((_, tx))) = self.nodes.get(&node).map(|n| n.connection.clone()) {
            self.outbox.push((tx, Box::new(pb::MasterMessage { message: Some(message) })));
        }
    }

    /// Queues a message on a connection (before registration completes); sent after the next commit.
    pub(super) fn send_on(&mut self, tx: ToAgent, message: pb::master_message::Message) {
        self.outbox.push((tx, Box::new(pb::MasterMessage { message: Some(message) })));
    }

    /// Runs `reply` once the writes made so far are committed.
    pub(crate) fn reply_after_commit(&mut self, reply: Box<dyn FnOnce() + Send>) {
        self.replies.push(reply);
    }

    /// Hands the iteration's writes to the writer thread, which commits them and then sends what depended
    /// on them. A failing disk stops acknowledgements there, retrying, rather than acknowledging anything
    /// that could not be persisted.
    pub(super) fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        let outbox = std::mem::take(&mut self.outbox);
        let replies = std::mem::take(&mut self.replies);
        if let Some(writer) = &self.writer {
            writer.submit(batch, outbox, replies);
        }
    }

    /// Records a finished cycle for `/v1/cycles`.
    pub(super) fn record_cycle(&mut self, view: CycleView) {
        if self.cycles.len() == CYCLES_KEPT {
            self.cycles.pop_front();
        }
        self.cycles.push_back(view);
    }
}

/// Publishes an event to watchers; it is not even built when nobody watches (statuses are the master's
/// hottest path). A function of the channel alone, so callers can hold other parts of the master.
pub(super) fn publish(events: &Events, event: impl FnOnce() -> Event) {
    if events.receiver_count() > 0 {
        let _ = events.send(Arc::new(event()));
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
