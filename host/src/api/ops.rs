//! The operator's changes over plain HTTP and JSON, for the web console (and `curl`): framework weights,
//! task kills and logs, plugin uploads, activation, rollback and the allocator in use. Each route is one
//! [`MasterHandle`] method, as its gRPC twin is; authentication happened in front (`auth.rs`: every
//! non-GET route and task logs need the operator token).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post, put};
use futures::StreamExt as _;
use serde::Deserialize;

use super::MAX_MESSAGE;
use crate::master::{ApiError, MasterHandle, Upload};
use crate::runtime::{PluginKind, PluginLimits};

#[derive(Clone)]
pub struct OpsState {
    pub handle: MasterHandle,
    pub default_limits: PluginLimits,
}

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/v1/frameworks/{name}/weight", post(set_weight))
        .route("/v1/frameworks/{name}/tasks/{id}/kill", post(kill_task))
        .route("/v1/frameworks/{name}/tasks/{id}/logs", get(task_logs))
        .route("/v1/plugins/{name}/versions", post(upload).layer(DefaultBodyLimit::max(MAX_MESSAGE)))
        .route("/v1/plugins/{name}/activate", post(activate))
        .route("/v1/plugins/{name}/rollback", post(rollback))
        .route("/v1/allocator", put(use_allocator))
        .with_state(state)
}

fn json<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A JSON body, or the error (a 422) that names what was wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::InvalidArgument(format!("the request body is not what this call takes: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Weight {
    weight: f64,
}

async fn set_weight(State(s): State<OpsState>, Path(name): Path<String>, bytes: Bytes) -> Response {
    match body::<Weight>(&bytes) {
        Ok(w) => json(s.handle.set_weight(name, w.weight).await),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Kill {
    /// Between SIGTERM and SIGKILL; absent keeps the task's own.
    grace_ms: Option<u32>,
}

async fn kill_task(
    State(s): State<OpsState>,
    Path((name, id)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let kill = if bytes.is_empty() { Ok(Kill::default()) } else { body::<Kill>(&bytes) };
    match kill {
        Ok(k) => match s.handle.kill_task(name, id, k.grace_ms).await {
            Ok(()) => {
                (StatusCode::ACCEPTED, Json(serde_json::json!({ "message": "kill sent" }))).into_response()
            }
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
    /// The last lines only (all when 0).
    #[serde(default)]
    tail: u32,
}

/// A task's output as plain text, stdout and stderr interleaved as they came; with `follow`, the response
/// stays open and new output is sent as it is written, until the task's output ends or the client goes.
async fn task_logs(
    State(s): State<OpsState>,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let rx = match s.handle.open_logs(name, id, q.follow, q.tail).await {
        Ok(rx) => rx,
        Err(e) => return e.into_response(),
    };
    // Dropping the stream (the client went away) drops the receiver, which cancels the agent's stream.
    let chunks = tokio_stream::wrappers::ReceiverStream::new(rx)
        .take_while(|c| {
            let more = !c.eof || !c.data.is_empty() || !c.error.is_empty();
            async move { more }
        })
        .map(|c| {
            let mut data = c.data;
            if !c.error.is_empty() {
                data.extend_from_slice(
                    format!("\n[berth: the output could not be read: {}]\n", c.error).as_bytes(),
                );
            }
            Ok::<_, std::convert::Infallible>(Bytes::from(data))
        });
    Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        // Tells proxies not to hold a followed stream back.
        .header("x-accel-buffering", "no")
        .header(axum::http::header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    kind: String,
    /// Load without making it active.
    #[serde(default)]
    inactive: bool,
    /// The allocator's `init` configuration.
    #[serde(default)]
    config: String,
}

/// A new version of a plugin: the component's bytes as the body (`application/wasm`).
async fn upload(
    State(s): State<OpsState>,
    Path(name): Path<String>,
    Query(q): Query<UploadQuery>,
    bytes: Bytes,
) -> Response {
    let kind: PluginKind = match q.kind.parse() {
        Ok(k) => k,
        Err(e) => return ApiError::InvalidArgument(e).into_response(),
    };
    let upload = Upload {
        name,
        kind,
        bytes: bytes.to_vec(),
        config: q.config,
        limits: s.default_limits,
        activate: !q.inactive,
    };
    json(s.handle.upload(upload).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Activate {
    version: u32,
}

async fn activate(State(s): State<OpsState>, Path(name): Path<String>, bytes: Bytes) -> Response {
    match body::<Activate>(&bytes) {
        Ok(a) => json(s.handle.activate_version(name, a.version).await),
        Err(e) => e.into_response(),
    }
}

async fn rollback(State(s): State<OpsState>, Path(name): Path<String>) -> Response {
    json(s.handle.rollback_plugin(name).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Allocator {
    name: String,
}

async fn use_allocator(State(s): State<OpsState>, bytes: Bytes) -> Response {
    match body::<Allocator>(&bytes) {
        Ok(a) => json(
            s.handle.use_allocator(a.name).await.map(|previous| serde_json::json!({ "previous": previous })),
        ),
        Err(e) => e.into_response(),
    }
}
