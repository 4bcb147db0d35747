//! Real `berth` processes for end-to-end tests: a master (`berth serve`) and agents (`berth agent`), each
//! its own process, with helpers to drive them through the CLI and the HTTP API, kill them, and wait for
//! conditions. Children are killed when the test ends; their logs are printed if it failed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `berth` binary: `$BERTH_BIN`, else the one cargo built next to this test (`cargo test
/// --workspace` builds it because `berth-host` has integration tests).
pub fn berth_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BERTH_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").join("berth");
    assert!(
        bin.exists(),
        "the berth binary is not at {}: run the tests with `cargo test --workspace` (which builds it), or set \
         BERTH_BIN",
        bin.display()
    );
    bin
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A range of 20 host ports no other cluster of this test process offers, as `begin-end`: agents on one
/// machine share its ports, and tests run side by side.
///
/// The ranges lie in 10000-29999, below Linux's ephemeral ports (32768-60999 by default), from which
/// [`free_port`] and every outgoing connection take theirs. A range inside them can offer a port the
/// machine has already handed out: a CI run saw Docker refuse a task's port 33080 with "address already
/// in use".
pub fn port_range() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let begin = 10_000 + (n % 1_000) * 20;
    format!("{begin}-{}", begin + 19)
}

/// One artifact cache for every master the tests start, so each plugin is compiled once per run rather
/// than once per test (artifacts are keyed by digest and engine settings, so sharing is safe).
pub fn shared_artifact_cache() -> String {
    std::env::temp_dir().join("berth-test-artifact-cache").display().to_string()
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` after `timeout`. Waiting for a
/// distributed system to converge, not a speed check: timeouts are generous.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `berth serve` process.
pub struct Master {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
    /// `BERTH_LOG` for the process.
    log_filter: String,
    /// Holds the temporary directory for the test's life.
    _dir: tempfile::TempDir,
    logs: Vec<PathBuf>,
    /// For a master serving TLS: how the test's clients verify it.
    tls: Option<Tls>,
}

/// The CA a TLS master's certificate chains to, and a client certificate and key the test presents.
struct Tls {
    ca: PathBuf,
    client: Option<(PathBuf, PathBuf)>,
}

impl Master {
    /// Starts a master on a free port with a fresh data directory and `args` (e.g. `--no-local-agent`); its
    /// local agent offers a port range of its own and it logs at debug level.
    pub fn start(args: &[&str]) -> Master {
        let args: Vec<String> =
            args.iter().map(|s| s.to_string()).chain(["--agent-ports".to_string(), port_range()]).collect();
        Master::launch(args, "info,berth=debug")
    }

    /// Starts a master for a benchmark: exactly `args`, and warnings only in its log, so logging does not
    /// weigh on what is measured.
    pub fn start_for_benchmark(args: &[&str]) -> Master {
        Master::launch(args.iter().map(|s| s.to_string()).collect(), "warn")
    }

    /// Like [`Master::start_for_benchmark`], calling `prepare` with the data directory first.
    pub fn start_for_benchmark_prepared(args: &[&str], prepare: impl FnOnce(&Path)) -> Master {
        Master::launch_prepared(args.iter().map(|s| s.to_string()).collect(), "warn", None, prepare)
    }

    /// Starts a master serving TLS (`args` name its certificate and key); clients verify it with `ca`.
    /// The test's own requests present `client` (certificate, key) when given.
    pub fn start_tls(args: &[&str], ca: &Path, client: Option<(&Path, &Path)>) -> Master {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let tls =
            Tls { ca: ca.to_path_buf(), client: client.map(|(c, k)| (c.to_path_buf(), k.to_path_buf())) };
        Master::launch_with(args, "info,berth=debug", Some(tls))
    }

    fn launch(args: Vec<String>, log_filter: &str) -> Master {
        Master::launch_with(args, log_filter, None)
    }

    /// Like [`Master::start`], calling `prepare` with the data directory before the master starts (to
    /// mount a small filesystem there, say).
    pub fn start_prepared(args: &[&str], prepare: impl FnOnce(&Path)) -> Master {
        let args: Vec<String> =
            args.iter().map(|s| s.to_string()).chain(["--agent-ports".to_string(), port_range()]).collect();
        Master::launch_prepared(args, "info,berth=debug", None, prepare)
    }

    fn launch_with(args: Vec<String>, log_filter: &str, tls: Option<Tls>) -> Master {
        Master::launch_prepared(args, log_filter, tls, |_| {})
    }

    fn launch_prepared(
        args: Vec<String>,
        log_filter: &str,
        tls: Option<Tls>,
        prepare: impl FnOnce(&Path),
    ) -> Master {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut master = Master {
            child: None,
            port,
            url: format!("{}://127.0.0.1:{port}", if tls.is_some() { "https" } else { "http" }),
            data_dir: dir.path().join("data"),
            args,
            log_filter: log_filter.to_string(),
            _dir: dir,
            logs: Vec::new(),
            tls,
        };
        prepare(&master.data_dir);
        master.spawn();
        master
    }

    /// The memory of the running `berth serve`: its resident set now and its peak, in MiB (`VmRSS`,
    /// `VmHWM` of `/proc/<pid>/status`).
    pub fn memory_mib(&self) -> (u64, u64) {
        let pid = self.pid().expect("the master runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| -> u64 {
            let line =
                status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {status}"));
            line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The process id of the running `berth serve`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The tasks the agents say they run, over all nodes (`/v1/nodes`).
    pub fn agents_running_tasks(&self) -> u64 {
        let nodes = self.get("/v1/nodes");
        nodes.as_array().unwrap().iter().map(|n| n["agent_running_tasks"].as_u64().unwrap()).sum()
    }

    /// Sends a signal (`-STOP`, `-CONT`) to the running `berth serve`.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the master runs").to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Waits up to `timeout` for `berth serve` to exit on its own; how it exited, or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        loop {
            let status = self.child.as_mut()?.try_wait().unwrap();
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn(&mut self) {
        let log = self._dir.path().join(format!("master-{}.log", self.logs.len()));
        let child = Command::new(berth_bin())
            .args(["serve", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.args)
            .env("BERTH_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting berth serve");
        self.logs.push(log);
        self.child = Some(child);
        let url = format!("{}/health", self.url);
        eventually("the master to answer /health", Duration::from_secs(60), || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("berth serve exited with {status}:\n{}", self.logs());
            }
            self.http().get(&url).call().ok().filter(|r| r.status() == 200)
        });
    }

    /// An HTTP client for this master: it verifies a TLS master with its CA.
    pub fn http(&self) -> ureq::Agent {
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if let Some(tls) = &self.tls {
            let pem = |path: &Path| std::fs::read(path).unwrap();
            let certs = |path: &Path| -> Vec<_> {
                ureq::tls::parse_pem(&pem(path))
                    .filter_map(|item| match item.unwrap() {
                        ureq::tls::PemItem::Certificate(c) => Some(c),
                        _ => None,
                    })
                    .collect()
            };
            let mut builder = ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs(&tls.ca)));
            if let Some((cert, key)) = &tls.client {
                let key = ureq::tls::PrivateKey::from_pem(&pem(key)).unwrap();
                builder = builder.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&certs(cert), key)));
            }
            config = config.tls_config(builder.build());
        }
        config.build().new_agent()
    }

    /// The operator token (generated by the master on first start).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("token")).unwrap().trim().to_string()
    }

    /// The id of the master's local agent (`berth serve` keeps it in the data directory).
    pub fn local_agent_id(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir.join("agent-id")).ok().map(|s| s.trim().to_string())
    }

    /// The agent token.
    pub fn agent_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("agent-token")).unwrap().trim().to_string()
    }

    /// Kills the master with SIGKILL (no chance to clean up).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the master again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs a `berth` client command against this master with the operator token.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_token(args, Some(&self.token()))
    }

    /// Runs a `berth` client command with the given token (or none).
    pub fn cli_with_token(&self, args: &[&str], token: Option<&str>) -> Output {
        let mut command = Command::new(berth_bin());
        command
            .args(args)
            .env("BERTH_MASTER", &self.url)
            .env_remove("BERTH_TOKEN")
            .env_remove("BERTH_CA")
            .env("HOME", self._dir.path());
        if let Some(token) = token {
            command.env("BERTH_TOKEN", token);
        }
        if let Some(tls) = &self.tls {
            command.env("BERTH_CA", &tls.ca);
        }
        command.output().expect("running the berth CLI")
    }

    /// Runs a client command that must succeed and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`berth {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a client command with `--json` and parses its output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// GETs a path of the HTTP API as JSON.
    pub fn get(&self, path: &str) -> Value {
        self.http().get(&format!("{}{path}", self.url)).call().unwrap().body_mut().read_json().unwrap()
    }

    /// Sends a request with the operator token and returns the status and body.
    pub fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.token());
        let response = match method {
            "GET" => self
                .http()
                .get(&url)
                .header("authorization", &auth)
                .config()
                .http_status_as_error(false)
                .build()
                .call(),
            "DELETE" => self
                .http()
                .delete(&url)
                .header("authorization", &auth)
                .config()
                .http_status_as_error(false)
                .build()
                .call(),
            "PUT" => self
                .http()
                .put(&url)
                .header("authorization", &auth)
                .config()
                .http_status_as_error(false)
                .build()
                .send(body),
            "POST" => self
                .http()
                .post(&url)
                .header("authorization", &auth)
                .config()
                .http_status_as_error(false)
                .build()
                .send(body),
            other => panic!("unsupported method {other}"),
        }
        .unwrap();
        let status = response.status().as_u16();
        (status, response.into_body().read_to_string().unwrap())
    }

    /// The contents of every log this master wrote.
    pub fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }

    /// The tasks of a framework as the master lists them (`berth task ls --json`).
    pub fn tasks(&self, framework: &str) -> Vec<Value> {
        self.json(&["task", "ls", "--framework", framework]).as_array().unwrap().clone()
    }

    /// The number of the latest allocation cycle (0 before the first).
    pub fn cycle_number(&self) -> u64 {
        let cycles = self.get("/v1/cycles");
        cycles.as_array().and_then(|c| c.last()).and_then(|c| c["number"].as_u64()).unwrap_or(0)
    }

    /// Waits until `n` more allocation cycles have run: time for whatever should not happen to show.
    pub fn wait_cycles(&self, n: u64) {
        let from = self.cycle_number();
        eventually(&format!("{n} more allocation cycles"), Duration::from_secs(60), || {
            (self.cycle_number() >= from + n).then_some(())
        });
    }

    /// Loads a plugin from a file (`berth plugin load`).
    pub fn load_plugin(&self, kind: &str, name: &str, path: &str) {
        self.ok(&["plugin", "load", "--kind", kind, name, path]);
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.kill9();
        if let Some(agent) = self.local_agent_id() {
            crate::docker::remove_agent_containers(&agent);
        }
        if std::thread::panicking() {
            eprintln!("==== master logs ====\n{}", self.logs());
        }
    }
}

/// A `berth agent` process.
pub struct Agent {
    child: Option<Child>,
    pub name: String,
    work_dir: PathBuf,
    master_url: String,
    token: String,
    args: Vec<String>,
    log: PathBuf,
}

impl Agent {
    /// Starts an agent named `name` (its hostname) that joins `master`, with extra `args` (resources,
    /// `--simulate`, attributes…).
    pub fn start(master: &Master, name: &str, args: &[&str]) -> Agent {
        Agent::start_with_token(master, name, &master.agent_token(), args)
    }

    /// Like [`Agent::start`], presenting `token` instead of the master's agent token.
    pub fn start_with_token(master: &Master, name: &str, token: &str, args: &[&str]) -> Agent {
        Agent::start_seeded(master, name, token, &[], args)
    }

    /// Starts an agent that knows every one of `masters` (`--master` with their addresses, comma-separated),
    /// as agents of several masters on etcd are run. Its work directory is under the first master's.
    pub fn start_on_all(masters: &[Master], name: &str, args: &[&str]) -> Agent {
        let work_dir = masters[0]._dir.path().join(format!("agent-{name}"));
        std::fs::create_dir_all(&work_dir).unwrap();
        let mut agent = Agent {
            child: None,
            name: name.into(),
            log: work_dir.join("agent.log"),
            work_dir,
            master_url: masters.iter().map(|m| m.url.as_str()).collect::<Vec<_>>().join(","),
            token: masters[0].agent_token(),
            args: args.iter().map(|s| s.to_string()).chain(["--ports".to_string(), port_range()]).collect(),
        };
        agent.spawn();
        agent
    }

    /// Like [`Agent::start_with_token`], with `files` (name, contents) written into its work directory
    /// first: an `agent-id` or `agent-credential` taken from another agent, say.
    pub fn start_seeded(
        master: &Master,
        name: &str,
        token: &str,
        files: &[(&str, &str)],
        args: &[&str],
    ) -> Agent {
        let work_dir = master._dir.path().join(format!("agent-{name}"));
        std::fs::create_dir_all(&work_dir).unwrap();
        for (file, contents) in files {
            std::fs::write(work_dir.join(file), contents).unwrap();
        }
        let mut agent = Agent {
            child: None,
            name: name.into(),
            log: work_dir.join("agent.log"),
            work_dir,
            master_url: master.url.clone(),
            token: token.to_string(),
            args: args.iter().map(|s| s.to_string()).chain(["--ports".to_string(), port_range()]).collect(),
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(berth_bin())
            .args([
                "agent",
                "--master",
                &self.master_url,
                "--token",
                &self.token,
                "--hostname",
                &self.name,
                "--work-dir",
            ])
            .arg(&self.work_dir)
            .args(&self.args)
            .env("BERTH_LOG", "info,berth=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting berth agent");
        self.child = Some(child);
    }

    /// Kills the agent with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the agent again with the same work directory (so the same agent id).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Its log.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Freezes the agent (SIGSTOP): its connection stays open, but it reads and answers nothing.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen agent run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the agent runs").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("running kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// A file of its work directory (`agent-id`, `agent-credential`).
    pub fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.work_dir.join(name)).ok()
    }

    /// Its agent id (kept in its work directory).
    pub fn agent_id(&self) -> Option<String> {
        std::fs::read_to_string(self.work_dir.join("agent-id")).ok().map(|s| s.trim().to_string())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        if let Some(agent) = self.agent_id()
            && !self.args.iter().any(|a| a == "--simulate")
        {
            crate::docker::remove_agent_containers(&agent);
        }
        if std::thread::panicking() {
            eprintln!("==== agent {} logs ====\n{}", self.name, self.logs());
        }
    }
}
