//! Request heads: the bytes up to the blank line, parsed into a [`Head`]
//! (GET and HEAD are all we answer, and request bodies are never read), or
//! refused as too large or malformed.
//!
//! Kept apart from the connection handling so that the parser can be
//! replaced (or fuzzed) without touching deadlines or TLS: it sees a buffer
//! and says whether a whole head is there, and how long it was, so
//! pipelined bytes after it stay for the next request.

use std::str::FromStr;

use tiny_http::{HTTPVersion, Header, Method};

/// A request head, parsed.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    /// The path, without query string.
    pub path: String,
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

    /// Does the client want the connection kept open after the response?
    pub(super) fn keep_alive(&self) -> bool {
        let connection = self.header("Connection").unwrap_or("");
        let has = |token: &str| {
            connection
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.version == HTTPVersion(1, 0) {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// Does the request carry a body (which we never read)?
    pub(super) fn has_body(&self) -> bool {
        self.header("Transfer-Encoding").is_some()
            || self
                .header("Content-Length")
                .is_some_and(|v| v.trim() != "0")
    }
}

/// Why a request head was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Larger than the limit (431).
    TooLarge,
    /// Not HTTP/1.x as we understand it (400).
    Malformed(&'static str),
}

/// Parses the request head at the start of `buf`. Ok(None): incomplete.
/// On success also returns the head's length, so pipelined bytes after it
/// stay for the next request.
pub fn parse_head(buf: &[u8], max: usize) -> Result<Option<(Head, usize)>, HeadError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > max {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let len = end + 4;
    if len > max {
        return Err(HeadError::TooLarge);
    }
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| HeadError::Malformed("not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("bad request line"));
    };
    let version = match version {
        "HTTP/1.1" => HTTPVersion(1, 1),
        "HTTP/1.0" => HTTPVersion(1, 0),
        _ => return Err(HeadError::Malformed("unsupported HTTP version")),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(HeadError::Malformed("bad method"));
    }
    let method = Method::from_str(method).map_err(|_| HeadError::Malformed("bad method"))?;
    // Origin form (/path?query) or absolute form (http://host/path).
    let path = match target.find("://") {
        Some(at) => {
            let rest = &target[at + 3..];
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        None if target.starts_with('/') || target == "*" => target,
        None => return Err(HeadError::Malformed("bad request target")),
    };
    let path = path.split(['?', '#']).next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(HeadError::Malformed("bad header line"))?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(HeadError::Malformed("bad header name"));
        }
        let header = Header::from_bytes(name.as_bytes(), value.trim().as_bytes())
            .map_err(|_| HeadError::Malformed("bad header"))?;
        headers.push(header);
    }
    Ok(Some((
        Head {
            method,
            path,
            version,
            headers,
        },
        len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::respond::accepts_gzip;

    fn head(text: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse_head(text.as_bytes(), 1024)
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
        let (h, _) = head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive());
        let (h, _) = head("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.has_body());
        let (h, _) = head("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.has_body());
        let (h, _) = head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.has_body());
        assert!(
            head("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none(),
            "incomplete"
        );
    }

    #[test]
    fn refuses_bad_and_oversized_heads() {
        for bad in [
            "GET /\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "G3T / HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
        ] {
            assert!(matches!(head(bad), Err(HeadError::Malformed(_))), "{bad:?}");
        }
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(head(&big).unwrap_err(), HeadError::TooLarge);
        assert_eq!(
            parse_head(&[b'a'; 1025], 1024).unwrap_err(),
            HeadError::TooLarge
        );
        assert!(parse_head(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n'], 1024).is_err());
    }
}
