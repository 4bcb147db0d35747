//! Builds the bundled plugins (`plugins/proportional`, `plugins/marathon`) from source as WebAssembly components, so that
//! `berth` embeds them and `berth serve` runs with no files beside it.

#[path = "build/wasm_guests.rs"]
mod wasm_guests;

use wasm_guests::Guest;

fn main() {
    glue_digest();
    wasm_guests::build(
        &[
            Guest { package: "berth-plugin-proportional", name: "proportional", features: &[] },
            Guest { package: "berth-plugin-marathon", name: "marathon", features: &[] },
        ],
        &["plugins/proportional", "plugins/marathon"],
    );
}

/// Sets `BERTH_CRANELIFT_GLUE`: a digest of the sources of the Cranelift glue crate the binary is built with
/// (berth's patched copy in `host/vendor`, when it is there), or `upstream`. It becomes part of the
/// compiler build written into compiled plugins (`runtime::COMPILER_BUILD`).
fn glue_digest() {
    use std::hash::Hasher as _;
    let vendored = std::path::Path::new("vendor/wasmtime-internal-cranelift");
    println!("cargo:rerun-if-changed=vendor");
    if !vendored.is_dir() {
        println!("cargo:rustc-env=BERTH_CRANELIFT_GLUE=upstream");
        return;
    }
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("reading host/vendor") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() { files(&path, out) } else { out.push(path) }
        }
    }
    let mut all = Vec::new();
    files(vendored, &mut all);
    all.sort();
    // FNV-1a over every file's path and contents: the same sources give the same digest on every machine.
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    for path in all {
        hash.write(path.to_string_lossy().as_bytes());
        hash.write(&std::fs::read(&path).expect("reading a vendored file"));
    }
    println!("cargo:rustc-env=BERTH_CRANELIFT_GLUE=patched-{:016x}", hash.finish());
}

struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
