//! TLS to PostgreSQL with rustls, for connections whose URL says
//! `sslmode=require`. The server's certificate is always verified — its
//! chain against the system's root certificates plus the URL's
//! `sslrootcert` file (libpq's name, for a private CA), and its name
//! against the host connected to — so `require` here is what libpq calls
//! `verify-full`. Other modes connect without TLS, as before.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::PostgresError;

/// Splits libpq's `sslrootcert` off a connection string (URL or key=value
/// form), which the client library would reject as unknown.
pub fn take_root_cert(conn: &str) -> (String, Option<PathBuf>) {
    let url = conn.starts_with("postgres://") || conn.starts_with("postgresql://");
    if url {
        let Some((base, query)) = conn.split_once('?') else {
            return (conn.to_string(), None);
        };
        let mut cert = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| match p.strip_prefix("sslrootcert=") {
                Some(v) => {
                    cert = Some(PathBuf::from(percent_decoded(v)));
                    false
                }
                None => true,
            })
            .collect();
        let rest = match kept.is_empty() {
            true => base.to_string(),
            false => format!("{base}?{}", kept.join("&")),
        };
        (rest, cert)
    } else {
        let mut cert = None;
        let kept: Vec<&str> = conn
            .split_whitespace()
            .filter(|p| match p.strip_prefix("sslrootcert=") {
                Some(v) => {
                    cert = Some(PathBuf::from(v.trim_matches('\'')));
                    false
                }
                None => true,
            })
            .collect();
        (kept.join(" "), cert)
    }
}

/// `%2F`-style escapes of a URL parameter, decoded.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A TLS connector trusting the system's roots and `root_cert`.
pub fn connector(root_cert: Option<&Path>) -> Result<MakeRustlsConnect, PostgresError> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // an unusable system certificate is skipped, as every client does
        let _ = roots.add(cert);
    }
    if let Some(path) = root_cert {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                PostgresError::Tls(format!(
                    "sslrootcert {}: not a PEM certificate file: {e}",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(PostgresError::Tls(format!(
                "sslrootcert {}: no certificate in it",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| PostgresError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(PostgresError::Tls(
            "sslmode=require, but there is no root certificate to verify the server with: install the system's CA certificates or give sslrootcert".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PostgresError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslrootcert_is_taken_from_both_forms() {
        assert_eq!(
            take_root_cert("postgresql://u@h/db?sslmode=require&sslrootcert=%2Fetc%2Fca.pem"),
            (
                "postgresql://u@h/db?sslmode=require".to_string(),
                Some(PathBuf::from("/etc/ca.pem"))
            )
        );
        assert_eq!(
            take_root_cert("host=h sslrootcert=/etc/ca.pem sslmode=require"),
            (
                "host=h sslmode=require".to_string(),
                Some(PathBuf::from("/etc/ca.pem"))
            )
        );
        assert_eq!(
            take_root_cert("postgresql://u@h/db"),
            ("postgresql://u@h/db".to_string(), None)
        );
    }
}
