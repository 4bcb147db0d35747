//! Conversions between the plugin ABI's types (the host's model) and the gRPC API's (`berth.v1`): the
//! one place where the two contracts meet.

use berth_proto::v1 as pb;

use crate::runtime::bindings as abi;

/// ABI resources to proto.
pub fn resources(r: &abi::Resources) -> pb::Resources {
    pb::Resources {
        milli_cpus: r.milli_cpus,
        mem_mib: r.mem_mib,
        disk_mib: r.disk_mib,
        gpus: r.gpus,
        ports: r.ports.iter().map(|p| pb::PortRange { begin: p.begin.into(), end: p.end.into() }).collect(),
    }
}

/// Proto resources to ABI; port numbers above 65535 are an error.
pub fn resources_from(r: &pb::Resources) -> Result<abi::Resources, String> {
    let mut ports = Vec::with_capacity(r.ports.len());
    for p in &r.ports {
        let (begin, end) = (port(p.begin)?, port(p.end)?);
        if begin > end {
            return Err(format!("port range {begin}-{end} is empty"));
        }
        ports.push(abi::PortRange { begin, end });
    }
    berth_proto::ports::normalize(&mut ports);
    Ok(abi::Resources {
        milli_cpus: r.milli_cpus,
        mem_mib: r.mem_mib,
        disk_mib: r.disk_mib,
        gpus: r.gpus,
        ports,
    })
}

fn port(p: u32) -> Result<u16, String> {
    u16::try_from(p).map_err(|_| format!("port {p} is out of range"))
}

/// ABI attribute list to proto.
pub fn attributes(a: &[abi::Attribute]) -> Vec<pb::Attribute> {
    a.iter().map(|a| pb::Attribute { name: a.name.clone(), value: a.value.clone() }).collect()
}

/// Proto attribute list to ABI.
pub fn attributes_from(a: &[pb::Attribute]) -> Vec<abi::Attribute> {
    a.iter().map(|a| abi::Attribute { name: a.name.clone(), value: a.value.clone() }).collect()
}

fn key_values(kv: &[abi::KeyValue]) -> Vec<pb::KeyValue> {
    kv.iter().map(|kv| pb::KeyValue { key: kv.key.clone(), value: kv.value.clone() }).collect()
}

/// A task as the agent receives it.
pub fn task_spec(t: &abi::TaskSpec) -> pb::TaskSpec {
    let c = &t.container;
    let (mode, user_network) = match &c.network {
        abi::Network::Bridge => (pb::network::Mode::Bridge, String::new()),
        abi::Network::Host => (pb::network::Mode::Host, String::new()),
        abi::Network::None => (pb::network::Mode::None, String::new()),
        abi::Network::User(name) => (pb::network::Mode::User, name.clone()),
    };
    pb::TaskSpec {
        id: t.id.clone(),
        name: t.name.clone(),
        resources: Some(resources(&t.resources)),
        container: Some(pb::ContainerSpec {
            image: c.image.clone(),
            force_pull: c.force_pull,
            command: c.command.clone(),
            args: c.args.clone(),
            has_entrypoint: c.entrypoint.is_some(),
            entrypoint: c.entrypoint.clone().unwrap_or_default(),
            env: key_values(&c.env),
            labels: key_values(&c.labels),
            port_mappings: c
                .port_mappings
                .iter()
                .map(|m| pb::PortMapping {
                    container_port: m.container_port.into(),
                    host_port: m.host_port.into(),
                    protocol: match m.protocol {
                        abi::Protocol::Tcp => pb::Protocol::Tcp,
                        abi::Protocol::Udp => pb::Protocol::Udp,
                    } as i32,
                    name: m.name.clone(),
                })
                .collect(),
            network: Some(pb::Network { mode: mode as i32, user_network }),
            volumes: c
                .volumes
                .iter()
                .map(|v| pb::Volume {
                    host_path: v.host_path.clone(),
                    container_path: v.container_path.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            working_dir: c.working_dir.clone(),
            user: c.user.clone(),
            privileged: c.privileged,
        }),
        health_checks: t
            .health_checks
            .iter()
            .map(|h| pb::HealthCheck {
                probe: Some(match &h.probe {
                    abi::Probe::Http(p) => pb::health_check::Probe::Http(pb::HttpProbe {
                        port_index: p.port_index,
                        path: p.path.clone(),
                        https: p.https,
                    }),
                    abi::Probe::Tcp(index) => pb::health_check::Probe::TcpPortIndex(*index),
                    abi::Probe::Command(argv) => {
                        pb::health_check::Probe::Command(pb::CommandProbe { argv: argv.clone() })
                    }
                }),
                grace_period_ms: h.grace_period_ms,
                interval_ms: h.interval_ms,
                timeout_ms: h.timeout_ms,
                max_consecutive_failures: h.max_consecutive_failures,
            })
            .collect(),
        kill_grace_period_ms: t.kill_grace_period_ms,
    }
}

/// ABI state to proto.
pub fn state(s: abi::TaskState) -> pb::TaskState {
    match s {
        abi::TaskState::Staging => pb::TaskState::Staging,
        abi::TaskState::Starting => pb::TaskState::Starting,
        abi::TaskState::Running => pb::TaskState::Running,
        abi::TaskState::Killing => pb::TaskState::Killing,
        abi::TaskState::Finished => pb::TaskState::Finished,
        abi::TaskState::Failed => pb::TaskState::Failed,
        abi::TaskState::Killed => pb::TaskState::Killed,
        abi::TaskState::Lost => pb::TaskState::Lost,
        abi::TaskState::Error => pb::TaskState::Error,
    }
}

/// Proto state to ABI.
pub fn state_from(s: pb::TaskState) -> abi::TaskState {
    match s {
        pb::TaskState::Staging => abi::TaskState::Staging,
        pb::TaskState::Starting => abi::TaskState::Starting,
        pb::TaskState::Running => abi::TaskState::Running,
        pb::TaskState::Killing => abi::TaskState::Killing,
        pb::TaskState::Finished => abi::TaskState::Finished,
        pb::TaskState::Failed => abi::TaskState::Failed,
        pb::TaskState::Killed => abi::TaskState::Killed,
        pb::TaskState::Lost => abi::TaskState::Lost,
        pb::TaskState::Error => abi::TaskState::Error,
    }
}

/// ABI reason to proto (`None` becomes `TASK_REASON_NONE`).
pub fn reason(r: Option<abi::TaskReason>) -> pb::TaskReason {
    use abi::TaskReason as R;
    match r {
        None => pb::TaskReason::None,
        Some(R::CommandFailed) => pb::TaskReason::CommandFailed,
        Some(R::MemoryLimit) => pb::TaskReason::MemoryLimit,
        Some(R::KilledByFramework) => pb::TaskReason::KilledByFramework,
        Some(R::HealthCheckFailed) => pb::TaskReason::HealthCheckFailed,
        Some(R::HealthChanged) => pb::TaskReason::HealthChanged,
        Some(R::AgentLost) => pb::TaskReason::AgentLost,
        Some(R::ContainerVanished) => pb::TaskReason::ContainerVanished,
        Some(R::ImagePullFailed) => pb::TaskReason::ImagePullFailed,
        Some(R::ContainerLaunchFailed) => pb::TaskReason::ContainerLaunchFailed,
        Some(R::InvalidLaunch) => pb::TaskReason::InvalidLaunch,
        Some(R::NodeDrained) => pb::TaskReason::NodeDrained,
        Some(R::FrameworkRemoved) => pb::TaskReason::FrameworkRemoved,
        Some(R::Reconciliation) => pb::TaskReason::Reconciliation,
        Some(R::TaskUnknown) => pb::TaskReason::TaskUnknown,
    }
}

/// Proto reason to ABI.
pub fn reason_from(r: pb::TaskReason) -> Option<abi::TaskReason> {
    use abi::TaskReason as R;
    Some(match r {
        pb::TaskReason::None => return None,
        pb::TaskReason::CommandFailed => R::CommandFailed,
        pb::TaskReason::MemoryLimit => R::MemoryLimit,
        pb::TaskReason::KilledByFramework => R::KilledByFramework,
        pb::TaskReason::HealthCheckFailed => R::HealthCheckFailed,
        pb::TaskReason::HealthChanged => R::HealthChanged,
        pb::TaskReason::AgentLost => R::AgentLost,
        pb::TaskReason::ContainerVanished => R::ContainerVanished,
        pb::TaskReason::ImagePullFailed => R::ImagePullFailed,
        pb::TaskReason::ContainerLaunchFailed => R::ContainerLaunchFailed,
        pb::TaskReason::InvalidLaunch => R::InvalidLaunch,
        pb::TaskReason::NodeDrained => R::NodeDrained,
        pb::TaskReason::FrameworkRemoved => R::FrameworkRemoved,
        pb::TaskReason::Reconciliation => R::Reconciliation,
        pb::TaskReason::TaskUnknown => R::TaskUnknown,
    })
}

/// A status as the API shows it.
pub fn status(framework: &str, agent_id: &str, s: &abi::TaskStatus) -> pb::TaskStatus {
    pb::TaskStatus {
        framework: framework.to_string(),
        task_id: s.task_id.clone(),
        state: state(s.state) as i32,
        reason: reason(s.reason) as i32,
        message: s.message.clone(),
        healthy: s.healthy,
        exit_code: s.exit_code,
        agent_id: agent_id.to_string(),
        hostname: s.hostname.clone().unwrap_or_default(),
        ports: s.ports.iter().map(|p| pb::PortRange { begin: p.begin.into(), end: p.end.into() }).collect(),
        timestamp_ms: s.timestamp_ms,
    }
}
