//! The plugin runtime: turns WebAssembly components into callable plugins and keeps each in its sandbox.
//!
//! It owns wasmtime (nothing else in berth touches it): one [`Engine`](wasmtime::Engine) with epoch
//! interruption, a `Store` per plugin instance with a memory cap and a deadline per call, no ambient WASI
//! capabilities, validation of a component against its world, a cache of precompiled artifacts, and a
//! [`Registry`] of versioned plugins that swaps versions atomically and can roll back.
//!
//! It does not decide when plugins are called or what their answers mean (the master does), nor where
//! their bytes come from (the API and the store).
//!
//! Calls block the calling thread while the guest runs: make them from a dedicated thread or
//! `spawn_blocking`, never from an async task.

pub mod bindings;
mod blocking;
mod cache;
mod delta;
mod engine;
mod framework;
mod limits;
mod registry;
mod state;
mod stats;
mod stdio;
mod validate;
mod version;

use std::fmt;
use std::time::Duration;

/// The exact compiler build berth compiles plugins with: wasmtime's release and a digest of the Cranelift
/// glue the binary was built with (berth's patched copy, see host/vendor/README.md, or upstream's). It is
/// written into every compiled artifact and names the artifact cache's files, so an artifact made by
/// another build of the compiler is never loaded.
pub const COMPILER_BUILD: &str = concat!("berth-wasmtime-48.0.8-", env!("BERTH_CRANELIFT_GLUE"));
pub use cache::{ArtifactCache, ArtifactLedger};
pub use engine::Runtime;
pub use framework::FrameworkInstance;
pub use limits::{MAX_MEMORY_MIB, PluginLimits};
pub use registry::{KEEP_VERSIONS, Plugin, Registry};
pub use state::{EventsWatched, KvBackend, KvRefusal};
pub use stats::StatsSnapshot;
pub use version::{AllocatorInstance, NewVersion, Version, VersionInfo};

/// The two plugin worlds of `proto/wit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Decides who gets which resources (`allocator` world).
    Allocator,
    /// Decides which task to launch on which offer (`framework` world).
    Framework,
}

impl PluginKind {
    /// The exports a component must have to implement this kind's world.
    pub fn required_exports(self) -> &'static [&'static str] {
        match self {
            PluginKind::Allocator => &["init", "allocate"],
            PluginKind::Framework => &["init", "demand", "offers", "status", "tick", "handle"],
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Allocator => "allocator",
            PluginKind::Framework => "framework",
        })
    }
}

impl std::str::FromStr for PluginKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allocator" => Ok(PluginKind::Allocator),
            "framework" => Ok(PluginKind::Framework),
            other => Err(format!("unknown plugin kind `{other}` (expected `allocator` or `framework`)")),
        }
    }
}

/// Why a plugin could not be loaded, swapped or rolled back. Nothing changed when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file ({0})")]
    NotWasm(&'static str),
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the plugin for `wasm32-wasip2`, or wrap \
         the module with `wasm-tools component new`"
    )]
    CoreModule,
    /// wasmtime refused to compile it.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// It lacks exports its world requires.
    #[error("not {article} {kind} plugin: the component does not export {missing}{hint}")]
    MissingExports {
        /// `a` or `an`.
        article: &'static str,
        /// The kind it was loaded as.
        kind: PluginKind,
        /// The missing export names, quoted and joined.
        missing: String,
        /// A hint when it looks like the other kind.
        hint: String,
    },
    /// An export exists with the wrong type.
    #[error("the component's exports do not match the {kind} world: {detail}")]
    ExportTypes {
        /// The kind it was loaded as.
        kind: PluginKind,
        /// wasmtime's description of the mismatch.
        detail: String,
    },
    /// It imports something the host does not provide to this kind.
    #[error("the component imports something berth does not provide to {kind} plugins: {detail}")]
    Imports {
        /// The kind it was loaded as.
        kind: PluginKind,
        /// wasmtime's description of the import.
        detail: String,
    },
    /// `init` returned an error.
    #[error("init refused the configuration: {0}")]
    InitRefused(String),
    /// `init` trapped, looped or ran out of memory.
    #[error("init failed: {0}")]
    InitFailed(CallError),
    /// No plugin has that name.
    #[error("no plugin named `{0}`")]
    UnknownPlugin(String),
    /// The plugin exists but has no such version.
    #[error("plugin `{name}` has no version {version}")]
    UnknownVersion {
        /// Plugin name.
        name: String,
        /// The version asked for.
        version: u32,
    },
    /// A new version was uploaded as the other kind.
    #[error("plugin `{name}` is {article} {actual} plugin; a new version must be one too")]
    KindMismatch {
        /// Plugin name.
        name: String,
        /// `a` or `an`.
        article: &'static str,
        /// Its kind.
        actual: PluginKind,
    },
    /// Rollback with nothing to go back to.
    #[error("plugin `{0}` has no earlier version to roll back to")]
    NoEarlierVersion(String),
    /// A plugin name that cannot be used.
    #[error(
        "invalid plugin name `{0}`: use 1-63 characters from a-z, 0-9, `-` and `_`, starting with a letter"
    )]
    InvalidName(String),
    /// The artifact cache failed (a disk error, not the plugin's fault).
    #[error("artifact cache: {0}")]
    Cache(#[from] std::io::Error),
}

/// Why one call into a plugin failed. The instance that failed is discarded; the next call gets a fresh one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The call ran past its deadline and was interrupted.
    #[error("the call ran past its deadline of {0:?} and was stopped")]
    Deadline(Duration),
    /// The plugin's memories and tables would have gone past its memory budget.
    #[error("the plugin's memories and tables would reach {asked_mib} MiB, past its budget of {cap_mib} MiB")]
    Memory {
        /// What it asked for, MiB.
        asked_mib: u64,
        /// Its cap, MiB.
        cap_mib: u64,
    },
    /// Any other trap: a panic, `unreachable`, an out-of-bounds access.
    #[error("the plugin trapped: {0}")]
    Trap(String),
    /// A fresh instance could not be created (or its `init` failed) after an earlier failure.
    #[error("the plugin could not be re-instantiated: {0}")]
    Instantiate(String),
    /// The plugin answered against the rules of its world.
    #[error("the plugin broke its world's rules: {0}")]
    Protocol(&'static str),
    /// The plugin handed back more than the limits on what a call may return allow; the message names
    /// the limit.
    #[error("the plugin returned too much: {0}")]
    Limit(String),
}

impl CallError {
    /// A short name for counting failures by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Deadline(_) => "deadline",
            CallError::Memory { .. } => "memory",
            CallError::Trap(_) => "trap",
            CallError::Instantiate(_) => "instantiate",
            CallError::Protocol(_) => "protocol",
            CallError::Limit(_) => "limit",
        }
    }
}

/// The sha256 of `bytes`, in hex: how components are named.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Whether `name` can name a plugin: it becomes a file name and a URL path segment.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn article(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Allocator => "an",
        PluginKind::Framework => "a",
    }
}
