//! Malformed and unusual requests against a running exporter, compared
//! with what RFC 9112 asks and Go's net/http server (node_exporter's) does:
//! framing (Content-Length, Transfer-Encoding), bytes in fields, Host,
//! bare-LF lines, size limits, methods, versions, Expect, target forms.
//!
//! Each row of [`ROWS`] is a raw request, the status it must get and whether
//! the connection stays open after it. Every row runs twice: alone on a fresh
//! connection (the answer, its `Connection` header, then EOF or a served
//! follow-up), and pipelined on a kept-alive connection between two good
//! requests, all in one write: exactly one answer per request, in order,
//! nothing after a closing answer. So a body taken for a request, a request
//! answered twice or not at all (a desync), or a stall shows as a failure.
//! Where src/web/request.rs decides against Go, its module comment says why.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::support::Server;

/// The head limit the server runs with (`--web.max-header-bytes`).
const MAX_HEAD: usize = 1024;

struct Row {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    /// The connection stays open (and says `Connection: keep-alive`).
    keep: bool,
    /// A HEAD request: the answer has no body.
    head_only: bool,
}

fn row(name: &'static str, request: impl AsRef<[u8]>, status: u16, keep: bool) -> Row {
    Row {
        name,
        request: request.as_ref().to_vec(),
        status,
        keep,
        head_only: false,
    }
}

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    let long_line = format!("GET /metrics?{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(MAX_HEAD));
    let long_header = format!("GET /metrics HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    let mut head = row("HEAD", "HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 200, true);
    head.head_only = true;
    vec![
        row("plain GET", "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 200, true),
        head,
        row("query string served as the path", "GET /metrics?x=1&y=%2F HTTP/1.1\r\nHost: a\r\n\r\n", 200, true),
        row("absolute-form target", "GET http://a:9/metrics HTTP/1.1\r\nHost: a:9\r\n\r\n", 200, true),
        row("absolute-form without a path is /", "GET http://a HTTP/1.1\r\nHost: a\r\n\r\n", 200, true),
        row("bare LF line endings", "GET /metrics HTTP/1.1\nHost: a\n\n", 200, true),
        row("mixed line endings", "GET /metrics HTTP/1.1\r\nHost: a\n\r\n", 200, true),
        row("empty lines before the request line", "\r\n\r\nGET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 200, true),
        row("obs-text in a value", b"GET /metrics HTTP/1.1\r\nHost: a\r\nUser-Agent: caf\xe9\r\n\r\n", 200, true),
        row("HTTP/1.0 closes by default", "GET /metrics HTTP/1.0\r\n\r\n", 200, false),
        row("HTTP/1.0 keep-alive", "GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200, true),
        row("HTTP/1.0 close wins over keep-alive", "GET /metrics HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", 200, false),
        row("HTTP/1.1 Connection: close", "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 200, false),
        row("identical Content-Length twice", "GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", 200, true),
        // Framing
        row("two different Content-Length", "GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nGET /", 400, false),
        row("Content-Length not a number", "GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n", 400, false),
        row("Content-Length with a sign", "GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: +0\r\n\r\n", 400, false),
        row("Content-Length as a list", "GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 0\r\n\r\n", 400, false),
        row("Transfer-Encoding and Content-Length", "POST /metrics HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, false),
        row("Transfer-Encoding not ending in chunked", "POST /metrics HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400, false),
        row("chunked twice", "POST /metrics HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400, false),
        row("Transfer-Encoding in HTTP/1.0", "POST /metrics HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, false),
        row("unknown coding before chunked", "POST /metrics HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, false),
        row("a body is never read", "GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", 413, false),
        row("a chunked body is never read", "POST /metrics HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 413, false),
        // Bytes in fields
        row("NUL in a value", "GET /metrics HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400, false),
        row("bare CR in a value", "GET /metrics HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, false),
        row("DEL in a value", "GET /metrics HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400, false),
        row("space before the colon", "GET /metrics HTTP/1.1\r\nHost: a\r\nX : a\r\n\r\n", 400, false),
        row("obsolete line folding", "GET /metrics HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, false),
        row("NUL in the target", "GET /metrics\0 HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
        // Host
        row("HTTP/1.1 without Host", "GET /metrics HTTP/1.1\r\n\r\n", 400, false),
        row("two Host headers", "GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, false),
        row("a space in Host", "GET /metrics HTTP/1.1\r\nHost: a b\r\n\r\n", 400, false),
        // Sizes
        row("request line over the limit", long_line, 414, false),
        row("head over the limit", long_header, 431, false),
        // Methods and targets
        row("unknown method", "FOO /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 405, true),
        row("token method with a digit", "G3T /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 405, true),
        row("methods are case-sensitive", "get /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 405, true),
        row("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 405, true),
        row("not a method token", "GE(T /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
        row("relative target", "GET metrics HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
        row("two spaces in the request line", "GET  /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 400, false),
        // Versions
        row("HTTP/2.0 request line", "GET /metrics HTTP/2.0\r\nHost: a\r\n\r\n", 505, false),
        row("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, false),
        row("HTTP/3.0", "GET /metrics HTTP/3.0\r\nHost: a\r\n\r\n", 505, false),
        row("malformed version", "GET /metrics HTTP/1.x\r\nHost: a\r\n\r\n", 400, false),
        row("HTTP/0.9", "GET /metrics\r\n\r\n", 400, false),
        // Expect
        row("100-continue without a body", "GET /metrics HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", 200, true),
        row("100-continue with a body: 413, no 100", "POST /metrics HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 413, false),
        row("unknown expectation", "GET /metrics HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417, false),
    ]
}

/// One response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    connection: String,
    body: Vec<u8>,
}

/// Reads responses one at a time from a connection, keeping the bytes of
/// the next one.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        // Longer than the server's read timeout (2 s here): a head the
        // server waits on forever shows as EOF, not as a client timeout.
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next response (its body by Content-Length, none for HEAD).
    fn answer(&mut self, head_only: bool) -> Result<Answer, String> {
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match self.fill() {
                Ok(0) => return Err(format!("EOF before an answer ({} bytes)", self.buf.len())),
                Ok(_) => {}
                Err(e) => return Err(format!("no answer: {e}")),
            }
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {text:?}"))?;
        let field = |name: &str| {
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        let length: usize = if head_only {
            0
        } else {
            field("Content-Length")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no Content-Length in {text:?}"))?
        };
        while self.buf.len() < end + length {
            match self.fill() {
                Ok(0) => return Err("EOF in the body".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("body: {e}")),
            }
        }
        let body = self.buf[end..end + length].to_vec();
        self.buf.drain(..end + length);
        Ok(Answer {
            status,
            connection: field("Connection").unwrap_or_default(),
            body,
        })
    }

    /// The server closed the connection with nothing more to say.
    fn closed(&mut self) -> Result<(), String> {
        loop {
            if !self.buf.is_empty() {
                let extra = String::from_utf8_lossy(&self.buf).into_owned();
                return Err(format!("bytes after a closing answer: {extra:.200}"));
            }
            match self.fill() {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(format!("not closed: {e}")),
            }
        }
    }
}

/// Checks one answer against the row.
fn check(row: &Row, answer: Result<Answer, String>) -> Result<(), String> {
    let answer = answer?;
    if answer.status != row.status {
        return Err(format!(
            "status {} (want {}): {}",
            answer.status,
            row.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    let want = if row.keep { "keep-alive" } else { "close" };
    if !answer.connection.eq_ignore_ascii_case(want) {
        return Err(format!("Connection: {:?}, want {want}", answer.connection));
    }
    // The metrics, or the landing page (which links to them).
    let body = String::from_utf8_lossy(&answer.body);
    let line = row
        .request
        .split(|&b| b == b'\n')
        .find(|l| !l.is_empty() && *l != b"\r")
        .unwrap_or(&[]);
    let want = if line.windows(8).any(|w| w == b"/metrics") {
        "sockdiag_collect_success"
    } else {
        "href=\"/metrics\""
    };
    if answer.status == 200 && !row.head_only && !body.contains(want) {
        return Err(format!("a 200 without {want}: {body:.200}"));
    }
    Ok(())
}

/// The row alone on a fresh connection; if it keeps the connection open, a
/// follow-up request on it is served.
fn alone(addr: SocketAddr, row: &Row) -> Result<(), String> {
    let mut c = Client::connect(addr);
    c.stream
        .write_all(&row.request)
        .map_err(|e| e.to_string())?;
    check(row, c.answer(row.head_only))?;
    if row.keep {
        c.stream
            .write_all(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let next = c.answer(false)?;
        if next.status != 404 {
            return Err(format!("follow-up got {}, want 404", next.status));
        }
    } else {
        c.closed()?;
    }
    Ok(())
}

/// The row between two good requests, all in one write.
fn pipelined(addr: SocketAddr, row: &Row) -> Result<(), String> {
    let mut c = Client::connect(addr);
    let mut bytes = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    bytes.extend_from_slice(&row.request);
    bytes.extend_from_slice(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n");
    c.stream.write_all(&bytes).map_err(|e| e.to_string())?;
    let first = c.answer(false).map_err(|e| format!("first: {e}"))?;
    if first.status != 200 {
        return Err(format!("the landing page before got {}", first.status));
    }
    check(row, c.answer(row.head_only))?;
    if row.keep {
        let next = c.answer(false).map_err(|e| format!("after: {e}"))?;
        if next.status != 404 {
            return Err(format!("the request after got {}, want 404", next.status));
        }
        // Nothing more: one answer per request.
        c.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match c.fill() {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            other => return Err(format!("after the last answer: {other:?} {:?}", c.buf)),
        }
    } else {
        c.closed()?;
    }
    Ok(())
}

#[test]
fn malformed_and_unusual_requests_get_one_right_answer_each() {
    let server = Server::start(&[
        "--web.max-header-bytes",
        &MAX_HEAD.to_string(),
        "--web.read-timeout",
        "2s",
    ]);
    let mut failures = Vec::new();
    for row in rows() {
        for (mode, result) in [
            ("alone", alone(server.addr, &row)),
            ("pipelined", pipelined(server.addr, &row)),
        ] {
            if let Err(e) = result {
                failures.push(format!("{} ({mode}): {e}", row.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\nserver stderr:\n{}",
        failures.len(),
        failures.join("\n"),
        server.stderr()
    );
}
