//! The plugin guide (`plugin-sdk/README.md`) works when followed literally: its walkthrough's commands, run in
//! order, end with a custom allocator deciding placements.

use std::process::Command;

#[test]
fn the_plugin_guide_walkthrough_works_when_followed_literally() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let guide = std::fs::read_to_string(root.join("plugin-sdk/README.md")).unwrap();
    let start = guide.find("<!-- walkthrough:start -->").expect("walkthrough start marker");
    let end = guide.find("<!-- walkthrough:end -->").expect("walkthrough end marker");
    // Whatever happens, the master the walkthrough starts is stopped with the script (by its pid, which the
    // walkthrough keeps in BERTH_PID), and it listens on a free port rather than the guide's 8181.
    let mut script =
        String::from("set -euo pipefail\ntrap 'kill \"${BERTH_PID:-}\" 2>/dev/null || true' EXIT\n");
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
    assert!(script.contains("127.0.0.1:8181"), "the walkthrough's address:\n{script}");
    let script =
        script.replace("127.0.0.1:8181", &format!("127.0.0.1:{}", berth_tests::cluster::free_port()));

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
    assert!(out.status.success(), "the walkthrough failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("[2, 2, 2]"), "two tasks on each of the three nodes:\n{stdout}");
    assert!(stdout.contains("spread"), "{stdout}");
}
