//! The gRPC services of `berth.v1`: each method converts its request, calls one [`MasterHandle`] method,
//! and converts the answer. Authentication happened before the request was decoded (`auth.rs`).

use std::pin::Pin;

use berth_proto::v1 as pb;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::master::{
    ApiError, Event, FrameworkView, MasterHandle, NewFramework, NodeView, PluginView, TaskFilter, TaskView,
    Upload,
};
use crate::runtime::{PluginKind, PluginLimits, VersionInfo};

/// The one conversion from master errors to gRPC statuses.
impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::AlreadyExists(m) => Status::already_exists(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
        }
    }
}

/// Every service, sharing the master handle.
#[derive(Clone)]
pub struct Services {
    pub handle: MasterHandle,
    pub default_limits: PluginLimits,
}

fn limits(given: Option<&pb::PluginLimits>, defaults: PluginLimits) -> PluginLimits {
    let given = given.cloned().unwrap_or_default();
    PluginLimits {
        memory_mib: if given.memory_mib == 0 { defaults.memory_mib } else { given.memory_mib },
        deadline_ms: if given.deadline_ms == 0 { defaults.deadline_ms } else { given.deadline_ms },
    }
}

pub(crate) fn version(v: &VersionInfo) -> pb::PluginVersion {
    pb::PluginVersion {
        name: v.name.clone(),
        kind: v.kind.to_string(),
        version: v.version,
        active: v.active,
        sha256: v.sha256.clone(),
        size: v.size as u64,
        compile_us: v.compile_us,
        from_cache: v.from_cache,
        loaded_at_ms: v.loaded_at_ms,
        limits: Some(pb::PluginLimits { memory_mib: v.limits.memory_mib, deadline_ms: v.limits.deadline_ms }),
        stats: Some(pb::PluginStats {
            calls: v.stats.calls,
            traps: v.stats.traps,
            deadline_exceeded: v.stats.deadline_exceeded,
            memory_exceeded: v.stats.memory_exceeded,
            p50_us: v.stats.p50_us,
            p99_us: v.stats.p99_us,
            peak_memory_bytes: v.stats.peak_memory_bytes,
            limits_exceeded: v.stats.limits_exceeded,
        }),
        config: v.config.clone(),
        rolled_back: v.rolled_back.clone().unwrap_or_default(),
    }
}

fn plugin(p: &PluginView) -> pb::Plugin {
    pb::Plugin {
        name: p.name.clone(),
        kind: p.kind.clone(),
        active_version: p.active_version,
        versions: p.versions.iter().map(version).collect(),
        in_use_as_allocator: p.in_use_as_allocator,
        frameworks: p.frameworks.clone(),
    }
}

fn framework(f: &FrameworkView) -> pb::Framework {
    pb::Framework {
        name: f.name.clone(),
        plugin: f.plugin.clone(),
        plugin_version: f.plugin_version,
        role: f.role.clone(),
        weight: f.weight,
        suppressed: f.suppressed,
        allocated: Some(convert::resources(&f.allocated)),
        active_tasks: f.active_tasks,
        share: f.share,
        config: f.config.clone(),
    }
}

fn node(n: &NodeView) -> pb::Node {
    pb::Node {
        id: n.id,
        agent_id: n.agent_id.clone(),
        hostname: n.hostname.clone(),
        state: n.state.clone(),
        total: Some(convert::resources(&n.total)),
        available: Some(convert::resources(&n.available)),
        attributes: convert::attributes(&n.attributes),
        active_tasks: n.active_tasks,
        agent_running_tasks: n.agent_running_tasks,
        backend: n.backend.clone(),
        last_seen_ms: n.last_seen_ms,
        allow_privileged: n.allow_privileged,
        allow_host_mounts: n.allow_host_mounts,
        allow_host_network: n.allow_host_network,
    }
}

fn task(t: &TaskView) -> pb::Task {
    pb::Task {
        framework: t.framework.clone(),
        id: t.id.clone(),
        name: t.name.clone(),
        status: Some(convert::status(&t.framework, &t.agent_id, &t.status)),
        resources: Some(convert::resources(&t.resources)),
        image: t.image.clone(),
        launched_at_ms: t.launched_at_ms,
        usage: t.usage.map(|u| pb::TaskUsage {
            framework: t.framework.clone(),
            task_id: t.id.clone(),
            cpus: f64::from(u.cpus),
            mem_bytes: (f64::from(u.mem_mib) * 1024.0 * 1024.0) as u64,
            timestamp_ms: u.at_ms,
        }),
    }
}

fn filter(f: Option<pb::TaskFilter>) -> TaskFilter {
    let f = f.unwrap_or_default();
    TaskFilter { framework: f.framework, states: f.states, node: f.node }
}

#[tonic::async_trait]
impl pb::plugin_service_server::PluginService for Services {
    async fn upload(
        &self,
        request: Request<pb::UploadPluginRequest>,
    ) -> Result<Response<pb::PluginVersion>, Status> {
        let r = request.into_inner();
        let kind: PluginKind = r.kind.parse().map_err(Status::invalid_argument)?;
        let upload = Upload {
            name: r.name,
            kind,
            bytes: r.component,
            config: r.config,
            limits: limits(r.limits.as_ref(), self.default_limits),
            activate: !r.inactive,
        };
        Ok(Response::new(version(&self.handle.upload(upload).await?)))
    }

    async fn list(
        &self,
        _: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        let (plugins, allocator) = self.handle.plugins().await?;
        Ok(Response::new(pb::ListPluginsResponse {
            plugins: plugins.iter().map(plugin).collect(),
            allocator,
        }))
    }

    async fn activate(
        &self,
        request: Request<pb::ActivatePluginRequest>,
    ) -> Result<Response<pb::PluginVersion>, Status> {
        let r = request.into_inner();
        Ok(Response::new(version(&self.handle.activate_version(r.name, r.version).await?)))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackPluginRequest>,
    ) -> Result<Response<pb::PluginVersion>, Status> {
        Ok(Response::new(version(&self.handle.rollback_plugin(request.into_inner().name).await?)))
    }

    async fn remove(
        &self,
        request: Request<pb::RemovePluginRequest>,
    ) -> Result<Response<pb::RemovePluginResponse>, Status> {
        self.handle.remove_plugin(request.into_inner().name).await?;
        Ok(Response::new(pb::RemovePluginResponse {}))
    }

    async fn use_allocator(
        &self,
        request: Request<pb::UseAllocatorRequest>,
    ) -> Result<Response<pb::UseAllocatorResponse>, Status> {
        let previous = self.handle.use_allocator(request.into_inner().name).await?;
        Ok(Response::new(pb::UseAllocatorResponse { previous }))
    }
}

#[tonic::async_trait]
impl pb::framework_service_server::FrameworkService for Services {
    async fn add(
        &self,
        request: Request<pb::AddFrameworkRequest>,
    ) -> Result<Response<pb::Framework>, Status> {
        let r = request.into_inner();
        let new = NewFramework {
            name: r.name,
            plugin: r.plugin,
            role: r.role,
            weight: if r.weight == 0.0 { 1.0 } else { r.weight },
            config: r.config,
        };
        Ok(Response::new(framework(&self.handle.add_framework(new).await?)))
    }

    async fn list(
        &self,
        _: Request<pb::ListFrameworksRequest>,
    ) -> Result<Response<pb::ListFrameworksResponse>, Status> {
        let frameworks = self.handle.frameworks().await?;
        Ok(Response::new(pb::ListFrameworksResponse {
            frameworks: frameworks.iter().map(framework).collect(),
        }))
    }

    async fn set_weight(
        &self,
        request: Request<pb::SetWeightRequest>,
    ) -> Result<Response<pb::Framework>, Status> {
        let r = request.into_inner();
        Ok(Response::new(framework(&self.handle.set_weight(r.name, r.weight).await?)))
    }

    async fn suppress(
        &self,
        request: Request<pb::FrameworkRequest>,
    ) -> Result<Response<pb::Framework>, Status> {
        Ok(Response::new(framework(&self.handle.set_suppressed(request.into_inner().name, true).await?)))
    }

    async fn revive(
        &self,
        request: Request<pb::FrameworkRequest>,
    ) -> Result<Response<pb::Framework>, Status> {
        Ok(Response::new(framework(&self.handle.set_suppressed(request.into_inner().name, false).await?)))
    }

    async fn remove(
        &self,
        request: Request<pb::FrameworkRequest>,
    ) -> Result<Response<pb::RemoveFrameworkResponse>, Status> {
        let killed_tasks = self.handle.remove_framework(request.into_inner().name).await?;
        Ok(Response::new(pb::RemoveFrameworkResponse { killed_tasks }))
    }
}

#[tonic::async_trait]
impl pb::node_service_server::NodeService for Services {
    async fn list(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let nodes = self.handle.nodes().await?;
        Ok(Response::new(pb::ListNodesResponse { nodes: nodes.iter().map(node).collect() }))
    }

    async fn set_policy(
        &self,
        request: Request<pb::SetNodePolicyRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let r = request.into_inner();
        let view = self
            .handle
            .set_node_policy(r.node, r.allow_privileged, r.allow_host_mounts, r.allow_host_network)
            .await?;
        Ok(Response::new(node(&view)))
    }

    async fn drain(&self, request: Request<pb::DrainNodeRequest>) -> Result<Response<pb::Node>, Status> {
        Ok(Response::new(node(&self.handle.drain_node(request.into_inner().node).await?)))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::task_service_server::TaskService for Services {
    async fn list(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let tasks = self.handle.tasks(filter(request.into_inner().filter)).await?;
        Ok(Response::new(pb::ListTasksResponse { tasks: tasks.iter().map(task).collect() }))
    }

    async fn kill(
        &self,
        request: Request<pb::KillTaskRequest>,
    ) -> Result<Response<pb::KillTaskResponse>, Status> {
        let r = request.into_inner();
        let grace = (r.grace_period_ms > 0).then_some(r.grace_period_ms);
        self.handle.kill_task(r.framework, r.task_id, grace).await?;
        Ok(Response::new(pb::KillTaskResponse {}))
    }

    type LogsStream = BoxStream<pb::LogChunk>;

    async fn logs(
        &self,
        request: Request<pb::TaskLogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = request.into_inner();
        let rx = self.handle.open_logs(r.framework, r.task_id, r.follow, r.tail).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(futures::StreamExt::map(stream, Ok))))
    }

    type WatchStream = BoxStream<pb::TaskStatus>;

    async fn watch(
        &self,
        request: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = request.into_inner();
        let f = filter(r.filter);
        let states = f.states().map_err(Status::invalid_argument)?;
        // Subscribe before taking the snapshot, so no update falls between the two.
        let mut events = self.handle.subscribe();
        let snapshot = if r.updates_only { Vec::new() } else { self.handle.statuses(f.clone()).await? };
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            for (framework, agent, status) in snapshot {
                if tx.send(Ok(convert::status(&framework, &agent, &status))).await.is_err() {
                    return;
                }
            }
            loop {
                let event = events.recv().await;
                let (framework, agent_id, status) = match event.as_deref() {
                    Ok(Event::Status { framework, agent_id, status }) => (framework, agent_id, status),
                    Ok(Event::Framework { .. }) => continue,
                    Err(RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "the watch fell {n} updates behind; watch again"
                            ))))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                };
                let matches = (f.framework.is_empty() || f.framework == *framework)
                    && (states.is_empty() || states.contains(&status.state))
                    && (f.node.is_empty()
                        || f.node == *agent_id
                        || status.hostname.as_deref() == Some(f.node.as_str()));
                if matches && tx.send(Ok(convert::status(framework, agent_id, status))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for Services {
    type JoinStream = BoxStream<pb::MasterMessage>;

    async fn join(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::JoinStream>, Status> {
        let mut inbound = request.into_inner();
        let connection = self.handle.connect_agent()?;
        let sender = connection.sender;
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(Ok(message)) = inbound.next().await {
                if sender.send(message).is_err() {
                    break;
                }
            }
            // Dropping the sender tells the master the agent is gone.
        });
        let outbound = tokio_stream::wrappers::UnboundedReceiverStream::new(connection.outbound);
        Ok(Response::new(Box::pin(futures::StreamExt::map(outbound, |message| Ok(*message)))))
    }
}
