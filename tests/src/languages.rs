//! Plugins in other languages: the toolchains they need (provisioned by the tests), and building the examples in `plugins/` from source with their own `build.sh`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Provisions the toolchains of the Python and C plugins (see [`crate::provision`]) and returns a `PATH` that
/// finds them: `componentize-py`, `wit-bindgen`, `python3 -m ziglang`, `wasm-tools`.
pub fn require_tools() -> std::ffi::OsString {
    crate::provision::plugin_toolchains_path()
}

/// Runs a plugin directory's `build.sh OUTPUT` (once per process per directory) and returns the component.
pub fn build_example(dir: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap();
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(dir) {
        return path.clone();
    }
    let path = require_tools();
    let out_dir = std::env::temp_dir().join(format!("berth-examples-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("{}.wasm", dir.replace('/', "_")));
    let script = root().join(dir).join("build.sh");
    let result =
        Command::new("sh").arg(&script).arg(&out).env("PATH", path).output().expect("running build.sh");
    assert!(
        result.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    built.insert(dir.to_string(), out.clone());
    out
}
