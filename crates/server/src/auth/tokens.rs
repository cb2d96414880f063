//! Bearer tokens from `security.auth.tokens_file`: a YAML list of
//! `{name, role, sha256}`, where `sha256` is the lower-case hex SHA-256 of
//! the token. Only digests are configured, so the file gives away no
//! token; a presented token is hashed and compared with every digest in
//! constant time (no early exit on the first differing byte, nor on the
//! first matching entry), so timing tells nothing about the digests.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::schema::Role;

/// One entry of the tokens file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    role: Role,
    sha256: String,
}

/// The configured tokens: name, role and digest each.
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<(String, Role, [u8; 32])>,
}

impl Tokens {
    /// Reads `file`; errors name the file, the entry and what is wrong.
    pub fn load(file: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            format!(
                "security.auth.tokens_file: cannot read {}: {e}",
                file.display()
            )
        })?;
        Self::parse(&text).map_err(|e| format!("security.auth.tokens_file {}: {e}", file.display()))
    }

    /// The tokens of a file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let entries: Vec<Entry> = serde_yaml_ng::from_str(text).map_err(|e| {
            format!("{e} (expected a list of {{name, role, sha256}} with role viewer, operator or admin)")
        })?;
        let mut parsed = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let digest = hex_digest(&e.sha256).ok_or_else(|| {
                format!(
                    "entry {} ({}): sha256 must be 64 lower-case hex digits, the SHA-256 of the token (`printf %s TOKEN | sha256sum`)",
                    i + 1,
                    e.name
                )
            })?;
            if parsed.iter().any(|(_, _, d)| *d == digest) {
                return Err(format!(
                    "entry {} ({}): the same token is listed twice",
                    i + 1,
                    e.name
                ));
            }
            parsed.push((e.name, e.role, digest));
        }
        Ok(Self { entries: parsed })
    }

    /// The name and role of `token`, when it is one of ours.
    pub fn find(&self, token: &str) -> Option<(&str, Role)> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (name, role, expected) in &self.entries {
            if bool::from(expected.ct_eq(&digest)) {
                found = Some((name.as_str(), *role));
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The 32 bytes of a lower-case hex SHA-256 digest.
fn hex_digest(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// The lower-case hex SHA-256 of `token`, as the tokens file holds it.
pub fn digest_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_by_their_digest() {
        let text = format!(
            "- name: ci\n  role: admin\n  sha256: {}\n- name: grafana\n  role: viewer\n  sha256: {}\n",
            digest_hex("s3cret-admin"),
            digest_hex("s3cret-viewer")
        );
        let tokens = Tokens::parse(&text).unwrap();
        assert_eq!(tokens.find("s3cret-admin"), Some(("ci", Role::Admin)));
        assert_eq!(
            tokens.find("s3cret-viewer"),
            Some(("grafana", Role::Viewer))
        );
        assert_eq!(tokens.find("s3cret"), None);
        assert_eq!(tokens.find(""), None);
        // the well-known digest of "password"
        assert_eq!(
            digest_hex("password"),
            "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
        );
    }

    #[test]
    fn a_bad_file_says_what_is_wrong() {
        let upper = format!(
            "- name: ci\n  role: admin\n  sha256: {}\n",
            digest_hex("x").to_uppercase()
        );
        assert!(Tokens::parse(&upper)
            .unwrap_err()
            .contains("64 lower-case hex"));
        let role = format!("- name: ci\n  role: root\n  sha256: {}\n", digest_hex("x"));
        assert!(Tokens::parse(&role)
            .unwrap_err()
            .contains("viewer, operator or admin"));
        let twice = format!(
            "- {{name: a, role: admin, sha256: {0}}}\n- {{name: b, role: viewer, sha256: {0}}}\n",
            digest_hex("x")
        );
        assert!(Tokens::parse(&twice).unwrap_err().contains("listed twice"));
    }
}
