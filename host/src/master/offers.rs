//! Offers and decline filters.
//!
//! An offer holds resources of one node for one framework from the moment the allocator's grant becomes an
//! offer until the framework answers it (or the offer times out, or its node goes away): the node counts
//! them as offered, not available (see `nodes.rs`). A decline installs a filter: that node is not offered
//! to that framework again before the filter expires, as in Mesos.
//!
//! It does not decide which offers to make (the allocator does, in `cycle.rs`) or what answering them
//! does (`cycle.rs` validates and launches).

use std::collections::BTreeMap;
use std::time::Instant;

use super::types::FastMap;
use crate::model::ResourcesExt;
use crate::runtime::bindings::{Attribute, Offer, Resources};

/// An offer between the grant that made it and the decision that answers it.
pub struct Outstanding {
    pub framework: u32,
    pub node: u32,
    pub resources: Resources,
    /// The cycle that made it.
    pub cycle: u64,
    /// When it expires unanswered.
    pub expires: Instant,
}

/// Outstanding offers, offers waiting to be sent to their framework, and decline filters.
#[derive(Default)]
pub struct Offers {
    outstanding: BTreeMap<u64, Outstanding>,
    /// Offers made and not yet handed to their framework (it was busy), by framework.
    queued: BTreeMap<u32, Vec<Offer>>,
    next_id: u64,
    /// Per framework: how many offers it holds and their resources together.
    held: FastMap<u32, (usize, Resources)>,
    /// Decline filters: (framework, agent id) to expiry, ms since the epoch.
    filters: FastMap<(u32, String), u64>,
}

impl Offers {
    /// Records a new offer and queues it for its framework; returns its id.
    pub fn make(&mut self, offer: Outstanding, hostname: String, attributes: Vec<Attribute>) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let held = self.held.entry(offer.framework).or_insert_with(|| (0, Resources::zero()));
        held.0 += 1;
        held.1.add(&offer.resources);
        self.queued.entry(offer.framework).or_default().push(Offer {
            id,
            node: offer.node,
            hostname,
            attributes,
            resources: offer.resources.clone(),
        });
        self.outstanding.insert(id, offer);
        id
    }

    /// Takes the offers queued for a framework, to send them.
    pub fn take_queued(&mut self, framework: u32) -> Vec<Offer> {
        self.queued.remove(&framework).unwrap_or_default()
    }

    /// Whether offers wait to be sent to `framework`.
    pub fn has_queued(&self, framework: u32) -> bool {
        self.queued.get(&framework).is_some_and(|q| !q.is_empty())
    }

    /// Whether `framework` holds offers (sent or queued) it has not answered.
    pub fn holds(&self, framework: u32) -> bool {
        self.held.contains_key(&framework)
    }

    fn unhold(&mut self, offer: &Outstanding) {
        if let Some(held) = self.held.get_mut(&offer.framework) {
            held.0 -= 1;
            held.1.remove(&offer.resources);
            if held.0 == 0 {
                self.held.remove(&offer.framework);
            }
        }
    }

    /// Answers (removes) an offer.
    pub fn answer(&mut self, id: u64) -> Option<Outstanding> {
        let offer = self.outstanding.remove(&id)?;
        self.unhold(&offer);
        Some(offer)
    }

    /// Removes every offer matching `which` (an expired one, one on a node gone, a removed framework's),
    /// queued ones included, and returns them.
    pub fn rescind(&mut self, mut which: impl FnMut(u64, &Outstanding) -> bool) -> Vec<(u64, Outstanding)> {
        let ids: Vec<u64> =
            self.outstanding.iter().filter(|(id, o)| which(**id, o)).map(|(id, _)| *id).collect();
        let mut gone = Vec::with_capacity(ids.len());
        for id in ids {
            let offer = self.outstanding.remove(&id).expect("listed");
            self.unhold(&offer);
            if let Some(queue) = self.queued.get_mut(&offer.framework) {
                queue.retain(|o| o.id != id);
            }
            gone.push((id, offer));
        }
        gone
    }

    /// Resources `framework` has on offer, for the allocator to count as its own.
    pub fn offered_to(&self, framework: u32) -> Option<&Resources> {
        self.held.get(&framework).map(|(_, r)| r)
    }

    /// Installs a filter until `expires_ms`, unless a longer one is in place; returns whether it changed.
    pub fn filter(&mut self, framework: u32, agent: &str, expires_ms: u64) -> bool {
        let key = (framework, agent.to_string());
        if self.filters.get(&key).is_some_and(|&e| e >= expires_ms) {
            return false;
        }
        self.filters.insert(key, expires_ms);
        true
    }

    /// A filter as restored from the store.
    pub fn restore_filter(&mut self, framework: u32, agent: String, expires_ms: u64) {
        self.filters.insert((framework, agent), expires_ms);
    }

    /// Removes the filters matching `which` and returns them.
    pub fn clear_filters(&mut self, mut which: impl FnMut(u32, &str, u64) -> bool) -> Vec<(u32, String)> {
        let gone: Vec<(u32, String)> =
            self.filters.iter().filter(|((f, a), e)| which(*f, a, **e)).map(|(k, _)| k.clone()).collect();
        for key in &gone {
            self.filters.remove(key);
        }
        gone
    }

    /// Active filters: (framework, agent id, expiry ms).
    pub fn filters(&self, now_ms: u64) -> impl Iterator<Item = (u32, &str, u64)> {
        self.filters.iter().filter(move |(_, e)| **e > now_ms).map(|((f, a), e)| (*f, a.as_str(), *e))
    }
}
