//! {{name}}: a berth framework. It keeps `instances` copies of a command running and replaces those that end.
//! Its task ids live in the framework's store, so a trap, a hot swap or a restart loses nothing.
//!
//! Configuration (JSON): {"instances": 2, "image": "busybox:latest", "command": "sleep 3600",
//! "milli_cpus": 100, "mem_mib": 32}

use berth_plugin_sdk::{
    Action, ContainerSpec, Decision, Decline, Framework, Launch, Offer, Resources, TaskShape, TaskSpec,
    TaskState, TaskStatus, export_framework, log, now_ms, store,
};

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    instances: u32,
    image: String,
    command: String,
    milli_cpus: u64,
    mem_mib: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { instances: 2, image: "busybox:latest".into(), command: "sleep 3600".into(), milli_cpus: 100, mem_mib: 32 }
    }
}

struct Plugin {
    config: Config,
    /// Tasks launched and not ended.
    active: Vec<String>,
    /// After a task fails, no replacement before this instant (no hot loop when, say, the image is missing).
    retry_after_ms: u64,
}

impl Plugin {
    fn save(&self) {
        store::put("active", &serde_json::to_vec(&self.active).expect("serializes")).expect("store write");
    }
}

impl Framework for Plugin {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(config).map_err(|e| format!("invalid configuration: {e}"))?
        };
        let active = match store::get("active") {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("stored state: {e}"))?,
            None => Vec::new(),
        };
        Ok(Plugin { config, active, retry_after_ms: 0 })
    }

    fn demand(&mut self) -> Vec<TaskShape> {
        let c = &self.config;
        if now_ms() < self.retry_after_ms {
            return vec![];
        }
        let wanted = c.instances.saturating_sub(self.active.len() as u32);
        if wanted == 0 { vec![] } else { vec![TaskShape::new(c.milli_cpus, c.mem_mib, wanted)] }
    }

    fn offers(&mut self, offers: Vec<Offer>) -> Vec<Decision> {
        let mut decisions = Vec::new();
        let waiting = now_ms() < self.retry_after_ms;
        for offer in offers {
            if waiting {
                decisions.push(Decision::Decline(Decline { offer: offer.id, refuse_seconds: 1 }));
                continue;
            }
            let mut free = offer.resources.clone();
            let mut tasks = Vec::new();
            let c = &self.config;
            while (self.active.len() as u32) < c.instances && free.milli_cpus >= c.milli_cpus && free.mem_mib >= c.mem_mib {
                free.milli_cpus -= c.milli_cpus;
                free.mem_mib -= c.mem_mib;
                let id = format!("{{name}}-{}-{}", now_ms(), self.active.len());
                self.active.push(id.clone());
                tasks.push(TaskSpec {
                    id,
                    name: "{{name}}".into(),
                    resources: Resources::new(c.milli_cpus, c.mem_mib),
                    container: ContainerSpec { command: Some(c.command.clone()), ..ContainerSpec::new(c.image.clone()) },
                    health_checks: vec![],
                    kill_grace_period_ms: 3000,
                });
            }
            decisions.push(if tasks.is_empty() {
                Decision::Decline(Decline { offer: offer.id, refuse_seconds: 30 })
            } else {
                Decision::Launch(Launch { offer: offer.id, tasks })
            });
        }
        self.save();
        decisions
    }

    fn status(&mut self, updates: Vec<TaskStatus>) -> Vec<Action> {
        let mut ended = false;
        for u in updates {
            if matches!(u.state, TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost | TaskState::Error) {
                log::info(&format!("{{name}}: task {} ended ({:?}) {}", u.task_id, u.state, u.message));
                self.active.retain(|t| *t != u.task_id);
                ended = true;
                if u.state != TaskState::Finished && u.state != TaskState::Killed {
                    self.retry_after_ms = now_ms() + 1000;
                }
            }
        }
        self.save();
        // Reviving clears the decline filters, so replacements can go anywhere at once.
        if ended { vec![Action::Revive] } else { vec![] }
    }
}

export_framework!(Plugin);
