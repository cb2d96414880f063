//! The property keys of connectors: each with its default and a one-line
//! doc (what `velostream connectors` prints), and the check that refuses
//! a key no connector reads.

use std::collections::BTreeMap;

use crate::error::{ConnectorError, ConnectorResult};

/// One property key of a connector.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    /// The value used when the key is absent, if there is one.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

impl Key {
    /// A key without a default.
    pub const fn new(name: &'static str, doc: &'static str) -> Self {
        Self {
            name,
            default: None,
            doc,
        }
    }

    /// A key with a default.
    pub const fn with_default(
        name: &'static str,
        default: &'static str,
        doc: &'static str,
    ) -> Self {
        Self {
            name,
            default: Some(default),
            doc,
        }
    }
}

/// Unknown keys are errors: a misspelt key would otherwise be ignored.
pub fn check_key_list(
    props: &BTreeMap<String, String>,
    keys: &[Key],
    connector: &str,
) -> ConnectorResult<()> {
    match props
        .keys()
        .find(|k| !keys.iter().any(|key| key.name == k.as_str()))
    {
        Some(key) => Err(ConnectorError::UnknownKey {
            key: key.clone(),
            connector: connector.to_string(),
            valid: keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
        }),
        None => Ok(()),
    }
}
