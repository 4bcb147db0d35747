//! The plugins `berth` carries inside its binary, built from `plugins/` by `build.rs`.

use crate::runtime::PluginKind;

/// The default allocator: weighted dominant-resource fairness (`plugins/proportional`).
pub const PROPORTIONAL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/proportional.wasm"));

/// The allocator a fresh master uses.
pub const DEFAULT_ALLOCATOR: &str = "proportional";

/// Every bundled plugin: name, kind, component.
pub const PLUGINS: &[(&str, PluginKind, &[u8])] = &[("proportional", PluginKind::Allocator, PROPORTIONAL)];
