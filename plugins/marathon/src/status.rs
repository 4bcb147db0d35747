//! Task status: updates applied to the tasks the framework keeps, Marathon's `status_update_event`, and
//! the backoff that failures an app caused add to its next launch.

use berth_plugin_sdk::{Action, Event, KillTask, TaskReason, TaskState, TaskStatus};
use serde_json::json;

use crate::model::{Phase, Task, TaskFailure};
use crate::scheduler::Marathon;
use crate::time::iso;

/// A task that ran at least this long before failing resets its app's backoff.
const BACKOFF_RESET_AFTER_MS: u64 = 60_000;
/// Marathon's `status_update_event`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusUpdateEvent<'a> {
    event_type: &'static str,
    timestamp: String,
    slave_id: &'a str,
    task_id: &'a str,
    task_status: &'static str,
    message: &'a str,
    app_id: &'a str,
    host: &'a str,
    ports: &'a [u16],
    ip_addresses: [(); 0],
    version: &'a str,
}
/// Marathon's name for a task state.
pub fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Staging => "TASK_STAGING",
        TaskState::Starting => "TASK_STARTING",
        TaskState::Running => "TASK_RUNNING",
        TaskState::Killing => "TASK_KILLING",
        TaskState::Finished => "TASK_FINISHED",
        TaskState::Failed => "TASK_FAILED",
        TaskState::Killed => "TASK_KILLED",
        TaskState::Lost => "TASK_LOST",
        TaskState::Error => "TASK_ERROR",
    }
}

/// Whether a task in `state` has ended.
pub fn terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost | TaskState::Error
    )
}

impl Marathon {
    /// Applies status updates, then converges.
    pub fn status(&mut self, updates: Vec<TaskStatus>) -> Vec<Action> {
        for update in updates {
            self.apply(update);
        }
        self.converge()
    }

    fn apply(&mut self, u: TaskStatus) {
        let Some(task) = self.state.task(&u.task_id) else {
            // A task this framework does not know (or already forgot): it must not run.
            if !terminal(u.state) {
                self.actions.push(Action::Kill(KillTask { task_id: u.task_id, grace_period_ms: None }));
            }
            return;
        };
        if self.events_watched {
            // Serialized straight from borrowed fields, as this is the hottest path.
            let event = StatusUpdateEvent {
                event_type: "status_update_event",
                timestamp: iso(self.now_ms),
                slave_id: u.hostname.as_deref().unwrap_or_default(),
                task_id: &u.task_id,
                task_status: state_name(u.state),
                message: &u.message,
                app_id: &task.app,
                host: &task.host,
                ports: &task.ports,
                ip_addresses: [],
                version: self.state.apps.get(&*task.app).map_or("", |a| a.version.as_str()),
            };
            let payload = serde_json::to_string(&event).expect("an event serializes");
            self.events.push(Event { kind: "status_update_event".into(), payload });
        }
        if terminal(u.state) {
            let task = self.state.remove_task(&u.task_id).expect("looked up above");
            self.task_ended(&task, &u);
            return;
        }
        let now = self.now_ms;
        let changed = self.state.update_task(&u.task_id, |t| {
            match u.state {
                TaskState::Staging => t.phase = Phase::Staging,
                TaskState::Starting => t.phase = Phase::Starting,
                TaskState::Killing => t.killing = true,
                _ => {
                    t.phase = Phase::Running;
                    if t.started_at_ms.is_none() {
                        t.started_at_ms = Some(u.timestamp_ms);
                    }
                }
            }
            let health_changed = u.healthy.is_some() && u.healthy != t.healthy;
            if health_changed {
                t.healthy = u.healthy;
                t.last_health_ms = Some(u.timestamp_ms);
            }
            // A task proves itself by staying ready: any break starts its minimum healthy time again.
            if !t.healthy() {
                t.ready_since_ms = None;
            } else if t.ready_since_ms.is_none() {
                t.ready_since_ms = Some(now);
            }
            health_changed.then(|| (t.app.clone(), t.id.clone(), t.version.clone()))
        });
        if self.events_watched
            && let Some(t) = self.state.task(&u.task_id)
        {
            let condition = match u.state {
                TaskState::Staging => "Staging",
                TaskState::Starting => "Starting",
                TaskState::Killing => "Killing",
                _ => "Running",
            };
            let payload = json!({"instanceId": t.id, "slaveId": t.host, "condition": condition, "host": t.host,
                "runSpecId": t.app, "runSpecVersion": t.version});
            self.publish("instance_changed_event", payload);
        }
        if let Some(Some((app, id, version))) = changed {
            self.publish(
                "health_status_changed_event",
                json!({"appId": app, "taskId": id, "instanceId": id, "version": version, "alive": u.healthy}),
            );
            if u.healthy == Some(false) {
                let check = self
                    .state
                    .apps
                    .get(&*app)
                    .and_then(|a| a.app.health_checks.first())
                    .map(crate::app::health_check_json);
                self.publish(
                    "failed_health_check_event",
                    json!({"appId": app, "taskId": id, "instanceId": id, "healthCheck": check}),
                );
            }
        }
    }

    /// A task ended. Failures the app caused (non-zero exit, finishing, refused launches) delay the next
    /// launch by the app's backoff, growing by its factor while tasks keep failing within a minute of
    /// starting; kills and lost agents do not.
    fn task_ended(&mut self, task: &Task, u: &TaskStatus) {
        let condition = match u.state {
            TaskState::Finished => "Finished",
            TaskState::Failed => "Failed",
            TaskState::Killed => "Killed",
            TaskState::Lost => "Gone",
            _ => "Error",
        };
        self.publish(
            "instance_changed_event",
            json!({"instanceId": task.id, "slaveId": task.host, "condition": condition, "host": task.host,
                   "runSpecId": task.app, "runSpecVersion": task.version}),
        );
        if u.reason == Some(TaskReason::HealthCheckFailed) {
            self.publish(
                "unhealthy_task_kill_event",
                json!({"appId": task.app, "taskId": task.id, "instanceId": task.id, "version": task.version,
                       "reason": u.message, "host": task.host, "slaveId": task.host}),
            );
        }
        // A kill the framework asked for is no failure; one by the task's own health check is (the agent
        // reports it killing first, so the task is marked killing by then too).
        if task.killing && u.reason != Some(TaskReason::HealthCheckFailed) {
            return;
        }
        let now = self.now_ms;
        let Some(a) = self.state.apps.get_mut(&*task.app) else { return };
        // A kill by the task's own health check says so: it reads as a bare TASK_KILLED otherwise.
        let message = match (u.reason, u.message.is_empty()) {
            (Some(TaskReason::HealthCheckFailed), true) => "killed by its health check".to_string(),
            (Some(TaskReason::HealthCheckFailed), false) => {
                format!("killed by its health check: {}", u.message)
            }
            (Some(TaskReason::MemoryLimit), _) => {
                format!("killed for exceeding its memory limit {}", u.message).trim().to_string()
            }
            _ => u.message.clone(),
        };
        a.last_failure = Some(TaskFailure {
            task_id: task.id.to_string(),
            host: task.host.to_string(),
            state: state_name(u.state).into(),
            message,
            timestamp_ms: u.timestamp_ms,
            version: a.version.clone(),
        });
        let counts = matches!(u.state, TaskState::Failed | TaskState::Finished | TaskState::Error)
            && u.reason != Some(TaskReason::HealthCheckFailed);
        if counts {
            let b = &mut a.backoff;
            if task.started_at_ms.is_some_and(|s| now.saturating_sub(s) >= BACKOFF_RESET_AFTER_MS) {
                b.failures = 0;
            }
            b.failures += 1;
            let growth = a.app.backoff_factor.powi(b.failures.saturating_sub(1).min(1000) as i32);
            let delay =
                (a.app.backoff_seconds * 1000.0 * growth).min(a.app.max_launch_delay_seconds * 1000.0);
            b.delay_ms = delay as u64;
            b.launch_after_ms = now + b.delay_ms;
        }
        let id = task.app.clone();
        self.state.touch_app(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planning::Plan;
    use crate::scheduler::testing::{app, marathon, task};

    #[test]
    fn failures_delay_launches_by_a_growing_backoff() {
        let mut a = app(1, 1.0, 1.0);
        a.backoff_seconds = 1.0;
        a.backoff_factor = 2.0;
        let mut m = marathon(a, "v1");
        let mut delays = vec![];
        for i in 0..4 {
            let id = format!("t{i}");
            task(&mut m, &id, "v1", true);
            let now = m.now_ms;
            m.state.update_task(&id, |t| t.started_at_ms = Some(now)).unwrap();
            let status = TaskStatus {
                task_id: id,
                state: TaskState::Failed,
                reason: Some(TaskReason::CommandFailed),
                message: "exited with code 1".into(),
                healthy: None,
                exit_code: Some(1),
                node: None,
                hostname: None,
                ports: vec![],
                timestamp_ms: m.now_ms,
            };
            m.status(vec![status]);
            delays.push(m.state.apps["/web"].backoff.delay_ms);
            assert_eq!(
                m.plan("/web"),
                Plan { launch: 0, delayed: 1, kill: vec![] },
                "no launch during the delay"
            );
        }
        assert_eq!(delays, vec![1000, 2000, 4000, 8000]);
        m.now_ms += 8000;
        assert_eq!(m.plan("/web").launch, 1, "after the delay the app launches again");
    }
}
