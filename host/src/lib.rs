//! berth's daemon and CLI.
//!
//! - [`runtime`]: the plugin runtime (wasmtime), which keeps plugins in their sandbox.
//! - [`store`]: the durable store (redb, or etcd for several masters).
//! - [`ha`]: several masters on etcd: leader election and standbys.
//! - [`bundled`]: the plugins built into the binary.

pub mod agent;
pub mod api;
pub mod bundled;
pub mod cli;
pub mod config;
pub mod convert;
pub mod ha;
pub mod master;
pub mod model;
pub mod runtime;
pub mod store;

#[cfg(test)]
mod fuzz;
