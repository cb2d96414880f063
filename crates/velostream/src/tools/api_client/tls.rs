//! The rustls client configuration for `https://` URLs: the roots that
//! verify the service (`--cacert`, else the system's) and the client
//! certificate for mutual TLS (`--cert`, `--key`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::{ApiAuth, ApiError};

/// The configuration `auth` asks for, on the ring provider.
pub(super) fn build_config(auth: &ApiAuth) -> Result<ClientConfig, ApiError> {
    let mut roots = RootCertStore::empty();
    match &auth.cacert {
        Some(path) => {
            for cert in read_certs("CA certificate file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("CA certificate file", path, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(ApiError::TlsSetup(
                    "the system has no trusted CA certificates: pass --cacert FILE".into(),
                ));
            }
        }
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ApiError::TlsSetup(e.to_string()))?
            .with_root_certificates(roots);
    match (&auth.cert, &auth.key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = read_certs("client certificate file", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
                pem::Error::NoItemsFound => {
                    file_error("client key file", key, "no PEM private key in it")
                }
                e => file_error("client key file", key, e),
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| ApiError::TlsSetup(format!("--cert and --key: {e}")))
        }
        _ => Err(ApiError::TlsSetup("--cert and --key go together".into())),
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn file_error(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> ApiError {
    ApiError::File {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}
