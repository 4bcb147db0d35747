//! The simulated backend: tasks "run" without containers. For scale tests and benchmarks only; it never
//! stands in for Docker in a test of Docker behaviour.
//!
//! A task is `starting` then `running` at once, and runs until killed, unless its container labels ask
//! otherwise: `berth.simulate.exit-after-ms` ends it after that many milliseconds, with the exit code in
//! `berth.simulate.exit-code` (default 0, which is `finished`; anything else is `failed`).
//!
//! It reports synthetic resource use, so the usage path (heartbeats, listings, metrics, the console) can be
//! exercised at scale: each task uses a steady share of its memory limit and a share of its CPU limit that
//! drifts with time, both derived from its id.

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
    /// Running tasks by framework and task id. Their statuses are built when reported: thousands of
    /// simulated agents share one process in scale tests, so each task keeps only what differs.
    tasks: Arc<Mutex<Tasks>>,
    events: StatusSender,
    agent_id: Arc<str>,
    hostname: Arc<str>,
    /// When usage was last reported, ms since the epoch.
    usage_at_ms: Mutex<u64>,
}

/// Running tasks by framework, then task id.
type Tasks = HashMap<Box<str>, HashMap<Box<str>, Running>>;

/// What a running simulated task keeps.
struct Running {
    ports: Box<[pb::PortRange]>,
    started_ms: u64,
    /// Its limits, for synthetic usage.
    cpus: f32,
    mem_mb: f32,
}

/// How often synthetic usage is reported (as often as the Docker backend samples).
const USAGE_INTERVAL_MS: u64 = super::backend::USAGE_INTERVAL.as_millis() as u64;

/// A task's synthetic use at `now_ms`: (cores, bytes).
fn synthetic_usage(task_id: &str, cpus: f32, mem_mb: f32, now_ms: u64) -> (f64, u64) {
    // FNV-1a: a fixed phase per task.
    let hash = task_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let phase = (hash >> 11) as f64 / (1u64 << 53) as f64;
    let drift = ((now_ms / USAGE_INTERVAL_MS) as f64 * 0.07 + phase).fract();
    let cpu = f64::from(cpus) * (0.1 + 0.6 * drift);
    let mem = f64::from(mem_mb) * (0.3 + 0.5 * phase) * 1024.0 * 1024.0;
    (cpu, mem as u64)
}

/// Removes a task, forgetting its framework with its last task.
fn remove(tasks: &mut Tasks, framework: &str, task_id: &str) -> Option<Running> {
    let of_framework = tasks.get_mut(framework)?;
    let running = of_framework.remove(task_id);
    if of_framework.is_empty() {
        tasks.remove(framework);
    }
    running
}

impl SimulatedBackend {
    /// A backend that reports on `events`.
    pub fn new(agent_id: &str, hostname: &str, events: StatusSender) -> SimulatedBackend {
        SimulatedBackend {
            tasks: Arc::default(),
            events,
            agent_id: agent_id.into(),
            hostname: hostname.into(),
            usage_at_ms: Mutex::new(0),
        }
    }
}

/// A task's status as this agent reports it.
fn status(
    (agent_id, hostname): (&str, &str),
    (framework, task_id): (&str, &str),
    ports: &[pb::PortRange],
    state: pb::TaskState,
    timestamp_ms: u64,
) -> pb::TaskStatus {
    pb::TaskStatus {
        framework: framework.to_string(),
        task_id: task_id.to_string(),
        state: state as i32,
        reason: pb::TaskReason::None as i32,
        message: String::new(),
        healthy: None,
        exit_code: None,
        agent_id: agent_id.to_string(),
        hostname: hostname.to_string(),
        ports: ports.to_vec(),
        timestamp_ms,
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
        let key = (framework, task.id.clone());
        let ports = task.resources.as_ref().map(|r| r.ports.clone()).unwrap_or_default();
        let (cpus, mem_mb) =
            task.resources.as_ref().map_or((0.0, 0.0), |r| (r.milli_cpus as f32 / 1000.0, r.mem_mib as f32));
        let now = unix_ms();
        {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            let of_framework = tasks.entry(key.0.as_str().into()).or_default();
            if of_framework.contains_key(key.1.as_str()) {
                // Launches are idempotent, but a master never sends one for a task the node reported: say
                // so, for the tests that check no task runs twice.
                tracing::warn!(target: "berth.agent", framework = %key.0, task = %key.1, "{}", super::DUPLICATE_LAUNCH);
                return;
            }
            of_framework.insert(
                key.1.as_str().into(),
                Running { ports: ports.clone().into(), started_ms: now, cpus, mem_mb },
            );
        }
        let me = (&*self.agent_id, &*self.hostname);
        let id = (key.0.as_str(), key.1.as_str());
        let _ = self.events.send(Box::new(status(me, id, &ports, pb::TaskState::Starting, now)));
        let _ = self.events.send(Box::new(status(me, id, &ports, pb::TaskState::Running, now)));
        let Some(after) = label(&task, "berth.simulate.exit-after-ms").and_then(|v| v.parse::<u64>().ok())
        else {
            return;
        };
        let code: i32 = label(&task, "berth.simulate.exit-code").and_then(|v| v.parse().ok()).unwrap_or(0);
        let (tasks, events) = (self.tasks.clone(), self.events.clone());
        let (agent_id, hostname) = (self.agent_id.clone(), self.hostname.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            if remove(&mut tasks.lock().expect("tasks lock"), &key.0, &key.1).is_none() {
                return;
            }
            let (state, reason, message) = if code == 0 {
                (pb::TaskState::Finished, pb::TaskReason::None, String::new())
            } else {
                (pb::TaskState::Failed, pb::TaskReason::CommandFailed, format!("exited with code {code}"))
            };
            let mut status = status((&agent_id, &hostname), (&key.0, &key.1), &ports, state, unix_ms());
            status.exit_code = Some(code);
            status.reason = reason as i32;
            status.message = message;
            let _ = events.send(Box::new(status));
        });
    }

    fn kill(&self, framework: &str, task_id: &str, _grace: Duration, reason: pb::TaskReason) {
        let removed = remove(&mut self.tasks.lock().expect("tasks lock"), framework, task_id);
        if let Some(running) = removed {
            let me = (&*self.agent_id, &*self.hostname);
            let mut status =
                status(me, (framework, task_id), &running.ports, pb::TaskState::Killed, unix_ms());
            status.reason = reason as i32;
            let _ = self.events.send(Box::new(status));
        }
    }

    fn tasks(&self) -> BoxFuture<'_, Vec<pb::TaskStatus>> {
        let me = (&*self.agent_id, &*self.hostname);
        let tasks = self
            .tasks
            .lock()
            .expect("tasks lock")
            .iter()
            .flat_map(|(framework, tasks)| {
                tasks.iter().map(move |(id, r)| {
                    status(me, (framework, id), &r.ports, pb::TaskState::Running, r.started_ms)
                })
            })
            .collect();
        Box::pin(async move { tasks })
    }

    fn running(&self) -> u32 {
        self.tasks.lock().expect("tasks lock").values().map(HashMap::len).sum::<usize>() as u32
    }

    fn usage(&self) -> Vec<pb::TaskUsage> {
        let now = unix_ms();
        {
            let mut last = self.usage_at_ms.lock().expect("usage lock");
            if now.saturating_sub(*last) < USAGE_INTERVAL_MS {
                return Vec::new();
            }
            *last = now;
        }
        let tasks = self.tasks.lock().expect("tasks lock");
        tasks
            .iter()
            .flat_map(|(framework, tasks)| {
                tasks.iter().map(move |(id, r)| {
                    let (cpus, mem_bytes) = synthetic_usage(id, r.cpus, r.mem_mb, now);
                    pb::TaskUsage {
                        framework: framework.to_string(),
                        task_id: id.to_string(),
                        cpus,
                        mem_bytes,
                        timestamp_ms: now,
                    }
                })
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_usage_stays_within_the_limits_and_moves() {
        let mut seen = std::collections::HashSet::new();
        for round in 0..20u64 {
            let (cpu, mem) = synthetic_usage("app.1", 2.0, 256.0, round * USAGE_INTERVAL_MS);
            assert!((0.2..=1.4).contains(&cpu), "{cpu}");
            assert!(((256 << 20) * 3 / 10..=256 << 20).contains(&mem), "{mem}");
            seen.insert((cpu * 1000.0) as u64);
        }
        assert!(seen.len() > 10, "the CPU figure drifts: {seen:?}");
        let other = synthetic_usage("app.2", 2.0, 256.0, 0);
        assert_ne!(synthetic_usage("app.1", 2.0, 256.0, 0), other, "tasks differ");
    }
}
