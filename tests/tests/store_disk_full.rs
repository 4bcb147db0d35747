//! The store on a disk that fills mid-deployment: a small tmpfs under the data directory, filled to the
//! last byte while apps are posted. The master acknowledges nothing it did not write, `/health` says why,
//! its queues stop taking work instead of growing, and once space returns it writes what waited and goes on;
//! after a kill -9, everything it acknowledged is there.
//!
//! Mounting a tmpfs needs root (CI runs as root); the test fails, saying so, where it cannot mount.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::cluster::{Master, eventually, shared_artifact_cache};
use serde_json::json;

/// A tmpfs mounted at a directory for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test puts the store on a small tmpfs and needs to mount one (run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem at `dir` to its last byte with one file, and returns the file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let mut byte = [0u8; 1];
    while file.write_all(&byte).is_ok() {
        byte[0] = byte[0].wrapping_add(1);
    }
    let _ = file.sync_all();
    path
}

fn app(i: usize) -> serde_json::Value {
    // Sizeable, so the store's file must grow within a few apps.
    json!({"id": format!("/fill/app-{i:03}"), "instances": 1, "cpus": 0.01, "mem": 8, "cmd": "sleep 3600",
        "container": {"type": "DOCKER", "docker": {"image": "fill:1"}},
        "env": {"PAD": "x".repeat(256 * 1024)}})
}

/// POSTs an app, giving up after `timeout`: the status, or `None` when no answer came in time.
fn post(master: &Master, body: &str, timeout: Duration) -> Option<u16> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let response = agent
        .post(&format!("{}/v2/apps", master.url))
        .header("authorization", &format!("Bearer {}", master.token()))
        .header("content-type", "application/json")
        .send(body)
        .ok()?;
    Some(response.status().as_u16())
}

fn health(master: &Master) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent.get(&format!("{}/health", master.url)).call().unwrap();
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
}

#[test]
fn a_full_disk_acknowledges_nothing_unwritten_reports_itself_and_recovers_when_space_returns() {
    let mut mount = None;
    let cache = shared_artifact_cache();
    let mut master = Master::start_prepared(&["--simulate-nodes", "1", "--artifact-cache", &cache], |data| {
        mount = Some(Tmpfs::mount(data, "48m"));
    });
    let data = master.data_dir.clone();
    let (status, body) = master.request("POST", "/v2/apps", &app(0).to_string());
    assert_eq!(status, 201, "{body}");
    let mut acknowledged = vec![0];

    // The disk fills: posts stop being acknowledged.
    let filler = fill(&data);
    let mut unanswered = 0;
    let mut refused = Vec::new();
    for i in 1..120 {
        match post(&master, &app(i).to_string(), Duration::from_secs(3)) {
            Some(201) => acknowledged.push(i),
            Some(status) => refused.push(status),
            None => unanswered += 1,
        }
        if unanswered + refused.len() >= 3 {
            break;
        }
    }
    assert!(
        unanswered + refused.len() >= 3,
        "a full disk stopped nothing: {} apps acknowledged",
        acknowledged.len()
    );
    assert!(refused.iter().all(|s| *s == 503), "refusals say the master is unavailable: {refused:?}");

    // /health says why, at once (the master thread itself is held by the writer).
    let started = Instant::now();
    let (status, text) = health(&master);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("store cannot be written") && text.contains("disk full"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "health answered without the master thread");
    assert!(master.logs().contains("cannot persist state"), "the log says so too");

    // Space returns: what waited is written, and the master goes on.
    std::fs::remove_file(&filler).unwrap();
    eventually("the master to be healthy again", Duration::from_secs(60), || {
        (health(&master).0 == 200).then_some(())
    });
    assert!(master.logs().contains("the store is writable again"));
    let (status, body) = master.request("POST", "/v2/apps", &app(200).to_string());
    assert_eq!(status, 201, "{body}");
    acknowledged.push(200);

    // Nothing acknowledged is lost, through a kill -9.
    master.restart();
    let apps = master.get("/v2/apps");
    let ids: Vec<&str> = apps["apps"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    for i in &acknowledged {
        let id = format!("/fill/app-{i:03}");
        assert!(ids.contains(&id.as_str()), "{id} was acknowledged and is gone: {ids:?}");
    }
    drop(master);
    drop(mount);
}
