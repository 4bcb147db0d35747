//! The framework's durable key-value store (frameworks only; an allocator that imports it fails to load).
//!
//! Everything a framework must not forget (its apps, its tasks, its deployments) belongs here: plugin
//! memory is lost when an instance traps or the plugin is swapped for a new version; the store is not.
//! The host persists writes before it acts on what the same call returned.

use crate::bindings::framework::berth::plugin::store as imports;
pub use crate::bindings::framework::berth::plugin::store::StoreError;

/// The value stored under `key`.
pub fn get(key: &str) -> Option<Vec<u8>> {
    imports::get(key)
}

/// Stores `value` under `key`.
pub fn put(key: &str, value: &[u8]) -> Result<(), StoreError> {
    imports::put(key, value)
}

/// Removes `key` (a missing key is fine).
pub fn delete(key: &str) {
    imports::delete(key)
}

/// The keys starting with `prefix`, in byte order.
pub fn keys(prefix: &str) -> Vec<String> {
    imports::keys(prefix)
}
