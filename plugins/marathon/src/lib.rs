//! `marathon`, berth's default framework: a Marathon-compatible service scheduler written against berth's
//! public plugin ABI, with no private host shortcuts.
//!
//! - [`app`]: app definitions as Marathon clients send them, checked, and back;
//! - [`constraints`]: placement constraints;
//! - [`scheduler`]: the framework's state between calls, and `converge`, which ends every call;
//! - [`planning`]: what each app needs (launches, kills, rolling upgrades);
//! - [`placement`]: which offers take which tasks;
//! - [`status`]: task status updates and backoff;
//! - [`deployments`]: deployments and definition versions;
//! - [`api`]: the `/v2` REST API, served through the `handle` export;
//! - [`model`]: the state, kept in the framework's store so traps, hot swaps and restarts lose nothing.
//!
//! Configuration (JSON, optional, these are the defaults): `{"decline_seconds": 120, "unfit_decline_seconds": 5,
//! "min_healthy_seconds": 5, "service_ports": [10000, 20000]}`.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod constraints;
pub mod deployments;
pub mod model;
pub mod placement;
pub mod planning;
pub mod queue;
pub mod scheduler;
pub mod service_ports;
pub mod status;
mod time;

#[cfg(test)]
mod fuzz;

#[cfg(target_arch = "wasm32")]
mod component {
    use berth_plugin_sdk::{
        Action, ApiReply, Decision, Framework, HttpRequest, Offer, TaskShape, TaskStatus, events_watched,
        export_framework, now_ms, store,
    };

    use crate::model::{Persist, State};
    use crate::scheduler::{Config, Marathon};

    /// The framework's store, through the host's `store` import.
    struct HostStore;

    impl Persist for HostStore {
        fn get(&self, key: &str) -> Option<Vec<u8>> {
            store::get(key)
        }
        fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), String> {
            store::put(key, &value).map_err(|e| format!("{e:?}"))
        }
        fn delete(&mut self, key: &str) {
            store::delete(key)
        }
        fn keys(&self, prefix: &str) -> Vec<String> {
            store::keys(prefix)
        }
    }

    struct Plugin(Marathon);

    impl Plugin {
        /// Runs one call at the host's current time and persists what it changed. A write the store refuses
        /// ends the call with a trap, so the host discards its effects too.
        fn call<T>(&mut self, f: impl FnOnce(&mut Marathon) -> T) -> T {
            self.0.now_ms = now_ms();
            self.0.events_watched = events_watched();
            let result = f(&mut self.0);
            if let Err(e) = self.0.state.flush(&mut HostStore) {
                panic!("marathon cannot persist its state: {e}");
            }
            result
        }
    }

    impl Framework for Plugin {
        fn init(config: &str) -> Result<Self, String> {
            let config: Config = if config.trim().is_empty() {
                Config::default()
            } else {
                serde_json::from_str(config).map_err(|e| format!("invalid marathon configuration: {e}"))?
            };
            let state = State::load(&HostStore)?;
            Ok(Plugin(Marathon::new(state, config, now_ms())))
        }

        fn demand(&mut self) -> Vec<TaskShape> {
            self.call(|m| m.demand())
        }

        fn offers(&mut self, offers: Vec<Offer>) -> Vec<Decision> {
            self.call(|m| m.offers(offers))
        }

        fn status(&mut self, updates: Vec<TaskStatus>) -> Vec<Action> {
            self.call(|m| m.status(updates))
        }

        fn tick(&mut self, _now_ms: u64) -> Vec<Action> {
            self.call(|m| m.tick())
        }

        fn handle(&mut self, request: HttpRequest) -> ApiReply {
            self.call(|m| m.handle(request, &HostStore))
        }
    }

    export_framework!(Plugin);
}
