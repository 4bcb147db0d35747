//! TLS for the API port (rustls): the master's certificate and key, and optionally the certificate
//! authority whose client certificates it accepts (agents present one; with `require_client_cert`, every
//! client must). One port still carries gRPC and plain HTTP: ALPN offers HTTP/2 and HTTP/1.1, so Marathon's
//! HTTP/1.1 clients work over TLS as gRPC clients do.
//!
//! Handshakes run on tasks of their own with a deadline and a cap on how many are in flight, so a client
//! that connects and says nothing holds neither the accept loop nor memory. A client that speaks plain
//! HTTP to the TLS port is answered in plain HTTP with what to do instead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

/// Handshakes in flight at once; connections beyond are closed at once.
const MAX_HANDSHAKES: usize = 256;
/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[tls]` in `berth serve`'s configuration (or `--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The master's certificate chain, PEM. With `key`, the API speaks only TLS.
    pub cert: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Accept client certificates issued by this authority (PEM). Agents may then present one.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without such a certificate (needs `client_ca`).
    pub require_client_cert: bool,
}

impl TlsSettings {
    /// The server configuration, or `None` when TLS is off. Every file is read and checked now, so a
    /// mistake stops `berth serve` at start with the file's name.
    pub fn server_config(&self) -> anyhow::Result<Option<Arc<ServerConfig>>> {
        let (cert, key) = match (&self.cert, &self.key) {
            (None, None) => {
                if self.client_ca.is_some() || self.require_client_cert {
                    bail!("`tls.client_ca` and `tls.require_client_cert` need `tls.cert` and `tls.key`");
                }
                return Ok(None);
            }
            (Some(cert), Some(key)) => (cert, key),
            _ => bail!("TLS needs both `tls.cert` and `tls.key` (--tls-cert, --tls-key)"),
        };
        let chain = certificates(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading the TLS private key {}", key.display()))?;
        // ring, as tonic's client side here (`tls-ring`). rustls 0.23.48 deprecates it for lacking
        // post-quantum key exchange; aws-lc-rs has that but builds a large C library. Revisit when ring
        // gains ML-KEM or the build can afford aws-lc.
        #[allow(deprecated)]
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in certificates(ca)? {
                    roots
                        .add(c)
                        .with_context(|| format!("a certificate in {} is not a usable CA", ca.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier =
                    if self.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
                builder.with_client_cert_verifier(verifier.build().context("the client CA")?)
            }
            None if self.require_client_cert => bail!("`tls.require_client_cert` needs `tls.client_ca`"),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .with_context(|| format!("the key does not go with the certificate {}", cert.display()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The connections accepted on `listener` that completed a TLS handshake, until the receiver is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> mpsc::Receiver<std::io::Result<TlsStream<TcpStream>>> {
    let acceptor = TlsAcceptor::from(config);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(target: "berth.api", error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(target: "berth.api", %peer, "too many TLS handshakes in flight; connection closed");
                continue;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&acceptor, tcp, peer)).await {
                    Ok(Some(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(None) => {}
                    Err(_) => tracing::debug!(target: "berth.api", %peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// A TLS handshake, or a plain-HTTP answer to a client that did not start one.
async fn handshake(
    acceptor: &TlsAcceptor,
    mut tcp: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    // A TLS connection opens with a handshake record (content type 22).
    if tcp.peek(&mut first).await.ok()? == 1 && first[0] != 0x16 {
        let body = "this berth API speaks HTTPS only: use https:// (and the CA that issued the master's \
                    certificate: --ca or $BERTH_CA for the CLI and agents)\n";
        let reply = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tcp.write_all(reply.as_bytes()).await;
        let _ = tcp.shutdown().await;
        tracing::debug!(target: "berth.api", %peer, "plain HTTP on the TLS port; told to use HTTPS");
        return None;
    }
    match acceptor.accept(tcp).await {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::debug!(target: "berth.api", %peer, error = %e, "TLS handshake failed");
            None
        }
    }
}

/// The client side: how the CLI and agents reach a master whose address is `https://…`.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// The authority that issued the master's certificate (PEM) [default: the system's roots].
    pub ca: Option<PathBuf>,
    /// A client certificate and key to present (PEM).
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// Applies to `endpoint` when `address` is `https://…`.
    pub fn apply(
        &self,
        address: &str,
        endpoint: tonic::transport::Endpoint,
    ) -> anyhow::Result<tonic::transport::Endpoint> {
        if !address.starts_with("https://") {
            if self.ca.is_some() || self.identity.is_some() {
                bail!(
                    "a CA or client certificate was given, but the master's address {address} is not https://"
                );
            }
            return Ok(endpoint);
        }
        let mut tls = tonic::transport::ClientTlsConfig::new();
        tls = match &self.ca {
            Some(ca) => tls.ca_certificate(tonic::transport::Certificate::from_pem(
                std::fs::read(ca).with_context(|| format!("reading the CA certificate {}", ca.display()))?,
            )),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            let cert = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint.tls_config(tls).context("the TLS settings")
    }
}
