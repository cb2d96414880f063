//! The HTTP/1.1 pieces of the API client that need no socket: splitting a
//! URL into what the request needs, and framing a response (Content-Length,
//! chunked, or up to the end of the connection).

use super::{ApiError, ApiResponse};

/// The largest response read (the metrics page is far smaller).
pub(super) const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target {
    /// `https://` rather than `http://`.
    pub tls: bool,
    /// The host to resolve and, for TLS, to verify (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The `Host` header: host and port as written.
    pub authority: String,
    /// The path and query, at least `/`.
    pub path: String,
}

impl Target {
    /// Parses `http[s]://host[:port][/path]`; IPv6 hosts are bracketed.
    pub fn parse(url: &str) -> Result<Self, ApiError> {
        let invalid = |reason| ApiError::InvalidUrl {
            url: url.into(),
            reason,
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(invalid(
                "write http://host:port/path or https://host:port/path",
            ));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(invalid(
                "credentials in the URL are not supported: use --token",
            ));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("an IPv6 address needs a closing ']'"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| invalid("junk after ']'"))?,
                    ),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("the host is missing"));
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p
                .parse()
                .map_err(|_| invalid("the port is not a number from 0 to 65535"))?,
        };
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            path,
        })
    }
}

/// The response in `buf` once it is complete (`None`: read more); `eof`
/// says the connection has ended, so nothing more will come.
pub(super) fn parse_response(buf: &[u8], eof: bool) -> Result<Option<ApiResponse>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return match eof {
            true if buf.is_empty() => Err("the connection closed without an answer".into()),
            true => Err("the connection closed inside the response headers".into()),
            false => Ok(None),
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "the headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("unexpected status line '{status_line}'"))?;
    if (100..200).contains(&status) && status != 101 {
        // an interim answer (100 Continue): the real one follows it
        return parse_response(&buf[end + 4..], eof);
    }
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("unexpected header line '{line}'"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length '{value}'"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .split(',')
                .any(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    let rest = &buf[end + 4..];
    let body = if status == 204 || status == 304 {
        Vec::new()
    } else if chunked {
        match decode_chunked(rest)? {
            Some(body) => body,
            None if eof => return Err("the connection closed inside a chunked body".into()),
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        match rest.get(..n) {
            Some(body) => body.to_vec(),
            None if eof => return Err(format!("the body ended after {} of {n} bytes", rest.len())),
            None => return Ok(None),
        }
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(ApiResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

/// Decodes a chunked body; `None` until the last chunk (and trailers) arrived.
pub(super) fn decode_chunked(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size line")?;
        // a size may be followed by `;extension`s, which mean nothing here
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size '{hex}'"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            // trailer fields, if any, end with an empty line
            let done = data.starts_with(b"\r\n") || find(data, b"\r\n\r\n").is_some();
            return Ok(done.then_some(body));
        }
        if size > MAX_RESPONSE {
            return Err(format!("a chunk of {size} bytes is too large"));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err("a chunk does not end with CRLF".into());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tls host port authority path`, for comparing in one line.
    fn target(url: &str) -> String {
        let t = Target::parse(url).unwrap();
        format!("{} {} {} {} {}", t.tls, t.host, t.port, t.authority, t.path)
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        for (url, parts) in [
            (
                "http://localhost:8080/health",
                "false localhost 8080 localhost:8080 /health",
            ),
            (
                "https://127.0.0.1:9090/metrics?x=1#top",
                "true 127.0.0.1 9090 127.0.0.1:9090 /metrics?x=1",
            ),
            ("https://example.com", "true example.com 443 example.com /"),
            (
                "http://example.com?q",
                "false example.com 80 example.com /?q",
            ),
            (
                "https://[::1]:8443/jobs/a",
                "true ::1 8443 [::1]:8443 /jobs/a",
            ),
            ("http://[::1]/", "false ::1 80 [::1] /"),
        ] {
            assert_eq!(target(url), parts, "{url}");
        }
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("localhost:8080/health", "write http://"),
            ("ftp://host/", "write http://"),
            ("http://:8080/", "host is missing"),
            ("http://host:http/", "port is not a number"),
            ("http://host:99999/", "port is not a number"),
            ("http://[::1/", "closing ']'"),
            ("http://user:pw@host/", "--token"),
        ] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(e.contains(url) && e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn chunked_bodies_decode_once_complete() {
        let wire = b"4\r\nWiki\r\n6;name=v\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n";
        let body = decode_chunked(wire).unwrap().unwrap();
        assert_eq!(body, b"Wikipedia in \r\n\r\nchunks.");
        // every prefix is incomplete, never an error
        for cut in 0..wire.len() {
            assert_eq!(decode_chunked(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
        let trailers = b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n";
        assert_eq!(decode_chunked(trailers).unwrap().unwrap(), b"abc");
        assert!(decode_chunked(b"zz\r\n").unwrap_err().contains("zz"));
        assert!(decode_chunked(b"3\r\nabcX\r\n").is_err());
    }

    #[test]
    fn responses_are_framed_by_length_chunks_or_eof() {
        let ok = |raw: &[u8], eof| parse_response(raw, eof).unwrap().unwrap();
        let r = ok(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing",
            false,
        );
        assert_eq!((r.status, r.body.as_str()), (200, "{}"));
        let r = ok(
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"error\":\"nope\"}\r\n0\r\n\r\n",
            false,
        );
        assert_eq!((r.status, r.error_message()), (403, Some("nope".into())));
        assert_eq!(
            ok(b"HTTP/1.0 200 OK\r\n\r\nall of it", true).body,
            "all of it"
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\n\r\npart", false),
            Ok(None)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", false),
            Ok(None)
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", true)
                .unwrap_err()
                .contains("2 of 9")
        );
        assert_eq!(ok(b"HTTP/1.1 204 No Content\r\n\r\n", false).body, "");
        assert!(parse_response(b"", true)
            .unwrap_err()
            .contains("without an answer"));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", true).is_err());
    }
}
