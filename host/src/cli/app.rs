//! `berth app …`: Marathon apps through the default framework's `/v2` API.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::ClientArgs;
use super::output;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create or update an app from a Marathon app definition, and follow the deployment until it succeeds
    /// (or say why it does not).
    Deploy {
        /// The app definition (JSON), `-` for standard input.
        file: PathBuf,
        /// Replace a deployment in progress.
        #[arg(long)]
        force: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Return as soon as the deployment starts.
        #[arg(long)]
        no_wait: bool,
    },
    /// List apps.
    Ls,
    /// Change an app's instance count.
    Scale {
        id: String,
        instances: u32,
        #[arg(long)]
        force: bool,
    },
    /// Stop an app and remove it.
    Rm {
        id: String,
        #[arg(long)]
        force: bool,
    },
}

/// A small blocking HTTP client for `/v2`, with the operator token.
struct V2 {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl V2 {
    fn new(args: &ClientArgs) -> anyhow::Result<V2> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)));
        if let Some(ca) = &args.ca {
            let pem =
                std::fs::read(ca).with_context(|| format!("reading the CA certificate {}", ca.display()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("reading certificates from {}", ca.display()))?;
            let roots = ureq::tls::RootCerts::new_with_certs(&certs);
            config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
        }
        Ok(V2 {
            base: args.master.trim_end_matches('/').to_string(),
            token: super::client::token(args.token.clone()),
            agent: config.build().new_agent(),
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let response = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            (method, body) => {
                let mut r = if method == "POST" { self.agent.post(&url) } else { self.agent.put(&url) };
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.header("content-type", "application/json")
                    .send(body.map(Value::to_string).unwrap_or_default())
            }
        }
        .with_context(|| format!("cannot reach the master at {} (is `berth serve` running?)", self.base))?;
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// A call that must succeed; otherwise the server's message (and Marathon's validation details).
    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, value) = self.call(method, path, body)?;
        if status >= 300 {
            bail!("{}", describe(status, &value));
        }
        Ok(value)
    }
}

fn describe(status: u16, value: &Value) -> String {
    let mut text = value["message"].as_str().map(String::from).unwrap_or_else(|| value.to_string());
    if let Some(details) = value["details"].as_array() {
        for d in details {
            let errors: Vec<&str> =
                d["errors"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            text.push_str(&format!("; {}: {}", d["path"].as_str().unwrap_or("/"), errors.join(", ")));
        }
    }
    format!("{text} (HTTP {status})")
}

fn app_path(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_start_matches('/'))
}

pub async fn run(command: Command, args: &ClientArgs) -> anyhow::Result<()> {
    let args = args.clone();
    tokio::task::spawn_blocking(move || run_blocking(command, &args))
        .await
        .context("the app command failed")?
}

fn run_blocking(command: Command, args: &ClientArgs) -> anyhow::Result<()> {
    let v2 = V2::new(args)?;
    match command {
        Command::Deploy { file, force, timeout, no_wait } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the app definition from stdin")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let definition: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            let id = definition["id"].as_str().context("the app definition has no \"id\"")?.to_string();
            let force = if force { "?force=true" } else { "" };
            let (status, _) = v2.call("GET", &app_path(&id), None)?;
            let result = if status == 200 {
                v2.ok("PUT", &format!("{}{force}", app_path(&id)), Some(&definition))?
            } else {
                v2.ok("POST", &format!("/v2/apps{force}"), Some(&definition))?
            };
            let deployment = result["deploymentId"]
                .as_str()
                .or_else(|| result["deployments"][0]["id"].as_str())
                .unwrap_or_default()
                .to_string();
            if no_wait {
                output::print_one(args.json, &json!({"app": id, "deployment": deployment}));
                return Ok(());
            }
            follow(&v2, &id, &deployment, Duration::from_secs(timeout), args.json)
        }
        Command::Ls => {
            let apps = v2.ok("GET", "/v2/apps", None)?;
            let rows: Vec<Value> = apps["apps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    json!({
                        "id": a["id"], "instances": a["instances"], "running": a["tasksRunning"],
                        "healthy": a["tasksHealthy"], "staged": a["tasksStaged"], "cpus": a["cpus"], "mem": a["mem"],
                        "image": a["container"]["docker"]["image"],
                        "deployment": a["deployments"][0]["id"].as_str().unwrap_or(""),
                    })
                })
                .collect();
            output::print(
                args.json,
                &[
                    ("ID", "id"),
                    ("INSTANCES", "instances"),
                    ("RUNNING", "running"),
                    ("HEALTHY", "healthy"),
                    ("STAGED", "staged"),
                    ("CPUS", "cpus"),
                    ("MEM", "mem"),
                    ("IMAGE", "image"),
                    ("DEPLOYMENT", "deployment"),
                ],
                &rows,
            );
            Ok(())
        }
        Command::Scale { id, instances, force } => {
            let force = if force { "?force=true" } else { "" };
            let r =
                v2.ok("PUT", &format!("{}{force}", app_path(&id)), Some(&json!({ "instances": instances })))?;
            output::print_one(
                args.json,
                &json!({"app": id, "instances": instances, "deployment": r["deploymentId"]}),
            );
            Ok(())
        }
        Command::Rm { id, force } => {
            let force = if force { "?force=true" } else { "" };
            let r = v2.ok("DELETE", &format!("{}{force}", app_path(&id)), None)?;
            output::print_one(args.json, &json!({"removed": id, "deployment": r["deploymentId"]}));
            Ok(())
        }
    }
}

/// Follows a deployment until it is done: a progress bar on a terminal, else one line per change of state
/// (so a script's log shows the deployment). Succeeds only if the deployment ended with the app at its new
/// version and every instance up; at the timeout, fails naming the last task failure (a health check's kill
/// included).
fn follow(v2: &V2, id: &str, deployment: &str, timeout: Duration, json_output: bool) -> anyhow::Result<()> {
    let interactive = !json_output && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = indicatif::ProgressBar::new(0);
    if !interactive {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} healthy  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(id.to_string());
    let started = Instant::now();
    let mut last_line = String::new();
    let mut failure = Value::Null;
    loop {
        let (status, app) = v2.call("GET", &app_path(id), None)?;
        let app = &app["app"];
        let deployments = v2.ok("GET", "/v2/deployments?embed=lastFailure", None)?;
        let ours = deployments.as_array().into_iter().flatten().find(|d| d["id"] == deployment);
        if let Some(d) = ours
            && d["lastFailure"].is_object()
        {
            failure = d["lastFailure"].clone();
        }
        let instances = app["instances"].as_u64().unwrap_or(0);
        let has_checks = app["healthChecks"].as_array().is_some_and(|h| !h.is_empty());
        let up =
            if has_checks { app["tasksHealthy"].as_u64() } else { app["tasksRunning"].as_u64() }.unwrap_or(0);
        if status == 200 {
            let failed = if failure.is_object() {
                format!("; last failure: {}", describe_failure(&failure))
            } else {
                String::new()
            };
            let step =
                ours.map(|d| format!(" (step {}/{})", d["currentStep"], d["totalSteps"])).unwrap_or_default();
            let line = format!(
                "{id}: {up}/{instances} {}, {} running, {} staged{step}{failed}",
                if has_checks { "healthy" } else { "up" },
                app["tasksRunning"],
                app["tasksStaged"]
            );
            bar.set_length(instances);
            bar.set_position(up);
            bar.set_message(failed.trim_start_matches("; ").to_string());
            if !interactive && !json_output && line != last_line {
                println!("{line}");
                last_line = line;
            }
        }
        bar.tick();
        // The app was read before the deployments: it may still name ours, which just ended. Look again.
        let app_names_ours =
            app["deployments"].as_array().into_iter().flatten().any(|d| d["id"] == deployment);
        if ours.is_none() && !app_names_ours {
            let other = app["deployments"].as_array().and_then(|d| d.first()).and_then(|d| d["id"].as_str());
            let outcome = match (status, other) {
                (200, None) if up >= instances => Ok(()),
                (200, Some(other)) => {
                    Err(format!("deployment {deployment} was replaced by deployment {other}"))
                }
                (200, None) => Err(format!(
                    "deployment {deployment} ended with {up}/{instances} instances up (it was rolled back or cancelled)"
                )),
                _ => Err(format!("deployment {deployment} ended and app {id} is gone")),
            };
            return match outcome {
                Ok(()) => {
                    bar.finish_with_message("deployment succeeded");
                    if json_output {
                        output::print_one(
                            true,
                            &json!({"app": id, "deployment": deployment, "result": "succeeded"}),
                        );
                    } else {
                        println!("{id}: deployment {deployment} succeeded: {up}/{instances} instances up");
                    }
                    Ok(())
                }
                Err(e) => {
                    bar.abandon_with_message("deployment did not succeed");
                    bail!("{e}")
                }
            };
        }
        if started.elapsed() > timeout {
            bar.abandon_with_message("gave up waiting");
            if failure.is_null() && app["lastTaskFailure"].is_object() {
                failure = app["lastTaskFailure"].clone();
            }
            if failure.is_object() {
                bail!(
                    "deployment {deployment} did not succeed in {}s ({up}/{instances} instances up); the last task failure: {}",
                    timeout.as_secs(),
                    describe_failure(&failure)
                );
            }
            bail!(
                "deployment {deployment} did not succeed in {}s ({up}/{instances} instances up); no task has failed since it began: \
                 it waits for offers (see `curl .../v2/queue`), for health checks, or for tasks to stay up their minimum healthy time",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A task failure as a line: its state, host and message.
fn describe_failure(failure: &Value) -> String {
    format!(
        "{} on {}: {}",
        failure["state"].as_str().unwrap_or("?"),
        failure["host"].as_str().unwrap_or("?"),
        failure["message"].as_str().filter(|m| !m.is_empty()).unwrap_or("(no message)")
    )
}
