//! The master: nodes and their agents, frameworks, tasks, offers, and the offer cycle that runs the
//! plugins. It owns all scheduling state and the store.
//!
//! The state lives on one thread (`berth-master`, `core.rs`), in parts that each keep their own
//! invariants: [`nodes`](self::nodes) (agents, resources held and on offer), [`frameworks`](self::frameworks)
//! (plugin instances, undelivered updates), [`tasks`](self::tasks), [`offers`](self::offers) (with decline
//! filters), [`history`](self::history) (the cycle's progress) and [`effects`](self::effects) (the store
//! batch and what waits for its commit). What happens across parts is in modules of their own: the offer
//! cycle (`cycle.rs`), the agent protocol (`agents.rs`), a task's life (`lifecycle.rs`), calls to
//! frameworks and their answers (`dispatch.rs`), operators' changes (`admin.rs`, `plugins.rs`), and reads
//! (`query.rs`). Plugin code never runs on the master thread: `calls.rs` runs it on workers.
//!
//! Everything reaches the master through [`MasterHandle`], one typed method per operation.
//!
//! It does not own plugin execution (the runtime does), containers (agents do), or the network API
//! (the `api` module does).

mod admin;
mod agents;
mod calls;
mod core;
mod cycle;
mod dispatch;
mod effects;
mod frameworks;
mod handle;
mod history;
mod kv;
mod lifecycle;
mod logs;
mod metrics;
mod nodes;
mod offers;
mod plugins;
mod query;
mod restore;
mod streams;
mod tasks;
mod types;
pub(crate) mod validate;
mod views;
mod writer;

pub use admin::NewFramework;
#[cfg(test)]
pub(crate) use agents::check_register;
pub use handle::{AgentConnection, AgentSender, MasterHandle, Upload, start};
pub use kv::FrameworkKv;
pub use metrics::Metrics;
pub use plugins::ROLLBACK_AFTER_FAILURES;
pub use tasks::Usage;
pub use types::{ApiError, Event, Events, MAX_LAUNCHES_PER_CYCLE, MasterConfig, ToAgent};
pub use views::{CycleView, FrameworkView, NodeView, PluginView, TaskFilter, TaskView};
pub use writer::Progress;
