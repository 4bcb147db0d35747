//! `proportional`, berth's default allocator: weighted dominant-resource fairness, filled progressively
//! from the demand frameworks state. The rules are in [`policy`].
//!
//! Built as a WebAssembly component (the `allocator` world) that `berth serve` embeds and loads at
//! start. The policy is a plain function so the same code also compiles natively, which is how the
//! benchmarks measure what the sandbox costs.
//!
//! Configuration (JSON, all optional): `{"min_allocatable": {"milli_cpus": 10, "mem_mib": 32}}`.

#![forbid(unsafe_code)]

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod component {
    use berth_plugin_sdk::{Allocator, ClusterView, Grant, GrantColumns, export_allocator};

    use crate::policy::{self, Config};

    struct Proportional {
        config: Config,
    }

    impl Allocator for Proportional {
        fn init(config: &str) -> Result<Self, String> {
            Ok(Proportional { config: Config::parse(config)? })
        }

        fn allocate(&mut self, view: &ClusterView) -> Vec<Grant> {
            policy::allocate(view, &self.config)
        }

        fn allocate_columns(&mut self, view: &ClusterView) -> GrantColumns {
            policy::allocate_columns(view, &self.config)
        }
    }

    export_allocator!(Proportional);
}
