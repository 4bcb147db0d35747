//! berth's daemon and CLI.
//!
//! - [`runtime`]: the plugin runtime (wasmtime), which keeps plugins in their sandbox.
//! - [`bundled`]: the plugins built into the binary.

pub mod bundled;
pub mod runtime;
