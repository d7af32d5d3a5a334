//! What users of other Prometheus exporters expect (issue 15): JSON log
//! lines (`--log.format json`), `--web.disable-exporter-metrics`, systemd
//! socket activation (`--web.systemd-socket`, through Debian's
//! `systemd-socket-activate`), `dump --format json` with the same numbers
//! as the Prometheus output, and the HTML landing page. Each flag is
//! checked both ways: absent it keeps the old behaviour, given it changes
//! it. Everything runs on loopback from the recorded fixture, as any user.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

fn fixture() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/all_legacy.fixture"
    )
    .to_string()
}

/// A child process whose stderr lines arrive on a channel; killed by PID
/// on drop.
struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Spawned {
    fn start(program: &str, args: &[&str]) -> Spawned {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Spawned {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first stderr line `want` accepts, within 10 s.
    fn wait_for(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no such line ({e:?}); stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every stderr line so far (waits 200 ms for stragglers).
    fn drain(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the PID of our own unreaped child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

fn json(line: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(map)) => map,
        other => panic!("not a JSON object ({other:?}): {line:?}"),
    }
}

/// `--log.format json`: every line a JSON object with ts, level and msg
/// (strings), the fields as strings beside them, keys sorted as
/// node_exporter writes them; the server answers on the address the
/// listening line names. Without the flag (and with `logfmt`) the lines
/// stay logfmt.
#[test]
fn log_format_json_writes_one_object_per_line() {
    let fixture = fixture();
    let mut server = Spawned::start(
        BIN,
        &[
            "--log.format",
            "json",
            "--log.level=debug",
            "--web.listen-address=127.0.0.1:0",
            "--source.fixture",
            &fixture,
        ],
    );
    let listening = server.wait_for(|l| l.contains("listening"));
    let fields = json(&listening);
    assert_eq!(fields["msg"], "listening", "{listening}");
    assert_eq!(fields["level"], "info", "{listening}");
    let ts = fields["ts"].as_str().unwrap();
    assert!(ts.len() == 24 && ts.ends_with('Z'), "{listening}");
    let keys: Vec<&String> = fields.keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "keys in the order written: {listening}");
    assert!(listening.starts_with("{\"address\":"), "{listening}");
    let addr: SocketAddr = fields["address"].as_str().unwrap().parse().unwrap();
    let r = http_request(addr, "GET", "/metrics", &[]).unwrap();
    assert_eq!(r.status, 200);
    server.wait_for(|l| l.contains("\"msg\":\"collected\""));
    for line in server.drain() {
        let fields = json(&line);
        for key in ["ts", "level", "msg"] {
            assert!(fields[key].is_string(), "{key} in {line}");
        }
    }

    for flags in [&[][..], &["--log.format=logfmt"][..]] {
        let mut args = vec!["--web.listen-address=127.0.0.1:0", "--source.fixture"];
        args.push(&fixture);
        args.extend_from_slice(flags);
        let mut server = Spawned::start(BIN, &args);
        let line = server.wait_for(|l| l.contains("listening"));
        assert!(
            line.starts_with("ts=") && line.contains(" level=info msg=\"listening\" address="),
            "{flags:?}: {line}"
        );
    }
}

/// `--web.disable-exporter-metrics` drops the process_* families from the
/// server and from `dump`, and keeps the exporter's health and build info
/// (as node_exporter keeps node_scrape_collector_* and its build info).
#[test]
fn disable_exporter_metrics_drops_the_process_families() {
    let fixture = fixture();
    let families = |text: &str| -> Vec<String> {
        parse_prometheus(text)
            .unwrap()
            .types
            .keys()
            .cloned()
            .collect()
    };
    for disable in [false, true] {
        let mut args = vec!["--source.fixture", fixture.as_str()];
        if disable {
            args.push("--web.disable-exporter-metrics");
        }
        let server = Server::start(&args);
        let served = families(&server.get("/metrics").text());
        let dumped = families(&dump(&args));
        for (what, names) in [("served", &served), ("dumped", &dumped)] {
            let process = names.iter().any(|n| n.starts_with("process_"));
            assert_eq!(process, !disable, "{what}, disabled={disable}: {names:?}");
            for kept in [
                "sockdiag_build_info",
                "sockdiag_collect_success",
                "sockdiag_collect_duration_seconds",
                "sockdiag_sockets",
            ] {
                assert!(names.iter().any(|n| n == kept), "{what}: {kept} missing");
            }
        }
    }
}

/// A free loopback port (bound, then released) for systemd-socket-activate.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `--web.systemd-socket` under Debian's systemd-socket-activate, which
/// listens itself and starts the exporter on the first connection with the
/// socket as fd 3: the scrape that started it is answered, and the
/// exporter's --web.listen-address is not used. Without a passed socket the
/// flag is a clear error, not a fallback to the address.
#[test]
fn systemd_socket_activation_serves_the_passed_socket() {
    if !require_tool(
        "systemd-socket-activate",
        "Debian package systemd (make deps)",
    ) {
        return;
    }
    let fixture = fixture();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let unused = format!("127.0.0.1:{}", free_port());
    let mut activator = Spawned::start(
        "systemd-socket-activate",
        &[
            "-l",
            &listen,
            BIN,
            "--web.systemd-socket",
            "--web.listen-address",
            &unused,
            "--source.fixture",
            &fixture,
        ],
    );
    activator.wait_for(|l| l.contains("Listening on"));
    let addr: SocketAddr = listen.parse().unwrap();
    let r = http_request(addr, "GET", "/metrics", &[]).unwrap();
    assert_eq!(r.status, 200, "{:?}", activator.drain());
    let m = parse_prometheus(&r.text()).unwrap();
    assert_eq!(
        m.value("sockdiag_collect_success", &[("collector", "tcp")]),
        1.0
    );
    let listening = activator.wait_for(|l| l.contains("msg=\"listening\""));
    assert!(
        listening.contains(&format!("address={listen}")),
        "{listening}"
    );
    // A second scrape on the same socket.
    assert_eq!(http_request(addr, "GET", "/", &[]).unwrap().status, 200);
    // The flag took the passed socket, not the address.
    let unused_addr: SocketAddr = unused.parse().unwrap();
    assert!(
        std::net::TcpStream::connect(unused_addr).is_err(),
        "{unused} is served"
    );

    let out = run_exporter(
        &["--web.systemd-socket", "--source.fixture", &fixture],
        Duration::from_secs(10),
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains(
            "--web.systemd-socket: no socket was passed (LISTEN_FDS and LISTEN_PID are not set)"
        ),
        "{}",
        out.stderr
    );
}

/// (name, labels sorted) -> value, from a parsed exposition, without what
/// differs from run to run (durations, timestamps, process_*).
fn comparable(
    samples: impl IntoIterator<Item = ((String, Labels), f64)>,
) -> BTreeMap<(String, Labels), f64> {
    samples
        .into_iter()
        .filter(|((name, _), _)| {
            !name.starts_with("process_")
                && name != "sockdiag_collect_duration_seconds"
                && name != "sockdiag_collect_timestamp_seconds"
        })
        .collect()
}

/// Every series of `dump --format json`, keyed as in the exposition, and
/// the group each family was put in.
/// A series keyed as in the exposition: (name, labels sorted), value.
type Sample = ((String, Labels), f64);

fn json_series(text: &str) -> (Vec<Sample>, BTreeMap<String, Vec<String>>) {
    let value: serde_json::Value = serde_json::from_str(text).expect("dump --format json parses");
    let mut series = Vec::new();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut all: Vec<(String, &serde_json::Value)> = value["collectors"]
        .as_object()
        .expect("a collectors object")
        .iter()
        .map(|(k, v)| (k.clone(), v))
        .collect();
    all.push(("other".into(), &value["other"]));
    for (group, families) in all {
        for (name, family) in families.as_object().expect("families object") {
            groups.entry(name.clone()).or_default().push(group.clone());
            for s in family["series"].as_array().expect("series array") {
                let mut labels: Labels = s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                labels.sort();
                series.push(((name.clone(), labels), s["value"].as_f64().unwrap()));
            }
        }
    }
    (series, groups)
}

/// `dump --format json` of the recorded fixture: valid JSON (python3 -m
/// json.tool reads it), and exactly the series and numbers of `dump
/// --format prometheus` on the same fixture, grouped by collector.
#[test]
fn dump_json_has_the_numbers_of_the_prometheus_dump() {
    let fixture = fixture();
    let flags = [
        "--collector.tcp.ports",
        "8080,8082,9000-9100",
        "--collector.udp.ports",
        "5353-5355",
        "--compat.node-exporter",
        "--source.fixture",
        &fixture,
    ];
    let mut json_args = vec!["--format", "json"];
    json_args.extend_from_slice(&flags);
    let text = dump(&json_args);
    if require_tool("python3", "Debian package python3") {
        let mut tool = Command::new("python3")
            .args(["-m", "json.tool"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        tool.stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = tool.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "json.tool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (series, groups) = json_series(&text);
    let prom = dump_metrics(&flags);
    let from_json = comparable(series.clone());
    let from_prom = comparable(prom.samples.clone());
    assert_eq!(series.len(), prom.samples.len(), "series counts differ");
    assert!(from_prom.len() > 200, "{}", from_prom.len());
    for (key, value) in &from_prom {
        assert_eq!(from_json.get(key), Some(value), "{key:?}");
    }
    assert_eq!(from_json.len(), from_prom.len());
    let group = |name: &str| groups.get(name).cloned().unwrap_or_default();
    assert_eq!(group("sockdiag_listen_queue"), ["listeners"]);
    assert_eq!(group("sockdiag_unix_sockets"), ["unix"]);
    assert_eq!(group("sockdiag_sockets"), ["tcp", "udp"]);
    assert_eq!(group("sockdiag_build_info"), ["other"]);
    assert_eq!(
        group("sockdiag_collect_success"),
        ["listeners", "tcp", "udp", "unix"]
    );
}

/// Runs `program` to completion within `limit` (killed by PID after it);
/// its exit status and stderr.
fn run_bounded(
    program: &str,
    args: &[&str],
    limit: Duration,
) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let mut stderr = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on the PID of our own unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
            panic!("{program} still running after {limit:?}; killed");
        }
        thread::sleep(Duration::from_millis(50));
    };
    (status, reader.join().unwrap())
}

/// A unix stream listener at `path` with a listen() backlog of `backlog`.
fn unix_listener(path: &std::path::Path, backlog: libc::c_int) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain socket calls on a fresh fd with a zeroed, filled-in
    // sockaddr_un whose path fits (checked).
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        assert!(bytes.len() < addr.sun_path.len(), "{}", path.display());
        for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let rc = libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len);
        assert_eq!(
            rc,
            0,
            "bind {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::listen(fd, backlog), 0);
        owned
    }
}

/// The landing page over a known mix in a private namespace: a unix
/// listener whose path is hostile HTML (`<script>`, quotes, `&`) and is
/// full, a TCP listener whose accept queue overflows its limit, and a
/// CLOSE_WAIT connection. The page escapes the path, highlights the three,
/// and renders in Debian's headless chromium: the screenshot is a real
/// PNG of some size (kept in target/landing.png to look at).
#[test]
fn landing_page_escapes_highlights_and_renders() {
    if !require_root_netns() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sockdiag-landing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let hostile = "<script>alert(\"x\")&<b>.sock";
    let path = dir.join(hostile);
    let _unix = unix_listener(&path, 2);
    let _waiting: Vec<std::os::unix::net::UnixStream> = (0..2)
        .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
        .collect();
    // TCP: a listener with backlog 1 and two connections never accepted.
    let full = small_backlog_listener(1);
    let full_port = full.local_addr().unwrap().port();
    let _queued: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(full.local_addr().unwrap()).unwrap())
        .collect();
    // CLOSE_WAIT: the client closes, the accepted end stays open.
    let server_side = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(server_side.local_addr().unwrap()).unwrap();
    let (_accepted, _) = server_side.accept().unwrap();
    drop(client);

    let server = Server::start(&[]);
    let page = poll_until(Duration::from_secs(5), || {
        let page = server.get("/").text();
        page.contains("class=\"warn\"><td>close_wait</td>")
            .then_some(page.clone())
            .ok_or(page)
    })
    .unwrap_or_else(|page| panic!("no highlighted close_wait row:\n{page}"));
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<b>"), "{page}");
    let escaped = "&lt;script&gt;alert(&quot;x&quot;)&amp;&lt;b&gt;.sock";
    let unix_row = page
        .split("<tr")
        .find(|r| r.contains(escaped))
        .unwrap_or_else(|| panic!("no row for the unix path:\n{page}"));
    assert!(unix_row.starts_with(" class=\"warn\""), "{unix_row}");
    let tcp_row = page
        .split("<tr")
        .find(|r| r.contains(&format!("<td>{full_port}</td>")))
        .unwrap_or_else(|| panic!("no row for port {full_port}:\n{page}"));
    assert!(tcp_row.starts_with(" class=\"warn\""), "{tcp_row}");
    assert!(page.contains("<a href=\"/metrics\">/metrics</a>"), "{page}");
    assert!(
        !page.contains("<script") && !page.contains("src="),
        "external asset"
    );

    if require_tool("chromium", "Debian package chromium (make deps)") {
        let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("landing.png");
        let _ = std::fs::remove_file(&png);
        let profile = dir.join("chromium-profile");
        let url = format!("http://{}/", server.addr);
        let (status, stderr) = run_bounded(
            "chromium",
            &[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1200,1800",
                &format!("--user-data-dir={}", profile.display()),
                &format!("--screenshot={}", png.display()),
                &url,
            ],
            Duration::from_secs(90),
        );
        assert!(status.success(), "chromium: {status}\n{stderr}");
        let bytes =
            std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}\n{stderr}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        // A blank 1200x1800 page compresses to a few KB; tables and text
        // make it several times larger.
        assert!(bytes.len() > 30_000, "{} bytes only", bytes.len());
        eprintln!("landing page screenshot: {}", png.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP listener on 127.0.0.1 with the given listen() backlog.
fn small_backlog_listener(backlog: libc::c_int) -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen(2) again on our own bound socket changes its backlog.
    let rc = unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), backlog) };
    assert_eq!(rc, 0);
    listener
}
