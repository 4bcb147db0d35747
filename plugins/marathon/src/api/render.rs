//! Apps and tasks as Marathon's API shows them.

use serde_json::{Value, json};

use crate::app;
use crate::model::{AppState, Phase, Task};
use crate::scheduler::Marathon;
use crate::time::iso;

/// A task as `/v2/tasks` and `/v2/apps/{id}/tasks` list it, with its service ports (the app's) and its
/// addresses.
pub fn task_json(t: &Task, service_ports: &[u16]) -> Value {
    let state = if t.killing {
        "TASK_KILLING"
    } else {
        match t.phase {
            Phase::Staging => "TASK_STAGING",
            Phase::Starting => "TASK_STARTING",
            Phase::Running => "TASK_RUNNING",
        }
    };
    let health = match (t.has_health_checks, t.healthy) {
        (true, Some(alive)) => json!([{
            "alive": alive, "consecutiveFailures": if alive { 0 } else { 1 }, "firstSuccess": null,
            "lastFailure": null, "lastSuccess": null, "taskId": t.id, "instanceId": t.id,
        }]),
        _ => json!([]),
    };
    // The agent's address: berth tasks publish their ports on the node's address.
    let addresses = json!([{"ipAddress": t.host, "protocol": "IPv4"}]);
    json!({
        "id": t.id, "appId": t.app, "host": t.host, "slaveId": t.host, "ports": t.ports,
        "servicePorts": service_ports, "stagedAt": iso(t.staged_at_ms), "startedAt": t.started_at_ms.map(iso),
        "version": t.version, "state": state, "ipAddresses": addresses, "healthCheckResults": health,
    })
}

impl Marathon {
    /// The service ports of an app's tasks.
    pub(crate) fn service_ports(&self, app: &str) -> Vec<u16> {
        self.state.apps.get(app).map(|a| a.app.service_ports()).unwrap_or_default()
    }

    pub(crate) fn app_json(&self, a: &AppState, embed_tasks: bool, embed_failure: bool) -> Value {
        let mut v = app::to_json(&a.app, &a.version);
        let (tasks, running, healthy, unhealthy) = self
            .state
            .counts(&a.app.id)
            .map_or((0, 0, 0, 0), |c| (c.tasks, c.running, c.healthy, c.unhealthy));
        v["tasksRunning"] = json!(running);
        v["tasksStaged"] = json!(tasks - running);
        v["tasksHealthy"] = json!(healthy);
        v["tasksUnhealthy"] = json!(unhealthy);
        v["deployments"] = json!(a.deployment.iter().map(|d| json!({"id": d})).collect::<Vec<_>>());
        v["versionInfo"] =
            json!({"lastScalingAt": a.scaling_version, "lastConfigChangeAt": a.config_version});
        if embed_tasks {
            let service_ports = a.app.service_ports();
            let tasks = self.state.app_tasks_sorted(&a.app.id);
            v["tasks"] = json!(tasks.into_iter().map(|t| task_json(t, &service_ports)).collect::<Vec<_>>());
        }
        if embed_failure && let Some(f) = &a.last_failure {
            v["lastTaskFailure"] = json!({
                "appId": a.app.id, "host": f.host, "message": f.message, "state": f.state, "taskId": f.task_id,
                "instanceId": f.task_id, "slaveId": f.host, "timestamp": iso(f.timestamp_ms), "version": f.version,
            });
        }
        v
    }
}
