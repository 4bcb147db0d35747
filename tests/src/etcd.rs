//! A real etcd cluster on loopback for the tests of several masters, and masters that share it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{Master, eventually, free_port};
use crate::provision;

/// One etcd member.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A cluster of etcd members, each a process the test can kill and start again.
pub struct EtcdCluster {
    members: Vec<Member>,
    token: String,
    /// With TLS on the client port: the CA, the server certificate and its key; clients must present a
    /// certificate of the same CA.
    tls: Option<[PathBuf; 3]>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader. Transactions may hold 10,000 writes
    /// (as the README's example configuration says), so every master batch is one transaction.
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster::launch(n, None)
    }

    /// Like [`EtcdCluster::start`], serving clients over TLS only with `pki`'s server certificate, and
    /// requiring client certificates of its CA.
    pub fn start_tls(n: usize, pki: &crate::pki::Pki) -> EtcdCluster {
        EtcdCluster::launch(n, Some([pki.path("ca.pem"), pki.path("server.pem"), pki.path("server.key")]))
    }

    fn launch(n: usize, tls: Option<[PathBuf; 3]>) -> EtcdCluster {
        let dir = tempfile::tempdir().unwrap();
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                data: dir.path().join(format!("m{i}.etcd")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let token = format!("berth-test-{}-{}", std::process::id(), free_port());
        let mut cluster = EtcdCluster { members, token, tls, _dir: dir };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_healthy();
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let m = &mut self.members[i];
        let client = format!("{scheme}://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log).unwrap();
        let mut command = Command::new(provision::etcd());
        if let Some([ca, cert, key]) = &self.tls {
            command.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
            command.arg("--client-cert-auth").arg("--trusted-ca-file").arg(ca);
        }
        let child = command
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--max-txn-ops", "10000", "--max-request-bytes", "10485760"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        m.child = Some(child);
    }

    /// Waits until every running member says it is healthy (it has a leader).
    pub fn wait_healthy(&self) {
        if self.tls.is_some() {
            // Its health endpoint wants a client certificate too: the port answering is enough here, and
            // the masters' election shows the cluster works.
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                eventually(&format!("etcd member {} to listen", m.name), Duration::from_secs(60), || {
                    std::net::TcpStream::connect(("127.0.0.1", m.client)).ok().map(|_| ())
                });
            }
            return;
        }
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            let url = format!("http://127.0.0.1:{}/health", m.client);
            eventually(&format!("etcd member {} to be healthy", m.name), Duration::from_secs(60), || {
                let response = ureq::get(&url).call().ok()?;
                let body: Value = serde_json::from_str(&response.into_body().read_to_string().ok()?).ok()?;
                (body["health"] == "true").then_some(())
            });
        }
    }

    /// The client URLs of every member, as a TOML array.
    pub fn endpoints_toml(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let urls: Vec<String> =
            self.members.iter().map(|m| format!("\"{scheme}://127.0.0.1:{}\"", m.client)).collect();
        format!("[{}]", urls.join(", "))
    }

    /// The client URL of member `i`.
    pub fn client_url(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client)
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again with its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// The logs of every member.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {}\n{}", m.name, std::fs::read_to_string(&m.log).unwrap_or_default()))
            .collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// The operator and agent tokens every master of a test shares.
pub const TOKEN: &str = "ha-test-operator-token";
pub const AGENT_TOKEN: &str = "ha-test-agent-token";

/// A configuration file for a master on `etcd` under `prefix`, with `extra` TOML (top-level keys and
/// sections) before the store's section. It lives beside the etcd cluster's files, which outlive the
/// masters (they read it again on a restart).
pub fn config_file(etcd: &EtcdCluster, prefix: &str, extra: &str) -> PathBuf {
    config_file_with(etcd, prefix, extra, "")
}

/// Like [`config_file`], with `etcd_extra` in the `[store.etcd]` section (its TLS files, say).
pub fn config_file_with(etcd: &EtcdCluster, prefix: &str, extra: &str, etcd_extra: &str) -> PathBuf {
    let config = format!(
        "token = \"{TOKEN}\"\nagent_token = \"{AGENT_TOKEN}\"\n{extra}\n\n[store]\nbackend = \"etcd\"\n\n\
         [store.etcd]\nendpoints = {}\nprefix = \"{prefix}\"\nmax_txn_ops = 10000\nmax_request_bytes = 10000000\n\
         {etcd_extra}\n",
        etcd.endpoints_toml()
    );
    let file = etcd._dir.path().join(format!("master-{}.toml", free_port()));
    std::fs::write(&file, &config).unwrap();
    file
}

/// Writes the shared tokens where [`Master::token`] reads them.
pub fn write_tokens(data_dir: &std::path::Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(data_dir.join("token"), TOKEN).unwrap();
    std::fs::write(data_dir.join("agent-token"), AGENT_TOKEN).unwrap();
}

/// A key prefix of its own for one test's or benchmark's masters.
pub fn unique_prefix() -> String {
    format!("/berth-test-{}-{}", std::process::id(), free_port())
}

/// Starts `n` masters (`berth serve --no-local-agent`) on `etcd` under one key prefix, with `extra` TOML
/// in their configuration. The first one started leads.
pub fn masters(etcd: &EtcdCluster, n: usize, extra: &str) -> Vec<Master> {
    let prefix = unique_prefix();
    (0..n)
        .map(|_| {
            let file = config_file(etcd, &prefix, extra);
            Master::start_prepared(&["--no-local-agent", "--config", file.to_str().unwrap()], write_tokens)
        })
        .collect()
}

/// Like [`masters`], logging warnings only (for benchmarks).
pub fn quiet_masters(etcd: &EtcdCluster, n: usize, extra: &str) -> Vec<Master> {
    let prefix = unique_prefix();
    (0..n)
        .map(|_| {
            let file = config_file(etcd, &prefix, extra);
            Master::start_for_benchmark_prepared(
                &["--no-local-agent", "--config", file.to_str().unwrap()],
                write_tokens,
            )
        })
        .collect()
}

/// What `/v1/masters` on `master` says leads: its id and address.
///
/// `None` also when the request fails: a standby that becomes leader closes the connections it served.
pub fn leader(master: &Master) -> Option<(String, String)> {
    let response = master.http().get(&format!("{}/v1/masters", master.url)).call().ok()?;
    if response.status() != 200 {
        return None;
    }
    let body: Value = serde_json::from_str(&response.into_body().read_to_string().ok()?).ok()?;
    let leader = &body["leader"];
    Some((leader["id"].as_str()?.to_string(), leader["address"].as_str()?.to_string()))
}

/// Which of `masters` leads, by index, waiting for one to.
pub fn leader_index(masters: &[Master]) -> usize {
    eventually("a leader", Duration::from_secs(30), || {
        masters
            .iter()
            .filter(|m| m.pid().is_some())
            .find_map(leader)
            .and_then(|(_, address)| masters.iter().position(|m| m.url == address && m.pid().is_some()))
    })
}
