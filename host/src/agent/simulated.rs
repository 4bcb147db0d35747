//! The simulated backend: tasks "run" without containers. For scale tests and benchmarks only; it never
//! stands in for Docker in a test of Docker behaviour.
//!
//! A task is `starting` then `running` at once, and runs until killed, unless its container labels ask
//! otherwise: `berth.simulate.exit-after-ms` ends it after that many milliseconds, with the exit code in
//! `berth.simulate.exit-code` (default 0, which is `finished`; anything else is `failed`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::v1 as pb;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::backend::{Backend, StatusSender};
use crate::model::unix_ms;

/// A backend that runs nothing.
pub struct SimulatedBackend {
    tasks: Arc<Mutex<HashMap<(String, String), pb::TaskStatus>>>,
    events: StatusSender,
    agent_id: String,
    hostname: String,
}

impl SimulatedBackend {
    /// A backend that reports on `events`.
    pub fn new(agent_id: &str, hostname: &str, events: StatusSender) -> SimulatedBackend {
        SimulatedBackend {
            tasks: Arc::default(),
            events,
            agent_id: agent_id.to_string(),
            hostname: hostname.to_string(),
        }
    }

    fn status(&self, framework: &str, task: &pb::TaskSpec, state: pb::TaskState) -> pb::TaskStatus {
        pb::TaskStatus {
            framework: framework.to_string(),
            task_id: task.id.clone(),
            state: state as i32,
            reason: pb::TaskReason::None as i32,
            message: String::new(),
            healthy: None,
            exit_code: None,
            agent_id: self.agent_id.clone(),
            hostname: self.hostname.clone(),
            ports: task.resources.as_ref().map(|r| r.ports.clone()).unwrap_or_default(),
            timestamp_ms: unix_ms(),
        }
    }
}

fn label(task: &pb::TaskSpec, key: &str) -> Option<String> {
    task.container.as_ref()?.labels.iter().find(|kv| kv.key == key).map(|kv| kv.value.clone())
}

impl Backend for SimulatedBackend {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn launch(&self, framework: String, task: pb::TaskSpec) {
        let key = (framework.clone(), task.id.clone());
        let running = self.status(&framework, &task, pb::TaskState::Running);
        {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            if tasks.contains_key(&key) {
                return;
            }
            tasks.insert(key.clone(), running.clone());
        }
        let _ = self.events.send(Box::new(self.status(&framework, &task, pb::TaskState::Starting)));
        let _ = self.events.send(Box::new(running.clone()));
        let Some(after) = label(&task, "berth.simulate.exit-after-ms").and_then(|v| v.parse::<u64>().ok())
        else {
            return;
        };
        let code: i32 = label(&task, "berth.simulate.exit-code").and_then(|v| v.parse().ok()).unwrap_or(0);
        let (tasks, events) = (self.tasks.clone(), self.events.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            if tasks.lock().expect("tasks lock").remove(&key).is_none() {
                return;
            }
            let mut status = running;
            status.exit_code = Some(code);
            status.timestamp_ms = unix_ms();
            if code == 0 {
                status.state = pb::TaskState::Finished as i32;
            } else {
                status.state = pb::TaskState::Failed as i32;
                status.reason = pb::TaskReason::CommandFailed as i32;
                status.message = format!("exited with code {code}");
            }
            let _ = events.send(Box::new(status));
        });
    }

    fn kill(&self, framework: &str, task_id: &str, _grace: Duration, reason: pb::TaskReason) {
        let removed =
            self.tasks.lock().expect("tasks lock").remove(&(framework.to_string(), task_id.to_string()));
        if let Some(mut status) = removed {
            status.state = pb::TaskState::Killed as i32;
            status.reason = reason as i32;
            status.timestamp_ms = unix_ms();
            let _ = self.events.send(Box::new(status));
        }
    }

    fn tasks(&self) -> BoxFuture<'_, Vec<pb::TaskStatus>> {
        let tasks = self.tasks.lock().expect("tasks lock").values().cloned().collect();
        Box::pin(async move { tasks })
    }

    fn running(&self) -> u32 {
        self.tasks.lock().expect("tasks lock").len() as u32
    }

    fn logs(
        &self,
        _framework: &str,
        _task_id: &str,
        _follow: bool,
        _tail: u32,
    ) -> BoxStream<'static, Result<pb::LogChunk, String>> {
        Box::pin(futures::stream::once(async {
            Err("simulated tasks run nothing and write no output".to_string())
        }))
    }
}
