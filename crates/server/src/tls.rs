//! TLS on the service ports, per `security.tls`: the server certificate and
//! key, a CA for client certificates (`client_auth: required` is mutual
//! TLS, `optional` checks a certificate when one is offered),
//! `min_version`, and `ciphers`, which restricts the TLS 1.2 suites (the
//! TLS 1.3 suites are always offered; none of them is weak).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;

use crate::auth::Peer;
use crate::config::schema::{ClientAuth, Tls, TlsVersion};

/// How long a client may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rustls server configuration of `tls`; errors name the file or key.
pub fn server_config(tls: &Tls) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(&tls.cert_file, "security.tls.cert_file")?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| {
        format!(
            "security.tls.key_file: cannot read a private key from {}: {e}",
            tls.key_file.display()
        )
    })?;
    let provider = Arc::new(provider(&tls.ciphers)?);
    let versions: &[&SupportedProtocolVersion] = match tls.min_version {
        Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("security.tls: {e}"))?;
    let builder = match tls.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let ca = tls.ca_file.as_ref().ok_or(
                "security.tls.ca_file is needed to check client certificates (client_auth)",
            )?;
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca, "security.tls.ca_file")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("security.tls.ca_file: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("security.tls.ca_file: {e}"))?,
            )
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("security.tls: the certificate and key do not fit together: {e}"))?;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "{key}: cannot read certificates from {}: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("{key}: {} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The ring provider with its TLS 1.2 suites limited to `ciphers` (IANA
/// names such as `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384`).
fn provider(ciphers: &[String]) -> Result<CryptoProvider, String> {
    let mut provider = ring::default_provider();
    if ciphers.is_empty() {
        return Ok(provider);
    }
    let known: Vec<String> = provider
        .cipher_suites
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    for c in ciphers {
        if !known.contains(c) {
            return Err(format!(
                "security.tls.ciphers: unknown cipher '{c}'; available: {}",
                known.join(", ")
            ));
        }
    }
    provider.cipher_suites.retain(|s| {
        s.version() == &rustls::version::TLS13 || ciphers.contains(&format!("{:?}", s.suite()))
    });
    Ok(provider)
}

/// A TCP listener whose connections are TLS. Handshakes run concurrently
/// in their own tasks, so a slow or stalled client delays nobody else;
/// failed handshakes are dropped and logged.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: io::Result<std::net::SocketAddr>,
}

impl TlsListener {
    /// Starts accepting on `tcp` (inside a tokio runtime).
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        let local = tcp.local_addr();
        let acceptor = TlsAcceptor::from(config);
        let (done, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(
                            component = "tls",
                            error_type = "accept",
                            "accepting a connection: {e}"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            // the chain was verified in the handshake; its leaf names the caller
                            let certificate = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .and_then(|leaf| crate::auth::certificate::identity(leaf));
                            let _ = done.send((tls, Peer { addr, certificate })).await;
                        }
                        Ok(Err(e)) => tracing::warn!(
                            component = "tls",
                            error_type = "handshake",
                            "TLS handshake with {addr} failed: {e}"
                        ),
                        Err(_) => tracing::warn!(
                            component = "tls",
                            error_type = "handshake",
                            "TLS handshake with {addr} timed out"
                        ),
                    }
                });
            }
        });
        Self { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // the accepting task ended with the runtime: nothing comes any more
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match &self.local {
            Ok(a) => Ok(Peer {
                addr: *a,
                certificate: None,
            }),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            certificate: None,
        }
    }
}
