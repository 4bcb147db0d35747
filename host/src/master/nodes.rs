//! Nodes and their agents' connections: who is registered, what each node has, holds and has on offer, and
//! the allocator's view of the schedulable nodes.
//!
//! [`Nodes`] keeps two invariants the rest of the master relies on:
//! - a node's `used` is the sum of the resources of its non-terminal tasks, and its `offered` the sum of
//!   its outstanding offers; only [`Nodes::take`], [`Nodes::release`], [`Nodes::offer`] and
//!   [`Nodes::unoffer`] change them;
//! - a node's `revision` names one state of what the allocator sees of it (hostname, total, attributes,
//!   what is available) and is never given twice, to it or another node: every change of those fields goes
//!   through a method here that gives a new one, because the allocator's runtime skips reading nodes
//!   whose revision it already holds.
//!
//! It does not decide anything about agents (the agent protocol is `agents.rs`) or tasks.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::types::{FastMap, FastSet, TaskKey, ToAgent};
use crate::model::ResourcesExt;
use crate::runtime::bindings::{Attribute, Node as ViewNode, Resources};
use crate::store::AgentRecord;

/// Whether a node takes new work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Registered and heard from within the agent timeout.
    Active,
    /// Being emptied: no offers, its tasks killed.
    Draining,
    /// Silent past the agent timeout: its tasks are lost.
    Unreachable,
}

impl NodeState {
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Unreachable => "unreachable",
        }
    }
}

/// One agent's machine.
pub struct Node {
    pub id: u32,
    pub agent_id: String,
    pub hostname: String,
    pub total: Resources,
    pub attributes: Vec<Attribute>,
    /// See the module's invariants; changed only through [`Nodes`].
    revision: u64,
    /// Resources of the non-terminal tasks placed here.
    used: Resources,
    /// Resources in outstanding offers: not available to anyone else until answered.
    offered: Resources,
    pub state: NodeState,
    /// The live connection, if any: its id and the channel to the agent.
    pub connection: Option<(u64, ToAgent)>,
    /// When the agent was last heard from: stamped when its message arrived, not when the master got to it.
    pub last_seen: Instant,
    pub last_seen_ms: u64,
    /// Tasks the agent last said it runs.
    pub agent_running: u32,
    pub allow_privileged: bool,
    pub allow_host_mounts: bool,
    pub allow_host_network: bool,
    /// The sha256 of the credential issued to its agent (empty until the first registration).
    pub credential_sha256: String,
    pub backend: String,
    /// Non-terminal tasks placed here; changed with `used`.
    tasks: FastSet<TaskKey>,
}

impl Node {
    fn blank(id: u32, agent_id: String) -> Node {
        Node {
            id,
            agent_id,
            hostname: String::new(),
            total: Resources::zero(),
            attributes: Vec::new(),
            revision: 0,
            used: Resources::zero(),
            offered: Resources::zero(),
            state: NodeState::Active,
            connection: None,
            last_seen: Instant::now(),
            last_seen_ms: 0,
            agent_running: 0,
            allow_privileged: false,
            allow_host_mounts: false,
            allow_host_network: true,
            credential_sha256: String::new(),
            backend: String::new(),
            tasks: Default::default(),
        }
    }

    /// What is neither used nor on offer.
    pub fn available(&self) -> Resources {
        let mut free = self.total.clone();
        free.remove(&self.used);
        free.remove(&self.offered);
        free
    }

    /// Whether the node can take new work now.
    pub fn schedulable(&self) -> bool {
        self.state == NodeState::Active && self.connection.is_some()
    }

    /// Its non-terminal tasks.
    pub fn tasks(&self) -> &FastSet<TaskKey> {
        &self.tasks
    }

    /// The record the store keeps of it.
    pub fn record(&self) -> AgentRecord {
        AgentRecord {
            hostname: self.hostname.clone(),
            resources: self.total.clone(),
            attributes: self.attributes.clone(),
            allow_privileged: self.allow_privileged,
            allow_host_mounts: self.allow_host_mounts,
            allow_host_network: self.allow_host_network,
            backend: self.backend.clone(),
            draining: self.state == NodeState::Draining,
            credential_sha256: self.credential_sha256.clone(),
        }
    }
}

/// What a registration says about a node.
pub struct Registration {
    pub agent_id: String,
    pub hostname: String,
    pub total: Resources,
    pub attributes: Vec<Attribute>,
    /// What tasks may do, from `berth serve`'s own agent only (others' claims are not believed).
    pub policy: Option<(bool, bool, bool)>,
    pub backend: String,
    pub running: u32,
}

/// Every node, the agents' connections, and the allocator's view of the schedulable nodes.
#[derive(Default)]
pub struct Nodes {
    nodes: BTreeMap<u32, Node>,
    /// Agent id to node id.
    agents: FastMap<String, u32>,
    /// Connections that have not registered yet.
    pending: HashMap<u64, ToAgent>,
    /// Registered connections to their node.
    connections: HashMap<u64, u32>,
    /// Connections of `berth serve`'s own agent (in its process: what it says of itself is believed).
    local: std::collections::HashSet<u64>,
    next_id: u32,
    /// The last revision given to a node.
    last_revision: u64,
    views: NodeViews,
}

impl Nodes {
    fn revise(&mut self, node: u32) {
        self.last_revision += 1;
        if let Some(n) = self.nodes.get_mut(&node) {
            n.revision = self.last_revision;
        }
    }

    fn create(&mut self, agent_id: &str) -> u32 {
        self.next_id += 1;
        let id = self.next_id;
        self.agents.insert(agent_id.to_string(), id);
        self.nodes.insert(id, Node::blank(id, agent_id.to_string()));
        id
    }

    /// A node known from the store: without a connection (so it gets no offers) until its agent
    /// re-registers.
    pub fn restore(&mut self, agent_id: String, record: AgentRecord) -> u32 {
        let id = self.create(&agent_id);
        let node = self.nodes.get_mut(&id).expect("just created");
        node.hostname = record.hostname;
        node.total = record.resources;
        node.attributes = record.attributes;
        node.state = if record.draining { NodeState::Draining } else { NodeState::Active };
        node.allow_privileged = record.allow_privileged;
        node.allow_host_mounts = record.allow_host_mounts;
        node.allow_host_network = record.allow_host_network;
        node.credential_sha256 = record.credential_sha256;
        node.backend = record.backend;
        self.revise(id);
        id
    }

    /// A node's record, to change its policy and credential.
    pub fn get_mut_policy(&mut self, node: u32) -> Option<&mut Node> {
        self.nodes.get_mut(&node)
    }

    pub fn get(&self, id: u32) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// A node by agent id.
    pub fn by_agent(&self, agent_id: &str) -> Option<u32> {
        self.agents.get(agent_id).copied()
    }

    /// Every node, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// A node by id, agent id or hostname.
    pub fn find(&self, name: &str) -> Option<u32> {
        self.nodes
            .values()
            .find(|n| n.id.to_string() == name || n.agent_id == name || n.hostname == name)
            .map(|n| n.id)
    }

    /// A new connection, until it registers; `local` for `berth serve`'s own agent, in its process.
    pub fn connected(&mut self, connection: u64, tx: ToAgent, local: bool) {
        self.pending.insert(connection, tx);
        if local {
            self.local.insert(connection);
        }
    }

    /// Whether a connection is `berth serve`'s own agent.
    pub fn is_local(&self, connection: u64) -> bool {
        self.local.contains(&connection)
    }

    /// The node a registered connection belongs to.
    pub fn of_connection(&self, connection: u64) -> Option<u32> {
        self.connections.get(&connection).copied()
    }

    /// The channel of a connection that is registering (new, or registered already and registering again).
    pub fn registering(&mut self, connection: u64) -> Option<ToAgent> {
        if let Some(tx) = self.pending.remove(&connection) {
            return Some(tx);
        }
        let node = self.connections.get(&connection)?;
        self.nodes.get(node)?.connection.as_ref().map(|(_, tx)| tx.clone())
    }

    /// Records a (re-)registration on `connection`; returns the node and whether it was unreachable.
    pub fn register(
        &mut self,
        connection: u64,
        tx: ToAgent,
        r: Registration,
        now: Instant,
        now_ms: u64,
    ) -> (u32, bool) {
        let id = match self.agents.get(&r.agent_id) {
            Some(&id) => id,
            None => self.create(&r.agent_id),
        };
        let node = self.nodes.get_mut(&id).expect("node found or created");
        if let Some((old, _)) = node.connection.take()
            && old != connection
        {
            self.connections.remove(&old);
        }
        let returning = node.state == NodeState::Unreachable;
        node.hostname = r.hostname;
        node.total = r.total;
        node.attributes = r.attributes;
        if let Some((privileged, host_mounts, host_network)) = r.policy {
            node.allow_privileged = privileged;
            node.allow_host_mounts = host_mounts;
            node.allow_host_network = host_network;
        }
        node.backend = r.backend;
        node.connection = Some((connection, tx));
        node.last_seen = now;
        node.last_seen_ms = now_ms;
        node.agent_running = r.running;
        if returning {
            node.state = NodeState::Active;
        }
        self.connections.insert(connection, id);
        self.revise(id);
        (id, returning)
    }

    /// The agent was heard from (at `at`, when its message arrived).
    pub fn heard(&mut self, node: u32, at: Instant, at_ms: u64, running: Option<u32>) {
        if let Some(n) = self.nodes.get_mut(&node) {
            if at > n.last_seen {
                n.last_seen = at;
                n.last_seen_ms = at_ms;
            }
            if let Some(running) = running {
                n.agent_running = running;
            }
        }
    }

    /// A connection ended; returns the node it served, if it was that node's live connection.
    pub fn disconnected(&mut self, connection: u64) -> Option<u32> {
        self.pending.remove(&connection);
        self.local.remove(&connection);
        let node = self.connections.remove(&connection)?;
        let n = self.nodes.get_mut(&node)?;
        if n.connection.as_ref().is_some_and(|(c, _)| *c == connection) {
            n.connection = None;
            self.revise(node);
            return Some(node);
        }
        None
    }

    /// Marks a node unreachable and drops its connection.
    pub fn unreachable(&mut self, node: u32) {
        let Some(n) = self.nodes.get_mut(&node) else { return };
        n.state = NodeState::Unreachable;
        if let Some((connection, _)) = n.connection.take() {
            self.connections.remove(&connection);
        }
        self.revise(node);
    }

    /// Marks a node draining (unless unreachable).
    pub fn drain(&mut self, node: u32) {
        if let Some(n) = self.nodes.get_mut(&node)
            && n.state == NodeState::Active
        {
            n.state = NodeState::Draining;
            self.revise(node);
        }
    }

    /// Nodes silent for longer than `timeout` at `now`.
    pub fn silent(&self, now: Instant, timeout: std::time::Duration) -> Vec<u32> {
        self.nodes
            .values()
            .filter(|n| {
                n.state != NodeState::Unreachable && now.saturating_duration_since(n.last_seen) > timeout
            })
            .map(|n| n.id)
            .collect()
    }

    /// A task now holds `resources` on `node`.
    pub fn take(&mut self, node: u32, key: &TaskKey, resources: &Resources) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.used.add(resources);
            n.tasks.insert(key.clone());
            self.revise(node);
        }
    }

    /// A task on `node` ended: its resources are free again.
    pub fn release(&mut self, node: u32, key: &TaskKey, resources: &Resources) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.used.remove(resources);
            n.tasks.remove(key);
            self.revise(node);
        }
    }

    /// `resources` of `node` are on offer.
    pub fn offer(&mut self, node: u32, resources: &Resources) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.offered.add(resources);
            self.revise(node);
        }
    }

    /// An offer of `resources` on `node` was answered or rescinded.
    pub fn unoffer(&mut self, node: u32, resources: &Resources) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.offered.remove(resources);
            self.revise(node);
        }
    }

    /// The allocator's view of the schedulable nodes, brought up to date, with each node's revision. The
    /// caller gives the views back with [`Nodes::return_views`] after the allocator has answered.
    pub fn take_views(&mut self) -> (Vec<ViewNode>, Vec<u64>) {
        self.views.refresh(self.nodes.values().filter(|n| n.schedulable()));
        (std::mem::take(&mut self.views.nodes), std::mem::take(&mut self.views.revisions))
    }

    /// Gives back the views [`Nodes::take_views`] lent, for the next cycle to update.
    pub fn return_views(&mut self, nodes: Vec<ViewNode>, revisions: Vec<u64>) {
        self.views.nodes = nodes;
        self.views.revisions = revisions;
    }
}

/// The nodes of the allocator's view as the last cycle left them, each with the revision of the node it
/// was made from. A cycle remakes only the views whose node changed since: at 10,000 nodes, copying every
/// node's hostname, resources and attributes each cycle was 10,000 sets of allocations and frees, for the
/// few hundred nodes a cycle's launches and task ends touch.
#[derive(Default)]
pub(super) struct NodeViews {
    nodes: Vec<ViewNode>,
    /// `revisions[i]` is the revision `nodes[i]` was made at; the allocator's runtime reads them too.
    revisions: Vec<u64>,
}

impl NodeViews {
    /// Brings the views up to date with `current`, the schedulable nodes in id order: a node whose view
    /// has its revision keeps it, any other gets a new one, and views of nodes not in `current` are
    /// dropped. Returns how many views were made or remade.
    fn refresh<'a>(&mut self, current: impl Iterator<Item = &'a Node> + Clone) -> usize {
        let mut made = 0;
        if current.clone().map(|n| n.id).eq(self.nodes.iter().map(|v| v.id)) {
            // The same nodes as last cycle, the usual case: update the changed ones in place.
            for ((node, view), revision) in current.zip(&mut self.nodes).zip(&mut self.revisions) {
                if *revision != node.revision {
                    update_view(view, node);
                    *revision = node.revision;
                    made += 1;
                }
            }
            return made;
        }
        // Nodes came or went: rebuild the list, moving the views that are still current.
        let (nodes, revisions) = (std::mem::take(&mut self.nodes), std::mem::take(&mut self.revisions));
        let mut old = nodes.into_iter().zip(revisions).peekable();
        for node in current {
            while old.next_if(|(view, _)| view.id < node.id).is_some() {}
            let view = match old.next_if(|(view, revision)| view.id == node.id && *revision == node.revision)
            {
                Some((view, _)) => view,
                None => {
                    made += 1;
                    let mut view = ViewNode {
                        id: node.id,
                        hostname: String::new(),
                        total: Resources::zero(),
                        available: Resources::zero(),
                        attributes: Vec::new(),
                    };
                    update_view(&mut view, node);
                    view
                }
            };
            self.nodes.push(view);
            self.revisions.push(node.revision);
        }
        made
    }
}

/// Makes `view` show `node`, reusing its allocations where it can.
fn update_view(view: &mut ViewNode, node: &Node) {
    view.id = node.id;
    view.hostname.clone_from(&node.hostname);
    view.total.clone_from(&node.total);
    view.available = node.available();
    view.attributes.clone_from(&node.attributes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(milli_cpus: u64) -> Resources {
        Resources { milli_cpus, mem_mib: 0, disk_mib: 0, gpus: 0, ports: vec![] }
    }

    fn node(id: u32, revision: u64, used: u64) -> Node {
        Node {
            hostname: format!("node-{id}"),
            total: cpus(1_000),
            attributes: vec![Attribute { name: "rack".into(), value: format!("r{id}") }],
            revision,
            used: cpus(used),
            ..Node::blank(id, format!("agent-{id}"))
        }
    }

    /// What a view made from scratch would hold: (id, hostname, available cpus, attributes).
    fn shown(views: &NodeViews) -> Vec<(u32, String, u64, Vec<Attribute>)> {
        views
            .nodes
            .iter()
            .map(|v| (v.id, v.hostname.clone(), v.available.milli_cpus, v.attributes.clone()))
            .collect()
    }

    fn expected(nodes: &[Node]) -> Vec<(u32, String, u64, Vec<Attribute>)> {
        nodes
            .iter()
            .map(|n| (n.id, n.hostname.clone(), n.available().milli_cpus, n.attributes.clone()))
            .collect()
    }

    #[test]
    fn node_views_are_remade_only_for_nodes_whose_revision_moved() {
        let mut views = NodeViews::default();
        let mut nodes = vec![node(1, 1, 0), node(2, 1, 0), node(3, 1, 0)];
        assert_eq!(views.refresh(nodes.iter()), 3, "the first cycle makes every view");
        assert_eq!(shown(&views), expected(&nodes));
        assert_eq!(views.refresh(nodes.iter()), 0, "nothing changed");

        // A launch on node 2: its revision moves with what it has left.
        nodes[1] = node(2, 2, 300);
        assert_eq!(views.refresh(nodes.iter()), 1);
        assert_eq!(shown(&views), expected(&nodes));
        assert_eq!(views.revisions, vec![1, 2, 1]);

        // Node 1 leaves (unschedulable), node 5 joins, node 3 re-registers with new attributes.
        let mut changed = node(3, 2, 0);
        changed.attributes = vec![Attribute { name: "zone".into(), value: "z".into() }];
        nodes = vec![node(2, 2, 300), changed, node(5, 1, 0)];
        assert_eq!(views.refresh(nodes.iter()), 2, "node 2 keeps its view; 3 and 5 get new ones");
        assert_eq!(shown(&views), expected(&nodes));
        assert_eq!(views.revisions, vec![2, 2, 1]);

        // A change of membership and of a node's revision in the same cycle.
        nodes = vec![node(2, 3, 100), node(5, 1, 0)];
        assert_eq!(views.refresh(nodes.iter()), 1);
        assert_eq!(shown(&views), expected(&nodes));

        assert_eq!(views.refresh(std::iter::empty()), 0);
        assert!(views.nodes.is_empty() && views.revisions.is_empty());
    }

    #[test]
    fn used_and_offered_move_together_with_a_new_revision_each_time() {
        let mut nodes = Nodes::default();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let registration = Registration {
            agent_id: "a".into(),
            hostname: "h".into(),
            total: cpus(1_000),
            attributes: vec![],
            policy: None,
            backend: "simulated".into(),
            running: 0,
        };
        let (id, _) = nodes.register(7, tx, registration, Instant::now(), 0);
        let mut seen = vec![nodes.get(id).unwrap().revision];
        let mut step = |nodes: &mut Nodes, available: u64| {
            let n = nodes.get(id).unwrap();
            assert_eq!(n.available().milli_cpus, available);
            assert!(!seen.contains(&n.revision), "a revision is never given twice");
            seen.push(n.revision);
        };
        nodes.offer(id, &cpus(600));
        step(&mut nodes, 400);
        let key: TaskKey = (1, "t".into());
        nodes.unoffer(id, &cpus(600));
        step(&mut nodes, 1_000);
        nodes.take(id, &key, &cpus(250));
        step(&mut nodes, 750);
        assert!(nodes.get(id).unwrap().tasks().contains(&key));
        nodes.release(id, &key, &cpus(250));
        step(&mut nodes, 1_000);
        assert!(nodes.get(id).unwrap().tasks().is_empty());
    }
}
