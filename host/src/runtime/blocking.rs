//! WASI's waits, bounded by the call's deadline.
//!
//! Epoch interruption stops a plugin only while it runs its own code. A plugin can also wait inside the
//! host: `wasi:io/poll`'s `poll` and `pollable.block` park the calling thread until a pollable is ready,
//! and that is what Rust's `thread::sleep`, Python's `time.sleep` and C's `nanosleep` come down to (a
//! `wasi:clocks` timer, then `block`). Here those two functions are replaced by versions that wait at most
//! until the call's deadline and then end the call with [`BlockedPastDeadline`], which the runtime counts
//! as the deadline it is: a plugin that sleeps 60 s under a 1 s deadline is stopped after 1 s, exactly like
//! one that loops.
//!
//! Waiting is allowed up to the deadline (rather than refused outright) so a plugin that sleeps a few
//! milliseconds between retries still works. The other ways to wait in WASI cannot wait here: standard
//! input is closed, standard output and error never apply backpressure (`stdio.rs`), plugins get no files,
//! and sockets cannot connect or bind; so every wait goes through `poll` or `block`.

use std::time::{Duration, Instant};

use wasmtime::Result;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::sync::io::poll as sync_poll;
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;

use super::state::PluginState;

/// The error that ends a call which waited in the host until its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the plugin waited in a host call (a sleep or a poll) until its deadline")]
pub(crate) struct BlockedPastDeadline;

/// `wasi:io/poll` for one call: the plugin's resources and when its call must end.
pub(crate) struct BoundedIo<'a> {
    table: &'a mut ResourceTable,
    deadline: Instant,
}

struct Bounded;

impl HasData for Bounded {
    type Data<'a> = BoundedIo<'a>;
}

/// Replaces `wasi:io/poll` in `linker` (which already has WASI) with the deadline-bounded version.
pub(crate) fn shadow_poll(linker: &mut Linker<PluginState>) -> Result<()> {
    linker.allow_shadowing(true);
    sync_poll::add_to_linker::<PluginState, Bounded>(linker, |state| BoundedIo {
        deadline: state.deadline,
        table: state.table(),
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

impl BoundedIo<'_> {
    /// Runs a wait until it ends or the deadline comes, whichever is first.
    fn bounded<T>(&mut self, wait: impl AsyncFnOnce(&mut ResourceTable) -> Result<T>) -> Result<T> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let table = &mut *self.table;
        in_tokio(async move {
            match tokio::time::timeout(left.max(Duration::from_micros(1)), wait(table)).await {
                Ok(result) => result,
                Err(_) => Err(wasmtime::Error::new(BlockedPastDeadline)),
            }
        })
    }
}

impl sync_poll::Host for BoundedIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> Result<Vec<u32>> {
        self.bounded(async move |table| async_poll::Host::poll(table, pollables).await)
    }
}

impl sync_poll::HostPollable for BoundedIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> Result<bool> {
        // Does not wait: it asks whether the pollable is ready now.
        in_tokio(async { async_poll::HostPollable::ready(self.table, pollable).await })
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> Result<()> {
        self.bounded(async move |table| async_poll::HostPollable::block(table, pollable).await)
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> Result<()> {
        async_poll::HostPollable::drop(self.table, pollable)
    }
}
