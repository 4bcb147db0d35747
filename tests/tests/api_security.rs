//! Hostile clients and agents: the master refuses before it buffers, keeps a stream nobody reads from
//! growing its heap, lets an anonymous read change nothing, keeps a node's identity to the agent it issued
//! a credential to, and lets tasks use only the networks the operator allows, with Docker's defaults
//! hardened. Against the real Docker engine and real clients (the `berth` CLI, plain HTTP).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::cluster::{Agent, Master, berth_bin, eventually};
use berth_tests::{docker, guests};
use serde_json::{Value, json};

/// A reader of `len` zero bytes that never holds them: a huge body that costs the client nothing.
struct Zeros(u64);

impl Read for Zeros {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.0) as usize;
        buf[..n].fill(0);
        self.0 -= n as u64;
        Ok(n)
    }
}

#[test]
fn an_unauthenticated_200_mib_upload_is_refused_without_being_buffered() {
    let master = Master::start(&["--no-local-agent"]);
    let (before, _) = master.memory_mib();

    // gRPC, with the real client: `berth plugin load` of a 200 MiB file and a wrong token.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    std::fs::File::create(&big).unwrap().set_len(200 << 20).unwrap();
    let out = master.cli_with_token(
        &["plugin", "load", "--kind", "framework", "big", big.to_str().unwrap()],
        Some("wrong"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("operator token"), "{stderr}");

    // HTTP: 200 MiB posted to a framework's API with no token at all.
    let response = ureq::post(&format!("{}/v2/apps", master.url))
        .header("content-type", "application/json")
        .config()
        .http_status_as_error(false)
        .build()
        .send(ureq::SendBody::from_reader(&mut Zeros(200 << 20)));
    // The master answers 401 at the headers and closes; the client may see the answer or a reset.
    if let Ok(response) = response {
        assert_eq!(response.status(), 401);
    }

    let (now, peak) = master.memory_mib();
    eprintln!("master memory: {before} MiB before the uploads, a peak of {peak} MiB since, {now} MiB now");
    assert!(
        peak < before + 64,
        "the master buffered a refused body: {before} MiB before, a peak of {peak} MiB since ({now} MiB now)"
    );
    assert!(master.cli(&["plugin", "ls"]).status.success(), "the master still answers");
}

#[test]
fn a_log_stream_nobody_reads_leaves_the_master_flat_and_logs_need_the_operator_token() {
    docker::require();
    let master = Master::start(&[]);
    let line = "berth-log-flood-0123456789abcdefghijklmnopqrstuvwxyz-0123456789abcdefghijklmnopqrstuvwxyz";
    let app = json!({"id": "chatty", "instances": 1, "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": docker::busybox(), "command": format!("yes {line}")}}});
    let (status, body) = master.request("POST", "/v2/apps", &app.to_string());
    assert_eq!(status, 201, "{body}");
    let task = eventually("the chatty task to run", Duration::from_secs(60), || {
        master
            .tasks("marathon")
            .into_iter()
            .find(|t| t["state"] == "running")
            .map(|t| t["task"].as_str().unwrap().to_string())
    });

    // Task output holds secrets: no token, no logs.
    let out = master.cli_with_token(&["task", "logs", &task, "--framework", "marathon"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("operator token"), "{stderr}");

    // Followers that never read their output: each blocks on a full pipe and stops reading the stream.
    let followers: Vec<_> = (0..4)
        .map(|_| {
            Command::new(berth_bin())
                .args(["task", "logs", &task, "--framework", "marathon", "--follow"])
                .env("BERTH_MASTER", &master.url)
                .env("BERTH_TOKEN", master.token())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let (baseline, _) = master.memory_mib();
    let mut highest = baseline;
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        highest = highest.max(master.memory_mib().0);
        assert_eq!(ureq::get(&format!("{}/health", master.url)).call().unwrap().status(), 200);
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "master memory while 4 log streams went unread: {baseline} MiB at the start, {highest} MiB at most"
    );
    assert!(
        highest < baseline + 64,
        "the master's memory grew from {baseline} MiB to {highest} MiB while a stream went unread"
    );
    for mut follower in followers {
        let _ = follower.kill();
        let _ = follower.wait();
    }
}

/// A framework API path as an anonymous caller or with the operator token.
fn probe(master: &Master, path: &str, token: bool) -> String {
    let url = format!("{}/frameworks/probe{path}", master.url);
    let mut request = ureq::get(&url);
    if token {
        request = request.header("authorization", &format!("Bearer {}", master.token()));
    }
    let mut response = request.config().http_status_as_error(false).build().call().unwrap();
    let status = response.status();
    let body = response.body_mut().read_to_string().unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn suppressed(master: &Master) -> bool {
    let frameworks = master.json(&["framework", "ls"]);
    let probe = frameworks.as_array().unwrap().iter().find(|f| f["name"] == "probe").unwrap().clone();
    probe["suppressed"].as_bool().unwrap()
}

#[test]
fn an_anonymous_get_writes_nothing_and_its_actions_are_dropped() {
    let master = Master::start(&["--no-local-agent"]);
    master.load_plugin("framework", "probe", guests::SANDBOX_PROBE);
    master.ok(&["framework", "add", "probe", "--plugin", "probe"]);

    // The guest writes its store and asks for its offers to be suppressed; for an anonymous caller the
    // host keeps neither.
    assert_eq!(probe(&master, "/mutate", false), "mutated");
    assert_eq!(probe(&master, "/mutated", true), "none; authenticated=true");
    assert!(!suppressed(&master), "an anonymous read suppressed the framework");
    assert_eq!(probe(&master, "/mutated", false), "none; authenticated=false");

    // With the operator token the same call changes both: the check above could fail.
    assert_eq!(probe(&master, "/mutate", true), "mutated");
    assert_eq!(probe(&master, "/mutated", true), "yes; authenticated=true");
    eventually("the operator's suppress to apply", Duration::from_secs(10), || {
        suppressed(&master).then_some(())
    });
}

#[test]
fn reads_answer_only_to_addresses_and_known_names() {
    let master = Master::start(&["--no-local-agent"]);
    let get = |host: &str| {
        ureq::get(&format!("{}/v1/nodes", master.url))
            .header("host", host)
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap()
    };
    assert_eq!(get(&format!("127.0.0.1:{}", master.port)).status(), 200);
    assert_eq!(get(&format!("localhost:{}", master.port)).status(), 200);
    let mut rebound = get("attacker.example");
    assert_eq!(rebound.status(), 403);
    let message = rebound.body_mut().read_to_string().unwrap();
    assert!(message.contains("allowed_hosts") && message.contains("attacker.example"), "{message}");
}

#[test]
fn an_agent_id_stays_with_the_agent_it_was_issued_to() {
    let master = Master::start(&["--no-local-agent", "--agent-timeout-ms", "2000"]);
    let mut owner = Agent::start(&master, "owner", &["--simulate"]);
    eventually("the owner to register", Duration::from_secs(30), || {
        (master.get("/v1/nodes").as_array()?.len() == 1).then_some(())
    });
    let id = eventually("the owner's id and credential", Duration::from_secs(10), || {
        owner.file("agent-credential")?;
        owner.agent_id()
    });
    let credential = owner.file("agent-credential").unwrap();
    let token = master.agent_token();
    let node = |master: &Master| master.get("/v1/nodes").as_array().unwrap()[0].clone();

    // The id, and even the credential, of a connected agent: refused.
    let copy = Agent::start_seeded(
        &master,
        "copy",
        &token,
        &[("agent-id", &id), ("agent-credential", &credential)],
        &["--simulate"],
    );
    eventually("the copy to be refused", Duration::from_secs(30), || {
        copy.logs().contains("an agent with this id is connected").then_some(())
    });
    drop(copy);

    // Once the owner is gone past the timeout, the id alone is not enough: the credential is asked for.
    let impostor = Agent::start_seeded(&master, "impostor", &token, &[("agent-id", &id)], &["--simulate"]);
    owner.kill9();
    eventually("the impostor to be refused for its credential", Duration::from_secs(30), || {
        impostor.logs().contains("credential is not the one issued").then_some(())
    });
    assert_eq!(node(&master)["hostname"], "owner", "{}", impostor.logs());
    assert_eq!(master.get("/v1/nodes").as_array().unwrap().len(), 1);
    drop(impostor);

    // The owner comes back with its credential and is taken back.
    owner.restart();
    eventually("the owner back", Duration::from_secs(30), || {
        let n = node(&master);
        (n["hostname"] == "owner" && n["state"] == "active").then_some(())
    });
}

fn last_failure(master: &Master, app: &str) -> Option<String> {
    let (_, body) = master.request("GET", &format!("/v2/apps/{app}?embed=app.lastTaskFailure"), "");
    let v: Value = serde_json::from_str(&body).ok()?;
    v["app"]["lastTaskFailure"]["message"].as_str().map(str::to_string)
}

#[test]
fn networks_are_the_operators_to_allow_and_task_containers_are_hardened() {
    docker::require();
    let master = Master::start(&[]);
    let agent = master.local_agent_id().unwrap();
    let node = agent.clone();

    // Only the operator sets a node's policy.
    let out = master.cli_with_token(&["node", "allow", &node, "--host-network", "false"], None);
    assert!(!out.status.success(), "an anonymous caller changed a node's policy");
    let changed = master.json(&["node", "allow", &node, "--host-network", "false"]);
    assert_eq!(changed["allow"], "-", "{changed}");

    let image = docker::busybox();
    let host = json!({"id": "hostnet", "instances": 1, "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": image, "command": "sleep 3600", "network": "HOST"}}});
    let joiner = json!({"id": "joiner", "instances": 1, "cpus": 0.1, "mem": 32,
        "networks": [{"mode": "container", "name": "container:berth-victim"}],
        "container": {"type": "DOCKER", "docker": {"image": image, "command": "sleep 3600"}}});
    let bridged = json!({"id": "bridged", "instances": 1, "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": image, "command": "sleep 3600", "network": "BRIDGE"}}});
    for app in [&host, &joiner, &bridged] {
        let (status, body) = master.request("POST", "/v2/apps", &app.to_string());
        assert_eq!(status, 201, "{body}");
    }
    let refused = eventually("the host-network app to be refused", Duration::from_secs(30), || {
        last_failure(&master, "hostnet")
    });
    assert!(refused.contains("host network is not allowed"), "{refused}");
    let refused = eventually("the container: app to be refused", Duration::from_secs(30), || {
        last_failure(&master, "joiner")
    });
    assert!(refused.contains("`container:` networks are not allowed"), "{refused}");

    // The bridged app runs, in a container with the hardened defaults.
    let task = eventually("the bridged app to run", Duration::from_secs(60), || {
        master
            .tasks("marathon")
            .into_iter()
            .find(|t| t["state"] == "running" && t["task"].as_str().unwrap().starts_with("bridged"))
            .map(|t| t["task"].as_str().unwrap().to_string())
    });
    let marathon = docker::containers(&[&format!("berth.agent={agent}"), "berth.framework=marathon"]);
    assert_eq!(marathon.len(), 1, "only the bridged app has a container: {marathon:?}");
    let containers = docker::containers(&[&format!("berth.agent={agent}"), &format!("berth.task={task}")]);
    assert_eq!(containers.len(), 1, "{containers:?}");
    let host_config = docker::inspect(&containers[0])["HostConfig"].clone();
    assert_eq!(host_config["PidsLimit"], 4096, "{host_config}");
    assert_eq!(host_config["CapDrop"], json!(["ALL"]), "{host_config}");
    assert!(host_config["CapAdd"].as_array().is_some_and(|caps| !caps.iter().any(|c| c == "SYS_ADMIN")));
    assert_eq!(host_config["Privileged"], false);
    assert!(host_config["SecurityOpt"].to_string().contains("no-new-privileges"), "{host_config}");
    assert_eq!(host_config["LogConfig"]["Config"]["max-size"], "50m", "{host_config}");

    // Allowing the host network again lets the waiting app run.
    master.json(&["node", "allow", &node, "--host-network", "true"]);
    eventually("the host-network app to run once allowed", Duration::from_secs(60), || {
        master
            .tasks("marathon")
            .iter()
            .any(|t| t["state"] == "running" && t["task"].as_str().unwrap().starts_with("hostnet"))
            .then_some(())
    });
}

/// An anonymous request to the console's routes, as the console sends it: status, `www-authenticate`, body.
fn anonymous(method: &str, url: &str, body: &str) -> (u16, Option<String>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let response = match method {
        "GET" => agent.get(url).header("x-berth-console", "1").call(),
        _ => agent.post(url).header("x-berth-console", "1").send(body),
    }
    .unwrap();
    let prompt = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    let status = response.status().as_u16();
    (status, prompt, response.into_body().read_to_string().unwrap())
}

/// The JSON routes the web console changes things through: the operator token before any work (and
/// before task output, even while reads are open), no browser login prompt for the console, a 422 naming
/// what was wrong with a body, and each change visible in the reads.
#[test]
fn the_consoles_routes_need_the_operator_token_and_say_what_is_wrong() {
    let master = Master::start(&["--simulate-nodes", "1"]);
    let url = |path: &str| format!("{}{path}", master.url);

    let (status, prompt, body) =
        anonymous("POST", &url("/v1/frameworks/marathon/weight"), r#"{"weight": 2}"#);
    assert_eq!(status, 401, "{body}");
    assert_eq!(prompt, None, "no Basic prompt for the console's own requests");
    let (status, _, body) = anonymous("GET", &url("/v1/frameworks/marathon/tasks/x/logs"), "");
    assert_eq!(status, 401, "task output needs the operator token even while reads are open: {body}");
    let (status, _, body) = anonymous("GET", &url("/v1/whoami"), "");
    assert_eq!((status, body.as_str()), (200, r#"{"operator":false}"#));
    let (status, _, _) = anonymous("GET", &url("/ui/"), "");
    assert_eq!(status, 200);
    let (status, _, _) = anonymous("GET", &url("/ui/../v1/tasks"), "");
    assert_eq!(status, 404, "only the console's own files are served under /ui/");
    assert_eq!(master.get("/v1/frameworks")[0]["weight"], 1.0, "nothing changed");

    let (status, body) = master.request("GET", "/v1/whoami", "");
    assert_eq!((status, body.as_str()), (200, r#"{"operator":true}"#));
    let (status, body) = master.request("POST", "/v1/frameworks/marathon/weight", r#"{"weight": "two"}"#);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("not what this call takes") && body.contains("invalid type"), "{body}");
    let (status, body) =
        master.request("POST", "/v1/frameworks/marathon/weight", r#"{"weight": 2, "extra": 1}"#);
    assert_eq!(status, 422, "an unknown field is refused by name: {body}");
    assert!(body.contains("extra"), "{body}");
    let (status, body) = master.request("POST", "/v1/frameworks/marathon/weight", r#"{"weight": -1}"#);
    assert_eq!(status, 422, "{body}");
    let (status, body) = master.request("POST", "/v1/frameworks/marathon/weight", r#"{"weight": 2.5}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(master.get("/v1/frameworks")[0]["weight"], 2.5);

    let (status, body) = master.request("POST", "/v1/frameworks/marathon/tasks/nope/kill", "");
    assert_eq!(status, 404, "{body}");
    let (status, body) =
        master.request("POST", "/v1/plugins/proportional/versions?kind=allocator", "not wasm");
    assert!(status == 422, "a body that is not a component: {status} {body}");
    let (status, body) = master.request("POST", "/v1/plugins/proportional/activate", r#"{"version": 7}"#);
    assert_eq!(status, 404, "{body}");
    let (status, body) = master.request("PUT", "/v1/allocator", r#"{"name": "nope"}"#);
    assert!(status == 404 || status == 422, "{status} {body}");
    let (status, body) = master.request("POST", "/v1/plugins/proportional/rollback", "");
    assert!(status == 409 || status == 422, "nothing to roll back to: {status} {body}");
    let plugins = master.get("/v1/plugins");
    let proportional = plugins.as_array().unwrap().iter().find(|p| p["name"] == "proportional").unwrap();
    assert_eq!(proportional["versions"].as_array().unwrap().len(), 1, "nothing half-applied: {proportional}");
}
