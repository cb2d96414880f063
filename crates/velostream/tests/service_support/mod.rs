//! What the service's end-to-end tests share: starting the service,
//! plain-HTTP requests with headers, waiting for an answer, and a test CA
//! issuing server and client certificates.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP answer: status, header block, body.
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// One HTTP/1.1 request with extra `headers`.
pub fn call(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (headers, body) = response
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// One HTTP/1.1 request; (status, body).
pub fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let a = call(port, method, path, &[], body);
    (a.status, a.body)
}

/// Polls GET `path` until it answers `status`; returns the body.
pub fn wait_for(port: u16, path: &str, status: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let (code, body) = request(port, "GET", path, "");
            if code == status {
                return body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} never answered {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `/metrics` on `port` until it has the line `line` (a series and
/// its value, e.g. `kafka_broker_availability 1`).
pub fn wait_for_metric(port: u16, line: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !request(port, "GET", "/metrics", "")
        .1
        .lines()
        .any(|l| l == line)
    {
        assert!(Instant::now() < deadline, "/metrics never showed {line}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running service, killed when dropped; its stderr is `service.log`
/// and its stdout `service.out` in the test's directory.
pub struct Service(pub Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

pub fn start(configs: &[PathBuf], dir: &Path) -> Service {
    start_with(configs, dir, &[])
}

/// `start` with environment variables for the service.
pub fn start_with(configs: &[PathBuf], dir: &Path, env: &[(&str, &str)]) -> Service {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_velostream"));
    cmd.envs(env.iter().copied());
    for c in configs {
        cmd.arg("--config").arg(c);
    }
    let log = std::fs::File::create(dir.join("service.log")).unwrap();
    let out = std::fs::File::create(dir.join("service.out")).unwrap();
    Service(
        cmd.stdout(out)
            .stderr(log)
            .env_remove("KAFKA_BROKERS")
            .spawn()
            .unwrap(),
    )
}

/// A test CA with a server certificate for 127.0.0.1 and localhost, as
/// PEM files in a directory; it issues client certificates on demand.
pub struct TestCa {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    pub ca_file: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            dir: dir.to_path_buf(),
            ca_file: write("ca.crt", ca.pem()),
            server_cert: write("server.crt", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            ca,
            ca_key,
        }
    }

    /// A client certificate whose subject common name is `cn` (or, with
    /// `cn` empty, whose only name is the DNS name `dns`): (cert, key) files.
    pub fn client(&self, cn: &str, dns: &str) -> (PathBuf, PathBuf) {
        use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = [dns]
            .iter()
            .filter(|d| !d.is_empty())
            .map(|d| d.to_string())
            .collect();
        let mut params = CertificateParams::new(sans).unwrap();
        let mut name = DistinguishedName::new();
        if !cn.is_empty() {
            name.push(DnType::CommonName, cn);
        }
        params.distinguished_name = name;
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let label = if cn.is_empty() { dns } else { cn };
        let (cert_file, key_file) = (
            self.dir.join(format!("{label}.crt")),
            self.dir.join(format!("{label}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}
