//! The plugins `berth` carries inside its binary, built from `plugins/` by `build.rs`.

/// The default allocator: weighted dominant-resource fairness (`plugins/proportional`).
pub const PROPORTIONAL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/proportional.wasm"));
