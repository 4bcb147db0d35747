//! Builds the test guests in `tests/guests/` as WebAssembly components and writes their paths to
//! `$OUT_DIR/guests.rs` (one constant per guest), for the tests to load.

#[path = "../host/build/wasm_guests.rs"]
mod wasm_guests;

use wasm_guests::Guest;

const GUESTS: &[Guest] = &[
    Guest { package: "berth-test-looper", name: "looper", features: &[] },
    Guest { package: "berth-test-hog", name: "hog", features: &[] },
    Guest { package: "berth-test-trapper", name: "trapper", features: &[] },
    Guest { package: "berth-test-tagged", name: "tagged", features: &[] },
    Guest { package: "berth-test-sandbox-probe", name: "sandbox-probe", features: &[] },
    Guest { package: "berth-test-missing-export", name: "missing-export", features: &[] },
    Guest { package: "berth-test-old-delta", name: "old-delta", features: &[] },
    Guest { package: "berth-test-workers", name: "workers", features: &[] },
    Guest { package: "berth-test-rogue", name: "rogue", features: &[] },
    Guest { package: "berth-test-launcher", name: "launcher", features: &[] },
    Guest { package: "berth-test-hostile", name: "hostile", features: &[] },
    // The default framework rebuilt with a different build name, for hot-swap tests.
    Guest { package: "berth-plugin-marathon", name: "marathon-rebuilt", features: &["rebuilt"] },
];

fn main() {
    let paths = wasm_guests::build(GUESTS, &["tests/guests", "plugins/marathon"]);
    let mut source = String::new();
    for (guest, path) in GUESTS.iter().zip(paths) {
        let constant = guest.name.to_uppercase().replace('-', "_");
        source.push_str(&format!(
            "/// The `{}` test guest (`tests/guests/{}`).\npub const {constant}: &str = {:?};\n",
            guest.name,
            guest.name,
            path.display().to_string()
        ));
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, source).unwrap();
}
