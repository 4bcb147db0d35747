//! An app definition as Marathon's API shows it.

use serde_json::{Value, json};

use super::*;

/// Marathon's JSON for an app definition (without runtime fields such as task counts).
pub fn to_json(app: &App, version: &str) -> Value {
    let mut docker = json!({
        "image": app.image,
        "forcePullImage": app.force_pull_image,
        "privileged": app.privileged,
        "parameters": app.docker_parameters,
    });
    match &app.network {
        NetworkMode::Host => docker["network"] = json!("HOST"),
        NetworkMode::Bridge => docker["network"] = json!("BRIDGE"),
        NetworkMode::None => docker["network"] = json!("NONE"),
        NetworkMode::User(_) => docker["network"] = json!("USER"),
    }
    let port_mappings: Vec<Value> = app
        .port_mappings
        .iter()
        .map(|m| {
            json!({"containerPort": m.container_port, "hostPort": m.host_port, "servicePort": m.service_port,
                   "protocol": m.protocol, "name": m.name, "labels": m.labels})
        })
        .collect();
    let volumes: Vec<Value> = app
        .volumes
        .iter()
        .map(|v| json!({"containerPath": v.container_path, "hostPath": v.host_path, "mode": if v.read_only { "RO" } else { "RW" }}))
        .collect();
    let mut container = json!({"type": "DOCKER", "docker": docker, "volumes": volumes});
    if !port_mappings.is_empty() {
        container["portMappings"] = json!(port_mappings);
    }
    let networks = match &app.network {
        NetworkMode::Host => json!([{"mode": "host"}]),
        NetworkMode::Bridge => json!([{"mode": "container/bridge"}]),
        NetworkMode::User(name) => json!([{"mode": "container", "name": name}]),
        NetworkMode::None => json!([]),
    };
    json!({
        "id": app.id,
        "cmd": app.cmd,
        "args": if app.args.is_empty() { Value::Null } else { json!(app.args) },
        "cpus": app.cpus,
        "mem": app.mem,
        "disk": app.disk,
        "gpus": app.gpus,
        "instances": app.instances,
        "env": app.env,
        "labels": app.labels,
        "container": container,
        "networks": networks,
        "ports": app.service_ports(),
        "portDefinitions": app.port_definitions.iter().map(|p| json!({"port": p.port, "protocol": p.protocol, "name": p.name, "labels": p.labels})).collect::<Vec<_>>(),
        "requirePorts": app.require_ports,
        "constraints": app.constraints.iter().map(Constraint::to_json).collect::<Vec<_>>(),
        "healthChecks": app.health_checks.iter().map(health_check_json).collect::<Vec<_>>(),
        "backoffSeconds": app.backoff_seconds,
        "backoffFactor": app.backoff_factor,
        "maxLaunchDelaySeconds": app.max_launch_delay_seconds,
        "upgradeStrategy": {"minimumHealthCapacity": app.minimum_health_capacity, "maximumOverCapacity": app.maximum_over_capacity},
        "killSelection": match app.kill_selection { KillSelection::YoungestFirst => "YOUNGEST_FIRST", KillSelection::OldestFirst => "OLDEST_FIRST" },
        "taskKillGracePeriodSeconds": app.task_kill_grace_period_seconds,
        "user": app.user,
        "version": version,
        "uris": [],
        "fetch": [],
        "dependencies": [],
    })
}

/// A health check as Marathon's API shows it.
pub fn health_check_json(h: &HealthCheck) -> Value {
    let mut v = json!({
        "protocol": h.protocol, "path": h.path, "portIndex": h.port_index,
        "gracePeriodSeconds": h.grace_period_seconds, "intervalSeconds": h.interval_seconds,
        "timeoutSeconds": h.timeout_seconds, "maxConsecutiveFailures": h.max_consecutive_failures,
        "delaySeconds": h.delay_seconds, "ignoreHttp1xx": h.ignore_http1xx,
    });
    if let Some(c) = &h.command {
        v["command"] = json!({"value": c});
    }
    v
}
