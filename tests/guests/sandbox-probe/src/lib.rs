//! Test guest: a framework whose HTTP API tries to reach outside the sandbox and says what happened.
//!
//! - `GET /read?<path>`: read a file;
//! - `GET /write?<path>`: create a file;
//! - `GET /list`: list `/`;
//! - `GET /connect?<host:port>`: open a TCP connection;
//! - `GET /env`: count environment variables;
//! - `GET /body?<MiB>`: answer with a body of that many MiB (the host must refuse one too large);
//! - `GET /mutate`: write the store key `mutated` and ask the host to suppress the framework's offers (the
//!   host must drop both for an anonymous caller); `GET /mutated` says whether the key is there, and what
//!   `x-berth-authenticated` said.
//!
//! Each answers `allowed: …` or `denied: <the error the guest saw>`.

use berth_plugin_sdk::{
    Action, ApiReply, Decision, Framework, HttpRequest, HttpResponse, Offer, TaskShape, TaskStatus,
    export_framework,
};

struct Probe;

fn outcome<T>(result: std::io::Result<T>, what: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => format!("allowed: {}", what(value)),
        Err(e) => format!("denied: {e}"),
    }
}

impl Framework for Probe {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Probe)
    }

    fn demand(&mut self) -> Vec<TaskShape> {
        Vec::new()
    }

    fn offers(&mut self, _offers: Vec<Offer>) -> Vec<Decision> {
        Vec::new()
    }

    fn status(&mut self, _updates: Vec<TaskStatus>) -> Vec<Action> {
        Vec::new()
    }

    fn handle(&mut self, request: HttpRequest) -> ApiReply {
        let arg = request.query.clone();
        if request.path == "/mutate" {
            let _ = berth_plugin_sdk::store::put("mutated", b"yes");
            let response = HttpResponse::text(200, "mutated");
            return ApiReply { response, actions: vec![Action::Suppress] };
        }
        if request.path == "/mutated" {
            let seen =
                berth_plugin_sdk::store::get("mutated").map(|v| String::from_utf8_lossy(&v).into_owned());
            let caller =
                request.headers.iter().find(|h| h.key == "x-berth-authenticated").map(|h| h.value.clone());
            let body = format!(
                "{}; authenticated={}",
                seen.as_deref().unwrap_or("none"),
                caller.unwrap_or_default()
            );
            return ApiReply { response: HttpResponse::text(200, &body), actions: vec![] };
        }
        if request.path == "/body" {
            let mib: usize = arg.parse().unwrap_or(1);
            let response = HttpResponse { status: 200, headers: vec![], body: vec![b'x'; mib << 20] };
            return ApiReply { response, actions: vec![] };
        }
        let body = match request.path.as_str() {
            "/read" => outcome(std::fs::read(&arg), |bytes| format!("read {} bytes", bytes.len())),
            "/write" => outcome(std::fs::write(&arg, b"escaped"), |()| "wrote the file".into()),
            "/list" => outcome(std::fs::read_dir("/"), |entries| format!("{} entries", entries.count())),
            "/connect" => outcome(std::net::TcpStream::connect(&arg), |_| "connected".into()),
            "/env" => match std::env::vars().count() {
                0 => "denied: no environment".to_string(),
                n => format!("allowed: {n} variables"),
            },
            _ => return ApiReply { response: HttpResponse::text(404, "no such probe"), actions: vec![] },
        };
        ApiReply { response: HttpResponse::text(200, &body), actions: vec![] }
    }
}

export_framework!(Probe);
