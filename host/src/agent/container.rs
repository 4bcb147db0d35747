//! How a task becomes a Docker container: name, labels, command, limits, ports, network, mounts. Pure:
//! no engine calls here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use berth_proto::v1 as pb;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use prost::Message as _;

/// The task id label.
pub const LABEL_TASK: &str = "berth.task";
/// The framework name label.
pub const LABEL_FRAMEWORK: &str = "berth.framework";
/// The agent id label: an agent adopts and removes only containers with its own id.
pub const LABEL_AGENT: &str = "berth.agent";
/// The task spec (protobuf, base64), so an agent that restarts knows its containers' health checks.
pub const LABEL_SPEC: &str = "berth.spec";

/// CFS period for CPU quotas, microseconds.
const CPU_PERIOD: i64 = 100_000;

/// What the agent allows tasks to ask for.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub allow_privileged: bool,
    pub allow_host_mounts: bool,
    pub allow_host_network: bool,
    /// The engine's storage driver can enforce a disk size per container (overlay2 on xfs with project
    /// quotas): then a task's `disk` is its container's limit.
    pub disk_quota: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_privileged: false,
            allow_host_mounts: false,
            allow_host_network: true,
            disk_quota: false,
        }
    }
}

/// Processes (and threads) a task may run at once: a fork bomb stops there instead of exhausting the
/// node's PIDs.
pub const PIDS_LIMIT: i64 = 4096;
/// The engine keeps at most this much of a task's output (in `LOG_FILES` files), so a chatty task cannot
/// fill the node's disk.
pub const LOG_MAX_SIZE: &str = "50m";
const LOG_FILES: &str = "3";
/// The capabilities a task gets: Docker's default set, named so that nothing widens it (everything else
/// dropped). A privileged task, which the node must allow, gets all of them.
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The container name of a task: its framework and id (which only use characters Docker accepts), and a
/// short hash of the agent id, so agents (or clusters) sharing one engine never collide.
pub fn container_name(agent_id: &str, framework: &str, task_id: &str) -> String {
    use sha2::Digest as _;
    let agent = hex::encode(&sha2::Sha256::digest(agent_id.as_bytes())[..4]);
    format!("berth-{framework}-{task_id}-{agent}")
}

/// Encodes a task spec for [`LABEL_SPEC`].
pub fn encode_spec(task: &pb::TaskSpec) -> String {
    base64::engine::general_purpose::STANDARD.encode(task.encode_to_vec())
}

/// Decodes [`LABEL_SPEC`].
pub fn decode_spec(label: &str) -> Option<pb::TaskSpec> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(label).ok()?;
    pb::TaskSpec::decode(bytes.as_slice()).ok()
}

/// Where a task's health checks probe each of its ports, by index. On a bridge or user network that is
/// the container's own address and port: going through the published host port would reach Docker's
/// userland proxy, which accepts connections whether or not the task listens. On the host network it is
/// the task's port on loopback.
pub fn probe_addresses(task: &pb::TaskSpec, container_ip: Option<IpAddr>) -> Vec<SocketAddr> {
    let container = task.container.clone().unwrap_or_default();
    let mode = container.network.as_ref().map(|n| n.mode()).unwrap_or(pb::network::Mode::Bridge);
    let loopback = IpAddr::from([127, 0, 0, 1]);
    if mode == pb::network::Mode::Host {
        return host_ports(task)
            .filter_map(|p| u16::try_from(p).ok())
            .map(|p| SocketAddr::new(loopback, p))
            .collect();
    }
    container
        .port_mappings
        .iter()
        .filter_map(|m| match container_ip {
            Some(ip) => Some(SocketAddr::new(ip, u16::try_from(m.container_port).ok()?)),
            None => Some(SocketAddr::new(loopback, u16::try_from(m.host_port).ok()?)),
        })
        .collect()
}

/// The task's host ports, one by one, in the order its resources list them.
fn host_ports(task: &pb::TaskSpec) -> impl Iterator<Item = u32> + '_ {
    task.resources.iter().flat_map(|r| r.ports.iter()).flat_map(|p| p.begin..=p.end)
}

/// The task's environment for the engine: the variables every task finds, as a Mesos agent and Marathon set
/// them, then the task's own. The standard ones are `HOST` (the node's hostname), `PORT0`, `PORT1`, … (its
/// host ports, in the order its resources list them), `PORT` (the first), `PORTS` (all, comma-separated)
/// and `MESOS_TASK_ID`; the agent sets them so that frameworks need not send them with every task, and
/// leaves out any the task's own `env` sets.
fn environment(hostname: &str, task: &pb::TaskSpec, own: &[pb::KeyValue]) -> Vec<String> {
    let ports: Vec<u32> = host_ports(task).collect();
    let mut env = Vec::with_capacity(ports.len() + 4 + own.len());
    let mut standard = |key: &str, value: &str| {
        if !own.iter().any(|kv| kv.key == key) {
            env.push(format!("{key}={value}"));
        }
    };
    standard("HOST", hostname);
    for (i, port) in ports.iter().enumerate() {
        standard(&format!("PORT{i}"), &port.to_string());
    }
    if let Some(first) = ports.first() {
        standard("PORT", &first.to_string());
    }
    standard("PORTS", &ports.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
    standard("MESOS_TASK_ID", &task.id);
    env.extend(own.iter().map(|kv| format!("{}={}", kv.key, kv.value)));
    env
}

/// The engine's container configuration for `task`, or why it cannot run here.
pub fn config(
    (agent_id, hostname): (&str, &str),
    framework: &str,
    task: &pb::TaskSpec,
    policy: Policy,
) -> Result<ContainerCreateBody, String> {
    let container = task.container.as_ref().ok_or("the task has no container spec")?;
    let resources = task.resources.clone().unwrap_or_default();
    if container.privileged && !policy.allow_privileged {
        return Err("privileged containers are not allowed on this agent (--allow-privileged)".into());
    }
    if !container.volumes.is_empty() && !policy.allow_host_mounts {
        return Err("host mounts are not allowed on this agent (--allow-host-mounts)".into());
    }
    let user_network = container.network.as_ref().map(|n| n.user_network.as_str()).unwrap_or_default();
    let mode = container.network.as_ref().map(|n| n.mode()).unwrap_or(pb::network::Mode::Bridge);
    if mode == pb::network::Mode::User && user_network.starts_with("container:") {
        return Err(format!(
            "network `{user_network}` would join another container's namespaces: not allowed"
        ));
    }
    let host_network =
        mode == pb::network::Mode::Host || (mode == pb::network::Mode::User && user_network == "host");
    if host_network && !policy.allow_host_network {
        return Err("the host network is not allowed on this agent".into());
    }

    let mut labels: HashMap<String, String> = container
        .labels
        .iter()
        .filter(|kv| !kv.key.starts_with("berth."))
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    labels.insert(LABEL_TASK.into(), task.id.clone());
    labels.insert(LABEL_FRAMEWORK.into(), framework.into());
    labels.insert(LABEL_AGENT.into(), agent_id.into());
    labels.insert(LABEL_SPEC.into(), encode_spec(task));

    // Marathon's `cmd` runs through a shell, with `args` as positional parameters; without a command,
    // `args` replace the image's CMD.
    let explicit_entrypoint = container.has_entrypoint.then(|| container.entrypoint.clone());
    let (entrypoint, cmd) = match &container.command {
        Some(command) => {
            let mut cmd = vec![command.clone()];
            cmd.extend(container.args.iter().cloned());
            match explicit_entrypoint {
                Some(entrypoint) => (Some(entrypoint), Some(cmd)),
                None => (Some(vec!["/bin/sh".into(), "-c".into()]), Some(cmd)),
            }
        }
        None => (explicit_entrypoint, (!container.args.is_empty()).then(|| container.args.clone())),
    };

    let network_mode = match mode {
        pb::network::Mode::Bridge => "bridge".to_string(),
        pb::network::Mode::Host => "host".to_string(),
        pb::network::Mode::None => "none".to_string(),
        pb::network::Mode::User => {
            container.network.as_ref().map(|n| n.user_network.clone()).unwrap_or_default()
        }
    };
    let publishes = matches!(mode, pb::network::Mode::Bridge | pb::network::Mode::User);
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    if publishes {
        for m in &container.port_mappings {
            let protocol = match m.protocol() {
                pb::Protocol::Tcp => "tcp",
                pb::Protocol::Udp => "udp",
            };
            let key = format!("{}/{protocol}", m.container_port);
            exposed.push(key.clone());
            bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding { host_ip: None, host_port: Some(m.host_port.to_string()) });
        }
    }

    // The engine takes signed 64-bit numbers: a value that does not fit is refused, not wrapped (a wrapped
    // one could read as "no limit").
    let milli_cpus =
        i64::try_from(resources.milli_cpus).ok().filter(|m| m.checked_mul(CPU_PERIOD).is_some()).ok_or_else(
            || format!("resources.milli_cpus {} is more than the engine can limit", resources.milli_cpus),
        )?;
    let memory =
        i64::try_from(resources.mem_mib).ok().and_then(|m| m.checked_mul(1024 * 1024)).ok_or_else(|| {
            format!("resources.mem_mib {} is more than the engine can limit", resources.mem_mib)
        })?;
    let host_config = HostConfig {
        cpu_period: (milli_cpus > 0).then_some(CPU_PERIOD),
        cpu_quota: (milli_cpus > 0).then_some(milli_cpus * CPU_PERIOD / 1000),
        cpu_shares: Some((milli_cpus * 1024 / 1000).max(2)),
        memory: (memory > 0).then_some(memory),
        // Memory and swap together: no swap, so the limit is a hard limit.
        memory_swap: (memory > 0).then_some(memory),
        network_mode: Some(network_mode),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        binds: (!container.volumes.is_empty()).then(|| {
            container
                .volumes
                .iter()
                .map(|v| {
                    format!("{}:{}{}", v.host_path, v.container_path, if v.read_only { ":ro" } else { "" })
                })
                .collect()
        }),
        privileged: Some(container.privileged),
        pids_limit: Some(PIDS_LIMIT),
        cap_drop: (!container.privileged).then(|| vec!["ALL".to_string()]),
        cap_add: (!container.privileged).then(|| CAPABILITIES.iter().map(|c| c.to_string()).collect()),
        security_opt: Some(vec!["no-new-privileges:true".to_string()]),
        log_config: Some(bollard::models::HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), LOG_MAX_SIZE.to_string()),
                ("max-file".to_string(), LOG_FILES.to_string()),
            ])),
        }),
        storage_opt: (policy.disk_quota && resources.disk_mib > 0)
            .then(|| HashMap::from([("size".to_string(), format!("{}M", resources.disk_mib))])),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(container.image.clone()),
        entrypoint,
        cmd,
        env: Some(environment(hostname, task, &container.env)),
        labels: Some(labels),
        working_dir: container.working_dir.clone(),
        user: container.user.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(host_config),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> pb::TaskSpec {
        pb::TaskSpec {
            id: "web.1".into(),
            name: "web".into(),
            resources: Some(pb::Resources {
                milli_cpus: 500,
                mem_mib: 64,
                disk_mib: 0,
                gpus: 0,
                ports: vec![pb::PortRange { begin: 31000, end: 31000 }],
            }),
            container: Some(pb::ContainerSpec {
                image: "app:1".into(),
                command: Some("serve --fast".into()),
                args: vec!["x".into()],
                env: vec![pb::KeyValue { key: "A".into(), value: "1".into() }],
                labels: vec![
                    pb::KeyValue { key: "team".into(), value: "a".into() },
                    pb::KeyValue { key: "berth.task".into(), value: "forged".into() },
                ],
                port_mappings: vec![pb::PortMapping {
                    container_port: 80,
                    host_port: 31000,
                    protocol: pb::Protocol::Tcp as i32,
                    name: None,
                }],
                ..Default::default()
            }),
            health_checks: vec![],
            kill_grace_period_ms: 2000,
        }
    }

    #[test]
    fn resources_the_engine_cannot_hold_are_refused_not_wrapped() {
        // Found by fuzzing (`host-store-records`): 2^63-1 milli-cpus overflowed the quota; above 2^63 a
        // cast made it negative, which read as no limit at all.
        for (milli_cpus, mem_mib) in [(i64::MAX as u64, 64), (u64::MAX, 64), (500, u64::MAX), (500, 1 << 50)]
        {
            let mut t = task();
            t.resources = Some(pb::Resources { milli_cpus, mem_mib, ..t.resources.unwrap() });
            let e = config(("agent-1", "node-1"), "marathon", &t, Policy::default()).unwrap_err();
            assert!(e.contains("more than the engine can limit"), "{e}");
        }
    }

    #[test]
    fn limits_labels_command_and_ports() {
        let c = config(("agent-1", "node-1"), "marathon", &task(), Policy::default()).unwrap();
        let h = c.host_config.as_ref().unwrap();
        assert_eq!((h.cpu_period, h.cpu_quota, h.cpu_shares), (Some(100_000), Some(50_000), Some(512)));
        assert_eq!((h.memory, h.memory_swap), (Some(64 << 20), Some(64 << 20)));
        let labels = c.labels.as_ref().unwrap();
        assert_eq!(labels["berth.task"], "web.1", "a task cannot forge berth labels");
        assert_eq!(labels["berth.framework"], "marathon");
        assert_eq!(labels["berth.agent"], "agent-1");
        assert_eq!(labels["team"], "a");
        assert_eq!(decode_spec(&labels["berth.spec"]).unwrap(), task());
        assert_eq!(c.entrypoint.unwrap(), vec!["/bin/sh", "-c"]);
        assert_eq!(c.cmd.unwrap(), vec!["serve --fast", "x"]);
        let bindings = h.port_bindings.as_ref().unwrap();
        assert_eq!(bindings["80/tcp"].as_ref().unwrap()[0].host_port.as_deref(), Some("31000"));
        let ip = IpAddr::from([172, 17, 0, 2]);
        assert_eq!(
            probe_addresses(&task(), Some(ip)),
            vec![SocketAddr::new(ip, 80)],
            "the container's own port"
        );
        assert_ne!(container_name("agent-1", "f", "t"), container_name("agent-2", "f", "t"));
        assert!(container_name("agent-1", "f", "t").starts_with("berth-f-t-"));
    }

    #[test]
    fn the_agent_sets_the_standard_environment_unless_the_task_sets_it() {
        let env =
            |t: &pb::TaskSpec| config(("agent-1", "node-1"), "f", t, Policy::default()).unwrap().env.unwrap();
        assert_eq!(
            env(&task()),
            ["HOST=node-1", "PORT0=31000", "PORT=31000", "PORTS=31000", "MESOS_TASK_ID=web.1", "A=1"]
        );

        // Ports in the order the task lists them, ranges expanded; the task's own values win.
        let mut t = task();
        t.resources.as_mut().unwrap().ports =
            vec![pb::PortRange { begin: 31005, end: 31005 }, pb::PortRange { begin: 31000, end: 31001 }];
        t.container.as_mut().unwrap().env.push(pb::KeyValue { key: "HOST".into(), value: "mine".into() });
        assert_eq!(
            env(&t),
            [
                "PORT0=31005",
                "PORT1=31000",
                "PORT2=31001",
                "PORT=31005",
                "PORTS=31005,31000,31001",
                "MESOS_TASK_ID=web.1",
                "A=1",
                "HOST=mine"
            ]
        );

        // No ports: an empty PORTS and no PORT.
        t.resources = None;
        assert_eq!(env(&t), ["PORTS=", "MESOS_TASK_ID=web.1", "A=1", "HOST=mine"]);
    }

    #[test]
    fn privileged_and_mounts_need_the_agent_to_allow_them() {
        let mut t = task();
        t.container.as_mut().unwrap().privileged = true;
        assert!(config(("a", "h"), "f", &t, Policy::default()).unwrap_err().contains("privileged"));
        let allowed = config(("a", "h"), "f", &t, Policy { allow_privileged: true, ..Policy::default() });
        assert_eq!(allowed.unwrap().host_config.unwrap().privileged, Some(true));

        let mut t = task();
        t.container.as_mut().unwrap().volumes = vec![
            pb::Volume { host_path: "/srv/data".into(), container_path: "/data".into(), read_only: true },
            pb::Volume { host_path: "/srv/cache".into(), container_path: "/cache".into(), read_only: false },
        ];
        assert!(config(("a", "h"), "f", &t, Policy::default()).unwrap_err().contains("host mounts"));
        let allowed = config(("a", "h"), "f", &t, Policy { allow_host_mounts: true, ..Policy::default() });
        let binds = allowed.unwrap().host_config.unwrap().binds;
        assert_eq!(binds, Some(vec!["/srv/data:/data:ro".to_string(), "/srv/cache:/cache".to_string()]));
    }

    #[test]
    fn host_network_probes_the_tasks_own_ports() {
        let mut t = task();
        t.container.as_mut().unwrap().network =
            Some(pb::Network { mode: pb::network::Mode::Host as i32, user_network: String::new() });
        assert_eq!(probe_addresses(&t, None), vec![SocketAddr::from(([127, 0, 0, 1], 31000))]);
        let c = config(("a", "h"), "f", &t, Policy::default()).unwrap();
        assert!(c.host_config.unwrap().port_bindings.is_none());
    }
}
