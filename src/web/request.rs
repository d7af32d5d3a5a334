//! Request heads: the bytes up to the blank line, parsed into a [`Head`]
//! (GET and HEAD are all we answer, and request bodies are never read), or
//! refused with the status a client needs to see ([`HeadError`]).
//!
//! Kept apart from the connection handling so that the parser can be
//! replaced (or fuzzed) without touching deadlines or TLS: it sees a buffer
//! and says whether a whole head is there, and how long it was, so
//! pipelined bytes after it stay for the next request.
//!
//! The syntax (request line, field names and values, line endings) is
//! `httparse`'s; the rules on top follow RFC 9112 and Go's net/http server
//! (node_exporter's), and where they differ the stricter one, since we never
//! read a body and can afford to refuse anything ambiguous:
//! - framing: `Content-Length` must be digits, and repeated ones must agree;
//!   `Transfer-Encoding` must end in `chunked` exactly once (else 400, RFC
//!   9112 6.3), any other coding before it is not implemented (501, as Go),
//!   and with `Content-Length` too, or in HTTP/1.0, it is refused (400) as a
//!   possible smuggling attempt. A well-framed body gets 413 later
//!   (`respond`), and the connection closes: it is never read.
//! - `Host`: required in HTTP/1.1, at most one, valid bytes only (400).
//! - `Expect`: `100-continue` is accepted (and never answered with 100,
//!   since the body is not wanted); anything else gets 417, as Go.
//! - versions: HTTP/1.0 and 1.1; any other well-formed `HTTP/x.y`
//!   (the HTTP/2 preface included) gets 505, a malformed one 400.
//! - sizes: a request line that does not end within the head limit gets
//!   414, a head that does not end within it 431.
//! - targets: origin form (`/path?query`: the query is kept apart, see
//!   [`Head::query`]), absolute
//!   form (`http://host/path`), `*` (OPTIONS only) and authority form
//!   (CONNECT only); anything else 400.
//! - line endings: CRLF or bare LF (as Go); a bare CR is malformed.

use std::str::FromStr;

use tiny_http::{HTTPVersion, Header, Method};

/// A request head, parsed.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    /// The path, without query string.
    pub path: String,
    /// The query string, raw (not percent-decoded), without the `?` and
    /// any fragment; empty when there is none.
    pub query: String,
    pub version: HTTPVersion,
    pub headers: Vec<Header>,
}

impl Head {
    pub(super) fn header(&self, name: &'static str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of a field, in order (a list may be split over lines).
    fn all<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.field.equiv(name))
            .map(|h| h.value.as_str())
    }

    /// Is `token` one of the comma-separated elements of field `name`?
    fn has_token(&self, name: &'static str, token: &str) -> bool {
        self.all(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Does the client want the connection kept open after the response?
    /// `close` always wins; HTTP/1.0 also needs `keep-alive` (as Go).
    pub(super) fn keep_alive(&self) -> bool {
        !self.has_token("Connection", "close")
            && (self.version != HTTPVersion(1, 0) || self.has_token("Connection", "keep-alive"))
    }

    /// Does the request carry a body (which we never read)? The framing was
    /// checked by [`parse_head`]: a Transfer-Encoding here is `chunked`, and
    /// every Content-Length is the same number.
    pub(super) fn has_body(&self) -> bool {
        self.header("Transfer-Encoding").is_some()
            || self
                .header("Content-Length")
                .is_some_and(|v| v.trim().parse::<u64>() != Ok(0))
    }
}

/// Why a request head was refused; the connection closes after the answer.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The head does not end within the limit (431).
    TooLarge,
    /// The request line alone does not end within the limit (414).
    UriTooLong,
    /// Not a request we can frame or understand (400).
    Malformed(&'static str),
    /// A well-formed HTTP version other than 1.0 and 1.1 (505).
    Version,
    /// A transfer coding other than chunked (501).
    UnsupportedEncoding,
    /// An `Expect` other than 100-continue (417).
    Expectation,
}

impl HeadError {
    /// The status code and the plain-text body that answer it.
    pub fn answer(&self) -> (u16, String) {
        match self {
            HeadError::TooLarge => (431, "431 request header fields too large\n".into()),
            HeadError::UriTooLong => (414, "414 request line too long\n".into()),
            HeadError::Malformed(why) => (400, format!("400 bad request: {why}\n")),
            HeadError::Version => (505, "505 HTTP version not supported\n".into()),
            HeadError::UnsupportedEncoding => (501, "501 unsupported transfer encoding\n".into()),
            HeadError::Expectation => (417, "417 expectation failed\n".into()),
        }
    }
}

/// Header slots tried before counting lines (no allocation for the usual
/// request, which has fewer).
const INLINE_HEADERS: usize = 32;

/// Parses the request head at the start of `buf`. Ok(None): incomplete.
/// On success also returns the head's length, so pipelined bytes after it
/// stay for the next request. `max` bounds the head, blank line included.
pub fn parse_head(buf: &[u8], max: usize) -> Result<Option<(Head, usize)>, HeadError> {
    let mut inline = [httparse::EMPTY_HEADER; INLINE_HEADERS];
    let mut request = httparse::Request::new(&mut inline);
    let status = match request.parse(buf) {
        Err(httparse::Error::TooManyHeaders) => {
            // At most one header per line: a slot for each line break, so
            // this cannot run out (the buffer is bounded by the caller).
            let lines = buf.iter().filter(|&&b| b == b'\n').count();
            let mut many = vec![httparse::EMPTY_HEADER; lines + 1];
            let mut request = httparse::Request::new(&mut many);
            let status = request.parse(buf);
            return finish(buf, max, status, &request);
        }
        status => status,
    };
    finish(buf, max, status, &request)
}

fn finish(
    buf: &[u8],
    max: usize,
    status: httparse::Result<usize>,
    request: &httparse::Request<'_, '_>,
) -> Result<Option<(Head, usize)>, HeadError> {
    let len = match status {
        Ok(httparse::Status::Partial) if buf.len() > max => return Err(too_large(buf, max)),
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) if len > max => return Err(too_large(buf, max)),
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(httparse::Error::Token) => return Err(HeadError::Malformed("bad request line")),
        Err(httparse::Error::HeaderName) => return Err(HeadError::Malformed("bad header name")),
        Err(httparse::Error::HeaderValue) => return Err(HeadError::Malformed("bad header value")),
        Err(httparse::Error::NewLine) => return Err(HeadError::Malformed("bad line ending")),
        Err(_) => return Err(HeadError::Malformed("bad request head")),
    };
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(HeadError::Malformed("bad request line"));
    };
    let version = HTTPVersion(1, minor);
    let method = Method::from_str(method).map_err(|_| HeadError::Malformed("bad method"))?;
    let (path, query) = target_path(&method, target)?;
    let mut headers = Vec::with_capacity(request.headers.len());
    for h in request.headers.iter() {
        let value = ascii_value(h.value);
        let header = Header::from_bytes(h.name.as_bytes(), value.as_bytes())
            .map_err(|_| HeadError::Malformed("bad header"))?;
        headers.push(header);
    }
    let head = Head {
        method,
        path,
        query,
        version,
        headers,
    };
    check_host(&head, request)?;
    check_framing(&head)?;
    check_expect(&head)?;
    Ok(Some((head, len)))
}

/// 414 when the request line is what does not fit, else 431.
fn too_large(buf: &[u8], max: usize) -> HeadError {
    // Leading blank lines are skipped (RFC 9112 2.2), as httparse does.
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    match buf[start..].iter().position(|&b| b == b'\n') {
        Some(at) if start + at < max => HeadError::TooLarge,
        _ => HeadError::UriTooLong,
    }
}

/// httparse knows only HTTP/1.0 and 1.1: a well-formed other version
/// (`HTTP/2.0`, the HTTP/2 preface's, `HTTP/3`...) is not supported (505),
/// anything else is malformed (400), as with Go.
fn version_error(buf: &[u8]) -> HeadError {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => (&rest[..end], true),
        None => (rest, false),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Method, target, version: a space more or less is malformed.
    let mut parts = line.split(|&b| b == b' ');
    let version = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(version), None) => version,
        _ => b"",
    };
    let well_formed = match version.strip_prefix(b"HTTP/") {
        Some([major]) => major.is_ascii_digit(),
        Some([major, b'.', minor]) => major.is_ascii_digit() && minor.is_ascii_digit(),
        // Still arriving: "HTTP/2." could become a version.
        Some([major, b'.']) => !complete && major.is_ascii_digit(),
        _ => false,
    };
    if well_formed {
        HeadError::Version
    } else {
        HeadError::Malformed("bad HTTP version")
    }
}

/// The path to route on, and the query, from the request target's four
/// forms.
fn target_path(method: &Method, target: &str) -> Result<(String, String), HeadError> {
    let path = if target.starts_with('/') {
        target
    } else if target == "*" {
        // OPTIONS * asks about the server: answered as for "/" (405, with
        // Allow). Any other method with "*" is malformed (RFC 9112 3.2.4).
        if *method != Method::Options {
            return Err(HeadError::Malformed("bad request target"));
        }
        "/"
    } else if let Some(at) = target.find("://").filter(|&at| is_scheme(&target[..at])) {
        // Absolute form: the path after the authority, "/" when none.
        let rest = &target[at + 3..];
        match rest.find(['/', '?', '#']) {
            Some(i) if !rest[i..].starts_with('#') => &rest[i..],
            _ => "/",
        }
    } else if *method == Method::Connect {
        // Authority form: no path of ours (404, as Go's ServeMux).
        target
    } else {
        return Err(HeadError::Malformed("bad request target"));
    };
    let path = path.split('#').next().unwrap_or("/");
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let path = if path.is_empty() { "/" } else { path };
    Ok((path.to_string(), query.to_string()))
}

/// RFC 3986 scheme: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// A field value as ASCII (tiny_http's headers are ASCII strings): httparse
/// allows obs-text (bytes 0x80 and up), as Go does; none of the fields we
/// read can use them, so each becomes `?`. Trailing whitespace is not part
/// of the value (RFC 9112 5.1).
fn ascii_value(value: &[u8]) -> String {
    let value: String = value
        .iter()
        .map(|&b| if b.is_ascii() { b as char } else { '?' })
        .collect();
    value.trim_end_matches([' ', '\t']).to_string()
}

/// One Host in HTTP/1.1 (RFC 9112 3.2), at most one in HTTP/1.0, and only
/// the bytes Go's net/http allows in one (httpguts.ValidHostHeader).
fn check_host(head: &Head, request: &httparse::Request<'_, '_>) -> Result<(), HeadError> {
    let mut hosts = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Host"));
    match (hosts.next(), hosts.next()) {
        (None, _) if head.version == HTTPVersion(1, 1) => {
            Err(HeadError::Malformed("missing required Host header"))
        }
        (Some(_), Some(_)) => Err(HeadError::Malformed("too many Host headers")),
        (Some(host), None) if !host.value.iter().all(|&b| valid_host_byte(b)) => {
            Err(HeadError::Malformed("malformed Host header"))
        }
        _ => Ok(()),
    }
}

fn valid_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!$%&'()*+,-.:;=[]_~".contains(&b)
}

/// The body's framing (RFC 9112 6): refuse what could be read two ways.
fn check_framing(head: &Head) -> Result<(), HeadError> {
    let mut length = None;
    for value in head.all("Content-Length") {
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HeadError::Malformed("invalid Content-Length"));
        }
        let n = value
            .parse::<u64>()
            .map_err(|_| HeadError::Malformed("invalid Content-Length"))?;
        if length.is_some_and(|first| first != n) {
            return Err(HeadError::Malformed("conflicting Content-Length headers"));
        }
        length = Some(n);
    }
    let codings: Vec<&str> = head
        .all("Transfer-Encoding")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if head.header("Transfer-Encoding").is_none() {
        return Ok(());
    }
    if head.version == HTTPVersion(1, 0) {
        // RFC 9112 6.1: faulty framing in HTTP/1.0.
        return Err(HeadError::Malformed("Transfer-Encoding in HTTP/1.0"));
    }
    let chunked = |c: &&str| c.eq_ignore_ascii_case("chunked");
    if !codings.last().is_some_and(chunked) || codings.iter().filter(|c| chunked(c)).count() > 1 {
        // The body's end cannot be found (RFC 9112 6.3, point 4).
        return Err(HeadError::Malformed(
            "chunked is not the final transfer coding",
        ));
    }
    if codings.len() > 1 {
        return Err(HeadError::UnsupportedEncoding);
    }
    if length.is_some() {
        // RFC 9112 6.3, point 3: "ought to be handled as an error".
        return Err(HeadError::Malformed(
            "both Transfer-Encoding and Content-Length",
        ));
    }
    Ok(())
}

/// `Expect: 100-continue` is fine (the body is refused without reading it);
/// any other expectation cannot be met (RFC 9110 10.1.1), as Go answers.
fn check_expect(head: &Head) -> Result<(), HeadError> {
    if head.all("Expect").all(|v| v.trim().is_empty()) || head.has_token("Expect", "100-continue") {
        return Ok(());
    }
    Err(HeadError::Expectation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::respond::accepts_gzip;

    fn head(text: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse_head(text.as_bytes(), 1024)
    }

    /// The status a head gets: 0 when it is accepted (the rest is up to
    /// `respond`), None while incomplete.
    fn status(text: &str) -> Option<u16> {
        match head(text) {
            Ok(Some(_)) => Some(0),
            Ok(None) => None,
            Err(e) => Some(e.answer().0),
        }
    }

    #[test]
    fn parses_request_heads() {
        let text = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\nGET";
        let (h, len) = head(text).unwrap().unwrap();
        assert_eq!(
            (h.method.clone(), h.path.as_str()),
            (Method::Get, "/metrics")
        );
        assert_eq!(len, text.len() - 3, "pipelined bytes stay");
        assert!(h.keep_alive() && !h.has_body() && accepts_gzip(&h.headers));
        let (h, _) = head("HEAD http://x:1/m HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.method.clone(), h.path.as_str()), (Method::Head, "/m"));
        assert!(!h.keep_alive(), "HTTP/1.0 closes by default");
        let (h, _) = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive());
        let (h, _) = head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive());
        let (h, _) =
            head("GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(!h.keep_alive(), "a Connection list split over two lines");
        let (h, _) = head("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive(), "close wins over keep-alive");
        let (h, _) = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.has_body());
        let (h, _) = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.has_body());
        let (h, _) = head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.has_body());
        // Bare LF line endings, as Go accepts them.
        let text = "GET /metrics HTTP/1.1\nHost: a\n\nGET";
        let (h, len) = head(text).unwrap().unwrap();
        assert_eq!((h.path.as_str(), len), ("/metrics", text.len() - 3));
        // More headers than the inline slots.
        let many: String = (0..200).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        let (h, _) = parse_head(text.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(h.headers.len(), 201);
        assert_eq!(h.header("X-199"), Some("199"));
    }

    #[test]
    fn targets() {
        for (target, method, path, query) in [
            ("/metrics?x=1", "GET", "/metrics", "x=1"),
            ("/metrics#f", "GET", "/metrics", ""),
            (
                "/metrics?collect[]=udp#f?x",
                "GET",
                "/metrics",
                "collect[]=udp",
            ),
            ("/metrics?a?b", "GET", "/metrics", "a?b"),
            ("http://h:1/metrics?x", "GET", "/metrics", "x"),
            ("HTTPS://h", "GET", "/", ""),
            ("http://h?x=/metrics", "GET", "/", "x=/metrics"),
            ("http://h#?x", "GET", "/", ""),
            ("*", "OPTIONS", "/", ""),
            ("h:443", "CONNECT", "h:443", ""),
        ] {
            let text = format!("{method} {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let (h, _) = head(&text).unwrap().unwrap();
            assert_eq!(
                (h.path.as_str(), h.query.as_str()),
                (path, query),
                "{text:?}"
            );
        }
        for bad in ["metrics", "*", "h:443", "1http://h/", "://h/"] {
            let text = format!("GET {bad} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(
                head(&text).unwrap_err(),
                HeadError::Malformed("bad request target"),
                "{text:?}"
            );
        }
    }

    /// Each row: a head and the status it gets (0: accepted).
    #[test]
    fn framing_host_expect_and_version_rules() {
        let rows: &[(&str, u16)] = &[
            // Content-Length
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 0),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            // Transfer-Encoding
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", 0),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            // Bytes in names and values, line endings
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX\0: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX : a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\rHost: a\r\r", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: caf\u{e9}\t \r\n\r\n", 0),
            ("\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0),
            // Host
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost:\r\n\r\n", 0),
            ("GET / HTTP/1.1\r\nHost: [::1]:9100\r\n\r\n", 0),
            ("GET / HTTP/1.0\r\n\r\n", 0),
            // Expect
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n", 0),
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n", 0),
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect:\r\n\r\n", 0),
            // Versions and request lines
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
            ("GET / HTTP/3.0\r\n\r\n", 505),
            ("GET / HTTP/1.2\r\n\r\n", 505),
            ("GET / HTTP/2.", 505),
            ("GET / HTTP/1.x\r\n\r\n", 400),
            ("GET / HTTPS/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1 \r\n\r\n", 400),
            ("GET /\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\n\r\n", 400),
            ("GET /a b HTTP/1.1\r\n\r\n", 400),
            ("GET /\0 HTTP/1.1\r\n\r\n", 400),
            ("G(T / HTTP/1.1\r\n\r\n", 400),
            ("\x16\x03\x01\x00", 400),
            ("G3T / HTTP/1.1\r\nHost: a\r\n\r\n", 0),
            ("get / HTTP/1.1\r\nHost: a\r\n\r\n", 0),
        ];
        for (text, want) in rows {
            assert_eq!(status(text), Some(*want), "{text:?}");
        }
        let (g3t, _) = head("G3T / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().unwrap();
        assert!(!matches!(g3t.method, Method::Get | Method::Head));
        let (lower, _) = head("get / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().unwrap();
        assert_ne!(lower.method, Method::Get, "methods are case-sensitive");
    }

    #[test]
    fn incomplete_heads_wait() {
        for text in [
            "",
            "\r\n",
            "GE",
            "GET / HTTP/1.",
            "GET / HTTP/1.1\r\nHost: a\r\n",
            "GET / HTTP/1.1\nHost: a\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\r",
        ] {
            assert_eq!(status(text), None, "{text:?}");
        }
    }

    #[test]
    fn size_limits() {
        // The head limit counts the blank line: 1024 bytes exactly is fine.
        let bare = "GET / HTTP/1.0\r\nX: \r\n\r\n".len();
        let fits = format!("GET / HTTP/1.0\r\nX: {}\r\n\r\n", "a".repeat(1024 - bare));
        assert_eq!(status(&fits), Some(0));
        let over = format!("GET / HTTP/1.0\r\nX: {}\r\n\r\n", "a".repeat(1025 - bare));
        assert_eq!(head(&over).unwrap_err(), HeadError::TooLarge);
        // A header that never ends: 431 as soon as the limit is passed.
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(1100));
        assert_eq!(head(&endless).unwrap_err(), HeadError::TooLarge);
        // Many short header lines past the limit: 431 too, whatever the
        // number of lines (more than the limit's worth of header slots).
        let many: String = (0..400).map(|i| format!("X{i}: {i}\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}");
        assert_eq!(head(&text).unwrap_err(), HeadError::TooLarge);
        // A request line longer than the limit: 414, ended or not.
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(1100));
        assert_eq!(head(&long).unwrap_err(), HeadError::UriTooLong);
        assert_eq!(head(&long[..1030]).unwrap_err(), HeadError::UriTooLong);
        assert_eq!(
            parse_head(&[b'a'; 1025], 1024).unwrap_err(),
            HeadError::UriTooLong
        );
        assert_eq!(
            head(&"\r\n".repeat(600)).unwrap_err(),
            HeadError::UriTooLong
        );
        // Within the limit, an unfinished head just waits.
        assert!(parse_head(&[b'a'; 1024], 1024).unwrap().is_none());
    }

    #[test]
    fn every_error_has_its_status() {
        for (e, code) in [
            (HeadError::TooLarge, 431),
            (HeadError::UriTooLong, 414),
            (HeadError::Malformed("x"), 400),
            (HeadError::Version, 505),
            (HeadError::UnsupportedEncoding, 501),
            (HeadError::Expectation, 417),
        ] {
            let (status, body) = e.answer();
            assert_eq!(status, code);
            assert!(body.starts_with(&code.to_string()), "{body}");
        }
    }
}
