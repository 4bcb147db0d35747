//! Test guest: an allocator that never returns (from `allocate`, or from `init` when its config is
//! `loop-in-init`). The host must stop it at its deadline.

use berth_plugin_sdk::{Allocator, ClusterView, Grant, export_allocator};

struct Looper;

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

impl Allocator for Looper {
    fn init(config: &str) -> Result<Self, String> {
        if config == "loop-in-init" {
            spin();
        }
        Ok(Looper)
    }

    fn allocate(&mut self, _view: &ClusterView) -> Vec<Grant> {
        spin()
    }
}

export_allocator!(Looper);
