//! Plain HTTP on the API port: health, JSON read endpoints, and each framework's own HTTP API (served by
//! its plugin's `handle` export). Authentication happened before any handler runs (`auth.rs`).

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, get};
use serde::Deserialize;

use super::auth::Caller;
use crate::master::{ApiError, MasterHandle, TaskFilter};
use crate::runtime::bindings::{HttpRequest, KeyValue};

/// Largest request body a framework's API accepts.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct HttpState {
    pub handle: MasterHandle,
    /// The framework served at `/v2/` and `/ping` (Marathon's paths).
    pub default_framework: String,
}

/// The one conversion from master errors to HTTP responses: a status code and `{"message": …}`.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::InvalidArgument(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists(_) | ApiError::FailedPrecondition(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(serde_json::json!({ "message": self.to_string() }))).into_response()
    }
}

fn json<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The routes, for merging with the gRPC services.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/plugins", get(plugins))
        .route("/v1/frameworks", get(frameworks))
        .route("/v1/nodes", get(nodes))
        .route("/v1/tasks", get(tasks))
        .route("/v1/cycles", get(cycles))
        .route("/v1/whoami", get(whoami))
        .route("/frameworks/{name}", any(framework_root))
        .route("/frameworks/{name}/{*path}", any(framework_path))
        .route("/ping", any(default_ping))
        .route("/metrics", get(metrics))
        .route("/v2/events", get(events))
        .route("/v2/{*path}", any(default_v2))
        .with_state(state)
}

async fn default_ping(
    State(state): State<HttpState>,
    caller: Option<Extension<Caller>>,
    request: Request,
) -> Response {
    let framework = state.default_framework.clone();
    forward(state, caller, framework, "/ping".into(), request).await
}

async fn default_v2(
    State(state): State<HttpState>,
    caller: Option<Extension<Caller>>,
    Path(path): Path<String>,
    request: Request,
) -> Response {
    let framework = state.default_framework.clone();
    forward(state, caller, framework, format!("/v2/{path}"), request).await
}

/// `/metrics`: berth's own metrics for Prometheus (OpenMetrics text), or Marathon's metrics (Dropwizard
/// JSON) from the default framework when the client asks for JSON, as Marathon's clients do.
async fn metrics(
    State(state): State<HttpState>,
    caller: Option<Extension<Caller>>,
    request: Request,
) -> Response {
    let json = request
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if json {
        let framework = state.default_framework.clone();
        return forward(state, caller, framework, "/metrics".into(), request).await;
    }
    match state.handle.metrics().await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Tells the other watchers an event stream went away (Marathon's `event_stream_detached`) when dropped.
struct Detach {
    handle: MasterHandle,
    framework: String,
}

impl Drop for Detach {
    fn drop(&mut self) {
        let payload = serde_json::json!({"eventType": "event_stream_detached", "remoteAddress": "",
            "timestamp": crate::model::iso_now()});
        self.handle.publish(crate::master::Event::Framework {
            framework: self.framework.clone(),
            event: crate::runtime::bindings::Event {
                kind: "event_stream_detached".into(),
                payload: payload.to_string(),
            },
        });
    }
}

/// `/v2/events`: what the default framework publishes (Marathon's `status_update_event`,
/// `deployment_info`, `deployment_success`, …) as server-sent events, optionally only `?event_type=…`.
async fn events(State(state): State<HttpState>, Query(params): Query<Vec<(String, String)>>) -> Response {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use futures::StreamExt;
    let types: Vec<String> = params.into_iter().filter(|(k, _)| k == "event_type").map(|(_, v)| v).collect();
    let framework = state.default_framework.clone();
    let detach = Detach { handle: state.handle.clone(), framework: framework.clone() };
    let attached = serde_json::json!({"eventType": "event_stream_attached", "remoteAddress": "",
        "timestamp": crate::model::iso_now()});
    let first = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(
            SseEvent::default().event("event_stream_attached").data(attached.to_string()),
        )
    });
    let updates =
        tokio_stream::wrappers::BroadcastStream::new(state.handle.subscribe()).filter_map(move |item| {
            // The stream owns the guard: dropping the stream (the client went away) drops it.
            let _detach = &detach;
            let out = match item.as_deref() {
                Ok(crate::master::Event::Framework { framework: f, event })
                    if *f == framework && (types.is_empty() || types.contains(&event.kind)) =>
                {
                    Some(Ok(SseEvent::default().event(&event.kind).data(&event.payload)))
                }
                _ => None,
            };
            async move { out }
        });
    Sse::new(first.chain(updates)).keep_alive(KeepAlive::default()).into_response()
}

/// Liveness: the master thread went round its loop within five seconds. It never runs plugin code, so a
/// slow plugin does not make it fail.
async fn health(State(state): State<HttpState>) -> Response {
    if let Some((error, since)) = state.handle.store_failure() {
        let hint =
            if error.starts_with("etcd") { "is etcd reachable, with a quorum?" } else { "is the disk full?" };
        let message = format!(
            "the store cannot be written since {} ({error}): nothing is acknowledged until it can; the master \
             retries ({hint})\n",
            crate::model::iso_ms(since)
        );
        return (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    }
    match tokio::time::timeout(std::time::Duration::from_secs(5), state.handle.health()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "the master is not answering\n").into_response(),
    }
}

/// Whether the caller presented the operator token: how the console checks a token it was given.
async fn whoami(caller: Option<Extension<Caller>>) -> Response {
    let operator = caller.is_some_and(|Extension(c)| c.operator);
    Json(serde_json::json!({ "operator": operator })).into_response()
}

async fn plugins(State(state): State<HttpState>) -> Response {
    json(state.handle.plugins().await.map(|(plugins, _)| plugins))
}

async fn frameworks(State(state): State<HttpState>) -> Response {
    json(state.handle.frameworks().await)
}

async fn nodes(State(state): State<HttpState>) -> Response {
    json(state.handle.nodes().await)
}

async fn cycles(State(state): State<HttpState>) -> Response {
    json(state.handle.cycles().await)
}

#[derive(Deserialize)]
struct TaskQuery {
    #[serde(default)]
    framework: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    node: String,
}

async fn tasks(State(state): State<HttpState>, Query(q): Query<TaskQuery>) -> Response {
    let filter = TaskFilter {
        framework: q.framework,
        states: q.state.split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
        node: q.node,
    };
    json(state.handle.tasks(filter).await)
}

async fn framework_root(
    State(state): State<HttpState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    forward(state, caller, name, "/".into(), request).await
}

async fn framework_path(
    State(state): State<HttpState>,
    caller: Option<Extension<Caller>>,
    Path((name, path)): Path<(String, String)>,
    request: Request,
) -> Response {
    forward(state, caller, name, format!("/{path}"), request).await
}

/// The header that tells a framework's plugin whether the caller presented the operator token (`true` or
/// `false`); the host sets it on every request and drops one a client sent.
pub const AUTHENTICATED_HEADER: &str = "x-berth-authenticated";

/// Hands a request to a framework's plugin, saying whether the caller is the operator. An anonymous
/// request (reads are open by default) changes nothing, whatever the plugin answers.
pub async fn forward(
    state: HttpState,
    caller: Option<Extension<Caller>>,
    framework: String,
    path: String,
    request: Request,
) -> Response {
    let authenticated = caller.is_some_and(|Extension(c)| c.operator);
    let method = request.method().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let mut headers: Vec<KeyValue> = request
        .headers()
        .iter()
        .filter(|(k, _)| *k != "authorization" && *k != AUTHENTICATED_HEADER)
        .filter_map(|(k, v)| {
            Some(KeyValue { key: k.as_str().to_string(), value: v.to_str().ok()?.to_string() })
        })
        .collect();
    headers.push(KeyValue { key: AUTHENTICATED_HEADER.into(), value: authenticated.to_string() });
    let body = match to_bytes(request.into_body(), MAX_BODY).await {
        Ok(b) => b.to_vec(),
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request bodies are limited to {MAX_BODY} bytes\n"),
            )
                .into_response();
        }
    };
    let request = HttpRequest { method, path, query, headers, body };
    match state.handle.framework_http(framework, request, authenticated).await {
        Ok(response) => {
            let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut out = Response::builder().status(status);
            for kv in response.headers {
                if let (Ok(k), Ok(v)) =
                    (HeaderName::try_from(kv.key.as_str()), HeaderValue::try_from(kv.value.as_str()))
                {
                    out = out.header(k, v);
                }
            }
            out.body(Body::from(response.body))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Err(e) => e.into_response(),
    }
}
