//! Test guest: an allocator that allocates memory until something stops it. The host's memory cap must.

use berth_plugin_sdk::{Allocator, ClusterView, Grant, export_allocator};

struct Hog;

impl Allocator for Hog {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Hog)
    }

    fn allocate(&mut self, _view: &ClusterView) -> Vec<Grant> {
        let mut chunks = Vec::new();
        loop {
            let mut chunk = vec![1u8; 16 << 20];
            chunk[4096] = 2;
            chunks.push(std::hint::black_box(chunk));
        }
    }
}

export_allocator!(Hog);
