//! End to end with a real Prometheus (Debian's 2.42, `/usr/bin/prometheus`):
//! it scrapes two exporters every second, one over plain HTTP and one over
//! TLS with basic auth (plus a third job with a wrong password, which must
//! be refused), and the test asserts through Prometheus' HTTP API that `up`
//! is right and that `sockdiag_sockets` and the listener queue series carry
//! the numbers of a known socket mix.
//!
//! Everything runs in a private network namespace made by the test thread:
//! the exporters and Prometheus are spawned from that thread and inherit it,
//! so they talk over that namespace's loopback and the only sockets there
//! are the mix, the exporters, Prometheus and the scrapes between them. The
//! scrapes are IPv4, so IPv6 numbers must match the mix exactly; IPv4 ones
//! must be at least the mix's, with listeners counted exactly. Root only;
//! skipped with a reason without root or without Prometheus. Prometheus is
//! stopped by PID when the test ends, also when it fails.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Nothing else listens in the private namespace.
const PROMETHEUS_ADDR: &str = "127.0.0.1:9090";

/// One series of a query result: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// The running Prometheus; dropping it kills it by PID and reaps it.
struct Prometheus {
    child: Child,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, config: &str) -> Prometheus {
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS_ADDR}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {PROMETHEUS}: {e}"));
        Prometheus { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query; the result vector as (labels, value).
    fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let addr: SocketAddr = PROMETHEUS_ADDR.parse().unwrap();
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let r = http_request(addr, "GET", &path, &[]).map_err(|e| format!("{promql}: {e}"))?;
        let json: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("{promql}: status {}: {e}", r.status))?;
        if json["status"] != "success" {
            return Err(format!("{promql}: {json}"));
        }
        let mut out = Vec::new();
        for series in json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let labels = series["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let value = series["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{promql}: bad sample {series}"))?;
            out.push((labels, value));
        }
        Ok(out)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the PID of our own unreaped child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn config(plain: SocketAddr, tls: SocketAddr, ca: &Path) -> String {
    let tls_job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n      server_name: localhost\n    basic_auth:\n      username: prometheus\n      password: {password}\n    static_configs:\n      - targets: ['{tls}']\n",
            ca.display()
        )
    };
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: plain\n    static_configs:\n      - targets: ['{plain}']\n  - job_name: udp-only\n    params:\n      collect[]: [udp]\n    static_configs:\n      - targets: ['{plain}']\n{}{}",
        tls_job("tls", "scrape-secret"),
        tls_job("tls-wrong-password", "guess")
    )
}

#[test]
fn prometheus_scrapes_plain_and_tls_with_basic_auth() {
    if !Path::new(PROMETHEUS).is_file() {
        skip(format_args!(
            "needs {PROMETHEUS} (`make deps` installs Debian's prometheus): no such file"
        ));
        return;
    }
    if !require_root_netns() {
        return;
    }
    let started = Instant::now();
    let mix = SocketMix::build();
    let pki = Pki::new("e2e");
    let web = pki.web_config(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {}\n",
            bcrypt_hash("scrape-secret")
        ),
    );
    let plain = Server::start(&[]);
    let tls = Server::start(&["--web.config.file", &web]);
    let prometheus =
        Prometheus::start(&pki.dir, &config(plain.addr, tls.addr, &pki.path("ca.pem")));
    let context = || {
        format!(
            "\n--- prometheus log ---\n{}\n--- plain exporter ---\n{}\n--- tls exporter ---\n{}",
            prometheus.log(),
            plain.stderr(),
            tls.stderr()
        )
    };

    // `up` for every job (the first scrape comes ~9 s after start).
    let want_up = [
        ("plain", 1.0),
        ("udp-only", 1.0),
        ("tls", 1.0),
        ("tls-wrong-password", 0.0),
    ];
    let up = poll_until(Duration::from_secs(60), || {
        let got: BTreeMap<String, f64> = prometheus
            .query("up")?
            .into_iter()
            .map(|(l, v)| (l.get("job").cloned().unwrap_or_default(), v))
            .collect();
        for (job, want) in want_up {
            match got.get(job) {
                Some(v) if *v == want => {}
                other => return Err(format!("up{{job={job:?}}} = {other:?}, want {want}")),
            }
        }
        Ok(got)
    })
    .unwrap_or_else(|e| panic!("{e}{}", context()));
    eprintln!("up after {:?}: {up:?}", started.elapsed());

    // The socket numbers, as Prometheus stored them from each exporter.
    let want = mix.expected();
    for job in ["plain", "tls"] {
        let check = || -> Result<(), String> {
            let mut diffs = Vec::new();
            let got: BTreeMap<(String, String), f64> = prometheus
                .query(&format!(
                    "sockdiag_sockets{{job=\"{job}\",protocol=\"tcp\"}}"
                ))?
                .into_iter()
                .map(|(l, v)| ((l["family"].clone(), l["state"].clone()), v))
                .collect();
            for ((family, state), n) in &want.sockets {
                let key = (family.clone(), state.clone());
                let Some(&v) = got.get(&key) else {
                    diffs.push(format!("{family} {state}: missing"));
                    continue;
                };
                // Only IPv4 carries the scrapes, and the IPv4 listeners are
                // the mix's, the two exporters' and Prometheus' own.
                let ok = match (family.as_str(), state.as_str()) {
                    ("ipv6", _) => v == *n as f64,
                    ("ipv4", "listen") => v == (*n + 3) as f64,
                    _ => v >= *n as f64,
                };
                if !ok {
                    diffs.push(format!("{family} {state}: {v}, mix has {n}"));
                }
            }
            if got.len() != want.sockets.len() {
                diffs.push(format!("{} series, want {}", got.len(), want.sockets.len()));
            }
            for (metric, pick) in [
                (
                    "sockdiag_listen_queue",
                    (|l| l.queue) as fn(&ListenerStats) -> u64,
                ),
                ("sockdiag_listen_queue_max", |l| l.max),
                ("sockdiag_listen_sockets", |l| l.sockets),
            ] {
                let got: BTreeMap<(String, String, u16), f64> = prometheus
                    .query(&format!("{metric}{{job=\"{job}\",protocol=\"tcp\"}}"))?
                    .into_iter()
                    .map(|(l, v)| {
                        let port = l["port"].parse().unwrap_or(0);
                        ((l["family"].clone(), l["address"].clone(), port), v)
                    })
                    .collect();
                for (key, stats) in &want.listeners {
                    match got.get(key) {
                        Some(&v) if v == pick(stats) as f64 => {}
                        other => {
                            diffs.push(format!("{metric}{key:?} = {other:?}, want {}", pick(stats)))
                        }
                    }
                }
            }
            if diffs.is_empty() {
                Ok(())
            } else {
                Err(diffs.join("\n  "))
            }
        };
        poll_until(Duration::from_secs(20), check)
            .unwrap_or_else(|e| panic!("job {job}:\n  {e}{}", context()));
    }
    // `params: {collect[]: [udp]}` (sent as collect%5B%5D=udp): that job
    // stored the udp collector's series and health only.
    let udp_only = poll_until(Duration::from_secs(20), || {
        let health: BTreeMap<String, f64> = prometheus
            .query("sockdiag_collect_success{job=\"udp-only\"}")?
            .into_iter()
            .map(|(l, v)| (l.get("collector").cloned().unwrap_or_default(), v))
            .collect();
        let tcp = prometheus.query("sockdiag_sockets{job=\"udp-only\",protocol=\"tcp\"}")?;
        match (health.keys().collect::<Vec<_>>().as_slice(), tcp.len()) {
            ([udp], 0) if udp.as_str() == "udp" => Ok(health),
            _ => Err(format!(
                "udp-only job: health {health:?}, {} tcp series",
                tcp.len()
            )),
        }
    })
    .unwrap_or_else(|e| panic!("{e}{}", context()));
    assert_eq!(udp_only["udp"], 1.0);
    // The wrong password was refused by the exporter, not lost on the way.
    let refused = prometheus
        .query("scrape_samples_scraped{job=\"tls-wrong-password\"}")
        .unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].1, 0.0);
    eprintln!("e2e done in {:?}", started.elapsed());
    drop(prometheus);
    drop(mix);
}
