//! Logging through the host: lines land in the daemon's log, tagged with the plugin's name and version.
//!
//! Writing to stdout or stderr works too (the host forwards them to its log at `info` and `warn`), but
//! these functions carry a level and are not buffered.

use crate::bindings::allocator::berth::plugin::host::{self, Level};

/// Logs at `trace`.
pub fn trace(message: &str) {
    host::log(Level::Trace, message);
}

/// Logs at `debug`.
pub fn debug(message: &str) {
    host::log(Level::Debug, message);
}

/// Logs at `info`.
pub fn info(message: &str) {
    host::log(Level::Info, message);
}

/// Logs at `warn`.
pub fn warn(message: &str) {
    host::log(Level::Warn, message);
}

/// Logs at `error`.
pub fn error(message: &str) {
    host::log(Level::Error, message);
}
