//! Checks a framework's launch against its offer and the node before anything is started. Each task is
//! checked on its own first ([`task`], refused alone), then the rest as a whole ([`launch`], all or nothing),
//! with a reason that names the task and the field.

use std::collections::HashSet;

use berth_proto::{Scalars, ports};

use crate::model::ResourcesExt;
use crate::runtime::bindings::{Network, PortRange, Probe, Resources, TaskSpec};

/// Docker refuses memory limits below 6 MiB.
const MIN_MEM_MIB: u64 = 6;
/// Longest kill grace period a task may ask for.
const MAX_KILL_GRACE_MS: u32 = 10 * 60 * 1000;

/// What the node allows: the operator's per-node settings on the master, never the agent's own claims.
pub struct NodePolicy {
    pub allow_privileged: bool,
    pub allow_host_mounts: bool,
    pub allow_host_network: bool,
}

/// Checks one task on its own: its id, its resources' shape and what it asks of the node. A launch refuses
/// the tasks that fail this one by one (as Mesos does), so one bad task does not hold back the others.
pub fn task(task: &TaskSpec, node: &NodePolicy, exists: impl Fn(&str) -> bool) -> Result<(), String> {
    let id = &task.id;
    check_id(id)?;
    if exists(id) {
        return Err(format!("task `{id}` already exists (task ids must be unique within a framework)"));
    }
    let r = &task.resources;
    if r.milli_cpus == 0 {
        return Err(format!("task `{id}`: resources.milli_cpus must be above 0"));
    }
    if r.mem_mib < MIN_MEM_MIB {
        return Err(format!(
            "task `{id}`: resources.mem_mib must be at least {MIN_MEM_MIB}, got {}",
            r.mem_mib
        ));
    }
    if !ports::is_normal(&r.ports) {
        return Err(format!("task `{id}`: resources.ports must be sorted, non-overlapping ranges"));
    }
    check_container(task, node)
}

/// Checks `tasks` against `offer`: each on its own ([`task`]) and all of them together (distinct ids,
/// distinct ports, within the offer). `exists` says whether the framework already has a task with an id.
pub fn launch(
    offer: &Resources,
    node: &NodePolicy,
    tasks: &[TaskSpec],
    exists: impl Fn(&str) -> bool,
) -> Result<(), String> {
    if tasks.is_empty() {
        return Err("the launch has no tasks".into());
    }
    let mut ids = HashSet::new();
    let mut total = Scalars::ZERO;
    let mut taken_ports: Vec<PortRange> = Vec::new();
    for t in tasks {
        task(t, node, &exists)?;
        let id = &t.id;
        if !ids.insert(id.as_str()) {
            return Err(format!("task `{id}` appears twice in the launch"));
        }
        let r = &t.resources;
        if !ports::contains(&offer.ports, &r.ports) {
            return Err(format!(
                "task `{id}`: ports {} are not in the offer ({})",
                show(&r.ports),
                show(&offer.ports)
            ));
        }
        if ports::overlaps(&taken_ports, &r.ports) {
            return Err(format!(
                "task `{id}`: ports {} are taken by another task of the launch",
                show(&r.ports)
            ));
        }
        ports::add(&mut taken_ports, &r.ports);
        total = total.plus(&r.scalars());
    }
    if !total.fits_in(&offer.scalars()) {
        let o = offer.scalars();
        return Err(format!(
            "the launch needs {} milli-cpus, {} MiB memory, {} MiB disk, {} GPUs; the offer has {}, {}, {}, {}",
            total.milli_cpus,
            total.mem_mib,
            total.disk_mib,
            total.gpus,
            o.milli_cpus,
            o.mem_mib,
            o.disk_mib,
            o.gpus
        ));
    }
    Ok(())
}

fn show(ranges: &[PortRange]) -> String {
    if ranges.is_empty() {
        return "none".into();
    }
    ranges.iter().map(|r| format!("{}-{}", r.begin, r.end)).collect::<Vec<_>>().join(",")
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 200 {
        return Err(format!("task id `{id}` must be 1-200 characters"));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("task id `{id}` may only contain A-Z, a-z, 0-9, `-`, `_` and `.`"));
    }
    Ok(())
}

fn check_container(task: &TaskSpec, node: &NodePolicy) -> Result<(), String> {
    let id = &task.id;
    let c = &task.container;
    if c.image.trim().is_empty() || c.image.chars().any(char::is_whitespace) {
        return Err(format!("task `{id}`: container.image `{}` is not an image reference", c.image));
    }
    if c.privileged && !node.allow_privileged {
        return Err(format!("task `{id}`: privileged containers are not allowed on this node"));
    }
    if !c.volumes.is_empty() && !node.allow_host_mounts {
        return Err(format!("task `{id}`: host mounts (container.volumes) are not allowed on this node"));
    }
    for v in &c.volumes {
        if !v.host_path.starts_with('/') || !v.container_path.starts_with('/') {
            return Err(format!(
                "task `{id}`: volume paths must be absolute ({} -> {})",
                v.host_path, v.container_path
            ));
        }
    }
    match &c.network {
        Network::User(name) if name.is_empty() => {
            return Err(format!("task `{id}`: container.network names an empty user network"));
        }
        // Joins another container's namespaces: another task's, or anything else on the node.
        Network::User(name) if name.starts_with("container:") => {
            return Err(format!(
                "task `{id}`: container.network `{name}` would join another container's network namespace; \
                 `container:` networks are not allowed"
            ));
        }
        Network::User(name) if name == "host" && !node.allow_host_network => {
            return Err(format!("task `{id}`: the host network is not allowed on this node"));
        }
        Network::Host if !node.allow_host_network => {
            return Err(format!("task `{id}`: the host network is not allowed on this node"));
        }
        _ => {}
    }
    for m in &c.port_mappings {
        if m.container_port == 0 {
            return Err(format!("task `{id}`: port mapping with container port 0"));
        }
        if !ports::contains_port(&task.resources.ports, m.host_port) {
            return Err(format!(
                "task `{id}`: host port {} of a port mapping is not in the task's resources.ports",
                m.host_port
            ));
        }
    }
    let port_count = match c.network {
        Network::Host => ports::count(&task.resources.ports) as usize,
        _ => c.port_mappings.len(),
    };
    for (i, h) in task.health_checks.iter().enumerate() {
        let index = match &h.probe {
            Probe::Http(p) => Some(p.port_index),
            Probe::Tcp(index) => Some(*index),
            Probe::Command(argv) => {
                if argv.is_empty() {
                    return Err(format!("task `{id}`: health check {i} has an empty command"));
                }
                None
            }
        };
        if let Some(index) = index
            && index as usize >= port_count
        {
            return Err(format!(
                "task `{id}`: health check {i} uses port index {index}, but the task has {port_count} ports"
            ));
        }
        if h.interval_ms == 0 || h.timeout_ms == 0 {
            return Err(format!("task `{id}`: health check {i} needs an interval and a timeout above 0"));
        }
    }
    if task.kill_grace_period_ms > MAX_KILL_GRACE_MS {
        return Err(format!("task `{id}`: kill_grace_period_ms may be at most {MAX_KILL_GRACE_MS}"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runtime::bindings::{ContainerSpec, PortMapping, Protocol};

    /// A task spec with these resources (used by other modules' tests too).
    pub(crate) fn task(id: &str, milli_cpus: u64, ports: Vec<PortRange>) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            name: "t".into(),
            resources: Resources { milli_cpus, mem_mib: 64, disk_mib: 0, gpus: 0, ports },
            container: ContainerSpec {
                image: "app:1".into(),
                force_pull: false,
                command: None,
                args: vec![],
                entrypoint: None,
                env: vec![],
                labels: vec![],
                port_mappings: vec![],
                network: Network::Bridge,
                volumes: vec![],
                working_dir: None,
                user: None,
                privileged: false,
            },
            health_checks: vec![],
            kill_grace_period_ms: 1000,
        }
    }

    fn offer() -> Resources {
        Resources {
            milli_cpus: 1000,
            mem_mib: 256,
            disk_mib: 0,
            gpus: 0,
            ports: vec![PortRange { begin: 100, end: 101 }],
        }
    }

    const OPEN: NodePolicy =
        NodePolicy { allow_privileged: false, allow_host_mounts: false, allow_host_network: true };

    #[test]
    fn a_launch_that_fits_passes() {
        let tasks = [task("a", 500, vec![PortRange { begin: 100, end: 100 }]), task("b", 500, vec![])];
        assert_eq!(launch(&offer(), &OPEN, &tasks, |_| false), Ok(()));
    }

    #[test]
    fn over_the_offer_is_refused_with_both_amounts() {
        let err = launch(&offer(), &OPEN, &[task("a", 600, vec![]), task("b", 600, vec![])], |_| false)
            .unwrap_err();
        assert!(err.contains("1200 milli-cpus") && err.contains("the offer has 1000"), "{err}");
    }

    #[test]
    fn ports_must_come_from_the_offer_and_not_be_shared() {
        let err =
            launch(&offer(), &OPEN, &[task("a", 1, vec![PortRange { begin: 102, end: 102 }])], |_| false)
                .unwrap_err();
        assert!(err.contains("not in the offer"), "{err}");
        let p = vec![PortRange { begin: 100, end: 100 }];
        let err =
            launch(&offer(), &OPEN, &[task("a", 1, p.clone()), task("b", 1, p)], |_| false).unwrap_err();
        assert!(err.contains("taken by another task"), "{err}");
        let mut t = task("a", 1, vec![]);
        t.container.port_mappings.push(PortMapping {
            container_port: 80,
            host_port: 100,
            protocol: Protocol::Tcp,
            name: None,
        });
        let err = launch(&offer(), &OPEN, &[t], |_| false).unwrap_err();
        assert!(err.contains("host port 100"), "{err}");
    }

    #[test]
    fn duplicate_and_malformed_ids_are_refused() {
        assert!(
            launch(&offer(), &OPEN, &[task("a", 1, vec![]), task("a", 1, vec![])], |_| false)
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            launch(&offer(), &OPEN, &[task("a", 1, vec![])], |id| id == "a")
                .unwrap_err()
                .contains("already exists")
        );
        assert!(
            launch(&offer(), &OPEN, &[task("a b", 1, vec![])], |_| false)
                .unwrap_err()
                .contains("may only contain")
        );
    }

    #[test]
    fn privileged_and_host_mounts_need_the_node_to_allow_them() {
        let mut t = task("a", 1, vec![]);
        t.container.privileged = true;
        assert!(
            launch(&offer(), &OPEN, std::slice::from_ref(&t), |_| false).unwrap_err().contains("privileged")
        );
        let allowed =
            NodePolicy { allow_privileged: true, allow_host_mounts: true, allow_host_network: true };
        assert_eq!(launch(&offer(), &allowed, &[t], |_| false), Ok(()));
    }
}
