//! The plugins `berth` carries inside its binary, built from `plugins/` by `build.rs`.

use crate::runtime::PluginKind;

/// The default allocator: weighted dominant-resource fairness (`plugins/proportional`).
pub const PROPORTIONAL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/proportional.wasm"));

/// The default framework: a Marathon-compatible service scheduler (`plugins/marathon`).
pub const MARATHON: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/marathon.wasm"));

/// The allocator a fresh master uses.
pub const DEFAULT_ALLOCATOR: &str = "proportional";

/// The framework a fresh master runs (plugin and framework of the same name), served at `/v2/`.
pub const DEFAULT_FRAMEWORK: &str = "marathon";

/// Every bundled plugin: name, kind, component.
pub const PLUGINS: &[(&str, PluginKind, &[u8])] =
    &[("proportional", PluginKind::Allocator, PROPORTIONAL), ("marathon", PluginKind::Framework, MARATHON)];
