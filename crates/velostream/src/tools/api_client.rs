//! A small blocking HTTP/1.1 client for the service's API (the health and
//! metrics ports), used by `velostream health` and `state backup --service`.
//! It speaks plain HTTP to `http://` URLs and HTTPS (rustls, optionally with
//! a client certificate for `client_auth: required`) to `https://` URLs, and
//! sends `Authorization: Bearer <token>` when a token is given. One request
//! per connection (`Connection: close`), so no pooling or keep-alive logic.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

mod error;
mod http;
mod tls;

pub use error::ApiError;
use http::{parse_response, Target};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How a command authenticates to the service: the `--token`, `--cacert`,
/// `--cert` and `--key` flags (flatten them into a command).
#[derive(Clone, Default, clap::Args)]
pub struct ApiAuth {
    /// Bearer token for the service's API, sent as `Authorization: Bearer` (prefer
    /// the variable: other local users can see command lines)
    #[arg(
        long,
        value_name = "TOKEN",
        env = "VELOSTREAM_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// CA certificate(s), PEM, to verify an https:// service (default: the system's roots)
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate chain, PEM, for a service with `client_auth: required`
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert, PEM
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl std::fmt::Debug for ApiAuth {
    // the token is a credential: show only whether one is set
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

/// A response: its status code and body (decoded as UTF-8, lossily).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// The HTTP status code (200, 401, 403, ...).
    pub status: u16,
    /// The whole body, after any chunked transfer coding is removed.
    pub body: String,
}

impl ApiResponse {
    /// The `error` field of a JSON body (`{"error": "..."}`), if any.
    pub fn error_message(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        value.get("error")?.as_str().map(str::to_string)
    }
}

/// A blocking client for the service's API; cheap to reuse for several requests.
pub struct ApiClient {
    auth: ApiAuth,
    // built at the first https:// request, so plain-HTTP use never reads the system roots
    tls: OnceLock<Arc<ClientConfig>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("auth", &self.auth)
            .finish()
    }
}

impl ApiClient {
    /// A client with these credentials; certificate and key files given are
    /// read now, so a wrong path fails before any request.
    pub fn new(auth: ApiAuth) -> Result<Self, ApiError> {
        if let Some(token) = &auth.token {
            if token.chars().any(char::is_control) {
                return Err(ApiError::InvalidToken);
            }
        }
        let client = Self {
            auth,
            tls: OnceLock::new(),
        };
        if client.auth.cacert.is_some() || client.auth.cert.is_some() || client.auth.key.is_some() {
            client.tls_config()?;
        }
        Ok(client)
    }

    /// `GET url`.
    pub fn get(&self, url: &str) -> Result<ApiResponse, ApiError> {
        self.request("GET", url, None)
    }

    /// `POST url` without a body.
    pub fn post(&self, url: &str) -> Result<ApiResponse, ApiError> {
        self.request("POST", url, None)
    }

    /// `POST url` that must answer 200; any other status is an
    /// [`ApiError::Status`] carrying the server's `error` message.
    pub fn post_ok(&self, url: &str) -> Result<ApiResponse, ApiError> {
        let response = self.post(url)?;
        match response.status {
            200 => Ok(response),
            status => Err(ApiError::Status {
                method: "POST".into(),
                url: url.into(),
                status,
                message: response.error_message(),
            }),
        }
    }

    /// Sends `method url` (with `json` as an `application/json` body, if
    /// given) and reads the whole response.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        json: Option<&str>,
    ) -> Result<ApiResponse, ApiError> {
        let target = Target::parse(url)?;
        let mut request = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: velostream/{}\r\nConnection: close\r\n",
            target.path,
            target.authority,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(token) = &self.auth.token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if json.is_some() {
            request.push_str("Content-Type: application/json\r\n");
        }
        let body = json.unwrap_or("");
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));

        let mut tcp = connect(url, &target)?;
        if target.tls {
            let name =
                ServerName::try_from(target.host.clone()).map_err(|_| ApiError::InvalidUrl {
                    url: url.into(),
                    reason: "the host is not a DNS name or IP address",
                })?;
            let conn = ClientConnection::new(self.tls_config()?, name)
                .map_err(|e| ApiError::TlsSetup(e.to_string()))?;
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            // handshake first, so its failures are reported as such
            while stream.conn.is_handshaking() {
                stream
                    .conn
                    .complete_io(&mut stream.sock)
                    .map_err(|e| io_error(url, e))?;
            }
            exchange(url, &mut stream, request.as_bytes())
        } else {
            exchange(url, &mut tcp, request.as_bytes())
        }
    }

    /// The rustls configuration for https:// URLs, built once.
    fn tls_config(&self) -> Result<Arc<ClientConfig>, ApiError> {
        if let Some(config) = self.tls.get() {
            return Ok(config.clone());
        }
        let config = Arc::new(tls::build_config(&self.auth)?);
        Ok(self.tls.get_or_init(|| config).clone())
    }
}

/// `base` (`https://host:port`, trailing slash or not) joined with `path` (`/checkpoint`).
pub fn endpoint(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Connects to the first of the host's addresses that accepts within the timeout.
fn connect(url: &str, target: &Target) -> Result<TcpStream, ApiError> {
    let addrs = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|source| ApiError::Resolve {
            url: url.into(),
            source,
        })?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(tcp) => {
                let timeouts = tcp
                    .set_read_timeout(Some(READ_TIMEOUT))
                    .and_then(|_| tcp.set_write_timeout(Some(READ_TIMEOUT)));
                timeouts.map_err(|e| io_error(url, e))?;
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(ApiError::Connect {
        url: url.into(),
        source: last,
    })
}

/// Writes the request and reads until the response is complete.
fn exchange(
    url: &str,
    stream: &mut impl ReadWrite,
    request: &[u8],
) -> Result<ApiResponse, ApiError> {
    stream
        .write_all(request)
        .and_then(|_| stream.flush())
        .map_err(|e| io_error(url, e))?;
    let malformed = |reason: String| ApiError::Malformed {
        url: url.into(),
        reason,
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            // a peer that closes without TLS close_notify has still ended its answer
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(url, e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(response) = parse_response(&buf, n == 0).map_err(malformed)? {
            return Ok(response);
        }
        if buf.len() > http::MAX_RESPONSE {
            return Err(malformed(format!(
                "the response exceeds {} bytes",
                http::MAX_RESPONSE
            )));
        }
    }
}

/// Streams the client can talk over (plain TCP or TLS).
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Classifies an I/O failure: a TLS alert or certificate problem, a timeout, or other.
fn io_error(url: &str, e: io::Error) -> ApiError {
    let url = url.to_string();
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return ApiError::Tls {
            url,
            source: tls.clone(),
        };
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ApiError::Timeout { url },
        _ => ApiError::Io { url, source: e },
    }
}
