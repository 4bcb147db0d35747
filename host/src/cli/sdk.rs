//! The Rust plugin SDK as `berth` carries it: the sources of `plugin-sdk` and of the part of `proto` it
//! uses (the WIT package and the resource arithmetic), compiled into the binary, so that `berth plugin new`
//! writes them beside a new project and the project builds on any machine that has this `berth`, without
//! the source tree it was built from. The copy is of exactly this build, so a plugin is built against the
//! ABI of the daemon that made its project.
//!
//! Manifests are written here rather than copied: the tree's use the workspace's inheritance. A test
//! below keeps the list of files and the dependency versions in step with the tree.

use std::path::Path;

use anyhow::Context as _;

macro_rules! tree_file {
    ($path:literal) => {
        ($path, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../", $path)))
    };
}

/// Source files of the SDK and of `proto`'s plugin-side part, by their path in berth's tree.
const SOURCES: &[(&str, &str)] = &[
    tree_file!("plugin-sdk/src/lib.rs"),
    tree_file!("plugin-sdk/src/log.rs"),
    tree_file!("plugin-sdk/src/resources.rs"),
    tree_file!("plugin-sdk/src/store.rs"),
    tree_file!("plugin-sdk/src/view.rs"),
    tree_file!("proto/src/lib.rs"),
    tree_file!("proto/src/ports.rs"),
    tree_file!("proto/src/scalars.rs"),
    tree_file!("proto/wit/types.wit"),
    tree_file!("proto/wit/allocator.wit"),
    tree_file!("proto/wit/framework.wit"),
];

/// `wit-bindgen` as the workspace declares it (checked against the root `Cargo.toml` by a test).
const WIT_BINDGEN: &str =
    r#"{ version = "0.61", default-features = false, features = ["macros", "realloc"] }"#;

/// The folder, inside a project, that holds the SDK.
pub const DIR: &str = "berth-sdk";

/// Where a project's `Cargo.toml` finds the SDK.
pub const SDK_PATH: &str = "berth-sdk/plugin-sdk";

fn manifests() -> [(String, String); 2] {
    let version = env!("CARGO_PKG_VERSION");
    let sdk = format!(
        "# berth's plugin SDK, as berth {version} carries it (written by `berth plugin new`).\n\
         [package]\nname = \"berth-plugin-sdk\"\nversion = \"{version}\"\nedition = \"2024\"\nlicense = \"Apache-2.0\"\n\
         publish = false\n\n[dependencies]\nberth-proto = {{ path = \"../proto\", default-features = false }}\n\
         wit-bindgen = {WIT_BINDGEN}\n"
    );
    let proto = format!(
        "# berth's contracts, the part plugins use: the WIT package and the resource arithmetic (written by\n\
         # `berth plugin new`; the gRPC API is left out).\n\
         [package]\nname = \"berth-proto\"\nversion = \"{version}\"\nedition = \"2024\"\nlicense = \"Apache-2.0\"\n\
         publish = false\n\n[features]\ndefault = []\n\n[lints.rust]\n\
         unexpected_cfgs = {{ level = \"warn\", check-cfg = ['cfg(feature, values(\"grpc\"))'] }}\n"
    );
    [("plugin-sdk/Cargo.toml".to_string(), sdk), ("proto/Cargo.toml".to_string(), proto)]
}

/// Writes the SDK into `project/berth-sdk`.
pub fn write(project: &Path) -> anyhow::Result<()> {
    let root = project.join(DIR);
    let mut files: Vec<(String, String)> =
        SOURCES.iter().map(|(path, text)| (path.to_string(), text.to_string())).collect();
    files.extend(manifests());
    files.push((
        "README.md".into(),
        format!(
            "berth's Rust plugin SDK as berth {} carries it, written here by `berth plugin new` so that this \
             project builds without berth's source tree. Replace this folder with the output of a newer \
             `berth plugin new` to build against a newer ABI.\n",
            env!("CARGO_PKG_VERSION")
        ),
    ));
    for (path, text) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
    }

    /// Every file of the SDK's and proto's `src/` and of `proto/wit` is carried: a module added to the SDK
    /// must be added here, or scaffolds would not build.
    #[test]
    fn every_source_file_of_the_sdk_is_carried() {
        let mut in_tree = Vec::new();
        for dir in ["plugin-sdk/src", "proto/src", "proto/wit"] {
            for entry in std::fs::read_dir(tree().join(dir)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                in_tree.push(format!("{dir}/{name}"));
            }
        }
        in_tree.sort();
        let mut carried: Vec<String> = SOURCES.iter().map(|(p, _)| p.to_string()).collect();
        carried.sort();
        assert_eq!(carried, in_tree);
    }

    #[test]
    fn the_sdks_dependencies_are_the_workspaces() {
        let root = std::fs::read_to_string(tree().join("Cargo.toml")).unwrap();
        let declared = root.lines().find(|l| l.starts_with("wit-bindgen = ")).unwrap();
        assert_eq!(declared, format!("wit-bindgen = {WIT_BINDGEN}"));
        let sdk = std::fs::read_to_string(tree().join("plugin-sdk/Cargo.toml")).unwrap();
        let deps: Vec<&str> = sdk
            .split("[dependencies]")
            .nth(1)
            .unwrap()
            .lines()
            .take_while(|l| !l.starts_with('['))
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(deps, ["berth-proto.workspace = true", "wit-bindgen.workspace = true"]);
        let proto = std::fs::read_to_string(tree().join("proto/Cargo.toml")).unwrap();
        assert!(proto.contains("grpc = [\"dep:prost\", \"dep:tonic\", \"dep:tonic-prost\"]"));
    }
}
