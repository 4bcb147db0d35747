//! What a standby master serves: `/v1/masters` and `/health` itself, everything else (HTTP and gRPC,
//! streams included) proxied to the leader, so that clients, agents and the CLI may use any master's
//! address. Requests are authenticated here first (the masters share their tokens), and again by the
//! leader.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::Election;

#[derive(Clone)]
struct Proxy {
    election: Arc<Election>,
    http1: Client<HttpConnector, Body>,
    http2: Client<HttpConnector, Body>,
}

/// The standby's routes.
pub fn router(election: Arc<Election>) -> axum::Router {
    let state = Proxy {
        election,
        http1: Client::builder(TokioExecutor::new()).build_http(),
        // Pings on the streams it relays (agents' included), so that a leader that stops answering breaks
        // them within seconds and their clients move on.
        http2: Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .http2_keep_alive_interval(std::time::Duration::from_secs(2))
            .http2_keep_alive_timeout(std::time::Duration::from_secs(3))
            .build_http(),
    };
    axum::Router::new()
        .route("/v1/masters", get(masters))
        .route("/health", get(health))
        .fallback(forward)
        .with_state(state)
}

/// `/v1/masters` on any master (the leader's API answers it from the same code).
pub async fn masters_reply(election: &Election) -> Response {
    match election.masters().await {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot read the masters from etcd: {}", e.message()),
        ),
    }
}

async fn masters(State(p): State<Proxy>) -> Response {
    masters_reply(&p.election).await
}

async fn health(State(p): State<Proxy>) -> Response {
    let view = p.election.view();
    axum::Json(serde_json::json!({
        "status": "standby",
        "leader": view.leader,
        "self": p.election.me(),
        "etcd": view.etcd_error.as_deref().map_or_else(|| "reachable".to_string(), |e| format!("unreachable: {e}")),
    }))
    .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "message": message }))).into_response()
}

/// A gRPC error as gRPC clients read it (status 200 with `grpc-status` in the headers).
fn grpc_error(message: &str) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(tonic::Code::Unavailable as i32));
    if let Ok(value) = HeaderValue::from_str(&message.replace(['\r', '\n'], " ")) {
        headers.insert("grpc-message", value);
    }
    response
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
    "host",
];

async fn forward(State(p): State<Proxy>, mut request: Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let fail = |message: &str| {
        if grpc { grpc_error(message) } else { error(StatusCode::SERVICE_UNAVAILABLE, message) }
    };
    let view = p.election.view();
    if let Some(e) = &view.etcd_error {
        return fail(&format!(
            "this master is a standby and cannot reach etcd ({e}): no leader can be elected"
        ));
    }
    let Some(leader) = view.leader.filter(|l| l.id != p.election.me().id) else {
        return fail("this master is a standby and no leader is elected yet; retry shortly");
    };
    if !leader.address.starts_with("http://") {
        return fail(&format!(
            "this master is a standby and cannot proxy to the leader at {} (proxying over TLS is not built): use the leader's address",
            leader.address
        ));
    }
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{}{path}", leader.address.trim_end_matches('/')).parse::<http::Uri>() else {
        return fail(&format!("the leader's address `{}` is not a valid URI", leader.address));
    };
    *request.uri_mut() = uri;
    for name in HOP_BY_HOP {
        request.headers_mut().remove(name);
    }
    if let Ok(id) = HeaderValue::from_str(&p.election.me().id) {
        request.headers_mut().insert("berth-proxied-by", id);
    }
    let client = if grpc { &p.http2 } else { &p.http1 };
    match client.request(request).await {
        Ok(response) => response.map(Body::new),
        Err(e) => fail(&format!(
            "this master is a standby and the leader at {} did not answer: {e}",
            leader.address
        )),
    }
}
