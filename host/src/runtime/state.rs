//! The data of one plugin store: its WASI context (with no ambient capabilities), its memory limiter, its
//! key-value backend, and the host side of the `host`, `store` and `events` imports.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::StoreError;
use super::bindings::allocator::berth::plugin::{allocation, host, types};
use super::bindings::framework::berth::plugin::{events, scheduling, store};
use super::limits::{MAX_HOST_RESOURCES, MAX_RANDOM_BYTES, MemoryLimiter, PluginLimits};
use super::stdio::{GuestOutput, PluginLog};

/// Longest key a plugin may store.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value a plugin may store.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;

/// Where a framework's `store` import reads and writes. The master's implementation buffers writes and
/// persists them together with the effects of the call that made them.
pub trait KvBackend: Send + Sync {
    /// The value under `key`, including writes not yet persisted.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Stores `value` under `key`, or refuses when the framework's quota would be exceeded.
    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), KvRefusal>;
    /// Removes `key`.
    fn delete(&self, key: &str);
    /// Keys starting with `prefix`, in byte order.
    fn keys(&self, prefix: &str) -> Vec<String>;
}

/// Why a backend refused a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvRefusal {
    /// The framework's data would exceed its quota of this many bytes.
    QuotaExceeded(u64),
}

/// Answers a framework's `events.watched` import: whether anything receives its events now.
pub type EventsWatched = Arc<dyn Fn() -> bool + Send + Sync>;

/// What a plugin's `Store` carries.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// When the call in progress must end: waits in host calls end here too (`blocking.rs`).
    pub(crate) deadline: Instant,
    log: PluginLog,
    kv: Option<Arc<dyn KvBackend>>,
    /// `None`: nothing ever receives this plugin's events.
    events: Option<EventsWatched>,
}

impl PluginState {
    pub(crate) fn new(
        label: Arc<str>,
        limits: &PluginLimits,
        kv: Option<Arc<dyn KvBackend>>,
        events: Option<EventsWatched>,
    ) -> PluginState {
        // No preopened directories, no environment, no arguments, stdin closed, and no network: the
        // sandbox of DESIGN.md. Clocks and randomness stay (Rust's std needs them; they grant nothing).
        let log = PluginLog::new(label.clone());
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::stdout(log.clone()))
            .stderr(GuestOutput::stderr(log.clone()))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(MAX_RANDOM_BYTES)
            .build();
        // Everything WASI hands a plugin (pollables, streams) is a host object in this table: bounded, so
        // a plugin that makes timers in a loop cannot grow the daemon's memory.
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HOST_RESOURCES);
        PluginState {
            wasi,
            table,
            limiter: MemoryLimiter::new(limits),
            deadline: Instant::now(),
            log,
            kv,
            events,
        }
    }
}

impl PluginState {
    /// The WASI resources of the instance.
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl host::Host for PluginState {
    fn log(&mut self, level: host::Level, message: String) {
        self.log.line(level, &message);
    }

    fn now_ms(&mut self) -> u64 {
        unix_ms()
    }
}

impl store::Host for PluginState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.kv.as_ref()?.get(&key)
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), StoreError> {
        check_key(&key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::ValueTooLarge(value.len() as u64));
        }
        match &self.kv {
            Some(kv) => {
                kv.put(&key, value).map_err(|KvRefusal::QuotaExceeded(q)| StoreError::QuotaExceeded(q))
            }
            None => Err(StoreError::QuotaExceeded(0)),
        }
    }

    fn delete(&mut self, key: String) {
        if let Some(kv) = &self.kv {
            kv.delete(&key);
        }
    }

    fn keys(&mut self, prefix: String) -> Vec<String> {
        self.kv.as_ref().map(|kv| kv.keys(&prefix)).unwrap_or_default()
    }
}

impl events::Host for PluginState {
    fn watched(&mut self) -> bool {
        self.events.as_ref().is_some_and(|watched| watched())
    }
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError::KeyInvalid(format!(
            "keys must be 1 to {MAX_KEY_BYTES} bytes, this one is {}",
            key.len()
        )));
    }
    Ok(())
}

// Interfaces that only define types.
impl types::Host for PluginState {}
impl allocation::Host for PluginState {}
impl scheduling::Host for PluginState {}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
