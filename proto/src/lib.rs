//! berth's contracts.
//!
//! - [`v1`]: the gRPC API (`proto/berth/v1/*.proto`), compiled with `protox` and `tonic-prost-build`
//!   (feature `grpc`, on by default).
//! - [`etcd`]: the part of etcd's v3 API the etcd store uses (`proto/etcd/rpc.proto`, a client only).
//! - The plugin ABI: the WIT package `berth:plugin@0.1.0` in `proto/wit/`. Its Rust bindings are generated
//!   where they are used: by `wasmtime::component::bindgen!` in the host and by `wit-bindgen` in
//!   `berth-plugin-sdk`. [`WIT_DIR`] points at the files.
//! - [`ports`] and [`Scalars`]: what "these resources fit in those" means, shared by the host (which
//!   validates) and the SDK (which plugins compute with), so both sides agree to the last port.
//!
//! Generated code is never edited by hand.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ports;
mod scalars;

pub use scalars::Scalars;

/// The `berth.v1` gRPC package.
#[cfg(feature = "grpc")]
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v1 {
    tonic::include_proto!("berth.v1");
}

/// The part of etcd's v3 API (package `etcdserverpb`) that the etcd store backend uses: a client only.
#[cfg(feature = "grpc")]
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

/// Absolute path of the WIT package `berth:plugin@0.1.0` (the plugin ABI) in this source tree.
pub const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wit");

/// The WIT package's files (name, contents), for tools that write the ABI into plugin projects.
pub const WIT_FILES: [(&str, &str); 3] = [
    ("types.wit", include_str!("../wit/types.wit")),
    ("allocator.wit", include_str!("../wit/allocator.wit")),
    ("framework.wit", include_str!("../wit/framework.wit")),
];
