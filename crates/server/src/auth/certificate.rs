//! The identity of a verified client certificate: its subject's common
//! name, else its first DNS subject alternative name (what operators put
//! in `security.auth.identities`). The certificate was verified against
//! `security.tls.ca_file` during the handshake; this only reads it.

use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use x509_cert::der::oid::db::rfc4519::COMMON_NAME;
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Any, Decode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// The identity of the DER certificate `der`, or `None` when it has
/// neither a common name nor a DNS name (or does not parse).
pub fn identity(der: &[u8]) -> Option<String> {
    let cert = Certificate::from_der(der).ok()?;
    let tbs = &cert.tbs_certificate;
    let common_name = tbs
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|attr| attr.oid == COMMON_NAME)
        .and_then(|attr| text(&attr.value));
    if let Some(cn) = common_name.filter(|cn| !cn.is_empty()) {
        return Some(cn);
    }
    tbs.extensions
        .iter()
        .flatten()
        .filter(|ext| ext.extn_id == SubjectAltName::OID)
        .filter_map(|ext| SubjectAltName::from_der(ext.extn_value.as_bytes()).ok())
        .flat_map(|san| san.0.into_iter())
        .find_map(|name| match name {
            GeneralName::DnsName(dns) => Some(dns.to_string()),
            _ => None,
        })
}

/// A directory string as text (UTF8String, PrintableString or IA5String).
fn text(value: &Any) -> Option<String> {
    value
        .decode_as::<Utf8StringRef<'_>>()
        .map(|s| s.as_str().to_string())
        .or_else(|_| {
            value
                .decode_as::<PrintableStringRef<'_>>()
                .map(|s| s.as_str().to_string())
        })
        .or_else(|_| {
            value
                .decode_as::<Ia5StringRef<'_>>()
                .map(|s| s.as_str().to_string())
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::identity;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn certificate(cn: Option<&str>, dns: &[&str]) -> Vec<u8> {
        let mut params =
            CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let mut name = DistinguishedName::new();
        if let Some(cn) = cn {
            name.push(DnType::CommonName, cn);
        }
        name.push(DnType::OrganizationName, "Velostream tests");
        params.distinguished_name = name;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_common_name_else_the_first_dns_name() {
        assert_eq!(
            identity(&certificate(Some("ops-bot"), &["bot.internal"])).as_deref(),
            Some("ops-bot")
        );
        assert_eq!(
            identity(&certificate(None, &["prometheus.monitoring", "other"])).as_deref(),
            Some("prometheus.monitoring")
        );
        assert_eq!(identity(&certificate(None, &[])), None);
        assert_eq!(identity(b"not a certificate"), None);
    }
}
