//! A tiny HTTP/1.1 client over `TcpStream` (`http_request`,
//! `read_response`, chunked bodies, gzip), a client with a small receive
//! window, and a scrape timed the way Prometheus makes one.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::*;

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as sent on the wire (after de-chunking, before gunzip).
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body, gunzipped when Content-Encoding says gzip, as UTF-8.
    pub fn text(&self) -> String {
        let raw = if self
            .header("content-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"))
        {
            gunzip(&self.body).expect("gzip body decodes")
        } else {
            self.body.clone()
        };
        String::from_utf8(raw).expect("body is UTF-8")
    }
}

pub fn gunzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

/// Sends one request (with `Connection: close`) and reads the response.
/// Every step is bounded by a 10 s socket timeout.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    read_response(&mut s, method == "HEAD")
}

/// Reads one response. For HEAD, any bytes that arrive after the header
/// (before EOF or a 2 s quiet period) are returned as the body, so a caller
/// can assert there are none.
pub fn read_response(s: &mut TcpStream, head: bool) -> io::Result<HttpResponse> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    let header_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "EOF before the end of the response header ({} bytes read)",
                    buf.len()
                ),
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.len() > 1 << 20 {
            return Err(io::Error::other("response header larger than 1 MiB"));
        }
    };
    let head_text = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut sp = status_line.splitn(3, ' ');
    let version = sp.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(io::Error::other(format!("bad status line {status_line:?}")));
    }
    let status: u16 = sp
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| io::Error::other(format!("bad header line {l:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut rest = buf[header_end + 4..].to_vec();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if head {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        loop {
            match s.read(&mut tmp) {
                Ok(0) => break,
                Ok(n) => rest.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
            if rest.len() > 1 << 24 {
                break;
            }
        }
        rest
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(s, rest)?
    } else if let Some(cl) = get("content-length") {
        let cl: usize = cl
            .parse()
            .map_err(|_| io::Error::other(format!("bad Content-Length {cl:?}")))?;
        while rest.len() < cl {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside the body",
                ));
            }
            rest.extend_from_slice(&tmp[..n]);
        }
        rest.truncate(cl);
        rest
    } else {
        s.read_to_end(&mut rest)?;
        rest
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn read_chunked(s: &mut TcpStream, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut tmp = [0u8; 16384];
    let mut pos = 0;
    let mut fill = |buf: &mut Vec<u8>| -> io::Result<()> {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "EOF inside a chunked body",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
        Ok(())
    };
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf[pos..], b"\r\n") {
                break pos + i;
            }
            fill(&mut buf)?;
        };
        let size_text = String::from_utf8_lossy(&buf[pos..line_end]).to_string();
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| io::Error::other(format!("bad chunk size {size_text:?}")))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    if i == 0 {
                        return Ok(body);
                    }
                    pos += i + 2;
                } else {
                    fill(&mut buf)?;
                }
            }
        }
        while buf.len() < pos + size + 2 {
            fill(&mut buf)?;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------

/// A blocking TCP connection whose receive buffer is set small before
/// connect (so the window it advertises stays small), for clients that
/// stop reading.
pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: i32) -> TcpStream {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call.
    let fd = cvt(
        unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) },
        "socket",
    )
    .unwrap();
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf, "SO_RCVBUF");
    let ret = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain old data.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = a.port().to_be();
            sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            // SAFETY: valid sockaddr_in of the given length.
            unsafe {
                libc::connect(
                    fd,
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain old data.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_addr.s6_addr = a.ip().octets();
            // SAFETY: valid sockaddr_in6 of the given length.
            unsafe {
                libc::connect(
                    fd,
                    &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    cvt(ret, &format!("connect {addr}")).unwrap();
    let s = TcpStream::from(owned);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Parses a complete `Content-Length` response held in memory.
pub fn parse_response_bytes(raw: &[u8]) -> io::Result<HttpResponse> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("no complete response head in {} bytes", raw.len()),
        )
    })?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if let Some((_, cl)) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        let cl: usize = cl.parse().map_err(io::Error::other)?;
        if body.len() < cl {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body {} of {cl} bytes", body.len()),
            ));
        }
        body.truncate(cl);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// A scrape the way Prometheus makes one (new connection, gzip accepted),
/// timed from connect to the last body byte.
pub fn timed_scrape(addr: SocketAddr, path: &str) -> io::Result<(Duration, HttpResponse)> {
    let started = Instant::now();
    let response = http_request(addr, "GET", path, &[("Accept-Encoding", "gzip")])?;
    Ok((started.elapsed(), response))
}
