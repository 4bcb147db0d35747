//! Who may call what, checked in one place: a tower layer in front of every route, gRPC and HTTP alike,
//! that decides from the method and path alone, before any body is read or decoded.
//!
//! Two tokens: the operator's (every change, task logs, and reads when `protect_reads` is on) and the
//! agents'. A token is accepted as `authorization: Bearer <token>`, as Marathon/DC/OS's `token=<token>`, and
//! as HTTP Basic with the token as the password (what Marathon clients send). Tokens are compared in
//! constant time. Requests that pass carry a [`Caller`] extension saying whether they presented the
//! operator token, so a framework's API can tell an operator's read from an anonymous one.
//!
//! While reads are open, a browser could be made to read the API through a hostile name that resolves
//! to the master (DNS rebinding). So plain HTTP requests must then name the master by an IP address,
//! `localhost`, this machine's hostname, or one of the configured `allowed_hosts`.

use std::task::{Context, Poll};

use base64::Engine as _;
use futures::future::{BoxFuture, FutureExt as _};
use http::{Method, Request, Response};
use tonic::body::Body;
use tracing::Instrument as _;

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing (`/health`).
    Nothing,
    /// A read: open unless reads are protected.
    Read,
    /// The operator token.
    Operator,
    /// The agent token.
    Agent,
}

/// The tokens the master accepts.
#[derive(Clone, Debug)]
pub struct Auth {
    pub token: String,
    pub agent_token: String,
    pub protect_reads: bool,
    /// Names accepted in `Host` while reads are open, besides IP addresses and `localhost`; `*` accepts any.
    pub allowed_hosts: Vec<String>,
}

/// Who made a request that was let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// It presented the operator token.
    pub operator: bool,
}

/// The token in an `authorization` header: `Bearer <token>`, `token=<token>`, or Basic auth's password.
pub fn presented(header: Option<&str>) -> Option<String> {
    let value = header?.trim();
    if let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("token=")) {
        return Some(token.trim().to_string());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, password)| password.to_string())
}

/// Equal in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The name in a `Host` header or `:authority`, without its port, lower-cased.
fn host_name(authority: &str) -> String {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        return format!("[{}]", rest.split(']').next().unwrap_or_default());
    }
    authority.rsplit_once(':').map_or(authority, |(name, _)| name).to_ascii_lowercase()
}

impl Auth {
    /// Whether a request naming the master as `authority` may be answered. Only names can be rebound,
    /// so IP literals always pass.
    pub fn host_allowed(&self, authority: &str) -> bool {
        let name = host_name(authority);
        name.starts_with('[')
            || name.parse::<std::net::Ipv4Addr>().is_ok()
            || name == "localhost"
            || self.allowed_hosts.iter().any(|h| h == "*" || h.eq_ignore_ascii_case(&name))
    }

    /// Checks a call's `authorization` header against what it needs. The error says what the call needs;
    /// success says whether the operator token was presented.
    pub fn check(&self, header: Option<&str>, need: Need) -> Result<Caller, String> {
        let token = presented(header);
        let operator = token.as_deref().is_some_and(|t| same(t, &self.token));
        let (expected, what) = match need {
            Need::Nothing => return Ok(Caller { operator }),
            Need::Read if !self.protect_reads => return Ok(Caller { operator }),
            Need::Read | Need::Operator => (&self.token, "the operator token"),
            Need::Agent => (&self.agent_token, "the agent token"),
        };
        match token {
            Some(token) if same(&token, expected) => Ok(Caller { operator }),
            Some(_) => Err(format!("the token presented is not {what}")),
            None => Err(format!(
                "this call needs {what}: send `authorization: Bearer <token>` (the berth CLI reads it from \
                 --token, $BERTH_TOKEN or <data-dir>/token)"
            )),
        }
    }
}

/// What a request needs, from its method and path.
pub fn need(method: &Method, path: &str) -> Need {
    if let Some(rpc) = path.strip_prefix("/berth.v1.") {
        let (service, call) = rpc.split_once('/').unwrap_or((rpc, ""));
        return match (service, call) {
            ("AgentService", _) => Need::Agent,
            (_, "List") | ("TaskService", "Watch") => Need::Read,
            // Task output holds whatever tasks print, secrets included.
            ("TaskService", "Logs") => Need::Operator,
            _ => Need::Operator,
        };
    }
    // The console's page and scripts hold no data: it reads and changes through the API, with the token.
    if path == "/health" || path == "/ui" || path.starts_with("/ui/") {
        return Need::Nothing;
    }
    // Task output holds whatever tasks print, secrets included.
    if path.starts_with("/v1/frameworks/") && path.ends_with("/logs") {
        return Need::Operator;
    }
    if *method == Method::GET || *method == Method::HEAD { Need::Read } else { Need::Operator }
}

/// The layer that checks every request.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    pub auth: Auth,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, auth: self.auth.clone() }
    }
}

/// [`AuthLayer`]'s service.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    auth: Auth,
}

/// The header the web console sends, so a refusal does not make the browser open its own login prompt.
pub const CONSOLE_HEADER: &str = "x-berth-console";

fn refusal(grpc: bool, prompt: bool, status: http::StatusCode, message: String) -> Response<Body> {
    if grpc {
        let code = if status == http::StatusCode::FORBIDDEN {
            tonic::Code::PermissionDenied
        } else {
            tonic::Code::Unauthenticated
        };
        return tonic::Status::new(code, message).into_http();
    }
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(Body::new(axum::body::Body::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    if status == http::StatusCode::UNAUTHORIZED && prompt {
        // Lets browsers and Marathon clients offer Basic auth.
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Basic realm=\"berth\""));
    }
    response
}

impl<S, B> tower::Service<Request<B>> for AuthService<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        let need = need(request.method(), request.uri().path());
        let span = tracing::debug_span!("berth.api.request", method = %request.method(), path = %request.uri().path());
        if !grpc && !self.auth.protect_reads && need != Need::Nothing {
            let authority = request.uri().authority().map(|a| a.as_str().to_string()).or_else(|| {
                request.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()).map(str::to_string)
            });
            if let Some(authority) = authority.filter(|a| !self.auth.host_allowed(a)) {
                let message = format!(
                    "this API does not answer to the name {:?}: while reads are open it answers only to IP \
                     addresses, localhost, this machine's hostname and the names in `allowed_hosts` (a guard \
                     against DNS rebinding); add the name to `allowed_hosts` in the config",
                    host_name(&authority)
                );
                tracing::debug!(target: "berth.api", parent: &span, %message, "request refused");
                let response = refusal(false, false, http::StatusCode::FORBIDDEN, message);
                return async move { Ok(response) }.boxed();
            }
        }
        let header = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let prompt = !request.headers().contains_key(CONSOLE_HEADER);
        match self.auth.check(header, need) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                self.inner.call(request).instrument(span).boxed()
            }
            Err(message) => {
                tracing::debug!(target: "berth.api", parent: &span, %message, "request refused");
                let response = refusal(grpc, prompt, http::StatusCode::UNAUTHORIZED, message);
                async move { Ok(response) }.boxed()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(protect_reads: bool) -> Auth {
        Auth {
            token: "op".into(),
            agent_token: "ag".into(),
            protect_reads,
            allowed_hosts: vec!["berth.example".into()],
        }
    }

    #[test]
    fn writes_need_the_operator_token_and_reads_are_open_by_default() {
        let a = auth(false);
        assert_eq!(a.check(None, Need::Read), Ok(Caller { operator: false }));
        assert_eq!(a.check(Some("Bearer op"), Need::Read), Ok(Caller { operator: true }));
        let err = a.check(None, Need::Operator).unwrap_err();
        assert!(err.contains("needs the operator token"), "{err}");
        assert!(a.check(Some("Bearer op"), Need::Operator).is_ok());
        assert!(a.check(Some("token=op"), Need::Operator).is_ok());
        assert!(a.check(Some("Bearer ag"), Need::Operator).unwrap_err().contains("not the operator token"));
        assert!(a.check(Some("Bearer op"), Need::Agent).is_err());
        assert!(a.check(Some("Bearer ag"), Need::Agent).is_ok());
    }

    #[test]
    fn basic_auth_carries_the_token_as_its_password() {
        let a = auth(false);
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("marathon:op"));
        assert!(a.check(Some(&basic), Need::Operator).is_ok());
        let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("op:nope"));
        assert!(a.check(Some(&wrong), Need::Operator).is_err());
    }

    #[test]
    fn protected_reads_say_what_they_need() {
        let err = auth(true).check(None, Need::Read).unwrap_err();
        assert!(err.contains("operator token") && err.contains("BERTH_TOKEN"), "{err}");
    }

    #[test]
    fn every_route_is_classified_before_its_body_is_read() {
        assert_eq!(need(&Method::POST, "/berth.v1.PluginService/Upload"), Need::Operator);
        assert_eq!(need(&Method::POST, "/berth.v1.PluginService/List"), Need::Read);
        assert_eq!(need(&Method::POST, "/berth.v1.TaskService/Logs"), Need::Operator);
        assert_eq!(need(&Method::POST, "/berth.v1.TaskService/Watch"), Need::Read);
        assert_eq!(need(&Method::POST, "/berth.v1.AgentService/Join"), Need::Agent);
        assert_eq!(need(&Method::POST, "/berth.v1.Unknown/Thing"), Need::Operator);
        assert_eq!(need(&Method::GET, "/health"), Need::Nothing);
        assert_eq!(need(&Method::GET, "/v2/apps"), Need::Read);
        assert_eq!(need(&Method::POST, "/v2/apps"), Need::Operator);
        assert_eq!(need(&Method::DELETE, "/frameworks/batch/jobs/1"), Need::Operator);
        assert_eq!(need(&Method::GET, "/ui/"), Need::Nothing);
        assert_eq!(need(&Method::GET, "/ui/app.js"), Need::Nothing);
        assert_eq!(need(&Method::GET, "/uix"), Need::Read);
        assert_eq!(need(&Method::GET, "/v1/frameworks/marathon/tasks/web.1/logs"), Need::Operator);
        assert_eq!(need(&Method::GET, "/v1/tasks"), Need::Read);
        assert_eq!(need(&Method::POST, "/v1/frameworks/marathon/weight"), Need::Operator);
    }

    #[test]
    fn only_addresses_and_known_names_pass_the_rebinding_guard() {
        let a = auth(false);
        for ok in
            ["127.0.0.1:8080", "10.1.2.3", "[::1]:8080", "localhost:8080", "LOCALHOST", "berth.example:80"]
        {
            assert!(a.host_allowed(ok), "{ok}");
        }
        for bad in
            ["evil.example:8080", "127.0.0.1.evil.example", "localhost.evil.example", "berth.example.evil"]
        {
            assert!(!a.host_allowed(bad), "{bad}");
        }
        let open = Auth { allowed_hosts: vec!["*".into()], ..auth(false) };
        assert!(open.host_allowed("anything.example"));
    }
}
