//! Compiles `berth/v1/*.proto` and `etcd/rpc.proto` with `protox` (pure Rust, no `protoc` binary) and generates the tonic
//! client and server code.

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    if std::env::var_os("CARGO_FEATURE_GRPC").is_none() {
        return Ok(());
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("berth/v1");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    files.sort();
    let fds = protox::compile(&files, [root]).context("compiling berth/v1 protos")?;
    tonic_prost_build::configure().compile_fds(fds).context("generating Rust code for berth/v1")?;
    // The subset of etcd's v3 API the etcd store backend uses: a client only.
    let etcd = protox::compile([root.join("etcd/rpc.proto")], [root.join("etcd")])
        .context("compiling etcd/rpc.proto")?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(etcd)
        .context("generating Rust code for etcd/rpc.proto")?;
    // Relative to this crate, not absolute: checkouts that share a CARGO_TARGET_DIR (as CI's clones do) share
    // this script's fingerprint, and an absolute path would make one checkout watch another's files.
    println!("cargo:rerun-if-changed=berth/v1");
    println!("cargo:rerun-if-changed=etcd");
    Ok(())
}
