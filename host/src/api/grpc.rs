//! The gRPC services of `berth.v1`, each a thin layer over a master call.

use std::pin::Pin;
use std::sync::Arc;

use berth_proto::v1 as pb;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Auth, Need};
use crate::convert;
use crate::master::{
    ApiError, Event, FrameworkView, MasterHandle, NewFramework, NodeView, PluginView, TaskFilter, TaskView,
};
use crate::runtime::{NewVersion, PluginKind, PluginLimits, VersionInfo};

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

/// Every service, sharing the master handle and the tokens.
#[derive(Clone)]
pub struct Services {
    pub handle: MasterHandle,
    pub auth: Auth,
    pub default_limits: PluginLimits,
    /// Uploads of the same plugin must not race for a version number.
    pub uploads: Arc<tokio::sync::Mutex<()>>,
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
        }),
        config: v.config.clone(),
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
    }
}

fn filter(f: Option<pb::TaskFilter>) -> TaskFilter {
    let f = f.unwrap_or_default();
    TaskFilter { framework: f.framework, states: f.states, node: f.node }
}

async fn framework_by_name(handle: &MasterHandle, name: String) -> Result<Response<pb::Framework>, Status> {
    let view = handle
        .try_call(move |m| {
            m.frameworks_view()
                .into_iter()
                .find(|f| f.name == name)
                .ok_or_else(|| ApiError::NotFound(format!("no framework named `{name}`")))
        })
        .await?;
    Ok(Response::new(framework(&view)))
}

#[tonic::async_trait]
impl pb::plugin_service_server::PluginService for Services {
    async fn upload(
        &self,
        request: Request<pb::UploadPluginRequest>,
    ) -> Result<Response<pb::PluginVersion>, Status> {
        self.auth.grpc(&request, Need::Write)?;
        let r = request.into_inner();
        let kind: PluginKind = r.kind.parse().map_err(Status::invalid_argument)?;
        let limits = limits(r.limits.as_ref(), self.default_limits);
        let _serial = self.uploads.lock().await;
        let registry = self.handle.registry().clone();
        let (name, config, bytes) = (r.name, r.config, Arc::new(r.component));
        let compile_bytes = bytes.clone();
        // Compiling takes tens of milliseconds to seconds: off the async runtime and off the master thread.
        let prepared = tokio::task::spawn_blocking(move || {
            registry.prepare(NewVersion {
                name: &name,
                kind,
                bytes: &compile_bytes,
                config,
                limits,
                number: None,
            })
        })
        .await
        .map_err(|e| Status::internal(format!("compilation task failed: {e}")))?
        .map_err(ApiError::from)?;
        let activate = !r.inactive;
        let info = self.handle.try_call(move |m| m.add_version(prepared, &bytes, activate)).await?;
        Ok(Response::new(version(&info)))
    }

    async fn list(
        &self,
        request: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        self.auth.grpc(&request, Need::Read)?;
        let (plugins, allocator) =
            self.handle.call(|m| (m.plugins_view(), m.allocator().to_string())).await?;
        Ok(Response::new(pb::ListPluginsResponse {
            plugins: plugins.iter().map(plugin).collect(),
            allocator,
        }))
    }

    async fn activate(
        &self,
        request: Request<pb::ActivatePluginRequest>,
    ) -> Result<Response<pb::PluginVersion>, Status> {
        self.auth.grpc(&request, Need::Write)?;
        let r = request.into_inner();
        let info = self.handle.try_call(move |m| m.activate_version(&r.name, r.version)).await?;
        Ok(Response::new(version(&info)))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackPluginRequest>,
    ) -> Result<Response<pb::PluginVersion>, Status> {
        self.auth.grpc(&request, Need::Write)?;
        let name = request.into_inner().name;
        let info = self.handle.try_call(move |m| m.rollback_plugin(&name)).await?;
        Ok(Response::new(version(&info)))
    }

    async fn remove(
        &self,
        request: Request<pb::RemovePluginRequest>,
    ) -> Result<Response<pb::RemovePluginResponse>, Status> {
        self.auth.grpc(&request, Need::Write)?;
        let name = request.into_inner().name;
        self.handle.try_call(move |m| m.remove_plugin(&name)).await?;
        Ok(Response::new(pb::RemovePluginResponse {}))
    }

    async fn use_allocator(
        &self,
        request: Request<pb::UseAllocatorRequest>,
    ) -> Result<Response<pb::UseAllocatorResponse>, Status> {
        self.auth.grpc(&request, Need::Write)?;
        let name = request.into_inner().name;
        let previous = self.handle.try_call(move |m| m.use_allocator(&name)).await?;
        Ok(Response::new(pb::UseAllocatorResponse { previous }))
    }
}

#[tonic::async_trait]
impl pb::framework_service_server::FrameworkService for Services {
    async fn add(
        &self,
        request: Request<pb::AddFrameworkRequest>,
    ) -> Result<Response<pb::Framework>, Status> {
        self.auth.grpc(&request, Need::Write)?;
        let r = request.into_inner();
        let name = r.name.clone();
        let new = NewFramework {
            name: r.name,
            plugin: r.plugin,
            role: r.role,
            weight: if r.weight == 0.0 { 1.0 } else { r.weight },
            config: r.config,
        };
        self.handle.try_call(move |m| m.add_framework(new)).await?;
        framework_by_name(&self.handle, name).await
    }

    async fn list(
        &self,
        request: Request<pb::ListFrameworksRequest>,
    ) -> Result<Response<pb::ListFrameworksResponse>, Status> {
        self.auth.grpc(&request, Need::Read)?;
        let frameworks = self.handle.call(|m| m.frameworks_view()).await?;
        Ok(Response::new(pb::ListFrameworksResponse {
            frameworks: frameworks.iter().map(framework).collect(),
        }))
    }

    async fn set_weight(
        &self,
        request: Request<pb::SetWeightRequest>,
    ) -> Result<Response<pb::Framework>, Status> {
        self.auth.grpc(&request, Need::Write)?;
        let r = request.into_inner();
        let name = r.name.clone();
        self.handle.try_call(move |m| m.set_weight(&r.name, r.weight)).await?;
        framework_by_name(&self.handle, name).await
    }

    async fn suppress(
        &self,
        request: Request<pb::FrameworkRequest>,
    ) -> Result<Response<pb::Framework>, Status> {
        self.auth.grpc(&request, Need::Write)?;
        let name = request.into_inner().name;
        let n = name.clone();
        self.handle.try_call(move |m| m.set_suppressed(&n, true)).await?;
        framework_by_name(&self.handle, name).await
    }

    async fn revive(
        &self,
        request: Request<pb::FrameworkRequest>,
    ) -> Result<Response<pb::Framework>, Status> {
        self.auth.grpc(&request, Need::Write)?;
        let name = request.into_inner().name;
        let n = name.clone();
        self.handle.try_call(move |m| m.set_suppressed(&n, false)).await?;
        framework_by_name(&self.handle, name).await
    }

    async fn remove(
        &self,
        request: Request<pb::FrameworkRequest>,
    ) -> Result<Response<pb::RemoveFrameworkResponse>, Status> {
        self.auth.grpc(&request, Need::Write)?;
        let name = request.into_inner().name;
        let killed_tasks = self.handle.try_call(move |m| m.remove_framework(&name)).await?;
        Ok(Response::new(pb::RemoveFrameworkResponse { killed_tasks }))
    }
}

#[tonic::async_trait]
impl pb::node_service_server::NodeService for Services {
    async fn list(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.auth.grpc(&request, Need::Read)?;
        let nodes = self.handle.call(|m| m.nodes_view()).await?;
        Ok(Response::new(pb::ListNodesResponse { nodes: nodes.iter().map(node).collect() }))
    }

    async fn drain(&self, request: Request<pb::DrainNodeRequest>) -> Result<Response<pb::Node>, Status> {
        self.auth.grpc(&request, Need::Write)?;
        let name = request.into_inner().node;
        let view = self
            .handle
            .try_call(move |m| {
                let id = m.find_node(&name).ok_or_else(|| ApiError::NotFound(format!("no node `{name}`")))?;
                m.drain_node(id);
                Ok(m.nodes_view().into_iter().find(|n| n.id == id).expect("node exists"))
            })
            .await?;
        Ok(Response::new(node(&view)))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::task_service_server::TaskService for Services {
    async fn list(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        self.auth.grpc(&request, Need::Read)?;
        let f = filter(request.into_inner().filter);
        let tasks =
            self.handle.try_call(move |m| m.tasks_view(&f).map_err(ApiError::InvalidArgument)).await?;
        Ok(Response::new(pb::ListTasksResponse { tasks: tasks.iter().map(task).collect() }))
    }

    async fn kill(
        &self,
        request: Request<pb::KillTaskRequest>,
    ) -> Result<Response<pb::KillTaskResponse>, Status> {
        self.auth.grpc(&request, Need::Write)?;
        let r = request.into_inner();
        let grace = (r.grace_period_ms > 0).then_some(r.grace_period_ms);
        self.handle
            .try_call(move |m| {
                let key = m.resolve_task(&r.framework, &r.task_id)?;
                let framework = m.framework_name(key.0);
                m.kill_task(&framework, &key.1, grace)
            })
            .await?;
        Ok(Response::new(pb::KillTaskResponse {}))
    }

    type LogsStream = BoxStream<pb::LogChunk>;

    async fn logs(
        &self,
        request: Request<pb::TaskLogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        self.auth.grpc(&request, Need::Read)?;
        let r = request.into_inner();
        let rx =
            self.handle.try_call(move |m| m.open_logs(&r.framework, &r.task_id, r.follow, r.tail)).await?;
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        Ok(Response::new(Box::pin(futures::StreamExt::map(stream, Ok))))
    }

    type WatchStream = BoxStream<pb::TaskStatus>;

    async fn watch(
        &self,
        request: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.auth.grpc(&request, Need::Read)?;
        let r = request.into_inner();
        let f = filter(r.filter);
        let states = f.states().map_err(Status::invalid_argument)?;
        // Subscribe before taking the snapshot, so no update falls between the two.
        let mut events = self.handle.subscribe();
        let snapshot = if r.updates_only {
            Vec::new()
        } else {
            let f = f.clone();
            self.handle.try_call(move |m| m.statuses(&f).map_err(ApiError::InvalidArgument)).await?
        };
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
        self.auth.grpc(&request, Need::Agent)?;
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
