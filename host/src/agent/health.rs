//! Health checks run by the agent: HTTP or HTTPS (status 200-399), TCP connect, and a command executed in
//! the container (exit 0). A task is healthy when every check's last result passed. Changes of health are
//! reported; when one check fails `max-consecutive-failures` times in a row the task is killed.
//!
//! Probes go to the addresses `container::probe_addresses` gives: the container's own address on a bridge
//! or user network, loopback on the host network.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use berth_proto::v1 as pb;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// What the checks report.
#[derive(Clone, Debug, PartialEq)]
pub enum HealthEvent {
    /// Overall health changed.
    Changed { healthy: bool, message: String },
    /// A check failed too many times in a row: kill the task.
    Failed { message: String },
}

/// Where a task's checks probe.
pub struct Target {
    pub docker: Docker,
    pub container: String,
    /// Addresses by port index.
    pub addresses: Vec<std::net::SocketAddr>,
}

/// Runs every check of a task until the returned set is dropped (or aborted).
pub fn spawn(
    checks: Vec<pb::HealthCheck>,
    target: Target,
    report: Arc<dyn Fn(HealthEvent) + Send + Sync>,
) -> JoinSet<()> {
    let target = Arc::new(target);
    let results = Arc::new(Mutex::new(vec![None::<bool>; checks.len()]));
    let overall = Arc::new(Mutex::new(None::<bool>));
    let mut set = JoinSet::new();
    for (index, check) in checks.into_iter().enumerate() {
        let (target, results, overall, report) =
            (target.clone(), results.clone(), overall.clone(), report.clone());
        set.spawn(async move {
            let started = tokio::time::Instant::now();
            let grace = Duration::from_millis(u64::from(check.grace_period_ms));
            let interval = Duration::from_millis(u64::from(check.interval_ms.max(100)));
            let timeout = Duration::from_millis(u64::from(check.timeout_ms.max(100)));
            let mut failures = 0u32;
            loop {
                let outcome = match tokio::time::timeout(timeout, probe(&check, &target)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                };
                let in_grace = started.elapsed() < grace;
                let passed = match &outcome {
                    Ok(()) => {
                        failures = 0;
                        Some(true)
                    }
                    // Failures during the grace period are not counted: the task may still be starting.
                    Err(_) if in_grace => None,
                    Err(_) => {
                        failures += 1;
                        Some(false)
                    }
                };
                if let Some(passed) = passed {
                    let now_overall = {
                        let mut results = results.lock().expect("health lock");
                        results[index] = Some(passed);
                        if results.contains(&Some(false)) {
                            Some(false)
                        } else if results.iter().all(|r| *r == Some(true)) {
                            Some(true)
                        } else {
                            None
                        }
                    };
                    let mut last = overall.lock().expect("health lock");
                    if now_overall.is_some() && *last != now_overall {
                        *last = now_overall;
                        let message = match &outcome {
                            Ok(()) => format!("health check {index} passed"),
                            Err(e) => format!("health check {index} failed: {e}"),
                        };
                        report(HealthEvent::Changed { healthy: now_overall == Some(true), message });
                    }
                }
                if check.max_consecutive_failures > 0 && failures >= check.max_consecutive_failures {
                    let error = outcome.err().unwrap_or_default();
                    report(HealthEvent::Failed {
                        message: format!("health check {index} failed {failures} times in a row: {error}"),
                    });
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        });
    }
    set
}

async fn probe(check: &pb::HealthCheck, target: &Target) -> Result<(), String> {
    let address = |index: u32| {
        target
            .addresses
            .get(index as usize)
            .copied()
            .ok_or_else(|| format!("the task has no port with index {index}"))
    };
    match &check.probe {
        Some(pb::health_check::Probe::Http(http)) => {
            http_get(address(http.port_index)?, &http.path, http.https).await
        }
        Some(pb::health_check::Probe::TcpPortIndex(index)) => {
            TcpStream::connect(address(*index)?).await.map(drop).map_err(|e| e.to_string())
        }
        Some(pb::health_check::Probe::Command(command)) => {
            exec(&target.docker, &target.container, &command.argv).await
        }
        None => Err("the health check has no probe".into()),
    }
}

/// `GET path` over HTTP/1.0; passes on status 200-399.
async fn http_get(address: std::net::SocketAddr, path: &str, https: bool) -> Result<(), String> {
    let stream = TcpStream::connect(address).await.map_err(|e| format!("connect: {e}"))?;
    if !https {
        return http_status(stream, address, path).await;
    }
    let name = ServerName::IpAddress(address.ip().into());
    let stream = tls_connector().connect(name, stream).await.map_err(|e| format!("TLS handshake: {e}"))?;
    http_status(stream, address, path).await
}

/// Sends `GET path` and passes on a status of 200-399.
async fn http_status(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    address: std::net::SocketAddr,
    path: &str,
) -> Result<(), String> {
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\nUser-Agent: berth-health\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    stream.flush().await.map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {:?}", line.lines().next().unwrap_or("")))?;
    if (200..400).contains(&status) { Ok(()) } else { Err(format!("HTTP {status}")) }
}

/// The TLS client of HTTPS checks. As Marathon's HTTPS checks, it does not verify the task's certificate
/// (tasks commonly serve self-signed ones, and the check asks whether the task answers, not who it is);
/// the handshake itself, signatures included, is checked as usual.
fn tls_connector() -> &'static TlsConnector {
    static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();
    CONNECTOR.get_or_init(|| {
        // ring, as the API's TLS (see api/tls.rs for why).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    })
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Runs `argv` in the container; passes on exit 0.
async fn exec(docker: &Docker, container: &str, argv: &[String]) -> Result<(), String> {
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions::<String> {
                cmd: Some(argv.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut output = String::new();
    if let StartExecResults::Attached { output: mut stream, .. } =
        docker.start_exec(&exec.id, None).await.map_err(|e| e.to_string())?
    {
        while let Some(Ok(chunk)) = stream.next().await {
            if output.len() < 1024 {
                output.push_str(&chunk.to_string());
            }
        }
    }
    let inspect = docker.inspect_exec(&exec.id).await.map_err(|e| e.to_string())?;
    match inspect.exit_code {
        Some(0) => Ok(()),
        Some(code) => Err(format!("exit code {code}: {}", output.trim())),
        None => Err("the command did not finish".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer;

    /// Serves one request on loopback, answering `status`: over TLS with a fresh self-signed certificate
    /// when `tls`, else plain.
    async fn serve_once(tls: bool, status: u16) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = tls.then(|| {
            let certified = rcgen::generate_simple_self_signed(vec!["task.invalid".into()]).unwrap();
            let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
            #[allow(deprecated)]
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![certified.cert.der().clone()], key.into())
                .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let reply = format!("HTTP/1.0 {status} Whatever\r\nContent-Length: 0\r\n\r\n");
            async fn answer(mut s: impl AsyncRead + AsyncWrite + Unpin, reply: String) {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            }
            match acceptor {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        answer(s, reply).await;
                    }
                }
                None => answer(stream, reply).await,
            }
        });
        address
    }

    #[tokio::test]
    async fn an_https_check_passes_on_a_self_signed_server_and_follows_the_status() {
        assert_eq!(http_get(serve_once(true, 200).await, "/health", true).await, Ok(()));
        assert_eq!(http_get(serve_once(true, 503).await, "/", true).await, Err("HTTP 503".into()));
        assert_eq!(http_get(serve_once(false, 204).await, "/", false).await, Ok(()));
        // An HTTPS check of a server that speaks plain HTTP fails in the handshake, and says so.
        let plain = http_get(serve_once(false, 200).await, "/", true).await.unwrap_err();
        assert!(plain.starts_with("TLS handshake:"), "{plain}");
    }
}
