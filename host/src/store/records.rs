//! What the store keeps, record by record (JSON, so an operator can read a dump).

use serde::{Deserialize, Serialize};

use crate::runtime::bindings::{Attribute, Resources, TaskSpec, TaskStatus};
use crate::runtime::{PluginKind, PluginLimits};

/// A plugin: its kind and the versions activated, in order (the last is active).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PluginRecord {
    /// Its world.
    pub kind: PluginKind,
    /// Version numbers in activation order.
    pub activations: Vec<u32>,
}

/// One version of a plugin; its bytes are in the component directory under `sha256`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PluginVersionRecord {
    /// Its world.
    pub kind: PluginKind,
    /// Digest of the component.
    pub sha256: String,
    /// `init` configuration (allocators).
    pub config: String,
    /// Memory cap and deadline.
    pub limits: PluginLimits,
    /// When it was uploaded.
    pub loaded_at_ms: u64,
    /// Whether it came from the `berth` binary rather than an upload.
    #[serde(default)]
    pub bundled: bool,
    /// Why it was rolled back automatically, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
}

/// A framework instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FrameworkRecord {
    /// Its compact id (kept so ids stay stable across restarts).
    pub id: u32,
    /// The framework plugin it runs.
    pub plugin: String,
    /// Its role.
    pub role: String,
    /// Its weight.
    pub weight: f64,
    /// Its `init` configuration.
    pub config: String,
    /// Whether it suppressed offers.
    pub suppressed: bool,
    /// When it was added.
    pub created_at_ms: u64,
}

/// A launched task: what it is and where it went. Written once at launch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task as the framework launched it.
    pub spec: TaskSpec,
    /// The agent it was sent to.
    pub agent_id: String,
    /// When it was launched.
    pub launched_at_ms: u64,
}

/// A task's latest status and whether the framework has seen it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The latest status (its `node` is not meaningful after a restart; `TaskRecord::agent_id` is).
    pub status: TaskStatus,
    /// Whether the framework's `status` export returned after receiving it.
    pub delivered: bool,
    /// The last status update uuid applied from the agent.
    pub update_uuid: String,
}

/// An agent the master has seen.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Its hostname.
    pub hostname: String,
    /// What it offers.
    pub resources: Resources,
    /// Its attributes.
    pub attributes: Vec<Attribute>,
    /// Whether its tasks may run privileged (the operator's setting).
    pub allow_privileged: bool,
    /// Whether its tasks may bind-mount host paths (the operator's setting).
    pub allow_host_mounts: bool,
    /// Whether its tasks may use the host's network (the operator's setting; Marathon's default network).
    #[serde(default = "yes")]
    pub allow_host_network: bool,
    /// `docker` or `simulated`.
    pub backend: String,
    /// Whether it is being drained.
    pub draining: bool,
    /// The sha256 of the credential issued to the agent at its first registration.
    #[serde(default)]
    pub credential_sha256: String,
}

fn yes() -> bool {
    true
}
