//! What the master counts for Prometheus, and the exposition of it at `/metrics` (OpenMetrics text,
//! encoded by `prometheus-client`).
//!
//! Two kinds of figures. Events are counted where they happen ([`Metrics`], shared by the master thread,
//! the store writer and the scrape): offer cycles, grants, launches, declines, agent registrations and
//! losses, store commits. State is read at scrape time in one pass on the master thread ([`Gauges`]):
//! tasks by framework and state, framework weights and shares, node resources. Plugin figures come from
//! each version's own call statistics. Labels are bounded by the cluster's shape (frameworks, nodes,
//! plugin versions, task states), never by tasks.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::runtime::Version;

/// Bounds of the seconds histograms: 10 µs to ~5 s, doubling.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_01, 2.0, 20)
}

/// Events counted where they happen.
#[derive(Debug)]
pub struct Metrics {
    pub(super) cycle_seconds: Histogram,
    pub(super) allocate_seconds: Histogram,
    pub(super) cycles: Counter,
    pub(super) cycle_errors: Counter,
    pub(super) grants: Counter,
    pub(super) refused_grants: Counter,
    pub(super) offers: Counter,
    pub(super) declines: Counter,
    pub(super) launches: Counter,
    pub(super) refused_tasks: Counter,
    pub(super) agent_registrations: Counter,
    pub(super) agents_lost: Counter,
    pub(super) store_commit_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            cycle_seconds: Histogram::new(seconds_buckets()),
            allocate_seconds: Histogram::new(seconds_buckets()),
            cycles: Counter::default(),
            cycle_errors: Counter::default(),
            grants: Counter::default(),
            refused_grants: Counter::default(),
            offers: Counter::default(),
            declines: Counter::default(),
            launches: Counter::default(),
            refused_tasks: Counter::default(),
            agent_registrations: Counter::default(),
            agents_lost: Counter::default(),
            store_commit_seconds: Histogram::new(seconds_buckets()),
        }
    }
}

impl Metrics {
    /// One store commit took `elapsed`.
    pub(crate) fn store_commit(&self, elapsed: Duration) {
        self.store_commit_seconds.observe(elapsed.as_secs_f64());
    }
}

/// One node's resources, for the gauges.
#[derive(Debug)]
pub(crate) struct NodeGauge {
    pub hostname: String,
    pub state: &'static str,
    pub connected: bool,
    pub total: berth_proto::Scalars,
    pub used: berth_proto::Scalars,
    /// What its running tasks use, as last sampled: (cores, MiB).
    pub in_use: (f64, f64),
}

/// One framework's figures, for the gauges.
#[derive(Debug)]
pub(crate) struct FrameworkGauge {
    pub name: String,
    pub weight: f64,
    pub share: f64,
    pub suppressed: bool,
    pub allocated: berth_proto::Scalars,
    /// What its running tasks use, as last sampled: (cores, MiB).
    pub in_use: (f64, f64),
}

/// The master's state as a scrape sees it, read in one pass on the master thread.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// (framework, state, tasks).
    pub tasks: Vec<(String, &'static str, u64)>,
    pub frameworks: Vec<FrameworkGauge>,
    pub nodes: Vec<NodeGauge>,
    /// Batches handed to the store writer and not yet committed.
    pub store_queue: u64,
    pub allocator: String,
}

/// Everything one scrape encodes.
#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    gauges: Gauges,
    /// (plugin, kind, active, version).
    versions: Vec<(String, String, bool, Arc<Version>)>,
}

/// The exposition of one scrape, OpenMetrics text.
pub(crate) fn encode(metrics: Arc<Metrics>, gauges: Gauges, registry: &crate::runtime::Registry) -> String {
    let mut versions = Vec::new();
    for plugin in registry.plugins() {
        let active = plugin.active().number;
        for version in plugin.versions() {
            versions.push((plugin.name.clone(), plugin.kind.to_string(), version.number == active, version));
        }
    }
    let mut exposition = Registry::default();
    exposition.register_collector(Box::new(Scrape { metrics, gauges, versions }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &exposition)
        .expect("writing to a String cannot fail");
    text
}

type Labels = Vec<(&'static str, String)>;

/// Writes one metric family: its descriptor, then each labelled value.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in rows {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one unlabelled metric.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    value.encode(encoder.encode_descriptor(name, help, unit, value.metric_type())?)
}

/// A borrowed metric, encoded as the metric itself.
struct Ref<'a, M>(&'a M);

impl<M: EncodeMetric> EncodeMetric for Ref<'_, M> {
    fn encode(&self, encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

fn gauge(value: f64) -> ConstGauge<f64> {
    ConstGauge::new(value)
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.metrics;
        let seconds = Some(&Unit::Seconds);
        let bytes = Some(&Unit::Bytes);
        // The offer cycle.
        single(
            &mut e,
            "berth_offer_cycle_duration",
            "Offer cycles, from start to recorded.",
            seconds,
            &m.cycle_seconds,
        )?;
        single(
            &mut e,
            "berth_allocate_duration",
            "The allocator's part of each offer cycle.",
            seconds,
            &m.allocate_seconds,
        )?;
        single(&mut e, "berth_offer_cycles", "Offer cycles run.", None, &m.cycles)?;
        single(
            &mut e,
            "berth_offer_cycle_errors",
            "Offer cycles whose allocator call failed.",
            None,
            &m.cycle_errors,
        )?;
        single(&mut e, "berth_grants", "Grants the allocator made.", None, &m.grants)?;
        single(
            &mut e,
            "berth_grants_refused",
            "Grants the master refused (stale or over capacity).",
            None,
            &m.refused_grants,
        )?;
        single(&mut e, "berth_offers", "Offers sent to frameworks.", None, &m.offers)?;
        single(&mut e, "berth_offer_declines", "Offers declined with a filter.", None, &m.declines)?;
        single(&mut e, "berth_launches", "Tasks launched from offers.", None, &m.launches)?;
        single(
            &mut e,
            "berth_launches_refused",
            "Tasks refused at launch validation.",
            None,
            &m.refused_tasks,
        )?;
        let allocator: Labels = vec![("allocator", self.gauges.allocator.clone())];
        family(
            &mut e,
            "berth_allocator",
            "The allocator in use (value 1).",
            None,
            MetricType::Gauge,
            [(allocator, gauge(1.0))],
        )?;

        // Tasks and frameworks.
        family(
            &mut e,
            "berth_tasks",
            "Tasks by framework and state (finished tasks while retained).",
            None,
            MetricType::Gauge,
            self.gauges.tasks.iter().map(|(f, s, n)| {
                (vec![("framework", f.clone()), ("state", s.to_string())], gauge(*n as f64))
            }),
        )?;
        let frameworks = &self.gauges.frameworks;
        let by_framework = |f: &FrameworkGauge| vec![("framework", f.name.clone())];
        family(
            &mut e,
            "berth_framework_weight",
            "Each framework's weight.",
            None,
            MetricType::Gauge,
            frameworks.iter().map(|f| (by_framework(f), gauge(f.weight))),
        )?;
        family(
            &mut e,
            "berth_framework_share",
            "Each framework's weighted dominant share of the schedulable resources.",
            None,
            MetricType::Gauge,
            frameworks.iter().map(|f| (by_framework(f), gauge(f.share))),
        )?;
        family(
            &mut e,
            "berth_framework_suppressed",
            "1 when a framework has suppressed its offers.",
            None,
            MetricType::Gauge,
            frameworks.iter().map(|f| (by_framework(f), gauge(f64::from(u8::from(f.suppressed))))),
        )?;
        family(
            &mut e,
            "berth_framework_cpus",
            "CPUs each framework holds.",
            None,
            MetricType::Gauge,
            frameworks.iter().map(|f| (by_framework(f), gauge(f.allocated.milli_cpus as f64 / 1000.0))),
        )?;
        family(
            &mut e,
            "berth_framework_memory",
            "Memory each framework holds.",
            bytes,
            MetricType::Gauge,
            frameworks.iter().map(|f| (by_framework(f), gauge(mib(f.allocated.mem_mib)))),
        )?;
        family(
            &mut e,
            "berth_framework_cpus_in_use",
            "CPU cores each framework's running tasks use, as their agents last sampled them.",
            None,
            MetricType::Gauge,
            frameworks.iter().map(|f| (by_framework(f), gauge(f.in_use.0))),
        )?;
        family(
            &mut e,
            "berth_framework_memory_in_use",
            "Memory each framework's running tasks use (without page cache), as last sampled.",
            bytes,
            MetricType::Gauge,
            frameworks.iter().map(|f| (by_framework(f), gauge(f.in_use.1 * 1024.0 * 1024.0))),
        )?;

        // Nodes and agents.
        let nodes = &self.gauges.nodes;
        let by_node = |n: &NodeGauge| vec![("node", n.hostname.clone())];
        for (name, help, unit, pick) in [
            (
                "berth_node_cpus",
                "Each node's CPUs.",
                None,
                (|s: &berth_proto::Scalars| s.milli_cpus as f64 / 1000.0) as fn(&berth_proto::Scalars) -> f64,
            ),
            ("berth_node_memory", "Each node's memory.", bytes, |s| mib(s.mem_mib)),
            ("berth_node_disk", "Each node's disk.", bytes, |s| mib(s.disk_mib)),
        ] {
            let rows = nodes.iter().flat_map(|n| {
                [("total", &n.total), ("used", &n.used)].map(|(which, s)| {
                    let mut labels = by_node(n);
                    labels.push(("kind", which.to_string()));
                    (labels, gauge(pick(s)))
                })
            });
            family(&mut e, name, &format!("{help} `kind` is total or used."), unit, MetricType::Gauge, rows)?;
        }
        family(
            &mut e,
            "berth_node_cpus_in_use",
            "CPU cores the running tasks on each node use, as last sampled.",
            None,
            MetricType::Gauge,
            nodes.iter().map(|n| (by_node(n), gauge(n.in_use.0))),
        )?;
        family(
            &mut e,
            "berth_node_memory_in_use",
            "Memory the running tasks on each node use, as last sampled.",
            bytes,
            MetricType::Gauge,
            nodes.iter().map(|n| (by_node(n), gauge(n.in_use.1 * 1024.0 * 1024.0))),
        )?;
        let mut states: Vec<(&str, u64)> = Vec::new();
        for n in nodes {
            match states.iter_mut().find(|(s, _)| *s == n.state) {
                Some((_, count)) => *count += 1,
                None => states.push((n.state, 1)),
            }
        }
        family(
            &mut e,
            "berth_nodes",
            "Nodes by state.",
            None,
            MetricType::Gauge,
            states.into_iter().map(|(s, n)| (vec![("state", s.to_string())], gauge(n as f64))),
        )?;
        single(
            &mut e,
            "berth_agents_connected",
            "Agents connected now.",
            None,
            &gauge(nodes.iter().filter(|n| n.connected).count() as f64),
        )?;
        single(
            &mut e,
            "berth_agent_registrations",
            "Agent registrations accepted.",
            None,
            &m.agent_registrations,
        )?;
        single(
            &mut e,
            "berth_agents_lost",
            "Agents marked unreachable after the agent timeout.",
            None,
            &m.agents_lost,
        )?;

        // The store.
        single(
            &mut e,
            "berth_store_commit_duration",
            "Store commits (one transaction and fsync each).",
            seconds,
            &m.store_commit_seconds,
        )?;
        single(
            &mut e,
            "berth_store_queue_depth",
            "Batches handed to the store writer, not yet committed.",
            None,
            &gauge(self.gauges.store_queue as f64),
        )?;

        // Plugins, per version.
        let by_version = |(plugin, kind, _, v): &(String, String, bool, Arc<Version>)| {
            vec![("plugin", plugin.clone()), ("kind", kind.clone()), ("version", v.number.to_string())]
        };
        let stats: Vec<_> = self.versions.iter().map(|row| (by_version(row), row.3.stats())).collect();
        family(
            &mut e,
            "berth_plugin_active",
            "1 for each plugin's active version.",
            None,
            MetricType::Gauge,
            self.versions.iter().map(|row| (by_version(row), gauge(f64::from(u8::from(row.2))))),
        )?;
        family(
            &mut e,
            "berth_plugin_call_duration",
            "Calls into each plugin version.",
            seconds,
            MetricType::Histogram,
            self.versions.iter().map(|row| (by_version(row), Ref(row.3.call_seconds()))),
        )?;
        for (name, help, pick) in [
            (
                "berth_plugin_calls",
                "Calls made, failed ones included.",
                (|s: &crate::runtime::StatsSnapshot| s.calls) as fn(&crate::runtime::StatsSnapshot) -> u64,
            ),
            ("berth_plugin_traps", "Calls that trapped.", |s| s.traps),
            ("berth_plugin_deadline_exceeded", "Calls stopped at their deadline.", |s| s.deadline_exceeded),
            ("berth_plugin_memory_exceeded", "Calls that hit the memory budget.", |s| s.memory_exceeded),
            ("berth_plugin_limits_exceeded", "Calls that returned more than a call may.", |s| {
                s.limits_exceeded
            }),
        ] {
            family(
                &mut e,
                name,
                help,
                None,
                MetricType::Counter,
                stats.iter().map(|(labels, s)| (labels.clone(), counter(pick(s)))),
            )?;
        }
        family(
            &mut e,
            "berth_plugin_peak_memory",
            "Largest memory any instance of the version reached.",
            bytes,
            MetricType::Gauge,
            stats.iter().map(|(labels, s)| (labels.clone(), gauge(s.peak_memory_bytes as f64))),
        )?;
        Ok(())
    }
}

fn mib(value: u64) -> f64 {
    (value * 1024 * 1024) as f64
}
