//! Request bodies: we never read them. With tiny_http's own server, an
//! unread body was drained on the serving thread with no timeout into a
//! buffer of the declared length: a huge Content-Length aborted the process
//! and an unsent body stalled every scrape. Every request with a body must
//! now get 413 and a closed connection, and the server keeps serving.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockdiag_exporter"))
        .args(["--web.listen-address", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().expect("a log line").unwrap();
    let port = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("address=127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .unwrap();
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, port }
}

fn send(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn scrape_ok(port: u16) -> Duration {
    let started = Instant::now();
    let response = send(port, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(response.starts_with("HTTP/1.0 200"), "{response:.200}");
    assert!(response.contains("sockdiag_collect_success{collector=\"tcp\"} 1"));
    started.elapsed()
}

#[test]
fn hostile_bodies_neither_crash_nor_stall_the_server() {
    let mut server = start();
    let cases: [&[u8]; 4] = [
        b"POST /metrics HTTP/1.1\r\nContent-Length: 100000000000000\r\n\r\nabc",
        b"POST /metrics HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
        b"POST /metrics HTTP/1.1\r\nContent-Length: 5000\r\n\r\nonly a little",
        b"GET /metrics HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
    ];
    for (i, request) in cases.iter().enumerate() {
        // Keep the hostile connection open while a normal scrape runs.
        let mut hostile = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        hostile.write_all(request).unwrap();
        let took = scrape_ok(server.port);
        assert!(
            took < Duration::from_secs(2),
            "case {i}: scrape took {took:?}"
        );
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "case {i}: server died"
        );
        hostile
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = Vec::new();
        let _ = hostile.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "case {i}: {answer:.100}"
        );
        assert!(
            answer.contains("Connection: close"),
            "case {i}: {answer:.200}"
        );
    }
    let answer = send(
        server.port,
        b"POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(answer.starts_with("HTTP/1.0 413"), "{answer:.100}");
    // Without a body the method is what is wrong.
    let answer = send(server.port, b"POST /metrics HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.0 405"), "{answer:.100}");
    scrape_ok(server.port);
}
