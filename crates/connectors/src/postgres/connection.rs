//! Where a PostgreSQL connector connects: the statement's `'<name>.url'`,
//! else the [`DatabaseDefaults`] it was given (the configuration's
//! `velostream.database` section with the `DB_HOST`, `DB_PORT`, `DB_USER`,
//! `DB_PASSWORD` and `DB_NAME` environment variables applied over it,
//! resolved once by the binary's settings).
//! Sessions run in UTC so that `timestamptz` values read the same
//! everywhere. Passwords never appear in messages. `sslmode=require` in a
//! URL, or [`DatabaseDefaults::tls`] for connections without one, connects
//! over TLS ([`super::tls`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use postgres::{Client, NoTls};

use super::error::PostgresError;
use crate::error::{ConnectorError, ConnectorResult};

/// Database settings from the configuration (`velostream.database`,
/// `timeouts.connection_timeout`, `performance.cache`).
#[derive(Clone, Default)]
pub struct DatabaseDefaults {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub name: Option<String>,
    /// Sessions over TLS, the server's certificate chain and name
    /// verified (`sslmode` require, verify-ca or verify-full).
    pub tls: bool,
    /// A CA certificate to trust besides the system's (`sslrootcert`).
    pub root_cert: Option<PathBuf>,
    /// How long opening a connection may take (10 s when absent).
    pub connect_timeout: Option<Duration>,
    /// An application the service runs: only this database, never a
    /// connector's own `'url'`.
    pub confined: bool,
}

/// The password shown as `***`.
impl std::fmt::Debug for DatabaseDefaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseDefaults")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("name", &self.name)
            .field("tls", &self.tls)
            .field("root_cert", &self.root_cert)
            .field("connect_timeout", &self.connect_timeout)
            .field("confined", &self.confined)
            .finish()
    }
}

impl DatabaseDefaults {
    /// True when a host is known, so connectors can be opened without a URL.
    pub fn is_configured(&self) -> bool {
        self.host.is_some()
    }
}

/// A connection target, printable without its password.
pub struct Target {
    config: postgres::Config,
    /// The URL's `sslrootcert`: a CA to trust besides the system's.
    root_cert: Option<PathBuf>,
    /// `user@host:port/db`, for messages.
    pub label: String,
}

impl Target {
    /// The target of a connector with properties `props`.
    pub fn resolve(
        props: &BTreeMap<String, String>,
        defaults: &DatabaseDefaults,
    ) -> ConnectorResult<Self> {
        let (url, root_cert) = match props.get("url") {
            Some(_) if defaults.confined => {
                return Err(ConnectorError::Refused("'url' is refused: applications the service runs use the configured database (velostream.database or DB_*), not one of their own".into()))
            }
            Some(url) => {
                let (url, cert) = super::tls::take_root_cert(url);
                (Some(url), cert)
            }
            None => (None, defaults.root_cert.clone()),
        };
        let mut config = match url {
            Some(url) => postgres::Config::from_str(&url).map_err(|e| {
                ConnectorError::InvalidValue(format!("'url' is not a PostgreSQL connection string ({e}); expected postgresql://user:password@host:port/database or host=... user=... dbname=..."))
            })?,
            None => {
                let mut c = postgres::Config::new();
                let host = defaults.host.as_deref().ok_or_else(|| ConnectorError::MissingSetting(
                    "no database to connect to: set the connector's 'url', the service's velostream.database.host, or DB_HOST".into(),
                ))?;
                c.host(host).port(defaults.port.unwrap_or(5432));
                if let Some(u) = &defaults.user {
                    c.user(u);
                }
                if let Some(p) = &defaults.password {
                    c.password(p);
                }
                if let Some(n) = &defaults.name {
                    c.dbname(n);
                }
                if defaults.tls {
                    c.ssl_mode(postgres::config::SslMode::Require);
                }
                c
            }
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(defaults.connect_timeout.unwrap_or(Duration::from_secs(10)));
        }
        // after the URL's own options (a search_path, say), not instead of them
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} -c TimeZone=UTC"),
            _ => "-c TimeZone=UTC".to_string(),
        };
        config.options(&options);
        config.application_name("velostream");
        let label = label(&config);
        Ok(Self {
            config,
            root_cert,
            label,
        })
    }

    /// Opens a session: over TLS with `sslmode=require`, else in the clear
    /// (`prefer`, the default, then means no TLS: a server certificate that
    /// could not be verified must not turn a working setup into a failure).
    pub fn connect(&self) -> Result<Client, PostgresError> {
        let connected = match self.config.get_ssl_mode() {
            postgres::config::SslMode::Require => {
                let tls = super::tls::connector(self.root_cert.as_deref())
                    .map_err(|e| PostgresError::Tls(format!("{}: {e}", self.label)))?;
                self.config.connect(tls)
            }
            _ => self.config.connect(NoTls),
        };
        connected.map_err(|e| {
            PostgresError::server(
                format!("cannot connect to PostgreSQL at {}", self.label),
                &e,
            )
        })
    }
}

fn label(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config
        .get_dbname()
        .or(config.get_user())
        .map(|d| format!("/{d}"))
        .unwrap_or_default();
    format!("{user}{host}:{port}{db}")
}

/// A table or view name as written in a connector property: plain or
/// double-quoted identifiers, optionally schema-qualified. Anything else is
/// refused, since the name is placed in SQL text.
pub fn relation(
    props: &BTreeMap<String, String>,
    connector: &'static str,
) -> ConnectorResult<String> {
    let name = props.get("table").ok_or(ConnectorError::MissingKey {
        connector,
        key: "table",
    })?;
    let ok = !name.is_empty()
        && name.split('.').count() <= 3
        && name.split('.').all(|part| {
            let quoted = part.len() > 2
                && part.starts_with('"')
                && part.ends_with('"')
                && !part[1..part.len() - 1].contains('"');
            let plain = part
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
            quoted || plain
        });
    if !ok {
        return Err(ConnectorError::InvalidValue(format!(
            "'table' = '{name}' is not a table name; use name, schema.name or \"Quoted\" identifiers"
        )));
    }
    Ok(name.clone())
}

/// `name` as a quoted SQL identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: Option<&str>, defaults: &DatabaseDefaults) -> ConnectorResult<Target> {
        let props: BTreeMap<String, String> = url
            .map(|u| [("url".to_string(), u.to_string())].into())
            .unwrap_or_default();
        Target::resolve(&props, defaults)
    }

    #[test]
    fn a_url_keeps_its_options_and_sessions_run_in_utc() {
        let t = target(
            Some("postgresql://app:secret@db:6432/sales?options=-c%20search_path%3Dreports"),
            &DatabaseDefaults::default(),
        )
        .unwrap();
        assert_eq!(
            t.config.get_options(),
            Some("-c search_path=reports -c TimeZone=UTC")
        );
        assert_eq!(t.label, "app@db:6432/sales");
    }

    #[test]
    fn without_a_url_the_configured_database_is_used_and_named_without_its_password() {
        let defaults = DatabaseDefaults {
            host: Some("db.local".into()),
            user: Some("app".into()),
            password: Some("secret".into()),
            ..DatabaseDefaults::default()
        };
        let t = target(None, &defaults).unwrap();
        assert_eq!(t.label, "app@db.local:5432/app");
        assert!(!t.label.contains("secret"));
        let missing = target(None, &DatabaseDefaults::default())
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("no database to connect to"), "{missing}");
    }

    #[test]
    fn table_names_are_identifiers_only() {
        let ok = |name: &str| {
            relation(
                &[("table".to_string(), name.to_string())].into(),
                "postgres_sink",
            )
            .is_ok()
        };
        assert!(ok("orders") && ok("sales.orders") && ok("\"Orders 2026\""));
        assert!(!ok("orders; DROP TABLE x") && !ok("") && !ok("1abc"));
    }
}
