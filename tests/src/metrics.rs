//! Reading `/metrics` as Prometheus would: the exposition parsed by a Prometheus parser
//! (`prometheus-parse`), and the values looked up by metric and labels.

use prometheus_parse::{Sample, Scrape, Value as Metric};

use crate::cluster::Master;

/// Scrapes `/metrics` and parses it with a Prometheus parser.
pub fn scrape(master: &Master) -> Vec<Sample> {
    let response = ureq::get(&format!("{}/metrics", master.url)).call().expect("GET /metrics");
    let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "content type {kind}");
    let text = response.into_body().read_to_string().unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    Scrape::parse(lines).expect("a Prometheus parser reads the exposition").samples
}

fn number(sample: &Sample) -> f64 {
    match &sample.value {
        Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
        other => panic!("{} is not a number: {other:?}", sample.metric),
    }
}

/// The value of `metric` with these labels (the others unchecked), if it is there.
pub fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(number)
}

/// The sum of `metric` over the samples with these labels.
pub fn sum(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(number)
        .sum()
}

/// A histogram's count of observations.
pub fn count(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Metric::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Metric::Counter(v) | Metric::Untyped(v) if s.metric.ends_with("_count") => *v,
            other => panic!("{} is not a histogram: {other:?}", s.metric),
        })
        .sum()
}
