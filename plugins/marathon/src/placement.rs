//! Placement: which offers take which tasks (resources, ports, constraints), the task spec each launch
//! sends, and the decline of offers nothing fits.

use berth_plugin_sdk::{
    ContainerSpec, Decision, Decline, HealthCheck as AbiHealthCheck, HttpProbe, KeyValue, Launch, Network,
    Offer, PortMapping as AbiPortMapping, PortRange, Probe, Protocol, Resources, TaskSpec,
    Volume as AbiVolume,
};

use crate::app::{App, NetworkMode};
use crate::constraints::Place;
use crate::model::{Phase, Task};
use crate::scheduler::Marathon;

impl Marathon {
    /// Launches what fits on each offer (resources, ports, constraints); declines the rest.
    pub fn offers(&mut self, offers: Vec<Offer>) -> Vec<Decision> {
        // Apps with a deployment under way first, then by id.
        let mut wanted = self.launches();
        wanted.sort_by_key(|(id, _)| (self.state.apps[id].deployment.is_none(), id.clone()));
        let mut decisions = Vec::with_capacity(offers.len());
        for offer in offers {
            let mut free = offer.resources.clone();
            let mut tasks = Vec::new();
            for (app_id, left) in wanted.iter_mut() {
                let mut placed = false;
                while *left > 0 {
                    match self.place(app_id, &offer, &mut free) {
                        Ok(spec) => {
                            tasks.push(spec);
                            *left -= 1;
                            placed = true;
                        }
                        Err(reason) => {
                            if !placed {
                                self.offer_stats.entry(app_id.clone()).or_default().unused(
                                    &offer,
                                    reason,
                                    self.now_ms,
                                );
                            }
                            break;
                        }
                    }
                }
                if placed {
                    self.offer_stats.entry(app_id.clone()).or_default().used(self.now_ms);
                }
            }
            if tasks.is_empty() {
                // With launches still wanted, the offer is declined briefly: what did not fit it (a
                // constraint, another task of the app there) may change soon, as a rolling upgrade kills the
                // app's old tasks. With nothing wanted, for long.
                let refuse_seconds = if wanted.iter().any(|(_, left)| *left > 0) {
                    self.config.unfit_decline_seconds
                } else {
                    self.config.decline_seconds
                };
                decisions.push(Decision::Decline(Decline { offer: offer.id, refuse_seconds }));
            } else {
                decisions.push(Decision::Launch(Launch { offer: offer.id, tasks }));
            }
        }
        decisions
    }

    /// One task of `app_id` on `offer`, if it fits what is left of it; records the task as staging. Else
    /// why not, in Marathon's words (`/v2/queue`'s reject summary).
    fn place(&mut self, app_id: &str, offer: &Offer, free: &mut Resources) -> Result<TaskSpec, &'static str> {
        let a = self.state.apps.get(app_id).ok_or("NoApp")?;
        let app = &a.app;
        if free.milli_cpus < app.milli_cpus() {
            return Err("InsufficientCpus");
        }
        if free.mem_mib < app.mem_mib() {
            return Err("InsufficientMemory");
        }
        if free.disk_mib < app.disk_mib() {
            return Err("InsufficientDisk");
        }
        if free.gpus < app.gpus {
            return Err("InsufficientGpus");
        }
        if !app.constraints.is_empty() {
            let here = Place { hostname: &offer.hostname, attributes: &[] };
            let attributes: Vec<(String, String)> =
                offer.attributes.iter().map(|a| (a.name.clone(), a.value.clone())).collect();
            let here = Place { attributes: &attributes, ..here };
            let placed: Vec<Place<'_>> = self
                .state
                .app_tasks(app_id)
                .filter(|t| t.active())
                .map(|t| Place { hostname: &t.host, attributes: &t.attributes })
                .collect();
            if !app.constraints.iter().all(|c| c.allows(&here, &placed)) {
                return Err("UnfulfilledConstraint");
            }
        }
        let ports = take_ports(&mut free.ports, &app.fixed_ports()).ok_or("InsufficientPorts")?;
        free.milli_cpus -= app.milli_cpus();
        free.mem_mib -= app.mem_mib();
        free.disk_mib -= app.disk_mib();
        free.gpus -= app.gpus;
        let seq = self.state.meta.seq + 1;
        let id = format!("{}.{:x}-{:x}", app_id.trim_start_matches('/').replace('/', "_"), self.now_ms, seq);
        let version = a.config_version.clone();
        let spec = task_spec(app, &id, &version, &ports);
        let has_health_checks = !app.health_checks.is_empty();
        self.state.next_seq();
        // Interned here too, so a launch does not allocate names only to drop them in `insert_task`.
        let (app, version, host) =
            (self.state.intern(app_id), self.state.intern(&version), self.state.intern(&offer.hostname));
        self.state.insert_task(Task {
            id: id.into(),
            app,
            version,
            phase: Phase::Staging,
            host,
            attributes: offer.attributes.iter().map(|a| (a.name.clone(), a.value.clone())).collect(),
            ports,
            staged_at_ms: self.now_ms,
            started_at_ms: None,
            healthy: None,
            has_health_checks,
            last_health_ms: None,
            killing: false,
            ready_since_ms: None,
        });
        Ok(spec)
    }
}

/// Takes the ports a task needs from an offer's free ranges: fixed ones exactly, 0 as the lowest free.
fn take_ports(free: &mut Vec<PortRange>, wanted: &[u16]) -> Option<Vec<u16>> {
    let mut left = free.clone();
    let mut out = Vec::with_capacity(wanted.len());
    let remove = |left: &mut Vec<PortRange>, port: u16| {
        let i = left.iter().position(|r| r.begin <= port && port <= r.end)?;
        let r = left.remove(i);
        if r.begin < port {
            left.insert(i, PortRange { begin: r.begin, end: port - 1 });
        }
        if port < r.end {
            let at = if r.begin < port { i + 1 } else { i };
            left.insert(at, PortRange { begin: port + 1, end: r.end });
        }
        Some(())
    };
    for &port in wanted.iter().filter(|p| **p != 0) {
        remove(&mut left, port)?;
    }
    for &port in wanted {
        if port != 0 {
            out.push(port);
            continue;
        }
        let first = left.first()?.begin;
        remove(&mut left, first)?;
        out.push(first);
    }
    *free = left;
    Some(out)
}

/// The task spec for one task of `app` with these host ports. Its environment is the app's and Marathon's
/// own `MARATHON_APP_ID` and `MARATHON_APP_VERSION`; the agent adds `HOST`, `PORT0`…, `PORT`, `PORTS` and
/// `MESOS_TASK_ID` (from the task's ports, in the order given here), so they do not cross the ABI with
/// every task.
fn task_spec(app: &App, id: &str, version: &str, ports: &[u16]) -> TaskSpec {
    let mut env: Vec<KeyValue> = Vec::with_capacity(app.env.len() + 2);
    env.extend(app.env.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }));
    env.push(KeyValue { key: "MARATHON_APP_ID".into(), value: app.id.clone() });
    env.push(KeyValue { key: "MARATHON_APP_VERSION".into(), value: version.into() });
    let network = match &app.network {
        NetworkMode::Host => Network::Host,
        NetworkMode::Bridge => Network::Bridge,
        NetworkMode::None => Network::None,
        NetworkMode::User(name) => Network::User(name.clone()),
    };
    let port_mappings = match app.network {
        NetworkMode::Bridge | NetworkMode::User(_) => app
            .port_mappings
            .iter()
            .zip(ports)
            .map(|(m, &host_port)| AbiPortMapping {
                container_port: m.container_port,
                host_port,
                protocol: if m.protocol == "udp" { Protocol::Udp } else { Protocol::Tcp },
                name: m.name.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let health_checks = app
        .health_checks
        .iter()
        .map(|h| AbiHealthCheck {
            probe: match h.protocol.as_str() {
                "TCP" | "MESOS_TCP" => Probe::Tcp(h.port_index),
                "COMMAND" | "MESOS_COMMAND" => {
                    Probe::Command(vec!["/bin/sh".into(), "-c".into(), h.command.clone().unwrap_or_default()])
                }
                protocol => Probe::Http(HttpProbe {
                    port_index: h.port_index,
                    path: h.path.clone(),
                    https: protocol.ends_with("HTTPS"),
                }),
            },
            grace_period_ms: h.grace_period_seconds.saturating_mul(1000),
            interval_ms: h.interval_seconds.saturating_mul(1000),
            timeout_ms: h.timeout_seconds.saturating_mul(1000),
            max_consecutive_failures: h.max_consecutive_failures,
        })
        .collect();
    let mut resources = Resources::new(app.milli_cpus(), app.mem_mib())
        .with_ports(ports.iter().map(|&p| PortRange { begin: p, end: p }).collect());
    resources.disk_mib = app.disk_mib();
    resources.gpus = app.gpus;
    TaskSpec {
        id: id.into(),
        name: app.id.clone(),
        resources,
        container: ContainerSpec {
            image: app.image.clone(),
            force_pull: app.force_pull_image,
            command: app.cmd.clone(),
            args: app.args.clone(),
            entrypoint: None,
            env,
            labels: app.labels.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect(),
            port_mappings,
            network,
            volumes: app
                .volumes
                .iter()
                .map(|v| AbiVolume {
                    host_path: v.host_path.clone(),
                    container_path: v.container_path.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            working_dir: None,
            user: app.user.clone(),
            privileged: app.privileged,
        },
        health_checks,
        kill_grace_period_ms: app.kill_grace_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_offer_fixed_ones_exactly() {
        let mut free = vec![PortRange { begin: 100, end: 105 }];
        assert_eq!(take_ports(&mut free, &[0, 103, 0]), Some(vec![100, 103, 101]));
        assert_eq!(free, vec![PortRange { begin: 102, end: 102 }, PortRange { begin: 104, end: 105 }]);
        assert_eq!(take_ports(&mut free, &[200]), None);
        assert_eq!(free.len(), 2, "a failed take leaves the ports alone");
    }
}
