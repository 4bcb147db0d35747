//! Builds WebAssembly guest crates from a build script: a nested
//! `cargo build --profile plugin --target wasm32-wasip2` with its own target directory (as spin and
//! wasmtime build their test guests), then copies each component into `OUT_DIR`.
//!
//! Shared by `host/build.rs` (the bundled plugins) and `tests/build.rs` (the test guests) through
//! `#[path]`, so there is one implementation.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A guest crate to build.
pub struct Guest {
    /// Its Cargo package name.
    pub package: &'static str,
    /// The name to give its component in `OUT_DIR` (`<name>.wasm`).
    pub name: &'static str,
    /// Cargo features to build it with (guests with features get their own target directory, so two builds
    /// of one crate never overwrite each other's output).
    pub features: &'static [&'static str],
}

/// The workspace root: the parent of the calling crate's directory.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("crate directory has a parent").to_path_buf()
}

/// Builds `guests` and returns the path of each component, in order.
pub fn build(guests: &[Guest], watch: &[&str]) -> Vec<PathBuf> {
    let root = workspace_root();
    // Relative to the calling crate's directory (a child of the root), not absolute: checkouts that share a
    // CARGO_TARGET_DIR (as CI's clones do) share this script's fingerprint, and absolute paths would make
    // one checkout watch another's files.
    for path in watch.iter().chain(["plugin-sdk", "proto/wit", "proto/src", "Cargo.lock"].iter()) {
        println!("cargo:rerun-if-changed=../{path}");
    }
    println!("cargo:rerun-if-env-changed=BERTH_WASM_TARGET_DIR");
    require_wasm_target();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let target_dir = std::env::var_os("BERTH_WASM_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        // OUT_DIR is <target>[/<triple>]/<profile>/build/<pkg>-<hash>/out: share one directory next to
        // <profile> so every build script reuses the same compiled guest dependencies.
        let build = out_dir
            .ancestors()
            .find(|p| p.file_name().is_some_and(|n| n == "build"))
            .expect("OUT_DIR layout");
        build.parent().and_then(Path::parent).expect("OUT_DIR layout").join("wasm-guests")
    });

    // One cargo invocation per feature set.
    let mut paths = vec![PathBuf::new(); guests.len()];
    let mut sets: Vec<&[&str]> = guests.iter().map(|g| g.features).collect();
    sets.dedup();
    sets.sort();
    sets.dedup();
    for features in sets {
        let group: Vec<(usize, &Guest)> =
            guests.iter().enumerate().filter(|(_, g)| g.features == features).collect();
        let dir = if features.is_empty() {
            target_dir.clone()
        } else {
            target_dir.with_file_name(format!("wasm-guests-{}", features.join("-")))
        };
        cargo_build(&root, &dir, &group.iter().map(|(_, g)| *g).collect::<Vec<_>>(), features);
        for (i, guest) in group {
            let artifact =
                dir.join("wasm32-wasip2/plugin").join(format!("{}.wasm", guest.package.replace('-', "_")));
            let dest = out_dir.join(format!("{}.wasm", guest.name));
            std::fs::copy(&artifact, &dest)
                .unwrap_or_else(|e| panic!("copying {} to {}: {e}", artifact.display(), dest.display()));
            paths[i] = dest;
        }
    }
    paths
}

fn cargo_build(root: &Path, target_dir: &Path, guests: &[&Guest], features: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--profile", "plugin", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(target_dir);
    for guest in guests {
        command.args(["-p", guest.package]);
        for feature in features {
            command.args(["--features", &format!("{}/{feature}", guest.package)]);
        }
    }
    // The outer build's flags and wrappers (clippy-driver, coverage, host-only RUSTFLAGS) must not leak
    // into the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    let status = command.status().expect("running cargo for the wasm guests");
    let names: Vec<&str> = guests.iter().map(|g| g.package).collect();
    assert!(status.success(), "building the wasm guests {names:?} failed (see the cargo output above)");
}

/// Makes sure the `wasm32-wasip2` standard library is installed: when it is not and the toolchain comes
/// from rustup, installs it (`rustup target add`, about two seconds), as a newcomer would have to by hand.
/// rustup adds a toolchain file's `targets` only when it installs the toolchain itself, not when the
/// toolchain was there before. Fails the build with instructions when the target cannot be had.
fn require_wasm_target() {
    if wasm_target_installed() {
        return;
    }
    // Build scripts of several crates run at once: one installs, the others wait and then see it there.
    let lock = std::env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .and_then(|out| {
            out.ancestors().find(|p| p.file_name().is_some_and(|n| n == "build")).map(Path::to_path_buf)
        })
        .map(|build| build.join("wasm32-wasip2-install.lock"))
        .and_then(|path| std::fs::File::create(path).ok());
    if let Some(file) = &lock {
        let _ = file.lock();
    }
    if wasm_target_installed() {
        return;
    }
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", "wasm32-wasip2"]);
    if let Some(toolchain) = &toolchain {
        rustup.args(["--toolchain", toolchain]);
    }
    println!(
        "cargo:warning=installing the wasm32-wasip2 target with `rustup target add wasm32-wasip2` (once)"
    );
    let outcome = match rustup.output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`rustup target add wasm32-wasip2` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("rustup is not available ({e})")),
    };
    assert!(
        wasm_target_installed(),
        "\n\nberth builds its plugins for the `wasm32-wasip2` target, which is not installed for this \
         toolchain, and the build could not install it: {}.\nInstall it with:\n\n    rustup target add \
         wasm32-wasip2\n\n(or, without rustup, the wasm32-wasip2 standard library of your Rust distribution)\n",
        outcome.unwrap_or_else(|| "rustup said it installed it, yet rustc does not find it".into())
    );
}

/// Whether rustc's sysroot holds the `wasm32-wasip2` standard library.
fn wasm_target_installed() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    sysroot.is_some_and(|s| s.join("lib/rustlib/wasm32-wasip2").is_dir())
}
