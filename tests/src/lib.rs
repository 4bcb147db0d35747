//! Helpers for berth's end-to-end tests: the test guests, and views to feed allocators.

#![forbid(unsafe_code)]

pub mod bench;
pub mod browser;
pub mod cluster;
pub mod docker;
pub mod etcd;
pub mod languages;
pub mod metrics;
pub mod pki;
pub mod provision;
pub mod views;

/// Paths of the test guest components built by `build.rs` from `tests/guests/`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));

    /// The bytes of a test guest.
    pub fn read(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("reading test guest {path}: {e}"))
    }
}
