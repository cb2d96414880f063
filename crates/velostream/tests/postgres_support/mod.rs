//! What the PostgreSQL end-to-end tests share: the server, a client, and
//! table names no other run uses.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

/// The test server's connection URL (scripts/postgres.sh).
pub fn url() -> String {
    std::env::var("VELOSTREAM_TEST_POSTGRES").expect(
        "VELOSTREAM_TEST_POSTGRES must name a PostgreSQL server: run scripts/test.sh, or \
         scripts/postgres.sh start and export VELOSTREAM_TEST_POSTGRES=$(scripts/postgres.sh url)",
    )
}

pub fn client() -> postgres::Client {
    postgres::Client::connect(&url(), postgres::NoTls).expect("the test PostgreSQL server")
}

/// A table name no other run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// The test server's settings one by one, for configuration files and the
/// `DB_*` variables.
pub struct Server {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub name: String,
}

pub fn server() -> Server {
    let config: postgres::Config = url().parse().expect("VELOSTREAM_TEST_POSTGRES is a URL");
    let host = match &config.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("the test server must be reached over TCP, not {other:?}"),
    };
    Server {
        host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        user: config.get_user().expect("a user in the URL").to_string(),
        password: String::from_utf8_lossy(config.get_password().unwrap_or_default()).into_owned(),
        name: config
            .get_dbname()
            .expect("a database in the URL")
            .to_string(),
    }
}

impl Server {
    /// A `velostream.database` section (indented for `velostream:`),
    /// without the password, which tests pass as `DB_PASSWORD`.
    pub fn database_yaml(&self) -> String {
        format!(
            "  database:\n    host: {}\n    port: {}\n    user: {}\n    name: {}\n",
            self.host, self.port, self.user, self.name
        )
    }

    /// `host:port`, as a region's database endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The `DB_*` variables naming this server.
    pub fn env(&self) -> [(&'static str, String); 5] {
        [
            ("DB_HOST", self.host.clone()),
            ("DB_PORT", self.port.to_string()),
            ("DB_USER", self.user.clone()),
            ("DB_PASSWORD", self.password.clone()),
            ("DB_NAME", self.name.clone()),
        ]
    }
}
