//! The network API on one port: gRPC (`berth.v1`) and plain HTTP (health, JSON reads, frameworks'
//! own APIs). It owns authentication (one layer in front of every route, `auth.rs`) and the mapping of
//! master errors to gRPC statuses and HTTP responses; handlers only convert types around one
//! [`MasterHandle`] method each.

pub mod auth;
mod console;
mod grpc;
pub mod http;
mod ops;
pub mod tls;

use std::future::Future;

use berth_proto::v1 as pb;
use tokio::net::TcpListener;

pub use auth::{Auth, AuthLayer, Caller};

use crate::master::MasterHandle;
use crate::runtime::PluginLimits;

/// Largest gRPC message accepted: plugin components travel in one (Python components are tens of MiB).
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handle: MasterHandle,
    auth: Auth,
    default_limits: PluginLimits,
    extra: axum::Router,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let services = grpc::Services { handle: handle.clone(), default_limits };
    let http = http::router(http::HttpState {
        handle: handle.clone(),
        default_framework: crate::bundled::DEFAULT_FRAMEWORK.to_string(),
    })
    .merge(ops::router(ops::OpsState { handle, default_limits }))
    .merge(console::router())
    .merge(extra);
    let routes = tonic::service::Routes::from(http)
        .add_service(
            pb::plugin_service_server::PluginServiceServer::new(services.clone())
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(pb::framework_service_server::FrameworkServiceServer::new(services.clone()))
        .add_service(pb::node_service_server::NodeServiceServer::new(services.clone()))
        .add_service(pb::task_service_server::TaskServiceServer::new(services.clone()))
        .add_service(pb::agent_service_server::AgentServiceServer::new(services));
    run(routes, auth, listener, tls, shutdown).await
}

/// Serves a standby master's routes (`ha::proxy`) on `listener` until `shutdown` completes: the same
/// authentication and TLS as the leader's API.
pub async fn serve_standby(
    listener: TcpListener,
    routes: axum::Router,
    auth: Auth,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run(tonic::service::Routes::from(routes), auth, listener, tls, shutdown).await
}

/// Serves `routes` behind the authentication layer, over TLS when configured.
async fn run(
    routes: tonic::service::Routes,
    auth: Auth,
    listener: TcpListener,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router =
        tonic::transport::Server::builder().accept_http1(true).layer(AuthLayer { auth }).add_routes(routes);
    match tls {
        Some(config) => {
            let incoming = tokio_stream::wrappers::ReceiverStream::new(tls::incoming(listener, config));
            router.serve_with_incoming_shutdown(incoming, shutdown).await?;
        }
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            router.serve_with_incoming_shutdown(incoming, shutdown).await?;
        }
    }
    Ok(())
}
