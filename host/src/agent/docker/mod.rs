//! The Docker backend: tasks as containers on the local engine, through bollard.
//!
//! Status comes from the engine's event stream (`start`, `oom`, `die`), not from polling. An agent that
//! restarts adopts its running containers (found by its `berth.agent` label), reports the ones that ended
//! while it was away, and the master tells it to kill those it no longer wants. Exited containers are
//! kept for a while so their logs stay readable, then removed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use berth_proto::v1 as pb;
use bollard::Docker;
use bollard::models::{ContainerSummaryStateEnum, EventMessage};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::task::JoinSet;

use super::backend::{Backend, StatusSender};
use super::container::{self, LABEL_AGENT, LABEL_FRAMEWORK, LABEL_SPEC, LABEL_TASK, Policy};
use super::health::{self, HealthEvent};
use crate::model::unix_ms;

mod events;
mod usage;

/// What the Docker backend may do and keep.
#[derive(Clone, Copy, Debug)]
pub struct DockerOptions {
    pub policy: Policy,
    /// How long exited containers are kept for their logs.
    pub retention: Duration,
}

/// CPU and memory the engine's machine has.
#[derive(Clone, Copy, Debug)]
pub struct Detected {
    pub milli_cpus: u64,
    pub mem_mib: u64,
}

type Key = (String, String);

struct Tracked {
    spec: pb::TaskSpec,
    state: pb::TaskState,
    container: Option<String>,
    /// Set when a kill was asked for, with the reason the task will end with.
    kill: Option<pb::TaskReason>,
    oom: bool,
    healthy: Option<bool>,
    /// The health checkers; dropping the set stops them.
    health: Option<JoinSet<()>>,
}

struct Inner {
    docker: Docker,
    agent_id: String,
    hostname: String,
    options: DockerOptions,
    events: StatusSender,
    tasks: Mutex<HashMap<Key, Tracked>>,
    /// How the tasks whose containers ended while the agent was away ended: reported with every
    /// registration (besides being sent as updates), so the master learns the real end (an exit code,
    /// say) in the same step that reconciles the node, instead of finding the task missing and lost.
    ended_while_away: Mutex<Vec<pb::TaskStatus>>,
    /// The newest round of usage samples, not yet sent.
    usage: Mutex<Vec<pb::TaskUsage>>,
}

/// Runs tasks as Docker containers.
pub struct DockerBackend {
    inner: Arc<Inner>,
}

fn engine_error(e: bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    }
}

impl DockerBackend {
    /// Connects to the local engine, adopts this agent's containers, and starts following events.
    pub async fn connect(
        agent_id: &str,
        hostname: &str,
        options: DockerOptions,
        events: StatusSender,
    ) -> anyhow::Result<(DockerBackend, Detected)> {
        let docker = Docker::connect_with_local_defaults()
            .context("cannot find the Docker engine")?
            .negotiate_version()
            .await
            .context("cannot reach the Docker engine (is it running, and may this user use its socket?)")?;
        let info = docker.info().await.context("asking the Docker engine for its resources")?;
        // A disk size per container needs overlay2 on xfs (mounted with project quotas).
        let backing = info
            .driver_status
            .iter()
            .flatten()
            .find(|kv| kv.first().is_some_and(|k| k == "Backing Filesystem"))
            .and_then(|kv| kv.get(1).cloned())
            .unwrap_or_default();
        let mut options = options;
        options.policy.disk_quota = info.driver.as_deref() == Some("overlay2") && backing == "xfs";
        if !options.policy.disk_quota {
            tracing::warn!(target: "berth.agent", driver = info.driver.as_deref().unwrap_or("?"), backing = %backing,
                "the engine's storage driver cannot limit a container's disk: tasks' `disk` is not enforced on this node \
                 (it needs overlay2 on xfs with project quotas)");
        }
        let detected = Detected {
            milli_cpus: info.ncpu.unwrap_or(1).max(1) as u64 * 1000,
            mem_mib: (info.mem_total.unwrap_or(0).max(0) as u64) / (1024 * 1024),
        };
        let inner = Arc::new(Inner {
            docker,
            agent_id: agent_id.to_string(),
            hostname: hostname.to_string(),
            options,
            events,
            tasks: Mutex::new(HashMap::new()),
            ended_while_away: Mutex::default(),
            usage: Mutex::default(),
        });
        // Follow events before adopting, so nothing that happens in between is missed.
        let stream = inner.event_stream(None);
        inner.adopt().await.context("adopting this agent's containers")?;
        tokio::spawn(inner.clone().follow(stream));
        tokio::spawn(inner.clone().reap());
        tokio::spawn(inner.clone().sample_usage());
        Ok((DockerBackend { inner }, detected))
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Tracked>> {
        self.tasks.lock().expect("docker tasks lock")
    }

    fn label_filter(&self) -> HashMap<&'static str, Vec<String>> {
        HashMap::from([("label", vec![format!("{LABEL_AGENT}={}", self.agent_id)])])
    }

    fn status(&self, framework: &str, spec: &pb::TaskSpec, state: pb::TaskState) -> pb::TaskStatus {
        pb::TaskStatus {
            framework: framework.to_string(),
            task_id: spec.id.clone(),
            state: state as i32,
            reason: pb::TaskReason::None as i32,
            message: String::new(),
            healthy: None,
            exit_code: None,
            agent_id: self.agent_id.clone(),
            hostname: self.hostname.clone(),
            ports: spec.resources.as_ref().map(|r| r.ports.clone()).unwrap_or_default(),
            timestamp_ms: unix_ms(),
        }
    }

    fn emit(&self, status: pb::TaskStatus) {
        let _ = self.events.send(Box::new(status));
    }

    /// Starts a task: create (pulling the image when the engine lacks it or the task forces a pull),
    /// start. Errors carry the reason the task failed with.
    ///
    /// As `docker run` does, the image is pulled only when `create` answers that it is missing, so a launch
    /// of a present image makes two engine calls, not three.
    async fn start(
        self: &Arc<Self>,
        framework: &str,
        task: &pb::TaskSpec,
    ) -> Result<(), (pb::TaskReason, String)> {
        let key = (framework.to_string(), task.id.clone());
        let config =
            container::config((&self.agent_id, &self.hostname), framework, task, self.options.policy)
                .map_err(|m| (pb::TaskReason::ContainerLaunchFailed, m))?;
        let image = config.image.clone().unwrap_or_default();
        let mut pulled = false;
        if task.container.as_ref().is_some_and(|c| c.force_pull) {
            self.pull(&image).await.map_err(|m| (pb::TaskReason::ImagePullFailed, m))?;
            pulled = true;
        }
        if self.lock().get(&key).is_none_or(|t| t.kill.is_some()) {
            return Err((pb::TaskReason::KilledByFramework, "killed before it started".into()));
        }
        let name = container::container_name(&self.agent_id, framework, &task.id);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let mut replaced = false;
        let created = loop {
            match self.docker.create_container(Some(options.clone()), config.clone()).await {
                Ok(created) => break created,
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. })
                    if !replaced =>
                {
                    // A container of that name is left from an earlier attempt: replace it.
                    self.remove(&name).await;
                    replaced = true;
                }
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, message })
                    if !pulled && message.starts_with("No such image") =>
                {
                    self.pull(&image).await.map_err(|m| (pb::TaskReason::ImagePullFailed, m))?;
                    pulled = true;
                }
                Err(e) => return Err((pb::TaskReason::ContainerLaunchFailed, engine_error(e))),
            }
        };
        let killed = {
            let mut tasks = self.lock();
            match tasks.get_mut(&key) {
                Some(t) => {
                    t.container = Some(created.id.clone());
                    t.kill.is_some()
                }
                None => true,
            }
        };
        if killed {
            self.remove(&created.id).await;
            return Err((pb::TaskReason::KilledByFramework, "killed before it started".into()));
        }
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            self.remove(&created.id).await;
            return Err((pb::TaskReason::ContainerLaunchFailed, engine_error(e)));
        }
        Ok(())
    }

    async fn pull(&self, image: &str) -> Result<(), String> {
        let (repository, tag) = match image.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (image, "latest"),
        };
        let options = CreateImageOptionsBuilder::new().from_image(repository).tag(tag).build();
        self.docker
            .create_image(Some(options), None, None)
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(|e| format!("pulling {image}: {}", engine_error(e)))
    }

    fn kill(self: &Arc<Self>, framework: &str, task_id: &str, grace: Duration, reason: pb::TaskReason) {
        let key = (framework.to_string(), task_id.to_string());
        let (container, status) = {
            let mut tasks = self.lock();
            let Some(t) = tasks.get_mut(&key) else {
                tracing::debug!(target: "berth.agent.docker", %framework, task = %task_id, "kill of a task this agent does not run");
                return;
            };
            if t.kill.is_some() {
                return;
            }
            t.kill = Some(reason);
            t.health = None;
            let mut status = self.status(framework, &t.spec, pb::TaskState::Killing);
            status.reason = reason as i32;
            status.healthy = t.healthy;
            (t.container.clone(), status)
        };
        self.emit(status);
        // Without a container yet, the launch sees the kill and stops.
        let Some(container) = container else { return };
        let me = self.clone();
        tokio::spawn(async move {
            let seconds = i32::try_from(grace.as_millis().div_ceil(1000)).unwrap_or(i32::MAX);
            let options = StopContainerOptionsBuilder::new().t(seconds).build();
            if let Err(e) = me.docker.stop_container(&container, Some(options)).await {
                tracing::warn!(target: "berth.agent.docker", %container, error = %engine_error(e), "stopping a container failed");
            }
        });
    }
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn launch(&self, framework: String, task: pb::TaskSpec) {
        let inner = &self.inner;
        let key = (framework.clone(), task.id.clone());
        {
            let mut tasks = inner.lock();
            if tasks.contains_key(&key) {
                tracing::warn!(target: "berth.agent", %framework, task = %task.id, "{}", crate::agent::DUPLICATE_LAUNCH);
                return;
            }
            tasks.insert(
                key.clone(),
                Tracked {
                    spec: task.clone(),
                    state: pb::TaskState::Starting,
                    container: None,
                    kill: None,
                    oom: false,
                    healthy: None,
                    health: None,
                },
            );
        }
        inner.emit(inner.status(&framework, &task, pb::TaskState::Starting));
        let inner = inner.clone();
        tokio::spawn(async move {
            if let Err((reason, message)) = inner.start(&framework, &task).await {
                let Some(tracked) = inner.lock().remove(&key) else { return };
                let mut status = inner.status(&framework, &task, pb::TaskState::Failed);
                if let Some(kill_reason) = tracked.kill {
                    status.state = pb::TaskState::Killed as i32;
                    status.reason = kill_reason as i32;
                } else {
                    status.reason = reason as i32;
                }
                status.message = message;
                tracing::info!(target: "berth.agent.docker", %framework, task = %task.id, message = %status.message, "task did not start");
                inner.emit(status);
            }
        });
    }

    fn kill(&self, framework: &str, task_id: &str, grace: Duration, reason: pb::TaskReason) {
        self.inner.kill(framework, task_id, grace, reason);
    }

    fn tasks(&self) -> BoxFuture<'_, Vec<pb::TaskStatus>> {
        let mut tasks: Vec<pb::TaskStatus> = self
            .inner
            .lock()
            .iter()
            .filter(|(_, t)| t.state == pb::TaskState::Running || t.state == pb::TaskState::Starting)
            .map(|((framework, _), t)| {
                let mut status = self.inner.status(framework, &t.spec, t.state);
                status.healthy = t.healthy;
                status
            })
            .collect();
        tasks.extend(self.inner.ended_while_away.lock().expect("ended lock").iter().cloned());
        Box::pin(async move { tasks })
    }

    fn running(&self) -> u32 {
        self.inner.lock().values().filter(|t| t.state == pb::TaskState::Running).count() as u32
    }

    fn usage(&self) -> Vec<pb::TaskUsage> {
        std::mem::take(&mut *self.inner.usage.lock().expect("usage lock"))
    }

    fn logs(
        &self,
        framework: &str,
        task_id: &str,
        follow: bool,
        tail: u32,
    ) -> BoxStream<'static, Result<pb::LogChunk, String>> {
        let name = container::container_name(&self.inner.agent_id, framework, task_id);
        let tail = if tail == 0 { "all".to_string() } else { tail.to_string() };
        let options = LogsOptionsBuilder::new().follow(follow).stdout(true).stderr(true).tail(&tail).build();
        self.inner
            .docker
            .logs(&name, Some(options))
            .map(|item| match item {
                Ok(bollard::container::LogOutput::StdErr { message }) => Ok(pb::LogChunk {
                    stream: pb::log_chunk::Stream::Stderr as i32,
                    data: message.to_vec(),
                    eof: false,
                    error: String::new(),
                }),
                Ok(output) => Ok(pb::LogChunk {
                    stream: pb::log_chunk::Stream::Stdout as i32,
                    data: output.into_bytes().to_vec(),
                    eof: false,
                    error: String::new(),
                }),
                Err(e) => Err(engine_error(e)),
            })
            .boxed()
    }
}
