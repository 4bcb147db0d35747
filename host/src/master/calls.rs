//! Plugin calls, off the master thread.
//!
//! Every call into a plugin (an allocation, a framework's `demand`, `offers`, `status`, `tick` and `handle`,
//! and creating a framework's instance) runs on a small pool of worker threads. The master hands a
//! [`Job`] over with everything the call needs, the framework's instance included, and carries on serving
//! agents and the API; the [`Done`] comes back to it as a command, with the instance. So whatever a plugin
//! does within its deadline (loop, sleep, poll a clock), the master thread is never the one waiting.
//!
//! A framework's store writes are undone here when its call fails; when it succeeds the master takes them
//! into its batch as it applies the call's effects, so they are committed with those effects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::kv::FrameworkKv;
use crate::runtime::bindings::{
    Action, ApiReply, ClusterView, Decision, Grants, HttpRequest, Offer, TaskShape, TaskStatus,
};
use crate::runtime::{CallError, EventsWatched, FrameworkInstance, KvBackend, Plugin, Version};

/// What to call on a framework's instance.
pub enum Op {
    Demand,
    Offers(Vec<Offer>),
    Status(Vec<TaskStatus>),
    Tick(u64),
    /// A request to its HTTP API, and whether the caller presented the operator token: an anonymous call
    /// may read, never change anything (its store writes and actions are dropped).
    Http(HttpRequest, bool),
}

/// A call to run on a worker.
pub enum Job {
    /// A call on a framework's instance.
    Framework { id: u32, instance: Box<FrameworkInstance>, kv: Arc<FrameworkKv>, op: Op },
    /// Creating a framework's instance (its `init`).
    Instantiate { id: u32, plugin: Arc<Plugin>, config: String, kv: Arc<FrameworkKv>, events: EventsWatched },
    /// One allocation, on the allocator version active when the cycle began.
    Allocate { version: Arc<Version>, view: ClusterView, revisions: Vec<u64>, cycle: u64 },
}

/// What a framework's call answered.
pub enum Answer {
    Demand(Vec<TaskShape>),
    Decisions(Vec<Decision>),
    Actions(Vec<Action>),
    Reply(ApiReply),
}

/// A finished call, back to the master (boxed in the master's command channel).
#[allow(clippy::large_enum_variant)]
pub enum Done {
    Framework {
        id: u32,
        instance: Box<FrameworkInstance>,
        result: Result<Answer, CallError>,
        /// The version that ran the call.
        version: Arc<Version>,
        /// The status updates of a `status` call, handed back (delivered if the call succeeded).
        updates: Vec<TaskStatus>,
    },
    Instantiated {
        id: u32,
        result: Result<Box<FrameworkInstance>, String>,
    },
    Allocated {
        version: Arc<Version>,
        view: ClusterView,
        revisions: Vec<u64>,
        result: Result<Grants, CallError>,
        took: Duration,
        cycle: u64,
    },
}

/// The worker pool. Dropping it lets the workers finish their jobs and stop.
pub struct Calls {
    jobs: Option<Sender<Job>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Calls {
    /// Starts `threads` workers, each handing what it finishes to `done`.
    pub fn start(threads: usize, done: Arc<dyn Fn(Done) + Send + Sync>) -> std::io::Result<Calls> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let (queue, done) = (queue.clone(), done.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("berth-plugin-{i}"))
                    .spawn(move || work(&queue, &*done))?,
            );
        }
        Ok(Calls { jobs: Some(jobs), workers })
    }

    /// Hands a call to a worker.
    pub fn run(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // Workers stop only when the pool is dropped.
            let _ = jobs.send(job);
        }
    }
}

impl Drop for Calls {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn work(queue: &Receiver<Job>, done: &(dyn Fn(Done) + Send + Sync)) {
    for job in queue {
        done(run(job));
    }
}

fn run(job: Job) -> Done {
    match job {
        Job::Framework { id, mut instance, kv, op } => {
            let _span = tracing::debug_span!("berth.plugin.call", framework = id).entered();
            kv.begin_call();
            let mut updates = Vec::new();
            let result = match op {
                Op::Demand => instance.demand().map(Answer::Demand),
                Op::Offers(offers) => instance.offers(&offers).map(Answer::Decisions),
                Op::Status(sent) => {
                    let result = instance.status(&sent).map(Answer::Actions);
                    updates = sent;
                    result
                }
                Op::Tick(now_ms) => instance.tick(now_ms).map(Answer::Actions),
                Op::Http(request, authenticated) => match instance.handle(&request) {
                    Ok(mut reply) if !authenticated && (kv.call_wrote() || !reply.actions.is_empty()) => {
                        tracing::warn!(target: "berth.master", framework = id, path = %request.path,
                            actions = reply.actions.len(), wrote = kv.call_wrote(),
                            "an anonymous request tried to change the framework; its writes and actions are dropped");
                        kv.rollback_call();
                        reply.actions.clear();
                        // The instance's memory may hold what was just dropped: a fresh one reloads the store.
                        instance.discard();
                        Ok(Answer::Reply(reply))
                    }
                    other => other.map(Answer::Reply),
                },
            };
            if result.is_err() {
                // Nothing a failed call did takes effect, its store writes included.
                kv.rollback_call();
            }
            let version = instance.running_version();
            Done::Framework { id, instance, result, version, updates }
        }
        Job::Instantiate { id, plugin, config, kv, events } => {
            let _span = tracing::debug_span!("berth.plugin.instantiate", framework = id).entered();
            kv.begin_call();
            let backend: Arc<dyn KvBackend> = kv.clone();
            let result = FrameworkInstance::new(plugin, config, Some(backend), Some(events))
                .map(Box::new)
                .map_err(|e| e.to_string());
            if result.is_err() {
                kv.rollback_call();
            }
            Done::Instantiated { id, result }
        }
        Job::Allocate { version, view, revisions, cycle } => {
            let _span =
                tracing::debug_span!("berth.plugin.allocate", plugin = %version.name, cycle).entered();
            let started = Instant::now();
            let result = version.allocate_revised(&view, Some(&revisions));
            Done::Allocated { version, view, revisions, result, took: started.elapsed(), cycle }
        }
    }
}
