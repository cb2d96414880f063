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
