//! Frameworks: their records, their plugin instances, what waits to be delivered to them, and what they
//! hold.
//!
//! A framework's plugin instance is either here, idle ([`Slot::Idle`]), or out on a worker thread running
//! one call ([`Slot::Busy`]): calls to one framework are one at a time, in the order `dispatch.rs` picks,
//! and never on the master thread. [`Frameworks`] keeps a framework's `allocated` and `active` equal to the
//! sum and count of its non-terminal tasks; only [`Frameworks::hold`] and [`Frameworks::release`] change
//! them.
//!
//! It does not call plugins (`calls.rs` does) or decide what to call next (`dispatch.rs`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::kv::FrameworkKv;
use super::types::ApiError;
use crate::model::ResourcesExt;
use crate::runtime::FrameworkInstance;
use crate::runtime::bindings::{HttpRequest, HttpResponse, Resources, TaskShape, TaskStatus};
use crate::store::FrameworkRecord;

/// Where a framework's plugin instance is.
pub enum Slot {
    /// Here, ready for a call.
    Idle(Box<FrameworkInstance>),
    /// On a worker thread, running a call or being created.
    Busy,
    /// None: creating it failed (`error` says why); tried again once `retry_at` passes.
    Down,
}

/// A request to a framework's HTTP API, waiting for its turn, and where its answer goes.
pub struct HttpCall {
    pub request: HttpRequest,
    /// The caller presented the operator token.
    pub authenticated: bool,
    pub reply: oneshot::Sender<Result<HttpResponse, ApiError>>,
}

/// What the master keeps of a call in flight, to finish it when the call comes back.
pub enum InFlight {
    /// `init` of a new instance.
    Instantiate,
    Demand,
    /// The offers sent, by id.
    Offers(Vec<u64>),
    /// Status updates (they travel with the call and come back with it).
    Status,
    Tick,
    /// Where the response goes.
    Http(oneshot::Sender<Result<HttpResponse, ApiError>>),
}

/// A framework instance.
pub struct Framework {
    pub id: u32,
    pub name: String,
    pub record: FrameworkRecord,
    pub slot: Slot,
    /// What the master keeps of the call out on a worker (`Some` exactly while the slot is busy).
    pub in_flight: Option<InFlight>,
    pub kv: Arc<FrameworkKv>,
    /// Resources of its non-terminal tasks.
    allocated: Resources,
    /// How many of its tasks are not terminal.
    active: u32,
    /// Status updates not yet delivered, in the order they happened.
    pub pending: Vec<TaskStatus>,
    /// Requests to its HTTP API waiting for the instance.
    pub http: VecDeque<HttpCall>,
    /// What it said it wants the last time it was asked (`demand`).
    pub demand: Vec<TaskShape>,
    /// The offer cycle asks for fresh demand.
    pub wants_demand: bool,
    /// Its last demand was cut to the most one cycle launches, so more cycles are wanted while it
    /// launches.
    pub demand_capped: bool,
    pub last_tick: Instant,
    /// After a failed call, no delivery or tick before this instant.
    pub retry_at: Option<Instant>,
    pub consecutive_failures: u32,
    /// Being removed: no offers or calls; forgotten once its tasks are gone.
    pub removing: bool,
    /// Why the plugin instance is not running, for listings.
    pub error: Option<String>,
    /// Being added: the operator's request waits for the instance's `init`.
    pub adding: Option<oneshot::Sender<Result<u32, ApiError>>>,
    /// The plugin version the instance ran last.
    pub version: u32,
}

impl Framework {
    /// A framework whose instance is yet to be created.
    pub fn new(name: String, record: FrameworkRecord, kv: Arc<FrameworkKv>) -> Framework {
        Framework {
            id: record.id,
            name,
            record,
            slot: Slot::Down,
            in_flight: None,
            kv,
            allocated: Resources::zero(),
            active: 0,
            pending: Vec::new(),
            http: VecDeque::new(),
            demand: Vec::new(),
            wants_demand: false,
            demand_capped: false,
            last_tick: Instant::now(),
            retry_at: None,
            consecutive_failures: 0,
            removing: false,
            error: Some("starting".into()),
            adding: None,
            version: 0,
        }
    }

    pub fn allocated(&self) -> &Resources {
        &self.allocated
    }

    pub fn active(&self) -> u32 {
        self.active
    }

    /// Whether it runs: it has an instance, here or out on a call.
    pub fn running(&self) -> bool {
        !matches!(self.slot, Slot::Down) && self.error.is_none()
    }

    /// Whether it takes part in offer cycles now: it runs, is not being removed and is not backing off
    /// (it may be in a call; its offers wait for it).
    pub fn participates(&self, now: Instant) -> bool {
        !self.removing && self.running() && self.retry_at.is_none_or(|at| now >= at)
    }

    /// Takes the instance out for a call on a worker; the slot is busy until [`Framework::back`].
    pub fn take_instance(&mut self, in_flight: InFlight) -> Option<Box<FrameworkInstance>> {
        match std::mem::replace(&mut self.slot, Slot::Busy) {
            Slot::Idle(instance) => {
                self.in_flight = Some(in_flight);
                Some(instance)
            }
            other => {
                self.slot = other;
                None
            }
        }
    }

    /// The instance came back from a worker (`None`: creating it failed), with what was kept of its call.
    pub fn back(&mut self, instance: Option<Box<FrameworkInstance>>) -> Option<InFlight> {
        self.slot = match instance {
            Some(instance) => {
                self.version = instance.version();
                Slot::Idle(instance)
            }
            None => Slot::Down,
        };
        self.in_flight.take()
    }
}

/// Every framework, by compact id and by name.
#[derive(Default)]
pub struct Frameworks {
    by_id: BTreeMap<u32, Framework>,
    names: HashMap<String, u32>,
    next_id: u32,
}

impl Frameworks {
    /// The id the next framework gets.
    pub fn next_id(&self) -> u32 {
        self.next_id.max(1)
    }

    pub fn insert(&mut self, framework: Framework) {
        self.next_id = self.next_id.max(framework.id + 1);
        self.names.insert(framework.name.clone(), framework.id);
        self.by_id.insert(framework.id, framework);
    }

    /// Forgets a framework.
    pub fn remove(&mut self, id: u32) -> Option<Framework> {
        let framework = self.by_id.remove(&id)?;
        self.names.remove(&framework.name);
        Some(framework)
    }

    pub fn get(&self, id: u32) -> Option<&Framework> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Framework> {
        self.by_id.get_mut(&id)
    }

    /// A framework's id by name, removed ones included.
    pub fn id_of(&self, name: &str) -> Option<u32> {
        self.names.get(name).copied()
    }

    /// A framework that is not being removed, by name.
    pub fn find(&self, name: &str) -> Result<u32, ApiError> {
        self.id_of(name)
            .filter(|id| !self.by_id[id].removing)
            .ok_or_else(|| ApiError::NotFound(format!("no framework named `{name}`")))
    }

    /// A framework's name (empty if unknown).
    pub fn name(&self, id: u32) -> &str {
        self.by_id.get(&id).map(|f| f.name.as_str()).unwrap_or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Framework> {
        self.by_id.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Framework> {
        self.by_id.values_mut()
    }

    pub fn ids(&self) -> Vec<u32> {
        self.by_id.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// A task of framework `id` now holds `resources`.
    pub fn hold(&mut self, id: u32, resources: &Resources) {
        if let Some(f) = self.by_id.get_mut(&id) {
            f.allocated.add(resources);
            f.active += 1;
        }
    }

    /// A task of framework `id` ended.
    pub fn release(&mut self, id: u32, resources: &Resources) {
        if let Some(f) = self.by_id.get_mut(&id) {
            f.allocated.remove(resources);
            f.active = f.active.saturating_sub(1);
        }
    }
}
