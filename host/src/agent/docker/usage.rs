//! What running containers use: the engine's stats, sampled every few seconds for every running task and
//! handed to the agent loop, which sends the newest with its next heartbeat.

use berth_proto::v1 as pb;
use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptionsBuilder;
use futures::StreamExt;
use std::sync::Arc;

use super::Inner;
use crate::agent::backend::USAGE_INTERVAL;
use crate::model::unix_ms;

/// Stats requests in flight at once. The engine takes about a second per request (it reads the cgroup
/// twice to have an interval), so a node with many containers is sampled in a few such waves.
const CONCURRENT: usize = 8;

/// Cores in use over the sample's interval, as `docker stats` computes it: the container's CPU time over
/// the machine's, times the machine's CPUs. Zero when the engine gave no earlier reading.
pub fn cpus(stats: &ContainerStatsResponse) -> f64 {
    let (Some(now), Some(before)) = (&stats.cpu_stats, &stats.precpu_stats) else { return 0.0 };
    let total = |s: &bollard::models::ContainerCpuStats| {
        s.cpu_usage.as_ref().and_then(|u| u.total_usage).unwrap_or(0)
    };
    let container = total(now).saturating_sub(total(before));
    let system = now.system_cpu_usage.unwrap_or(0).saturating_sub(before.system_cpu_usage.unwrap_or(0));
    let online = now
        .online_cpus
        .filter(|n| *n > 0)
        .or_else(|| {
            let per_cpu = now.cpu_usage.as_ref()?.percpu_usage.as_ref()?.len();
            u32::try_from(per_cpu).ok().filter(|n| *n > 0)
        })
        .unwrap_or(1);
    if system == 0 { 0.0 } else { container as f64 / system as f64 * f64::from(online) }
}

/// Memory in use without the page cache, as `docker stats` shows it: cgroup v2's `inactive_file` (v1:
/// `total_inactive_file`) subtracted from the usage.
pub fn mem_bytes(stats: &ContainerStatsResponse) -> u64 {
    let Some(memory) = &stats.memory_stats else { return 0 };
    let usage = memory.usage.unwrap_or(0);
    let cache = memory
        .stats
        .as_ref()
        .and_then(|s| s.get("inactive_file").or_else(|| s.get("total_inactive_file")).copied())
        .unwrap_or(0);
    usage.saturating_sub(cache)
}

impl Inner {
    /// Samples every running container, forever, keeping the newest round for the agent loop.
    pub(super) async fn sample_usage(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(USAGE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let running: Vec<(String, String, String)> = self
                .lock()
                .iter()
                .filter(|(_, t)| t.state == pb::TaskState::Running)
                .filter_map(|((framework, id), t)| {
                    Some((framework.clone(), id.clone(), t.container.clone()?))
                })
                .collect();
            if running.is_empty() {
                continue;
            }
            let samples: Vec<pb::TaskUsage> = futures::stream::iter(running)
                .map(|(framework, task_id, container)| {
                    let docker = self.docker.clone();
                    async move {
                        let options = StatsOptionsBuilder::new().stream(false).one_shot(false).build();
                        let stats = docker.stats(&container, Some(options)).next().await?.ok()?;
                        Some(pb::TaskUsage {
                            framework,
                            task_id,
                            cpus: cpus(&stats),
                            mem_bytes: mem_bytes(&stats),
                            timestamp_ms: unix_ms(),
                        })
                    }
                })
                .buffer_unordered(CONCURRENT)
                .filter_map(|s| async move { s })
                .collect()
                .await;
            *self.usage.lock().expect("usage lock") = samples;
        }
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats};

    use super::*;

    fn cpu(total: u64, system: u64, online: u32) -> ContainerCpuStats {
        ContainerCpuStats {
            cpu_usage: Some(ContainerCpuUsage { total_usage: Some(total), ..Default::default() }),
            system_cpu_usage: Some(system),
            online_cpus: Some(online),
            ..Default::default()
        }
    }

    #[test]
    fn cpus_is_the_containers_share_of_the_machine_times_its_cpus() {
        // Over 2 s of a 2-CPU machine (4e9 ns of system time), the container used 1e9 ns: half a core.
        let stats = ContainerStatsResponse {
            cpu_stats: Some(cpu(3_000_000_000, 14_000_000_000, 2)),
            precpu_stats: Some(cpu(2_000_000_000, 10_000_000_000, 2)),
            ..Default::default()
        };
        assert!((cpus(&stats) - 0.5).abs() < 1e-9, "{}", cpus(&stats));
        // No earlier reading (the engine's first sample): nothing can be said, so zero.
        let first = ContainerStatsResponse { cpu_stats: Some(cpu(5, 5, 2)), ..Default::default() };
        assert_eq!(cpus(&first), 0.0);
    }

    #[test]
    fn memory_leaves_out_the_page_cache() {
        let v2 = ContainerStatsResponse {
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(100 << 20),
                stats: Some([("inactive_file".to_string(), 30 << 20)].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(mem_bytes(&v2), 70 << 20);
        let v1 = ContainerStatsResponse {
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(100 << 20),
                stats: Some([("total_inactive_file".to_string(), 120 << 20)].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(mem_bytes(&v1), 0, "never below zero");
    }
}
