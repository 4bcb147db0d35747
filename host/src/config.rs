//! `berth serve`'s configuration: an optional TOML file, with command-line flags on top, checked once at
//! start. Every field has a default, so `berth serve` runs with no file at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::agent::AgentSettings;
use crate::master::MasterConfig;
use crate::runtime::PluginLimits;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Where state lives. Default: `$BERTH_DATA_DIR`, else `$XDG_DATA_HOME/berth`, else
    /// `~/.local/share/berth`.
    pub data_dir: Option<PathBuf>,
    /// Address of the API (gRPC and HTTP on one port).
    pub listen: SocketAddr,
    /// The operator token. Default: read from `<data-dir>/token`, generated on first start.
    pub token: Option<String>,
    /// The token agents present. Default: `<data-dir>/agent-token`, generated on first start.
    pub agent_token: Option<String>,
    /// Require the operator token for reads too.
    pub protect_reads: bool,
    /// Names the HTTP API answers to while reads are open, besides IP addresses, `localhost` and this
    /// machine's hostname: a guard against DNS rebinding. `["*"]` turns the guard off.
    pub allowed_hosts: Vec<String>,
    /// Where compiled plugins are cached. Default: `<data-dir>/plugins/cache`. Artifacts are keyed by
    /// component digest and engine settings, so several daemons may share one directory.
    pub artifact_cache: Option<PathBuf>,
    pub master: MasterSection,
    /// Limits for plugins uploaded without their own.
    pub plugins: PluginLimits,
    /// `[agent]`: the agent `berth serve` runs in the same process (the settings of `berth agent`).
    pub agent: AgentSettings,
    /// `[tls]`: serve the API over TLS only.
    pub tls: crate::api::tls::TlsSettings,
    /// `[store]`: where the state is kept.
    pub store: StoreSection,
    /// The address clients and other masters reach this master's API at [default: `http://` or
    /// `https://` and the listen address]. With several masters, standbys proxy to the leader's.
    pub advertise: Option<String>,
}

/// `[store]`: redb in the data directory (the default), or etcd for several masters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `redb` or `etcd`.
    pub backend: StoreBackend,
    /// `[store.etcd]`: used with `backend = "etcd"`.
    pub etcd: crate::store::etcd::EtcdSettings,
}

/// Where the state is kept.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One master, its state in `<data-dir>/state.redb`.
    #[default]
    Redb,
    /// Several masters sharing their state in etcd, one of them leading.
    Etcd,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            data_dir: None,
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            token: None,
            agent_token: None,
            protect_reads: false,
            allowed_hosts: Vec::new(),
            artifact_cache: None,
            master: MasterSection::default(),
            plugins: PluginLimits::default(),
            agent: AgentSettings::default(),
            tls: crate::api::tls::TlsSettings::default(),
            store: StoreSection::default(),
            advertise: None,
        }
    }
}

/// `[master]`: timings and quotas.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MasterSection {
    pub cycle_interval_ms: u64,
    pub max_launches_per_cycle: u32,
    pub agent_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub task_retention_s: u64,
    pub kv_quota_mib: u64,
    pub default_refuse_seconds: u32,
    /// How long an offer may go unanswered before it is rescinded.
    pub offer_timeout_ms: u64,
}

impl Default for MasterSection {
    /// The master's own defaults ([`MasterConfig::new`]): one source for both.
    fn default() -> Self {
        let m = MasterConfig::new(PathBuf::new());
        MasterSection {
            cycle_interval_ms: m.cycle_interval.as_millis() as u64,
            max_launches_per_cycle: m.max_launches_per_cycle,
            agent_timeout_ms: m.agent_timeout.as_millis() as u64,
            heartbeat_interval_ms: m.heartbeat_interval.as_millis() as u64,
            task_retention_s: m.task_retention.as_secs(),
            kv_quota_mib: m.kv_quota_bytes / (1024 * 1024),
            default_refuse_seconds: m.default_refuse_seconds,
            offer_timeout_ms: m.offer_timeout.as_millis() as u64,
        }
    }
}

impl ServeConfig {
    /// Reads the TOML file (if any); flags are applied by the caller, then [`ServeConfig::validate`].
    pub fn read(path: Option<&Path>) -> anyhow::Result<ServeConfig> {
        let Some(path) = path else { return Ok(ServeConfig::default()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid configuration in {}", path.display()))
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.store.backend == StoreBackend::Etcd {
            self.store.etcd.validate()?;
            // Simulated nodes (benchmarks) join the leader in-process once it leads; a Docker agent would
            // leave its machine unused for as long as its master stands by.
            if self.agent.enabled
                && self.agent.simulate_nodes == 0
                && self.agent.backend == crate::agent::BackendKind::Docker
            {
                bail!(
                    "with store.backend = \"etcd\" berth serve runs a master only (a standby has no master for a \
                     local agent to join): set agent.enabled = false (or --no-local-agent) and start agents with \
                     `berth agent --master <every master's address, comma-separated>`"
                );
            }
            if self.token.is_none() || self.agent_token.is_none() {
                bail!(
                    "with store.backend = \"etcd\" every master must share the same `token` and `agent_token`: \
                     set both in the configuration file"
                );
            }
        }
        let m = &self.master;
        if m.cycle_interval_ms == 0 {
            bail!("master.cycle_interval_ms must be above 0");
        }
        if m.max_launches_per_cycle == 0 {
            bail!("master.max_launches_per_cycle must be above 0");
        }
        if m.heartbeat_interval_ms == 0 || m.agent_timeout_ms <= m.heartbeat_interval_ms {
            bail!(
                "master.agent_timeout_ms ({}) must be above master.heartbeat_interval_ms ({}), which must be above 0",
                m.agent_timeout_ms,
                m.heartbeat_interval_ms
            );
        }
        if m.offer_timeout_ms == 0 {
            bail!("master.offer_timeout_ms must be above 0");
        }
        self.plugins.validate().map_err(|e| anyhow::anyhow!("plugins: {e}"))?;
        self.agent.validate()
    }

    /// The data directory after defaults.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        default_data_dir("berth")
    }

    /// The master's settings.
    pub fn master_config(&self, data_dir: PathBuf) -> MasterConfig {
        let m = &self.master;
        MasterConfig {
            cycle_interval: Duration::from_millis(m.cycle_interval_ms),
            max_launches_per_cycle: m.max_launches_per_cycle,
            agent_timeout: Duration::from_millis(m.agent_timeout_ms),
            heartbeat_interval: Duration::from_millis(m.heartbeat_interval_ms),
            task_retention: Duration::from_secs(m.task_retention_s),
            kv_quota_bytes: m.kv_quota_mib * 1024 * 1024,
            default_refuse_seconds: m.default_refuse_seconds,
            offer_timeout: Duration::from_millis(m.offer_timeout_ms),
            default_limits: self.plugins,
            ..MasterConfig::new(data_dir)
        }
    }
}

/// `$BERTH_DATA_DIR`, else `$XDG_DATA_HOME/<name>`, else `~/.local/share/<name>`.
pub fn default_data_dir(name: &str) -> anyhow::Result<PathBuf> {
    if name == "berth"
        && let Some(dir) = std::env::var_os("BERTH_DATA_DIR")
    {
        return Ok(PathBuf::from(dir));
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(xdg).join(name));
    }
    let home = std::env::var_os("HOME").context("neither HOME nor XDG_DATA_HOME is set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share").join(name))
}

/// Parses `31000-32000,8080` into inclusive ranges.
pub fn parse_ports(text: &str) -> anyhow::Result<Vec<(u16, u16)>> {
    let mut ranges = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (begin, end) = match part.split_once('-') {
            Some((b, e)) => (b.trim().parse::<u16>(), e.trim().parse::<u16>()),
            None => (part.parse::<u16>(), part.parse::<u16>()),
        };
        let (begin, end) =
            (begin.with_context(|| format!("`{part}`"))?, end.with_context(|| format!("`{part}`"))?);
        if begin > end {
            bail!("port range `{part}` is empty");
        }
        ranges.push((begin, end));
    }
    Ok(ranges)
}

/// Reads a token from `path`, or generates one, stores it there (mode 0600) and says so once.
pub fn token_file(path: &Path, what: &str) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let token = text.trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    let token = hex::encode(bytes);
    write_private(path, &token).with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(target: "berth", path = %path.display(),
        "generated the {what}; it is shown once here and kept in that file: {token}");
    Ok(token)
}

/// Writes `text` to `path`, readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults_and_unknown_keys_are_refused() {
        let config: ServeConfig = toml::from_str("").unwrap();
        assert_eq!(config.listen.port(), 8080);
        config.validate().unwrap();
        let err = toml::from_str::<ServeConfig>("[master]\ncycle_intervall_ms = 5").unwrap_err().to_string();
        assert!(err.contains("cycle_intervall_ms"), "{err}");
    }

    #[test]
    fn nonsense_values_are_named() {
        let mut config = ServeConfig::default();
        config.master.agent_timeout_ms = 500;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("agent_timeout_ms"), "{err}");
    }

    #[test]
    fn an_etcd_store_needs_shared_tokens_and_no_local_docker_agent() {
        let etcd = "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"http://10.0.0.1:2379\"]\n";
        let config: ServeConfig = toml::from_str(etcd).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("agent.enabled = false"), "{err}");
        let mut config: ServeConfig = toml::from_str(etcd).unwrap();
        config.agent.enabled = false;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`token` and `agent_token`"), "{err}");
        config.token = Some("t".into());
        config.agent_token = Some("a".into());
        config.validate().unwrap();
        config.store.etcd.prefix = "berth/".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("store.etcd.prefix"), "{err}");
        let err = toml::from_str::<ServeConfig>("[store]\nbackend = \"zookeeper\"").unwrap_err().to_string();
        assert!(err.contains("zookeeper"), "{err}");
    }

    #[test]
    fn ports_parse_as_ranges() {
        assert_eq!(parse_ports("31000-32000, 8080").unwrap(), vec![(31000, 32000), (8080, 8080)]);
        assert!(parse_ports("9-1").is_err());
        assert!(parse_ports("x").is_err());
    }
}
