//! Test guest: a framework that answers its first offer with an invalid launch, to check the host refuses
//! it with a reason. Configuration: `over-offer` (asks for twice the offer's CPU) or `unknown-offer`
//! (names an offer id it never got). `GET /statuses` returns the status updates it received.

use berth_plugin_sdk::{
    Action, ApiReply, ContainerSpec, Decision, Framework, HttpRequest, HttpResponse, Launch, Offer,
    Resources, TaskShape, TaskSpec, TaskStatus, export_framework, store,
};

struct Rogue {
    mode: String,
    tried: bool,
    statuses: Vec<serde_json::Value>,
}

fn task(id: &str, resources: Resources) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        name: "rogue".into(),
        resources,
        container: ContainerSpec { command: Some("true".into()), ..ContainerSpec::new("busybox:latest") },
        health_checks: vec![],
        kill_grace_period_ms: 1000,
    }
}

/// `TaskState::Error` → `Error`.
fn plain(debug: String) -> String {
    debug.rsplit("::").next().unwrap_or_default().to_string()
}

impl Framework for Rogue {
    fn init(config: &str) -> Result<Self, String> {
        match config {
            "over-offer" | "unknown-offer" => {}
            other => return Err(format!("unknown mode `{other}`")),
        }
        let statuses =
            store::get("statuses").map(|b| serde_json::from_slice(&b).unwrap()).unwrap_or_default();
        Ok(Rogue { mode: config.into(), tried: store::get("tried").is_some(), statuses })
    }

    fn demand(&mut self) -> Vec<TaskShape> {
        if self.tried { vec![] } else { vec![TaskShape::new(100, 32, 1)] }
    }

    fn offers(&mut self, offers: Vec<Offer>) -> Vec<Decision> {
        let Some(offer) = offers.first() else { return vec![] };
        if self.tried {
            return vec![];
        }
        self.tried = true;
        store::put("tried", b"1").unwrap();
        let launch = match self.mode.as_str() {
            "over-offer" => {
                let mut r = Resources::new(offer.resources.milli_cpus * 2, 64);
                r.ports = vec![];
                Launch { offer: offer.id, tasks: vec![task("greedy-1", r)] }
            }
            _ => {
                Launch { offer: offer.id + 1_000_000, tasks: vec![task("ghost-1", Resources::new(100, 64))] }
            }
        };
        vec![Decision::Launch(launch)]
    }

    fn status(&mut self, updates: Vec<TaskStatus>) -> Vec<Action> {
        for u in updates {
            self.statuses.push(serde_json::json!({
                "task": u.task_id,
                "state": plain(format!("{:?}", u.state)),
                "reason": u.reason.map(|r| plain(format!("{r:?}"))),
                "message": u.message,
            }));
        }
        store::put("statuses", &serde_json::to_vec(&self.statuses).unwrap()).unwrap();
        vec![]
    }

    fn handle(&mut self, request: HttpRequest) -> ApiReply {
        let response = match request.path.as_str() {
            "/statuses" => HttpResponse::json(200, serde_json::to_vec(&self.statuses).unwrap()),
            _ => HttpResponse::text(404, "no such endpoint"),
        };
        ApiReply { response, actions: vec![] }
    }
}

export_framework!(Rogue);
