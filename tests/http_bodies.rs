//! Request bodies: we never read them. With tiny_http's own server, an
//! unread body was drained on the serving thread with no timeout into a
//! buffer of the declared length: a huge Content-Length aborted the process
//! and an unsent body stalled every scrape. Every request with a body must
//! now get 413 and a closed connection, and the server keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Server;

fn send(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn scrape_ok(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let response = send(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(response.starts_with("HTTP/1.0 200"), "{response:.200}");
    assert!(response.contains("sockdiag_collect_success{collector=\"tcp\"} 1"));
    started.elapsed()
}

#[test]
fn hostile_bodies_neither_crash_nor_stall_the_server() {
    let server = Server::start(&[]);
    let cases: [&[u8]; 4] = [
        b"POST /metrics HTTP/1.1\r\nContent-Length: 100000000000000\r\n\r\nabc",
        b"POST /metrics HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
        b"POST /metrics HTTP/1.1\r\nContent-Length: 5000\r\n\r\nonly a little",
        b"GET /metrics HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
    ];
    for (i, request) in cases.iter().enumerate() {
        // Keep the hostile connection open while a normal scrape runs (a
        // scrape that succeeds also shows the server is alive).
        let mut hostile = TcpStream::connect(server.addr).unwrap();
        hostile.write_all(request).unwrap();
        let took = scrape_ok(server.addr);
        assert!(
            took < Duration::from_secs(2),
            "case {i}: scrape took {took:?}"
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
        server.addr,
        b"POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(answer.starts_with("HTTP/1.0 413"), "{answer:.100}");
    // Without a body the method is what is wrong.
    let answer = send(server.addr, b"POST /metrics HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.0 405"), "{answer:.100}");
    scrape_ok(server.addr);
}
