//! The plugin guide (`plugin-sdk/README.md`) works when followed literally: its walkthrough's commands, run in
//! order, end with a custom allocator deciding placements.

use std::process::Command;

#[test]
fn the_plugin_guide_walkthrough_works_when_followed_literally() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let guide = std::fs::read_to_string(root.join("plugin-sdk/README.md")).unwrap();
    let start = guide.find("<!-- walkthrough:start -->").expect("walkthrough start marker");
    let end = guide.find("<!-- walkthrough:end -->").expect("walkthrough end marker");
    let mut script = String::from("set -euo pipefail\n");
    let mut in_block = false;
    for line in guide[start..end].lines() {
        match (in_block, line) {
            (false, "```sh") => in_block = true,
            (true, "```") => in_block = false,
            (true, line) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(script.contains("berth allocator use spread"), "the walkthrough was extracted:\n{script}");

    let home = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(root)
        .env("HOME", home.path())
        .env_remove("BERTH_MASTER")
        .env_remove("BERTH_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Whatever happened, do not leave the master running.
    let _ = Command::new("pkill").args(["-f", "--", "--listen 127.0.0.1:8181"]).status();
    assert!(out.status.success(), "the walkthrough failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("[2, 2, 2]"), "two tasks on each of the three nodes:\n{stdout}");
    assert!(stdout.contains("spread"), "{stdout}");
}
