//! The launch queue's offer figures (`/v2/queue`'s `processedOffersSummary` and `lastUnusedOffers`): how the
//! offers each app with launches to make were used, and why the unused ones did not fit. Kept in memory: a
//! summary of recent offers, not state a restart must keep.

use std::collections::{BTreeMap, VecDeque};

use berth_plugin_sdk::Offer;
use serde_json::{Value, json};

use crate::time::iso;

/// Unused offers remembered per app.
const LAST_UNUSED: usize = 10;

/// How one app's offers went.
#[derive(Default)]
pub struct OfferStats {
    processed: u64,
    unused: u64,
    last_used_ms: Option<u64>,
    last_unused_ms: Option<u64>,
    /// Declined offers by reason.
    reasons: BTreeMap<&'static str, u64>,
    /// The latest unused offers: what was offered, when, and why it did not fit.
    last: VecDeque<(Value, u64, &'static str)>,
}

impl OfferStats {
    /// An offer the app used.
    pub fn used(&mut self, now_ms: u64) {
        self.processed += 1;
        self.last_used_ms = Some(now_ms);
    }

    /// An offer the app could not use, and why.
    pub fn unused(&mut self, offer: &Offer, reason: &'static str, now_ms: u64) {
        self.processed += 1;
        self.unused += 1;
        self.last_unused_ms = Some(now_ms);
        *self.reasons.entry(reason).or_default() += 1;
        let r = &offer.resources;
        let summary = json!({
            "id": offer.id.to_string(), "agentId": offer.hostname, "hostname": offer.hostname,
            "resources": [
                {"name": "cpus", "scalar": r.milli_cpus as f64 / 1000.0},
                {"name": "mem", "scalar": r.mem_mib},
                {"name": "disk", "scalar": r.disk_mib},
            ],
            "attributes": offer.attributes.iter().map(|a| json!({"name": a.name, "text": a.value})).collect::<Vec<_>>(),
        });
        if self.last.len() == LAST_UNUSED {
            self.last.pop_front();
        }
        self.last.push_back((summary, now_ms, reason));
    }

    /// Marathon's `processedOffersSummary`.
    pub fn summary(&self) -> Value {
        let reasons: Vec<Value> = self
            .reasons
            .iter()
            .map(|(reason, declined)| json!({"reason": reason, "declined": declined, "processed": self.processed}))
            .collect();
        json!({
            "processedOffersCount": self.processed,
            "unusedOffersCount": self.unused,
            "lastUnusedOfferAt": self.last_unused_ms.map(iso),
            "lastUsedOfferAt": self.last_used_ms.map(iso),
            "rejectSummaryLastOffers": reasons,
            "rejectSummaryLaunchAttempt": reasons,
        })
    }

    /// Marathon's `lastUnusedOffers`.
    pub fn last_unused(&self) -> Value {
        json!(
            self.last
                .iter()
                .map(|(offer, at, reason)| json!({"offer": offer, "timestamp": iso(*at), "reason": [reason]}))
                .collect::<Vec<_>>()
        )
    }
}
