//! Planning: what each app needs now (launches, launches delayed by backoff, kills), from the stored
//! state, whether the call follows an offer, a status update, a timer or an API request; and the demand
//! it adds up to.
//!
//! Plans are kept between calls and computed again only for the apps whose tasks or definition changed,
//! and for apps waiting out a backoff delay, so a call costs what changed rather than the number of tasks.

use std::collections::BTreeSet;

use berth_plugin_sdk::TaskShape;

use crate::app::KillSelection;
use crate::model::{AppState, Phase, Task};
use crate::scheduler::Marathon;

/// What one app needs now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Tasks to launch now.
    pub launch: u32,
    /// Tasks to launch once the backoff delay is over.
    pub delayed: u32,
    /// Tasks to kill now.
    pub kill: Vec<String>,
}

/// Chooses `count` tasks to kill: not yet running first, then unhealthy, then by the app's kill selection.
fn choose_kills(mut tasks: Vec<&Task>, count: usize, selection: KillSelection) -> Vec<String> {
    tasks.sort_by(|a, b| {
        let rank = |t: &Task| (t.phase == Phase::Running, t.healthy());
        let age = match selection {
            KillSelection::YoungestFirst => b.staged_at_ms.cmp(&a.staged_at_ms),
            KillSelection::OldestFirst => a.staged_at_ms.cmp(&b.staged_at_ms),
        };
        rank(a).cmp(&rank(b)).then(age).then(a.id.cmp(&b.id))
    });
    tasks.into_iter().take(count).map(|t| t.id.to_string()).collect()
}

impl Marathon {
    /// Brings the kept plans up to date: apps that changed, apps whose backoff delay may have ended, and
    /// apps that are gone. Returns the apps planned again.
    pub fn refresh_plans(&mut self) -> BTreeSet<String> {
        let mut again = self.state.take_changed_apps();
        again.extend(self.plans.iter().filter(|(_, p)| p.delayed > 0).map(|(id, _)| id.clone()));
        for id in &again {
            if self.state.apps.contains_key(id) {
                let plan = self.plan(id);
                self.plans.insert(id.clone(), plan);
            } else {
                self.plans.remove(id);
            }
        }
        again
    }

    /// Launches wanted now, per app (plans up to date).
    pub(crate) fn launches(&mut self) -> Vec<(String, u32)> {
        self.refresh_plans();
        self.plans.iter().filter(|(_, p)| p.launch > 0).map(|(id, p)| (id.clone(), p.launch)).collect()
    }

    /// What an app needs now: see the module documentation.
    ///
    /// The common case, no task to kill and no task of an older version, is read off the app's
    /// [`TaskCounts`]; only kills and rolling upgrades look at the tasks themselves.
    pub fn plan(&self, app_id: &str) -> Plan {
        let Some(a) = self.state.apps.get(app_id) else { return Plan::default() };
        let n = a.app.instances as usize;
        let (active, new, all_new) = match self.state.counts(app_id) {
            Some(c) => {
                let at_version = c.version(&a.config_version);
                (c.active() as usize, at_version.active as usize, c.tasks == at_version.tasks)
            }
            None => (0, 0, true),
        };
        let mut plan = Plan::default();
        let launch = if a.deleting && active == 0 {
            0
        } else if !a.deleting && all_new && active == new && new <= n {
            (n - new) as u32
        } else {
            match self.plan_from_tasks(app_id, a, &mut plan) {
                Some(launch) => launch,
                None => return plan,
            }
        };
        if launch > 0 && self.now_ms < a.backoff.launch_after_ms {
            plan.delayed = launch;
        } else {
            plan.launch = launch;
        }
        plan
    }

    /// The kills of a plan, and its launches (`None` when it only kills, for a deleted app), from the app's
    /// tasks.
    fn plan_from_tasks(&self, app_id: &str, a: &AppState, plan: &mut Plan) -> Option<u32> {
        let active: Vec<&Task> = self.state.app_tasks(app_id).filter(|t| t.active()).collect();
        if a.deleting {
            plan.kill = active.iter().map(|t| t.id.to_string()).collect();
            return None;
        }
        let n = a.app.instances as usize;
        let (old, new): (Vec<&Task>, Vec<&Task>) =
            active.iter().partition(|t| *t.version != *a.config_version);
        // Old tasks all on their way out is still a rolling replacement: they count toward its capacity.
        let old_killing = self.state.app_tasks(app_id).any(|t| t.killing && *t.version != *a.config_version);
        let launch = if old.is_empty() && !old_killing {
            if new.len() > n {
                plan.kill = choose_kills(new, active.len() - n, a.app.kill_selection);
                0
            } else {
                n - new.len()
            }
        } else {
            // A rolling replacement: never fewer healthy tasks than minimumHealthCapacity allows, never more
            // tasks than maximumOverCapacity allows.
            let min_healthy = (n as f64 * a.app.minimum_health_capacity).ceil() as usize;
            let mut max_capacity = n + (n as f64 * a.app.maximum_over_capacity).floor() as usize;
            if max_capacity <= n && min_healthy >= n {
                // Both limits at their tightest would allow no step at all: let one task over.
                max_capacity = n + 1;
            }
            let mut healthy_left = active.iter().filter(|t| t.healthy()).count();
            let mut old_sorted = old.clone();
            // Ties break on the id: tasks come in no particular order.
            old_sorted.sort_by(|a, b| {
                let key =
                    |t: &Task| (t.healthy(), t.phase == Phase::Running, std::cmp::Reverse(t.staged_at_ms));
                key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
            });
            for t in old_sorted {
                if !t.healthy() {
                    plan.kill.push(t.id.to_string());
                } else if healthy_left > min_healthy {
                    plan.kill.push(t.id.to_string());
                    healthy_left -= 1;
                }
            }
            if new.len() > n {
                plan.kill.extend(choose_kills(new.clone(), new.len() - n, a.app.kill_selection));
            }
            // A task being killed runs, and holds its resources, until its end is confirmed: it counts
            // toward maximumOverCapacity (as in Marathon), and so do the ones this plan kills.
            let killing = self.state.app_tasks(app_id).filter(|t| t.killing).count();
            n.saturating_sub(new.len()).min(max_capacity.saturating_sub(active.len() + killing))
        };
        Some(launch as u32)
    }

    /// Task shapes for every app with launches to make.
    pub fn demand(&mut self) -> Vec<TaskShape> {
        self.launches()
            .into_iter()
            .map(|(id, launch)| {
                let app = &self.state.apps[&id].app;
                TaskShape {
                    milli_cpus: app.milli_cpus(),
                    mem_mib: app.mem_mib(),
                    disk_mib: app.disk_mib(),
                    gpus: app.gpus,
                    ports: app.port_count() as u32,
                    count: launch,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, Deployment, Kind};
    use crate::scheduler::testing::{app, marathon, task};

    #[test]
    fn a_rolling_upgrade_keeps_the_minimum_healthy_and_the_maximum_over_capacity() {
        // 4 instances at v1, upgrading to v2 with minimumHealthCapacity 0.5, maximumOverCapacity 0.
        let mut m = marathon(app(4, 0.5, 0.0), "v2");
        for i in 0..4 {
            task(&mut m, &format!("old{i}"), "v1", true);
        }
        let plan = m.plan("/web");
        assert_eq!(plan.kill.len(), 2, "kill down to 2 healthy: {plan:?}");
        assert_eq!(plan.launch, 0, "no new task while the 4 old ones still run");
        for id in &plan.kill {
            m.state.update_task(id, |t| t.killing = true).unwrap();
        }
        let plan = m.plan("/web");
        assert_eq!((plan.launch, plan.kill.len()), (0, 0), "a task being killed still counts: {plan:?}");
        let killed =
            m.state.app_tasks("/web").filter(|t| t.killing).map(|t| t.id.to_string()).collect::<Vec<_>>();
        for id in killed {
            m.state.remove_task(&id);
        }
        let plan = m.plan("/web");
        assert_eq!((plan.launch, plan.kill.len()), (2, 0), "two killed: two new ones in their place");
        task(&mut m, "new0", "v2", false);
        task(&mut m, "new1", "v2", true);
        let plan = m.plan("/web");
        assert_eq!(plan.kill.len(), 1, "one new task healthy: one more old one may go: {plan:?}");
        assert_eq!(plan.launch, 0, "its replacement once it is gone");
        m.state.update_task("new0", |t| t.healthy = Some(true)).unwrap();
        for id in m.plan("/web").kill {
            m.state.update_task(&id, |t| t.killing = true).unwrap();
        }
        // Every old task is being killed, none gone yet: still no room for a fifth task.
        assert_eq!(m.state.app_tasks("/web").filter(|t| t.killing).count(), 2);
        assert_eq!(m.plan("/web").launch, 0, "{:?}", m.plan("/web"));
    }

    #[test]
    fn plans_and_deployments_read_off_the_counts_match_a_walk_of_the_tasks() {
        // Random task sets of an app at v2 (tasks at v1 or v2, in every phase, health and kill state);
        // the plan and the deployment check from the counts equal the ones from walking the tasks.
        let mut next = crate::model::testing::numbers(0x2545_f491_4f6c_dd1d);
        let (mut fast, mut walked) = (0, 0);
        for round in 0..2_000 {
            let mut m = marathon(app(next(5) as u32, 0.5, 0.5), "v2");
            let a = m.state.apps.get_mut("/web").unwrap();
            a.deleting = next(5) == 0;
            a.app.health_checks = vec![];
            if next(4) == 0 {
                a.backoff.launch_after_ms = m.now_ms + 1;
            }
            for i in 0..next(7) {
                let id = format!("t{i}");
                task(&mut m, &id, ["v1", "v2", "v2"][next(3) as usize], next(3) > 0);
                let (phase, killing, checks) = (next(3), next(5) == 0, next(2) == 0);
                // Ready for long enough, just ready, or never.
                let since = [Some(0), Some(m.now_ms - 1), None][next(3) as usize];
                m.state.update_task(&id, |t| {
                    t.phase = [Phase::Staging, Phase::Starting, Phase::Running][phase as usize];
                    t.killing = killing;
                    t.has_health_checks = checks;
                    t.staged_at_ms = i;
                    t.ready_since_ms = since;
                });
            }
            let a = &m.state.apps["/web"];
            let mut by_walk = Plan::default();
            if let Some(launch) = m.plan_from_tasks("/web", a, &mut by_walk) {
                if launch > 0 && m.now_ms < a.backoff.launch_after_ms {
                    by_walk.delayed = launch;
                } else {
                    by_walk.launch = launch;
                }
            }
            assert_eq!(m.plan("/web"), by_walk, "round {round}");
            let tasks: Vec<&Task> = m.state.app_tasks("/web").collect();
            let done_by_walk = if a.deleting {
                tasks.is_empty()
            } else {
                let min = u64::from(m.config.min_healthy_seconds) * 1000;
                tasks.len() == a.app.instances as usize
                    && tasks.iter().all(|t| *t.version == *a.config_version && !t.killing && t.healthy())
                    && tasks.iter().all(|t| t.proven(m.now_ms, min))
            };
            let change = Change { app: "/web".into(), kind: Kind::Scale, from_version: None };
            let d = Deployment::new("d".into(), vec![change], "v2".into(), 0);
            assert_eq!(m.deployment_done(&d), done_by_walk, "round {round}");
            let c = m.state.counts("/web").cloned().unwrap_or_default();
            if !a.deleting && c.active() == c.version("v2").active && c.active() <= a.app.instances {
                fast += 1;
            } else {
                walked += 1;
            }
        }
        assert!(fast > 300 && walked > 300, "both paths taken: {fast} from counts, {walked} walked");
    }

    #[test]
    fn scaling_down_kills_the_youngest_first() {
        let mut m = marathon(app(1, 1.0, 1.0), "v1");
        task(&mut m, "a", "v1", true);
        task(&mut m, "b", "v1", true);
        m.state.update_task("b", |t| t.staged_at_ms = 5).unwrap();
        assert_eq!(m.plan("/web").kill, vec!["b".to_string()]);
        m.state.apps.get_mut("/web").unwrap().app.kill_selection = KillSelection::OldestFirst;
        assert_eq!(m.plan("/web").kill, vec!["a".to_string()]);
    }
}
