//! Test guest: an allocator whose `allocate-delta` has other types than this berth's (as a plugin built
//! against another version of the ABI would). The host must load it as a plain allocator and call
//! `allocate` with whole views. `allocate` grants each framework 100 milli-cpus and 32 MiB on the first
//! node; `allocate-delta` must never be called.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../../proto/wit",
    inline: "
        package test:old-delta;

        world old-delta {
            include berth:plugin/allocator@0.1.0;
            export allocate-delta: func(delta: list<u32>) -> option<list<u32>>;
        }
    ",
    world: "test:old-delta/old-delta",
    generate_all,
});

use berth::plugin::types::Resources;

struct OldDelta;

impl Guest for OldDelta {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn allocate(view: ClusterView) -> Vec<Grant> {
        let Some(node) = view.nodes.first() else {
            return Vec::new();
        };
        view.frameworks
            .iter()
            .map(|f| Grant {
                framework: f.id,
                node: node.id,
                resources: Resources {
                    milli_cpus: 100,
                    mem_mib: 32,
                    disk_mib: 0,
                    gpus: 0,
                    ports: Vec::new(),
                },
            })
            .collect()
    }

    fn allocate_delta(_delta: Vec<u32>) -> Option<Vec<u32>> {
        unreachable!("the host must not call an `allocate-delta` of other types")
    }
}

export!(OldDelta);
