//! Builds the test guests in `tests/guests/` as WebAssembly components and writes their paths to
//! `$OUT_DIR/guests.rs` (one constant per guest), for the tests to load.

#[path = "../host/build/wasm_guests.rs"]
mod wasm_guests;

use wasm_guests::Guest;

const GUESTS: &[Guest] = &[
    Guest { package: "berth-test-looper", name: "looper" },
    Guest { package: "berth-test-hog", name: "hog" },
    Guest { package: "berth-test-trapper", name: "trapper" },
    Guest { package: "berth-test-tagged", name: "tagged" },
    Guest { package: "berth-test-sandbox-probe", name: "sandbox-probe" },
    Guest { package: "berth-test-missing-export", name: "missing-export" },
    Guest { package: "berth-test-workers", name: "workers" },
    Guest { package: "berth-test-rogue", name: "rogue" },
    Guest { package: "berth-test-launcher", name: "launcher" },
];

fn main() {
    let paths = wasm_guests::build(GUESTS, &["tests/guests"]);
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
