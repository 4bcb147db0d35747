//! Test guest: an allocator that never returns. The host must stop it at its deadline.
//!
//! Its config picks where it spins, so that each way the deadline is checked is tested:
//! - empty: `allocate` loops, reading and writing memory (`black_box`);
//! - `registers`: `allocate` loops without touching memory or calling anything, which only the check at
//!   the loop's head can stop;
//! - `calls`: `allocate` makes a tree of 2^64 calls with no loop at all, which only the check at each
//!   function's entry can stop;
//! - `loop-in-init`: `init` loops, so the plugin never finishes loading.

use berth_plugin_sdk::{Allocator, ClusterView, Grant, export_allocator};

enum Looper {
    Memory,
    Registers,
    Calls,
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

#[allow(clippy::empty_loop, reason = "the loop that touches nothing is the point")]
fn spin_in_registers() -> ! {
    loop {}
}

/// `2^depth` calls, none of them in a loop.
#[inline(never)]
fn call_tree(depth: u32) -> u64 {
    if depth == 0 {
        return 1;
    }
    std::hint::black_box(call_tree(depth - 1)) ^ std::hint::black_box(call_tree(depth - 1))
}

impl Allocator for Looper {
    fn init(config: &str) -> Result<Self, String> {
        match config {
            "" => Ok(Looper::Memory),
            "registers" => Ok(Looper::Registers),
            "calls" => Ok(Looper::Calls),
            "loop-in-init" => spin(),
            other => Err(format!("unknown looper config {other:?}")),
        }
    }

    fn allocate(&mut self, _view: &ClusterView) -> Vec<Grant> {
        match self {
            Looper::Memory => spin(),
            Looper::Registers => spin_in_registers(),
            Looper::Calls => {
                let n = call_tree(64);
                panic!("a tree of 2^64 calls returned {n}")
            }
        }
    }
}

export_allocator!(Looper);
