//! Test guest: an allocator that attacks its sandbox in the way its configuration names, from `allocate`:
//!
//! - `sleep`: `std::thread::sleep` for 60 s (a WASI clock and `pollable.block` underneath);
//! - `poll-far-clock`: `wasi:io/poll.poll` on a timer an hour away;
//! - `block-far-clock`: `pollable.block` on a timer an hour away;
//! - `timers`: makes timers without end, never dropping one (WASI resources held in the host);
//! - `grants`: returns ten million grants;
//! - `log-flood`: logs 100,000 lines through `host.log`, then returns nothing;
//! - `sleep-briefly`: sleeps 5 ms and returns nothing: a wait well inside the deadline is allowed.
//!
//! Every mode but the last must be stopped or refused by the host, which must keep serving meanwhile.

use std::time::Duration;

use berth_plugin_sdk::{Allocator, ClusterView, Grant, Resources, export_allocator, log};

struct Hostile(String);

const HOUR_NS: u64 = 3_600_000_000_000;

impl Allocator for Hostile {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Hostile(config.to_string()))
    }

    fn allocate(&mut self, view: &ClusterView) -> Vec<Grant> {
        match self.0.as_str() {
            "sleep" => std::thread::sleep(Duration::from_secs(60)),
            "poll-far-clock" => {
                let timer = wasip2::clocks::monotonic_clock::subscribe_duration(HOUR_NS);
                wasip2::io::poll::poll(&[&timer]);
            }
            "block-far-clock" => wasip2::clocks::monotonic_clock::subscribe_duration(HOUR_NS).block(),
            "timers" => {
                let mut held = Vec::new();
                loop {
                    held.push(wasip2::clocks::monotonic_clock::subscribe_duration(HOUR_NS));
                }
            }
            "grants" => {
                let (framework, node) = match (view.frameworks.first(), view.nodes.first()) {
                    (Some(f), Some(n)) => (f.id, n.id),
                    _ => (0, 0),
                };
                let one =
                    Grant { framework, node, resources: Resources { milli_cpus: 1, ..Resources::default() } };
                return vec![one; 10_000_000];
            }
            "log-flood" => {
                for i in 0..100_000 {
                    log::info(&format!("flood line {i}"));
                }
            }
            "sleep-briefly" => std::thread::sleep(Duration::from_millis(5)),
            other => panic!("unknown hostile mode {other:?}"),
        }
        Vec::new()
    }
}

export_allocator!(Hostile);
