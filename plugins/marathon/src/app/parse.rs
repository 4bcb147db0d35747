//! Reading an app definition as Marathon clients send it: Marathon's fields and defaults, every problem
//! collected with its path (Marathon's 422 shape), nothing accepted that is not honoured.

use std::collections::BTreeMap;

use serde_json::Value;

use super::*;

/// The JSON of a field that may be absent or null.
fn field<'a>(object: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).filter(|v| !v.is_null())
}

/// Collects problems while reading a definition.
struct Reader<'a> {
    object: &'a serde_json::Map<String, Value>,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn problem(&mut self, path: &str, error: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), errors: vec![error.into()] });
    }

    fn number(&mut self, name: &str, default: f64) -> f64 {
        match field(self.object, name) {
            None => default,
            Some(Value::Number(n)) => n.as_f64().unwrap_or(default),
            Some(_) => {
                self.problem(&format!("/{name}"), "must be a number");
                default
            }
        }
    }

    fn string(&mut self, name: &str) -> Option<String> {
        match field(self.object, name) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(&format!("/{name}"), "must be a string");
                None
            }
        }
    }

    fn boolean(&mut self, name: &str) -> bool {
        match field(self.object, name) {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.problem(&format!("/{name}"), "must be a boolean");
                false
            }
        }
    }

    fn strings(&mut self, name: &str) -> Vec<String> {
        match field(self.object, name) {
            None => Vec::new(),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                items.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect()
            }
            Some(_) => {
                self.problem(&format!("/{name}"), "must be a list of strings");
                Vec::new()
            }
        }
    }

    fn map(&mut self, path: &str, value: Option<&Value>) -> BTreeMap<String, String> {
        match value {
            None => BTreeMap::new(),
            Some(Value::Object(m)) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        Value::Number(n) => {
                            out.insert(k.clone(), n.to_string());
                        }
                        Value::Bool(b) => {
                            out.insert(k.clone(), b.to_string());
                        }
                        _ => self
                            .problem(&format!("{path}/{k}"), "must be a string (secrets are not supported)"),
                    }
                }
                out
            }
            Some(_) => {
                self.problem(path, "must be an object of strings");
                BTreeMap::new()
            }
        }
    }
}

/// Turns `/a/b`, `a/b/` and `a` into `/a/b` and `/a`; checks each segment is a valid name.
pub fn normalize_id(raw: &str) -> Result<String, String> {
    let segments: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        return Err("must not be empty".into());
    }
    for s in &segments {
        let ok = s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !s.starts_with('-')
            && !s.ends_with('-')
            && *s != "."
            && *s != "..";
        if !ok {
            return Err(format!(
                "'{s}' contains invalid characters (allowed: lowercase letters, digits, hyphens, \".\", \"..\")"
            ));
        }
    }
    Ok(format!("/{}", segments.join("/")))
}

/// Fields of Marathon's app definition that berth honours (each is read below).
const HONOURED: &[&str] = &[
    "id",
    "cmd",
    "args",
    "cpus",
    "mem",
    "disk",
    "gpus",
    "instances",
    "env",
    "labels",
    "backoffSeconds",
    "backoffFactor",
    "maxLaunchDelaySeconds",
    "requirePorts",
    "user",
    "taskKillGracePeriodSeconds",
    "container",
    "networks",
    "ports",
    "portDefinitions",
    "constraints",
    "healthChecks",
    "upgradeStrategy",
    "killSelection",
];

/// Fields only responses carry. Clients that update an app with what they read send them back; they are not
/// part of the definition, and are ignored.
const READ_ONLY: &[&str] = &[
    "version",
    "versionInfo",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "tasks",
    "deployments",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
];

/// Marathon's fields berth does not build, and why: accepted only at their defaults (which clients send),
/// refused with this reason otherwise.
const NOT_BUILT: &[(&str, &str)] = &[
    ("uris", "fetching artifacts is not supported by berth: bake them into the image"),
    ("fetch", "fetching artifacts is not supported by berth: bake them into the image"),
    ("storeUrls", "is not supported by berth"),
    ("readinessChecks", "readiness checks are not supported by berth: use health checks"),
    ("secrets", "secrets are not supported by berth"),
    ("residency", "persistent volumes are not supported by berth"),
    ("dependencies", "app dependencies are not supported by berth: deploy the apps in order"),
    ("acceptedResourceRoles", "berth offers every node to every role: only [\"*\"] is accepted"),
    (
        "unreachableStrategy",
        "berth replaces tasks of an unreachable agent once it times out (`disabled` is not supported)",
    ),
    ("executor", "berth runs Docker containers, not Mesos executors"),
    ("ipAddress", "IP-per-task is not supported: use `networks` with a container network"),
    ("tty", "a TTY is not supported by berth"),
    ("role", "berth runs every app in the framework's role: only \"*\" is accepted"),
];

/// Whether `value` is what clients send for a field they leave at its default.
fn at_default(name: &str, value: &Value) -> bool {
    match (name, value) {
        (_, Value::Null) => true,
        (_, Value::Array(a)) if a.is_empty() => true,
        (_, Value::Object(o)) if o.is_empty() => true,
        ("acceptedResourceRoles", Value::Array(a)) => a.iter().all(|r| r == "*"),
        ("role", Value::String(s)) => s.is_empty() || s == "*",
        ("executor", Value::String(s)) => s.is_empty() || s == "//cmd",
        ("tty", Value::Bool(b)) => !b,
        ("unreachableStrategy", Value::Object(o)) => {
            o.get("inactiveAfterSeconds").and_then(Value::as_f64).is_some_and(|v| v <= 0.0)
                && o.get("expungeAfterSeconds").and_then(Value::as_f64).is_some_and(|v| v <= 0.0)
        }
        _ => false,
    }
}

/// Refuses, by name, every field that is not honoured: Marathon's fields berth does not build (unless left at
/// their defaults), and fields that are not Marathon's at all. Nothing is silently dropped.
fn check_fields(r: &mut Reader<'_>, object: &serde_json::Map<String, Value>) {
    for (name, value) in object {
        if HONOURED.contains(&name.as_str()) || READ_ONLY.contains(&name.as_str()) {
            continue;
        }
        match NOT_BUILT.iter().find(|(field, _)| field == name) {
            Some((_, why)) if !at_default(name, value) => r.problem(&format!("/{name}"), *why),
            Some(_) => {}
            None => r.problem(&format!("/{name}"), "is not a field of Marathon's app definition"),
        }
    }
}

/// Reads an app definition. `id` overrides the body's id (a `PUT /v2/apps/{id}`).
pub fn parse(body: &Value, id: Option<&str>) -> Result<App, Invalid> {
    let Value::Object(object) = body else {
        return Err(Invalid::one("/", "must be a JSON object"));
    };
    let mut r = Reader { object, problems: Vec::new() };

    let raw_id = id.map(str::to_string).or_else(|| r.string("id")).unwrap_or_default();
    let id = match normalize_id(&raw_id) {
        Ok(id) => id,
        Err(e) => {
            r.problem("/id", e);
            String::new()
        }
    };
    let cmd = r.string("cmd");
    let args = r.strings("args");
    let cpus = r.number("cpus", 1.0);
    let mem = r.number("mem", 128.0);
    let disk = r.number("disk", 0.0);
    let gpus = r.number("gpus", 0.0);
    let instances = r.number("instances", 1.0);
    let env = r.map("/env", field(object, "env"));
    let labels = r.map("/labels", field(object, "labels"));
    if let Some(value) = labels.get(MIN_HEALTHY_LABEL)
        && !value.trim().parse::<f64>().is_ok_and(|s| s.is_finite() && s >= 0.0)
    {
        r.problem(&format!("/labels/{MIN_HEALTHY_LABEL}"), "must be a number of seconds, 0 or more");
    }
    let backoff_seconds = r.number("backoffSeconds", 1.0);
    let backoff_factor = r.number("backoffFactor", 1.15);
    let max_launch_delay_seconds = r.number("maxLaunchDelaySeconds", 300.0);
    let require_ports = r.boolean("requirePorts");
    let user = r.string("user");
    let task_kill_grace_period_seconds = field(object, "taskKillGracePeriodSeconds").and_then(Value::as_f64);

    if !(cpus > 0.0 && cpus.is_finite()) {
        r.problem("/cpus", "must be greater than 0");
    }
    if !(6.0..=16.0 * 1024.0 * 1024.0).contains(&mem) {
        r.problem("/mem", "must be at least 6 (MiB; Docker refuses smaller limits)");
    }
    if !(disk >= 0.0 && disk.is_finite()) {
        r.problem("/disk", "must be at least 0");
    }
    if !(gpus >= 0.0 && gpus.fract() == 0.0) {
        r.problem("/gpus", "must be a whole number, at least 0");
    }
    if !(instances >= 0.0 && instances.fract() == 0.0 && instances <= 1_000_000.0) {
        r.problem("/instances", "must be a whole number between 0 and 1000000");
    }
    if backoff_seconds < 0.0 {
        r.problem("/backoffSeconds", "must be at least 0");
    }
    if backoff_factor < 1.0 {
        r.problem("/backoffFactor", "must be at least 1");
    }
    if max_launch_delay_seconds < 0.0 {
        r.problem("/maxLaunchDelaySeconds", "must be at least 0");
    }
    check_fields(&mut r, object);

    // Container.
    let container = field(object, "container").cloned().unwrap_or(Value::Null);
    let docker = container.get("docker").filter(|v| !v.is_null()).cloned().unwrap_or(Value::Null);
    match container.get("type").and_then(Value::as_str) {
        None | Some("DOCKER") => {}
        Some(other) => {
            r.problem("/container/type", format!("'{other}' is not supported: berth runs DOCKER containers"))
        }
    }
    let image = docker.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
    if image.trim().is_empty() {
        r.problem(
            "/container/docker/image",
            "berth runs every task as a Docker container: an image is required",
        );
    }
    // DEVELOPERS.md's short form: container.docker.command sets the container's command like `cmd`.
    let cmd = cmd.or_else(|| docker.get("command").and_then(Value::as_str).map(String::from));
    let force_pull_image = docker.get("forcePullImage").and_then(Value::as_bool).unwrap_or(false);
    let privileged = docker.get("privileged").and_then(Value::as_bool).unwrap_or(false);
    let docker_parameters = docker.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
    if !docker_parameters.is_empty() {
        r.problem(
            "/container/docker/parameters",
            "arbitrary docker run options are not supported by berth: use the app's fields (resources, \
             network, volumes, privileged)",
        );
    }
    for (object, path, known) in [
        (container.as_object(), "/container", &["type", "docker", "volumes", "portMappings"][..]),
        (
            docker.as_object(),
            "/container/docker",
            &["image", "network", "portMappings", "privileged", "parameters", "forcePullImage", "command"][..],
        ),
    ] {
        for (name, value) in object.into_iter().flatten() {
            if !known.contains(&name.as_str()) && !value.is_null() {
                r.problem(&format!("{path}/{name}"), "is not supported by berth");
            }
        }
    }

    let network = read_network(&mut r, object, &docker);
    let mappings_json = container
        .get("portMappings")
        .filter(|v| !v.is_null())
        .or_else(|| docker.get("portMappings").filter(|v| !v.is_null()))
        .cloned();
    let port_mappings = read_port_mappings(&mut r, mappings_json.as_ref());
    let port_definitions = read_port_definitions(&mut r, object, &network);
    if network == NetworkMode::Host && !port_mappings.is_empty() {
        r.problem(
            "/container/portMappings",
            "port mappings need BRIDGE or USER networking; use portDefinitions with HOST",
        );
    }
    let volumes = read_volumes(&mut r, container.get("volumes"));

    let constraints = match field(object, "constraints") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match Constraint::parse(item) {
                    Ok(c) => out.push(c),
                    Err(e) => r.problem(&format!("/constraints({i})"), e),
                }
            }
            out
        }
        Some(_) => {
            r.problem("/constraints", "must be a list of [field, operator, value?]");
            Vec::new()
        }
    };

    let health_checks = match field(object, "healthChecks") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            items.iter().enumerate().filter_map(|(i, h)| read_health_check(&mut r, i, h)).collect()
        }
        Some(_) => {
            r.problem("/healthChecks", "must be a list");
            Vec::new()
        }
    };
    let port_count = match network {
        NetworkMode::Host => port_definitions.len(),
        NetworkMode::Bridge | NetworkMode::User(_) => port_mappings.len(),
        NetworkMode::None => 0,
    };
    for (i, h) in health_checks.iter().enumerate() {
        if h.protocol != "COMMAND" && h.protocol != "MESOS_COMMAND" && h.port_index as usize >= port_count {
            r.problem(&format!("/healthChecks({i})/portIndex"), format!("the app has {port_count} ports"));
        }
    }

    let strategy = field(object, "upgradeStrategy").cloned().unwrap_or(Value::Null);
    let minimum_health_capacity =
        strategy.get("minimumHealthCapacity").and_then(Value::as_f64).unwrap_or(1.0);
    let maximum_over_capacity = strategy.get("maximumOverCapacity").and_then(Value::as_f64).unwrap_or(1.0);
    if !(0.0..=1.0).contains(&minimum_health_capacity) {
        r.problem("/upgradeStrategy/minimumHealthCapacity", "must be between 0 and 1");
    }
    if !(0.0..=1.0).contains(&maximum_over_capacity) {
        r.problem("/upgradeStrategy/maximumOverCapacity", "must be between 0 and 1");
    }
    let kill_selection = match field(object, "killSelection").and_then(Value::as_str) {
        None | Some("YOUNGEST_FIRST") => KillSelection::YoungestFirst,
        Some("OLDEST_FIRST") => KillSelection::OldestFirst,
        Some(other) => {
            r.problem("/killSelection", format!("'{other}' is not YOUNGEST_FIRST or OLDEST_FIRST"));
            KillSelection::YoungestFirst
        }
    };
    if cmd.is_some() && !args.is_empty() {
        r.problem("/", "AppDefinition must either contain one of 'cmd' or 'args', not both");
    }

    if !r.problems.is_empty() {
        return Err(Invalid(r.problems));
    }
    Ok(App {
        id,
        cmd,
        args,
        cpus,
        mem,
        disk,
        gpus: gpus as u32,
        instances: instances as u32,
        env,
        labels,
        image,
        force_pull_image,
        privileged,
        network,
        port_mappings,
        port_definitions,
        require_ports,
        volumes,
        constraints,
        health_checks,
        backoff_seconds,
        backoff_factor,
        max_launch_delay_seconds,
        minimum_health_capacity,
        maximum_over_capacity,
        kill_selection,
        task_kill_grace_period_seconds,
        user,
        docker_parameters,
    })
}

fn read_network(r: &mut Reader<'_>, object: &serde_json::Map<String, Value>, docker: &Value) -> NetworkMode {
    // Marathon 1.5+: `networks: [{"mode": "container/bridge" | "host" | "container", "name": …}]`.
    if let Some(Value::Array(networks)) = field(object, "networks")
        && let Some(first) = networks.first()
    {
        return match first.get("mode").and_then(Value::as_str).unwrap_or("host") {
            "host" => NetworkMode::Host,
            "container/bridge" => NetworkMode::Bridge,
            "container" => match first.get("name").and_then(Value::as_str) {
                Some(name) if !name.is_empty() => NetworkMode::User(name.into()),
                _ => {
                    r.problem("/networks(0)/name", "container networks need a name");
                    NetworkMode::Host
                }
            },
            other => {
                r.problem(
                    "/networks(0)/mode",
                    format!("'{other}' is not host, container/bridge or container"),
                );
                NetworkMode::Host
            }
        };
    }
    // Marathon 1.4: `container.docker.network`, HOST by default.
    match docker.get("network").and_then(Value::as_str) {
        None | Some("HOST") => NetworkMode::Host,
        Some("BRIDGE") => NetworkMode::Bridge,
        Some("NONE") => NetworkMode::None,
        Some("USER") => {
            match object.get("ipAddress").and_then(|ip| ip.get("networkName")).and_then(Value::as_str) {
                Some(name) => NetworkMode::User(name.into()),
                None => {
                    r.problem("/ipAddress/networkName", "USER networking needs ipAddress.networkName");
                    NetworkMode::Host
                }
            }
        }
        Some(other) => {
            r.problem("/container/docker/network", format!("'{other}' is not BRIDGE, HOST, USER or NONE"));
            NetworkMode::Host
        }
    }
}

fn protocol(r: &mut Reader<'_>, path: &str, value: Option<&Value>) -> String {
    match value.and_then(Value::as_str) {
        None | Some("tcp") => "tcp".into(),
        Some("udp") => "udp".into(),
        Some(other) => {
            r.problem(path, format!("'{other}' is not tcp or udp"));
            "tcp".into()
        }
    }
}

fn port_number(r: &mut Reader<'_>, path: &str, value: Option<&Value>) -> u16 {
    match value {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64().and_then(|p| u16::try_from(p).ok()) {
            Some(p) => p,
            None => {
                r.problem(path, "must be a port number between 0 and 65535");
                0
            }
        },
    }
}

fn labels_of(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

fn read_port_mappings(r: &mut Reader<'_>, value: Option<&Value>) -> Vec<PortMapping> {
    let Some(Value::Array(items)) = value else { return Vec::new() };
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let path = format!("/container/portMappings({i})");
            let container_port = port_number(r, &format!("{path}/containerPort"), m.get("containerPort"));
            let host_port = port_number(r, &format!("{path}/hostPort"), m.get("hostPort"));
            if container_port == 0 {
                r.problem(&format!("{path}/containerPort"), "must be a port number above 0");
            }
            PortMapping {
                container_port,
                host_port,
                service_port: port_number(r, &format!("{path}/servicePort"), m.get("servicePort")),
                protocol: protocol(r, &format!("{path}/protocol"), m.get("protocol")),
                name: m.get("name").and_then(Value::as_str).map(String::from),
                labels: labels_of(m.get("labels")),
            }
        })
        .collect()
}

fn read_port_definitions(
    r: &mut Reader<'_>,
    object: &serde_json::Map<String, Value>,
    network: &NetworkMode,
) -> Vec<PortDefinition> {
    if let Some(value) = field(object, "portDefinitions") {
        let Value::Array(items) = value else {
            r.problem("/portDefinitions", "must be a list");
            return Vec::new();
        };
        return items
            .iter()
            .enumerate()
            .map(|(i, p)| PortDefinition {
                port: port_number(r, &format!("/portDefinitions({i})/port"), p.get("port")),
                protocol: protocol(r, &format!("/portDefinitions({i})/protocol"), p.get("protocol")),
                name: p.get("name").and_then(Value::as_str).map(String::from),
                labels: labels_of(p.get("labels")),
            })
            .collect();
    }
    if let Some(Value::Array(ports)) = field(object, "ports") {
        return ports
            .iter()
            .enumerate()
            .map(|(i, p)| PortDefinition {
                port: port_number(r, &format!("/ports({i})"), Some(p)),
                protocol: "tcp".into(),
                name: None,
                labels: BTreeMap::new(),
            })
            .collect();
    }
    // Marathon gives host-networked apps one port by default.
    if *network == NetworkMode::Host {
        vec![PortDefinition { port: 0, protocol: "tcp".into(), name: None, labels: BTreeMap::new() }]
    } else {
        Vec::new()
    }
}

fn read_volumes(r: &mut Reader<'_>, value: Option<&Value>) -> Vec<Volume> {
    let Some(Value::Array(items)) = value else { return Vec::new() };
    let mut out = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let path = format!("/container/volumes({i})");
        let container_path = v.get("containerPath").and_then(Value::as_str).unwrap_or_default();
        let Some(host_path) = v.get("hostPath").and_then(Value::as_str) else {
            r.problem(
                &format!("{path}/hostPath"),
                "only host volumes are supported (persistent and external volumes are not)",
            );
            continue;
        };
        let read_only = match v.get("mode").and_then(Value::as_str) {
            None | Some("RW") => false,
            Some("RO") => true,
            Some(other) => {
                r.problem(&format!("{path}/mode"), format!("'{other}' is not RO or RW"));
                false
            }
        };
        if !container_path.starts_with('/') || !host_path.starts_with('/') {
            r.problem(&path, "containerPath and hostPath must be absolute");
        }
        out.push(Volume { container_path: container_path.into(), host_path: host_path.into(), read_only });
    }
    out
}

fn read_health_check(r: &mut Reader<'_>, i: usize, h: &Value) -> Option<HealthCheck> {
    let path = format!("/healthChecks({i})");
    let protocol = h.get("protocol").and_then(Value::as_str).unwrap_or("HTTP").to_string();
    let known =
        ["HTTP", "HTTPS", "TCP", "COMMAND", "MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP", "MESOS_COMMAND"];
    if !known.contains(&protocol.as_str()) {
        r.problem(&format!("{path}/protocol"), format!("'{protocol}' is not one of {}", known.join(", ")));
        return None;
    }
    let command = h.get("command").and_then(|c| c.get("value")).and_then(Value::as_str).map(String::from);
    if protocol.ends_with("COMMAND") && command.is_none() {
        r.problem(&format!("{path}/command"), "COMMAND health checks need command.value");
    }
    let seconds =
        |name: &str, default: u32| h.get(name).and_then(Value::as_u64).map(|v| v as u32).unwrap_or(default);
    Some(HealthCheck {
        path: h.get("path").and_then(Value::as_str).unwrap_or("/").to_string(),
        port_index: h.get("portIndex").and_then(Value::as_u64).unwrap_or(0) as u32,
        command,
        grace_period_seconds: seconds("gracePeriodSeconds", 300),
        interval_seconds: seconds("intervalSeconds", 60).max(1),
        timeout_seconds: seconds("timeoutSeconds", 20).max(1),
        max_consecutive_failures: seconds("maxConsecutiveFailures", 3),
        delay_seconds: seconds("delaySeconds", 15),
        ignore_http1xx: h.get("ignoreHttp1xx").and_then(Value::as_bool).unwrap_or(false),
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_form_of_developers_md_is_accepted() {
        let body = json!({"id": "my-app", "cpus": 1, "mem": 256, "instances": 1,
            "container": {"type": "DOCKER", "docker": {"image": "my-app:latest", "command": "my-app"}}});
        let app = parse(&body, None).unwrap();
        assert_eq!(app.id, "/my-app");
        assert_eq!(app.cmd.as_deref(), Some("my-app"));
        assert_eq!((app.milli_cpus(), app.mem_mib(), app.instances), (1000, 256, 1));
        assert_eq!(app.network, NetworkMode::Host, "Marathon's default network");
        assert_eq!(app.port_count(), 1, "Marathon's default single port");
    }

    #[test]
    fn invalid_definitions_get_marathons_422_shape_with_paths() {
        let body = json!({"id": "Bad_Id", "cpus": -1, "mem": 2, "instances": 1.5, "container": {"docker": {}},
            "healthChecks": [{"protocol": "SMTP"}], "constraints": [["hostname", "SOMETIMES"]]});
        let err = parse(&body, None).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "/id",
            "/cpus",
            "/mem",
            "/instances",
            "/container/docker/image",
            "/healthChecks(0)/protocol",
            "/constraints(0)",
        ] {
            assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
        }
        assert_eq!(err.body()["message"], "Object is not valid");
    }

    #[test]
    fn bridge_apps_take_port_mappings_from_either_place() {
        let legacy = json!({"id": "/a", "container": {"docker": {"image": "x", "network": "BRIDGE",
            "portMappings": [{"containerPort": 80, "hostPort": 0}]}}});
        let modern = json!({"id": "/a", "networks": [{"mode": "container/bridge"}],
            "container": {"docker": {"image": "x"}, "portMappings": [{"containerPort": 80}]}});
        let (a, b) = (parse(&legacy, None).unwrap(), parse(&modern, None).unwrap());
        assert_eq!(a.port_mappings, b.port_mappings);
        assert_eq!(a.network, NetworkMode::Bridge);
        assert_eq!(a.fixed_ports(), vec![0]);
    }

    #[test]
    fn scaling_is_not_a_config_change() {
        let body = json!({"id": "/a", "container": {"docker": {"image": "x"}}});
        let a = parse(&body, None).unwrap();
        let mut b = a.clone();
        b.instances = 9;
        assert!(!a.config_differs(&b));
        b.mem = 512.0;
        assert!(a.config_differs(&b));
    }

    #[test]
    fn the_output_round_trips() {
        let body = json!({"id": "/shop/web", "cmd": "serve", "cpus": 0.25, "mem": 64, "instances": 3,
            "env": {"A": "1"}, "labels": {"team": "x"}, "constraints": [["hostname", "UNIQUE"]],
            "container": {"docker": {"image": "web:1", "network": "BRIDGE", "portMappings": [{"containerPort": 8080}]}},
            "healthChecks": [{"protocol": "HTTP", "path": "/health", "gracePeriodSeconds": 5}],
            "upgradeStrategy": {"minimumHealthCapacity": 0.5}});
        let app = parse(&body, None).unwrap();
        assert_eq!(parse(&to_json(&app, "v1"), None).unwrap(), app);
    }
}
