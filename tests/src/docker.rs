//! The real Docker engine, for tests of Docker behaviour: a check that it is there (the tests stop with a
//! message when it is not, never pass silently), test images built `FROM scratch` from Debian's static
//! busybox (nothing can be pulled; the busybox is provisioned by [`crate::provision`]), and container lookups.

use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// Runs `docker` with `args`.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).env("DOCKER_BUILDKIT", "0").output().expect("running the docker CLI")
}

/// Ends the test process with a clear message unless a Docker engine answers (see [`crate::provision`]).
pub fn require() {
    crate::provision::docker();
}

/// Builds an image tagged `tag` from scratch: a static busybox (with its applets linked into `/bin`) plus
/// `files` (path in the image, contents, executable).
pub fn build_image(tag: &str, files: &[(&str, &str)]) {
    require();
    let busybox = crate::provision::busybox();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&busybox, dir.path().join("busybox")).unwrap();
    let mut dockerfile = String::from(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    );
    for (i, (path, contents)) in files.iter().enumerate() {
        let name = format!("file{i}");
        std::fs::write(dir.path().join(&name), contents).unwrap();
        dockerfile.push_str(&format!("COPY {name} {path}\nRUN [\"/bin/chmod\", \"755\", \"{path}\"]\n"));
    }
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let out = docker(&["build", "-q", "-t", tag, dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "building {tag}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `berth-test/busybox:latest`: busybox and nothing else, built once per test process.
pub fn busybox() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    const TAG: &str = "berth-test/busybox:latest";
    BUILT.get_or_init(|| build_image(TAG, &[]));
    TAG
}

/// IDs of the containers (running or not) with every one of these labels (`key=value`).
pub fn containers(labels: &[&str]) -> Vec<String> {
    let mut args = vec!["ps", "-aq", "--no-trunc"];
    let filters: Vec<String> = labels.iter().map(|l| format!("label={l}")).collect();
    for f in &filters {
        args.push("--filter");
        args.push(f);
    }
    let out = docker(&args);
    assert!(
        out.status.success(),
        "`docker {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect()
}

/// `docker inspect` of one container.
pub fn inspect(container: &str) -> Value {
    let out = docker(&["inspect", container]);
    assert!(out.status.success(), "inspecting {container}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap().remove(0)
}

/// Removes every container of an agent.
pub fn remove_agent_containers(agent_id: &str) {
    for id in containers(&[&format!("berth.agent={agent_id}")]) {
        let _ = docker(&["rm", "-f", &id]);
    }
}

/// `my-app:latest`, the image of DEVELOPERS.md's example: busybox and a `my-app` command that serves
/// "hello from my-app" over HTTP on `$PORT0` (Marathon's first port; 8080 without it).
pub fn my_app() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    const TAG: &str = "my-app:latest";
    const SCRIPT: &str = "#!/bin/sh\nmkdir -p /www && echo \"hello from my-app\" > /www/index.html\nexec httpd -f -p \"${PORT0:-8080}\" -h /www\n";
    BUILT.get_or_init(|| build_image(TAG, &[("/bin/my-app", SCRIPT)]));
    TAG
}
