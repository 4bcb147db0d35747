//! Fuzz targets for what the host reads from outside (`berth-fuzz`, run by `cargo test` at a fixed budget;
//! corpora in `tests/fuzz/corpus/host-*`):
//!
//! - `host-agent-messages`: gRPC messages from agents (protobuf bytes): decoded, a registration checked, a
//!   status report converted, as the master does.
//! - `host-master-messages`: gRPC messages from the master, as an agent reads them: a launch turned into the
//!   engine's container configuration under every policy.
//! - `host-launches`: launch decisions as a framework plugin returns them (the WIT values, as JSON): checked
//!   against an offer and a node's policy; what passes must turn into a container configuration.
//! - `host-store-records`: the master's store records (`kind`, a newline, the JSON), as a damaged disk may
//!   hold them, and the task spec an adopted container carries in its label.
//! - `host-auth`: `authorization` and `Host` headers and request paths, before any other code sees them.

use berth_proto::v1 as pb;
use http::Method;
use prost::Message as _;

use crate::agent::container::{self, Policy};
use crate::api::auth::{self, Auth};
use crate::convert;
use crate::master::validate::{self, NodePolicy};
use crate::runtime::bindings::{PortRange, Resources, TaskSpec};
use crate::store::{
    AgentRecord, FrameworkRecord, PluginRecord, PluginVersionRecord, StatusRecord, TaskRecord,
};

const JSON_TOKENS: &[&str] = &[
    "\"id\"",
    "\"resources\"",
    "\"milli_cpus\"",
    "\"mem_mib\"",
    "\"disk_mib\"",
    "\"gpus\"",
    "\"ports\"",
    "\"begin\"",
    "\"end\"",
    "\"container\"",
    "\"image\"",
    "\"network\"",
    "\"Host\"",
    "\"Bridge\"",
    "\"None\"",
    "{\"User\":",
    "\"container:x\"",
    "\"host\"",
    "\"privileged\"",
    "\"volumes\"",
    "\"host_path\"",
    "\"container_path\"",
    "\"port_mappings\"",
    "\"container_port\"",
    "\"host_port\"",
    "\"env\"",
    "\"labels\"",
    "\"key\"",
    "\"value\"",
    "\"command\"",
    "\"args\"",
    "\"health_check\"",
    "\"kill_grace_ms\"",
    "\"spec\"",
    "\"status\"",
    "\"state\"",
    "\"Running\"",
    "\"Failed\"",
    "4294967295",
    "18446744073709551615",
    "-1",
    "[]",
    "{}",
    "null",
    "\"\"",
];

const HEADER_TOKENS: &[&str] = &[
    "Bearer ",
    "Basic ",
    "token=",
    ":",
    "=",
    "==",
    "@",
    "[",
    "]",
    "::1",
    "127.0.0.1",
    "localhost",
    ".",
    "/berth.v1.",
    "AgentService/Join",
    "TaskService/Logs",
    "TaskService/Watch",
    "/List",
    "/v2/apps",
    "/health",
    "%00",
    "\n",
];

fn policies() -> [(NodePolicy, Policy); 2] {
    [
        (
            NodePolicy { allow_privileged: false, allow_host_mounts: false, allow_host_network: false },
            Policy {
                allow_privileged: false,
                allow_host_mounts: false,
                allow_host_network: false,
                disk_quota: false,
            },
        ),
        (
            NodePolicy { allow_privileged: true, allow_host_mounts: true, allow_host_network: true },
            Policy {
                allow_privileged: true,
                allow_host_mounts: true,
                allow_host_network: true,
                disk_quota: true,
            },
        ),
    ]
}

/// What an agent does with a launch: the engine's configuration, or a refusal. Never a panic.
fn agent_side(task: &pb::TaskSpec) {
    for (_, policy) in policies() {
        let _ = container::config(("agent-1", "host-1"), "marathon", task, policy);
    }
    let label = container::encode_spec(task);
    assert_eq!(container::decode_spec(&label).as_ref(), Some(task), "a spec label reads back as written");
    let _ = container::probe_addresses(task, Some([10, 0, 0, 2].into()));
}

#[test]
fn fuzz_agent_messages() {
    berth_fuzz::run("host-agent-messages", &[], 30_000, |input| {
        let Ok(message) = pb::AgentMessage::decode(input) else { return };
        match message.message {
            Some(pb::agent_message::Message::Register(register)) => {
                if let Ok(resources) = crate::master::check_register(&register) {
                    assert_eq!(convert::resources(&resources).milli_cpus, resources.milli_cpus);
                }
                let _ = convert::attributes_from(&register.attributes);
            }
            Some(pb::agent_message::Message::Status(update)) => {
                if let Some(report) = update.status {
                    let _ = (convert::state_from(report.state()), convert::reason_from(report.reason()));
                }
            }
            _ => {}
        }
    });
}

#[test]
fn fuzz_master_messages() {
    berth_fuzz::run("host-master-messages", &[], 30_000, |input| {
        let Ok(message) = pb::MasterMessage::decode(input) else { return };
        if let Some(pb::master_message::Message::Launch(launch)) = message.message
            && let Some(task) = launch.task
        {
            agent_side(&task);
        }
    });
}

fn offer() -> Resources {
    Resources {
        milli_cpus: 4_000,
        mem_mib: 8_192,
        disk_mib: 10_000,
        gpus: 1,
        ports: vec![PortRange { begin: 31000, end: 31100 }],
    }
}

#[test]
fn fuzz_launch_decisions() {
    berth_fuzz::run("host-launches", JSON_TOKENS, 30_000, |input| {
        let Ok(tasks) = serde_json::from_slice::<Vec<TaskSpec>>(input) else { return };
        for (node, agent) in policies() {
            let decided = validate::launch(&offer(), &node, &tasks, |id| id == "taken");
            for task in &tasks {
                let alone = validate::task(task, &node, |id| id == "taken");
                if decided.is_ok() {
                    assert!(alone.is_ok(), "a launch passed with a task that fails alone: {alone:?}");
                    // What the master lets through, the agent can run under the same policy.
                    let spec = convert::task_spec(task);
                    if let Err(e) = container::config(("agent-1", "host-1"), "f", &spec, agent) {
                        panic!("the master accepted a task the agent refuses: {e}");
                    }
                    agent_side(&spec);
                }
            }
        }
    });
}

#[test]
fn fuzz_store_records() {
    berth_fuzz::run("host-store-records", JSON_TOKENS, 30_000, |input| {
        let text = String::from_utf8_lossy(input);
        let (kind, json) = text.split_once('\n').unwrap_or(("task", &text));
        let bytes = json.as_bytes();
        match kind {
            "task" => {
                if let Ok(record) = serde_json::from_slice::<TaskRecord>(bytes) {
                    for (node, _) in policies() {
                        let _ = validate::task(&record.spec, &node, |_| false);
                    }
                    agent_side(&convert::task_spec(&record.spec));
                }
            }
            "status" => {
                if let Ok(record) = serde_json::from_slice::<StatusRecord>(bytes) {
                    let _ = convert::status("f", "a", &record.status);
                }
            }
            "agent" => {
                if let Ok(record) = serde_json::from_slice::<AgentRecord>(bytes) {
                    let _ = convert::resources(&record.resources);
                }
            }
            "framework" => drop(serde_json::from_slice::<FrameworkRecord>(bytes)),
            "plugin" => drop(serde_json::from_slice::<PluginRecord>(bytes)),
            "version" => drop(serde_json::from_slice::<PluginVersionRecord>(bytes)),
            // The spec label of a container found on the engine (adoption after an agent restart).
            "label" => {
                if let Some(spec) = container::decode_spec(json.trim()) {
                    agent_side(&spec);
                }
            }
            _ => {}
        }
    });
}

#[test]
fn fuzz_auth_headers() {
    let auth = Auth {
        token: "operator-token".into(),
        agent_token: "agent-token".into(),
        protect_reads: false,
        allowed_hosts: vec!["berth.example".into()],
    };
    berth_fuzz::run("host-auth", HEADER_TOKENS, 50_000, |input| {
        let text = String::from_utf8_lossy(input);
        let _ = auth::presented(Some(&text));
        let _ = auth.host_allowed(&text);
        for method in [Method::GET, Method::POST] {
            let need = auth::need(&method, &text);
            let outcome = auth.check(Some(&text), need);
            if outcome.is_ok() && need == auth::Need::Operator {
                assert_eq!(auth::presented(Some(&text)).as_deref(), Some("operator-token"));
            }
        }
    });
}

/// Writes the host targets' corpora from the values berth itself produces. Run by hand after a format
/// changes: `cargo test -p berth-host --lib write_the_host_corpora -- --ignored`.
#[test]
#[ignore = "writes the corpora; run by hand"]
fn write_the_host_corpora() {
    use crate::runtime::bindings::{
        HealthCheck, HttpProbe, KeyValue, Network, PortMapping, Probe, Protocol, TaskState, TaskStatus,
        Volume,
    };
    let write = |target: &str, name: &str, bytes: Vec<u8>| {
        let dir = berth_fuzz::corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let base =
        crate::master::validate::tests::task("web.1", 500, vec![PortRange { begin: 31000, end: 31001 }]);
    let mut bridge = base.clone();
    bridge.container.port_mappings = vec![
        PortMapping {
            container_port: 80,
            host_port: 31000,
            protocol: Protocol::Tcp,
            name: Some("http".into()),
        },
        PortMapping { container_port: 53, host_port: 31001, protocol: Protocol::Udp, name: None },
    ];
    bridge.container.env = vec![KeyValue { key: "A".into(), value: "1".into() }];
    bridge.container.labels = vec![KeyValue { key: "team".into(), value: "a".into() }];
    bridge.container.command = Some("serve --port $PORT0".into());
    bridge.health_checks = vec![
        HealthCheck {
            probe: Probe::Http(HttpProbe { port_index: 0, path: "/health".into(), https: false }),
            grace_period_ms: 1000,
            interval_ms: 500,
            timeout_ms: 200,
            max_consecutive_failures: 3,
        },
        HealthCheck {
            probe: Probe::Command(vec!["true".into()]),
            grace_period_ms: 0,
            interval_ms: 1000,
            timeout_ms: 1000,
            max_consecutive_failures: 0,
        },
    ];
    let mut host = base.clone();
    host.id = "api.2".into();
    host.container.network = Network::Host;
    host.container.args = vec!["--listen".into(), "$PORT0".into()];
    host.health_checks = vec![HealthCheck {
        probe: Probe::Tcp(0),
        grace_period_ms: 0,
        interval_ms: 1000,
        timeout_ms: 1000,
        max_consecutive_failures: 1,
    }];
    let mut user = base.clone();
    user.id = "db.3".into();
    user.resources.ports = vec![];
    user.container.network = Network::User("backend".into());
    user.container.privileged = true;
    user.container.volumes =
        vec![Volume { host_path: "/srv/db".into(), container_path: "/data".into(), read_only: false }];
    user.container.entrypoint = Some(vec![]);
    user.container.user = Some("1000".into());
    user.container.working_dir = Some("/data".into());
    write("host-launches", "one.json", serde_json::to_vec_pretty(&[&bridge]).unwrap());
    write("host-launches", "three.json", serde_json::to_vec_pretty(&[&bridge, &host, &user]).unwrap());

    for (name, task) in [("bridge", &bridge), ("host", &host), ("user", &user)] {
        let spec = convert::task_spec(task);
        let launch = pb::MasterMessage {
            message: Some(pb::master_message::Message::Launch(pb::LaunchTask {
                framework: "marathon".into(),
                task: Some(spec.clone()),
            })),
        };
        write("host-master-messages", &format!("launch-{name}.pb"), launch.encode_to_vec());
        let record = TaskRecord { spec: task.clone(), agent_id: "agent-1".into(), launched_at_ms: 1 };
        write(
            "host-store-records",
            &format!("task-{name}"),
            format!("task\n{}", serde_json::to_string(&record).unwrap()).into_bytes(),
        );
        write(
            "host-store-records",
            &format!("label-{name}"),
            format!("label\n{}", container::encode_spec(&spec)).into_bytes(),
        );
    }
    let status = TaskStatus {
        task_id: "web.1".into(),
        state: TaskState::Running,
        reason: None,
        message: "started".into(),
        healthy: Some(true),
        exit_code: None,
        node: Some(1),
        hostname: Some("h".into()),
        ports: vec![PortRange { begin: 31000, end: 31000 }],
        timestamp_ms: 1,
    };
    let record = StatusRecord { status: status.clone(), delivered: true, update_uuid: "u-1".into() };
    write(
        "host-store-records",
        "status",
        format!("status\n{}", serde_json::to_string(&record).unwrap()).into_bytes(),
    );

    let resources = pb::Resources {
        milli_cpus: 2000,
        mem_mib: 4096,
        disk_mib: 10_000,
        gpus: 0,
        ports: vec![pb::PortRange { begin: 31000, end: 32000 }],
    };
    let register = pb::AgentMessage {
        message: Some(pb::agent_message::Message::Register(pb::Register {
            agent_id: "node-1-abc".into(),
            hostname: "node-1".into(),
            resources: Some(resources),
            attributes: vec![pb::Attribute { name: "rack".into(), value: "r1".into() }],
            tasks: vec![convert::status("marathon", "node-1-abc", &status)],
            allow_privileged: true,
            allow_host_mounts: false,
            allow_host_network: true,
            version: "0.1.0".into(),
            backend: "docker".into(),
            credential: "0123456789abcdef".into(),
        })),
    };
    write("host-agent-messages", "register.pb", register.encode_to_vec());
    let update = pb::AgentMessage {
        message: Some(pb::agent_message::Message::Status(pb::StatusUpdate {
            uuid: "u-2".into(),
            status: Some(convert::status("marathon", "node-1-abc", &status)),
        })),
    };
    write("host-agent-messages", "status.pb", update.encode_to_vec());

    for (name, header) in [
        ("bearer", "Bearer operator-token"),
        ("basic", "Basic dXNlcjpvcGVyYXRvci10b2tlbg=="),
        ("token", "token=agent-token"),
        ("path-grpc", "/berth.v1.TaskService/Logs"),
        ("path-http", "/v2/apps/web?embed=apps.tasks"),
        ("host", "berth.example:8080"),
        ("host-v6", "[::1]:8080"),
    ] {
        write("host-auth", name, header.as_bytes().to_vec());
    }
}
