//! Service ports: the port each of an app's ports is known by to load balancers (marathon-lb keys on them),
//! unique in the framework, from a range (`service_ports` in the configuration, 10000-20000 like Marathon's
//! `local_port_min`/`max`), kept across the app's updates.

use std::collections::BTreeMap;

use crate::app::{App, Invalid, Problem};
use crate::scheduler::Marathon;

impl Marathon {
    /// Gives each of `app`'s service ports that is 0 a number: the one the app had at that place before
    /// (`previous`), else the lowest free one of the range. A port the app asks for that another app holds is
    /// refused.
    pub fn assign_service_ports(&self, app: &mut App, previous: Option<&App>) -> Result<(), Invalid> {
        self.assign_service_ports_beside(app, previous, &[])
    }

    /// [`Marathon::assign_service_ports`], with `beside`: other apps of the same change, not yet recorded.
    pub fn assign_service_ports_beside(
        &self,
        app: &mut App,
        previous: Option<&App>,
        beside: &[App],
    ) -> Result<(), Invalid> {
        let mut taken: BTreeMap<u16, String> = BTreeMap::new();
        for other in beside.iter().filter(|o| o.id != app.id) {
            for port in other.service_ports() {
                taken.insert(port, other.id.clone());
            }
        }
        for (id, a) in &self.state.apps {
            if *id != app.id && !a.deleting && !beside.iter().any(|o| o.id == *id) {
                for port in a.app.service_ports() {
                    taken.insert(port, id.clone());
                }
            }
        }
        let before = previous.map(App::service_ports).unwrap_or_default();
        let (low, high) = self.config.service_ports;
        let mut problems = Vec::new();
        let wanted = app.service_ports();
        for (&port, path) in wanted.iter().zip(port_paths(app)) {
            if port != 0
                && let Some(owner) = taken.get(&port)
            {
                problems.push(Problem {
                    path,
                    errors: vec![format!("service port {port} is in use by app {owner}")],
                });
            }
        }
        if !problems.is_empty() {
            return Err(Invalid(problems));
        }
        let mut used: std::collections::BTreeSet<u16> =
            taken.keys().copied().chain(wanted.iter().copied()).collect();
        for (i, port) in app.service_ports_mut().into_iter().enumerate() {
            if *port != 0 {
                continue;
            }
            let kept = before.get(i).copied().filter(|p| *p != 0 && !taken.contains_key(p));
            let next = kept.or_else(|| (low..=high).find(|p| !used.contains(p)));
            match next {
                Some(p) => {
                    *port = p;
                    used.insert(p);
                }
                None => {
                    return Err(Invalid::one(
                        "/portDefinitions",
                        format!("no service port is free in {low}-{high}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The JSON path of each of an app's service ports, in order, for error messages.
fn port_paths(app: &App) -> Vec<String> {
    match app.network {
        crate::app::NetworkMode::Host => {
            (0..app.port_definitions.len()).map(|i| format!("/portDefinitions({i})/port")).collect()
        }
        _ => (0..app.port_mappings.len())
            .map(|i| format!("/container/portMappings({i})/servicePort"))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::app::{NetworkMode, PortDefinition};
    use crate::scheduler::testing::{app, marathon};

    fn with_ports(id: &str, ports: &[u16]) -> crate::app::App {
        let mut a = app(1, 1.0, 1.0);
        a.id = id.into();
        a.network = NetworkMode::Host;
        a.port_definitions = ports
            .iter()
            .map(|&port| PortDefinition {
                port,
                protocol: "tcp".into(),
                name: None,
                labels: Default::default(),
            })
            .collect();
        a
    }

    #[test]
    fn service_ports_are_unique_assigned_from_the_range_and_kept_across_updates() {
        let mut m = marathon(with_ports("/web", &[10000]), "v1");
        let mut api = with_ports("/api", &[0, 0]);
        m.assign_service_ports(&mut api, None).unwrap();
        assert_eq!(api.service_ports(), vec![10001, 10002], "the lowest free ports of 10000-20000");
        m.state.apps.insert("/api".into(), {
            let mut s = m.state.apps["/web"].clone();
            s.app = api.clone();
            s
        });

        // An update that leaves them 0 keeps them.
        let mut updated = with_ports("/api", &[0, 0]);
        m.assign_service_ports(&mut updated, Some(&api)).unwrap();
        assert_eq!(updated.service_ports(), vec![10001, 10002]);

        // Another app cannot take one of them.
        let mut clash = with_ports("/other", &[10002]);
        let error = m.assign_service_ports(&mut clash, None).unwrap_err();
        assert!(error.0[0].errors[0].contains("in use by app /api"), "{:?}", error.0);
    }
}
