//! What the engine says happened: its event stream turned into task status (`start`, `oom`, `die`),
//! health checks, and, when the agent starts, adoption of the containers a previous run left and removal
//! of exited ones once their logs have been kept long enough.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1 as pb;

use super::*;

impl Inner {
    pub(super) fn event_stream(
        &self,
        since: Option<i64>,
    ) -> BoxStream<'static, Result<EventMessage, bollard::errors::Error>> {
        let mut filters = self.label_filter();
        filters.insert("type", vec!["container".into()]);
        let mut options = EventsOptionsBuilder::new().filters(&filters);
        let since = since.map(|s| s.to_string());
        if let Some(since) = &since {
            options = options.since(since);
        }
        self.docker.events(Some(options.build())).boxed()
    }

    /// Follows engine events; reconnects (from the last event seen) if the stream breaks.
    pub(super) async fn follow(
        self: Arc<Self>,
        mut stream: BoxStream<'static, Result<EventMessage, bollard::errors::Error>>,
    ) {
        let mut last = None;
        loop {
            match stream.next().await {
                Some(Ok(event)) => {
                    last = event.time.or(last);
                    self.on_event(event).await;
                }
                Some(Err(e)) => {
                    tracing::warn!(target: "berth.agent.docker", error = %e, "the engine's event stream failed; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    stream = self.event_stream(last);
                }
                None => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    stream = self.event_stream(last);
                }
            }
        }
    }

    async fn on_event(self: &Arc<Self>, event: EventMessage) {
        let Some(actor) = event.actor else { return };
        let attributes = actor.attributes.unwrap_or_default();
        let (Some(framework), Some(task)) = (attributes.get(LABEL_FRAMEWORK), attributes.get(LABEL_TASK))
        else {
            return;
        };
        let key = (framework.clone(), task.clone());
        let container = actor.id.unwrap_or_default();
        match event.action.as_deref() {
            Some("start") => self.started(&key, &container),
            Some("oom") => {
                if let Some(t) = self.lock().get_mut(&key) {
                    t.oom = true;
                }
            }
            Some("die") => {
                let code = attributes.get("exitCode").and_then(|c| c.parse::<i32>().ok());
                self.ended(&key, &container, code).await;
            }
            _ => {}
        }
    }

    fn started(self: &Arc<Self>, key: &Key, container: &str) {
        let (status, checks, spec) = {
            let mut tasks = self.lock();
            let Some(t) = tasks.get_mut(key) else { return };
            if t.state != pb::TaskState::Starting {
                return;
            }
            t.state = pb::TaskState::Running;
            t.container = Some(container.to_string());
            (
                self.status(&key.0, &t.spec, pb::TaskState::Running),
                t.spec.health_checks.clone(),
                t.spec.clone(),
            )
        };
        self.emit(status);
        if !checks.is_empty() {
            self.watch_health(key, container, &spec, checks);
        }
    }

    fn watch_health(
        self: &Arc<Self>,
        key: &Key,
        container: &str,
        spec: &pb::TaskSpec,
        checks: Vec<pb::HealthCheck>,
    ) {
        let (me, key, container, spec) = (self.clone(), key.clone(), container.to_string(), spec.clone());
        tokio::spawn(async move {
            let ip = me.container_ip(&container, &spec).await;
            let target = health::Target {
                docker: me.docker.clone(),
                container: container.clone(),
                addresses: container::probe_addresses(&spec, ip),
            };
            let (weak, key2) = (Arc::downgrade(&me), key.clone());
            let report: Arc<dyn Fn(HealthEvent) + Send + Sync> = Arc::new(move |event| {
                if let Some(inner) = weak.upgrade() {
                    inner.health_event(&key2, event);
                }
            });
            let set = health::spawn(checks, target, report);
            if let Some(t) = me.lock().get_mut(&key)
                && t.kill.is_none()
            {
                t.health = Some(set);
            }
        });
    }

    /// The container's address on its network (bridge or user network), for health probes.
    async fn container_ip(&self, container: &str, spec: &pb::TaskSpec) -> Option<std::net::IpAddr> {
        let inspect = self.docker.inspect_container(container, None).await.ok()?;
        let networks = inspect.network_settings?.networks?;
        let wanted = spec.container.as_ref().and_then(|c| c.network.as_ref()).map(|n| match n.mode() {
            pb::network::Mode::User => n.user_network.clone(),
            _ => "bridge".to_string(),
        });
        let endpoint = match wanted {
            Some(name) => networks.get(&name).cloned(),
            None => networks.get("bridge").cloned(),
        }
        .or_else(|| networks.values().next().cloned())?;
        endpoint.ip_address.filter(|ip| !ip.is_empty())?.parse().ok()
    }

    fn health_event(self: &Arc<Self>, key: &Key, event: HealthEvent) {
        match event {
            HealthEvent::Changed { healthy, message } => {
                let status = {
                    let mut tasks = self.lock();
                    let Some(t) = tasks.get_mut(key) else { return };
                    if t.state != pb::TaskState::Running {
                        return;
                    }
                    t.healthy = Some(healthy);
                    let mut status = self.status(&key.0, &t.spec, pb::TaskState::Running);
                    status.healthy = Some(healthy);
                    status.reason = pb::TaskReason::HealthChanged as i32;
                    status.message = message;
                    status
                };
                self.emit(status);
            }
            HealthEvent::Failed { message } => {
                tracing::info!(target: "berth.agent.docker", framework = %key.0, task = %key.1, %message, "killing an unhealthy task");
                let grace = self.lock().get(key).map(|t| t.spec.kill_grace_period_ms).unwrap_or(0);
                self.kill(
                    &key.0,
                    &key.1,
                    Duration::from_millis(u64::from(grace)),
                    pb::TaskReason::HealthCheckFailed,
                );
            }
        }
    }

    /// A container ended: the task's terminal status, from why it ended.
    async fn ended(self: &Arc<Self>, key: &Key, container: &str, code: Option<i32>) {
        let Some(tracked) = self.lock().remove(key) else { return };
        let oom = tracked.oom || self.oom_killed(container).await;
        let status = self.terminal_status(&key.0, &tracked.spec, tracked.kill, oom, code, tracked.healthy);
        self.emit(status);
        if tracked.kill == Some(pb::TaskReason::TaskUnknown) {
            // An orphan: nobody will ask for its logs.
            self.remove(container).await;
        }
    }

    async fn oom_killed(&self, container: &str) -> bool {
        self.docker
            .inspect_container(container, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false)
    }

    fn terminal_status(
        &self,
        framework: &str,
        spec: &pb::TaskSpec,
        kill: Option<pb::TaskReason>,
        oom: bool,
        code: Option<i32>,
        healthy: Option<bool>,
    ) -> pb::TaskStatus {
        let mut status = self.status(framework, spec, pb::TaskState::Finished);
        status.exit_code = code;
        status.healthy = healthy;
        let mem = spec.resources.as_ref().map(|r| r.mem_mib).unwrap_or(0);
        match (kill, oom, code) {
            (Some(reason), _, _) => {
                status.state = pb::TaskState::Killed as i32;
                status.reason = reason as i32;
                status.message = format!("killed (exit code {})", code.unwrap_or(-1));
            }
            (None, true, _) => {
                status.state = pb::TaskState::Failed as i32;
                status.reason = pb::TaskReason::MemoryLimit as i32;
                status.message =
                    format!("the kernel killed the container for exceeding its memory limit of {mem} MiB");
            }
            (None, false, Some(0)) => {}
            (None, false, code) => {
                status.state = pb::TaskState::Failed as i32;
                status.reason = pb::TaskReason::CommandFailed as i32;
                status.message = format!("exited with code {}", code.unwrap_or(-1));
            }
        }
        status
    }

    pub(super) async fn remove(&self, container: &str) {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        if let Err(e) = self.docker.remove_container(container, Some(options)).await {
            tracing::warn!(target: "berth.agent.docker", %container, error = %engine_error(e), "could not remove a container");
        }
    }

    /// Takes over this agent's containers after a restart: running ones are tracked again (with their
    /// health checks); ones that ended while the agent was away are reported; ones that never started are
    /// removed.
    pub(super) async fn adopt(self: &Arc<Self>) -> anyhow::Result<()> {
        let options = ListContainersOptionsBuilder::new().all(true).filters(&self.label_filter()).build();
        for summary in self.docker.list_containers(Some(options)).await? {
            let labels = summary.labels.clone().unwrap_or_default();
            let (Some(framework), Some(id)) = (labels.get(LABEL_FRAMEWORK), labels.get(LABEL_TASK)) else {
                continue;
            };
            let Some(container) = summary.id.clone() else { continue };
            let spec = labels
                .get(LABEL_SPEC)
                .and_then(|s| container::decode_spec(s))
                .unwrap_or_else(|| pb::TaskSpec { id: id.clone(), ..Default::default() });
            let key = (framework.clone(), id.clone());
            match summary.state {
                Some(
                    ContainerSummaryStateEnum::RUNNING
                    | ContainerSummaryStateEnum::PAUSED
                    | ContainerSummaryStateEnum::RESTARTING,
                ) => {
                    tracing::info!(target: "berth.agent.docker", %framework, task = %id, "adopting a running container");
                    let checks = spec.health_checks.clone();
                    self.lock().insert(
                        key.clone(),
                        Tracked {
                            spec: spec.clone(),
                            state: pb::TaskState::Running,
                            container: Some(container.clone()),
                            kill: None,
                            oom: false,
                            healthy: None,
                            health: None,
                        },
                    );
                    if !checks.is_empty() {
                        self.watch_health(&key, &container, &spec, checks);
                    }
                }
                Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD) => {
                    // Ended while the agent was away: report how (the master ignores what it knows).
                    let state =
                        self.docker.inspect_container(&container, None).await.ok().and_then(|c| c.state);
                    let code = state.as_ref().and_then(|s| s.exit_code).map(|c| c as i32);
                    let oom = state.and_then(|s| s.oom_killed).unwrap_or(false);
                    let status = self.terminal_status(framework, &spec, None, oom, code, None);
                    self.ended_while_away.lock().expect("ended lock").push(status.clone());
                    self.emit(status);
                }
                _ => self.remove(&container).await,
            }
        }
        Ok(())
    }

    /// Removes exited containers older than the retention period, every minute.
    pub(super) async fn reap(self: Arc<Self>) {
        let mut interval = tokio::time::interval(Duration::from_secs(60));
        loop {
            interval.tick().await;
            let mut filters = self.label_filter();
            filters.insert("status", vec!["exited".into(), "dead".into()]);
            let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
            let Ok(containers) = self.docker.list_containers(Some(options)).await else { continue };
            for summary in containers {
                let Some(id) = summary.id else { continue };
                let finished = self
                    .docker
                    .inspect_container(&id, None)
                    .await
                    .ok()
                    .and_then(|c| c.state)
                    .and_then(|s| s.finished_at)
                    .and_then(|f| age(&f));
                if finished.is_some_and(|age| age > self.options.retention) {
                    self.remove(&id).await;
                }
            }
        }
    }
}

/// How long ago an RFC 3339 timestamp (as the engine writes them) was; `None` if it cannot be read or is
/// Docker's zero time.
fn age(timestamp: &str) -> Option<Duration> {
    if timestamp.starts_with("0001-") {
        return None;
    }
    let seconds = timestamp.split('.').next()?.trim_end_matches('Z');
    let t = humantime::parse_rfc3339_weak(seconds).ok()?;
    std::time::SystemTime::now().duration_since(t).ok()
}
