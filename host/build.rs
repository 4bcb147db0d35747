//! Builds the bundled plugins (`plugins/proportional`, `plugins/marathon`) from source as WebAssembly components, so that
//! `berth` embeds them and `berth serve` runs with no files beside it.

#[path = "build/wasm_guests.rs"]
mod wasm_guests;

use wasm_guests::Guest;

fn main() {
    wasm_guests::build(
        &[
            Guest { package: "berth-plugin-proportional", name: "proportional", features: &[] },
            Guest { package: "berth-plugin-marathon", name: "marathon", features: &[] },
        ],
        &["plugins/proportional", "plugins/marathon"],
    );
}
