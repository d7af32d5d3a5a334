//! The metric catalogue: every metric's name, HELP text and labels live here
//! and nowhere else, and [`Metrics::record`] is the one place values are set.
//!
//! Conventions: base units (`_bytes`, `_seconds`); counts and bytes never
//! share a metric; every family x state series is emitted, zeros included,
//! so dashboards never see gaps; lowercase label values. Series whose number
//! depends on the host (listeners, ports) are capped, and what a cap leaves
//! out is counted in `sockdiag_series_dropped`, never dropped silently.

use std::time::UNIX_EPOCH;

use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::collect::{Kind, Report, Stats};
use crate::diag::{format_address, Family, TcpState, UdpState, UnixState, UnixType};

/// One metric's definition.
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

const BY_STATE: &[&str] = &["protocol", "family", "state"];
const BY_LISTENER: &[&str] = &["protocol", "family", "address", "port"];
const BY_COLLECTOR: &[&str] = &["collector"];
const BY_UNIX_STATE: &[&str] = &["type", "state"];
const BY_PORT: &[&str] = &["protocol", "direction", "port", "state"];

pub const SOCKETS: Spec = Spec {
    name: "sockdiag_sockets",
    help: "Sockets by protocol, address family and state, as the kernel reports them over sock_diag. TCP: request sockets count as syn_recv, TIME_WAIT sockets in their FIN_WAIT2 substate as fin_wait2 (as in ss). UDP: connected (connect() gave a default peer) or unconnected.",
    labels: BY_STATE,
};
pub const RECEIVE_QUEUE: Spec = Spec {
    name: "sockdiag_receive_queue_bytes",
    help: "Receive queues summed over non-listening sockets. TCP: bytes received but not yet read. UDP: receive memory charged to the sockets (buffer overhead included, so more than the payload).",
    labels: BY_STATE,
};
pub const SEND_QUEUE: Spec = Spec {
    name: "sockdiag_send_queue_bytes",
    help: "Send queues summed over non-listening sockets. TCP: bytes written but not yet acknowledged by the peer. UDP: send memory not yet released by the device.",
    labels: BY_STATE,
};
pub const SYN_QUEUE: Spec = Spec {
    name: "sockdiag_listen_syn_queue",
    help: "Half-open connections (SYN received, final ACK not yet) by local port: the SYN queue of the listener on that port. From the tcp collector's dump.",
    labels: &["protocol", "family", "port"],
};
pub const LISTEN_QUEUE: Spec = Spec {
    name: "sockdiag_listen_queue",
    help: "Connections completed and waiting for accept(), per listening address, summed over an SO_REUSEPORT group.",
    labels: BY_LISTENER,
};
pub const LISTEN_QUEUE_MAX: Spec = Spec {
    name: "sockdiag_listen_queue_max",
    help: "Accept queue limit (the listen() backlog capped by net.core.somaxconn), per listening address, summed over an SO_REUSEPORT group.",
    labels: BY_LISTENER,
};
pub const LISTEN_SOCKETS: Spec = Spec {
    name: "sockdiag_listen_sockets",
    help: "Listening sockets bound to the address (more than 1 for an SO_REUSEPORT group).",
    labels: BY_LISTENER,
};
pub const LISTEN_DROPS: Spec = Spec {
    name: "sockdiag_listen_drops_total",
    help: "SYNs and connections the listening socket dropped: its accept or SYN queue was full (counted with the kernel's ListenDrops) or its socket filter rejected them. Restarts at 0 when the listening socket is reopened.",
    labels: BY_LISTENER,
};
pub const UDP_DROPS: Spec = Spec {
    name: "sockdiag_udp_receive_drops",
    help: "Datagrams dropped on receive (full receive buffer, checksum or filter), summed over the UDP sockets open now. A gauge: a socket's count leaves the sum when it closes.",
    labels: &["family"],
};
pub const UNIX_SOCKETS: Spec = Spec {
    name: "sockdiag_unix_sockets",
    help: "Unix domain sockets by type and state. Connected counts accepted and connecting sockets and both ends of socketpairs; a connection still waiting in a listener's queue shows as its client socket here and in sockdiag_unix_listen_queue (the kernel does not list the waiting server end).",
    labels: BY_UNIX_STATE,
};
pub const UNIX_RECEIVE_QUEUE: Spec = Spec {
    name: "sockdiag_unix_receive_queue_bytes",
    help: "Unix receive queues summed over non-listening sockets: unread bytes for stream and seqpacket; for dgram the kernel reports only the first queued datagram's length.",
    labels: BY_UNIX_STATE,
};
pub const UNIX_SEND_QUEUE: Spec = Spec {
    name: "sockdiag_unix_send_queue_bytes",
    help: "Unix send memory not yet consumed by the receiver, summed over non-listening sockets.",
    labels: BY_UNIX_STATE,
};
pub const UNIX_LISTEN_QUEUE: Spec = Spec {
    name: "sockdiag_unix_listen_queue",
    help: "Connections waiting for accept() per unix listener path (relative paths as ./path); abstract names are summed as @abstract, unnamed as @unnamed, listeners beyond --collector.unix.max-listeners as @other.",
    labels: &["path"],
};
pub const UNIX_LISTEN_QUEUE_MAX: Spec = Spec {
    name: "sockdiag_unix_listen_queue_max",
    help: "Accept backlog limit per unix listener path (summed like sockdiag_unix_listen_queue).",
    labels: &["path"],
};
pub const PORT_SOCKETS: Spec = Spec {
    name: "sockdiag_port_sockets",
    help: "Sockets by state for the ports of --collector.tcp.ports / --collector.udp.ports: direction local is the port we serve, remote a port we connect to.",
    labels: BY_PORT,
};
pub const PORT_DROPS: Spec = Spec {
    name: "sockdiag_port_receive_drops",
    help: "Datagrams dropped on receive by the UDP sockets bound to each port of --collector.udp.ports (a gauge, like sockdiag_udp_receive_drops).",
    labels: &["protocol", "port"],
};
pub const SERIES_DROPPED: Spec = Spec {
    name: "sockdiag_series_dropped",
    help: "Series left out of the last collection by a cardinality cap, by the metric they belong to (listener metrics: listeners left out of each listener metric).",
    labels: &["metric"],
};
pub const COLLECT_DURATION: Spec = Spec {
    name: "sockdiag_collect_duration_seconds",
    help: "Wall time of the collection whose data is served, per collector.",
    labels: BY_COLLECTOR,
};
pub const COLLECT_SUCCESS: Spec = Spec {
    name: "sockdiag_collect_success",
    help: "1 if the collector's collection whose data is served succeeded, 0 if it failed (its series are then left out).",
    labels: BY_COLLECTOR,
};
pub const COLLECT_TIMESTAMP: Spec = Spec {
    name: "sockdiag_collect_timestamp_seconds",
    help: "Unix time at which the served data was collected. Collections are cached: data may be up to max(--cache.ttl, 4x the collection's duration) old.",
    labels: BY_COLLECTOR,
};
pub const COLLECTIONS: Spec = Spec {
    name: "sockdiag_collections_total",
    help: "Collections run against the kernel since start; scrapes served from the cache do not count.",
    labels: BY_COLLECTOR,
};
pub const BUILD_INFO: Spec = Spec {
    name: "sockdiag_build_info",
    help: "Build information of the running sockdiag_exporter; always 1.",
    labels: &["version", "revision"],
};
/// `--compat.node-exporter`: node_exporter's tcpstat series, same name,
/// label and meaning (both families summed).
pub const NODE_TCP_STATES: Spec = Spec {
    name: "node_tcp_connection_states",
    help: "Number of connection states (node_exporter tcpstat compatible: both address families summed; every state emitted).",
    labels: &["state"],
};

/// The catalogue, in output order (the encoder sorts by name anyway).
pub const CATALOGUE: &[&Spec] = &[
    &SOCKETS,
    &RECEIVE_QUEUE,
    &SEND_QUEUE,
    &SYN_QUEUE,
    &LISTEN_QUEUE,
    &LISTEN_QUEUE_MAX,
    &LISTEN_SOCKETS,
    &LISTEN_DROPS,
    &UDP_DROPS,
    &UNIX_SOCKETS,
    &UNIX_RECEIVE_QUEUE,
    &UNIX_SEND_QUEUE,
    &UNIX_LISTEN_QUEUE,
    &UNIX_LISTEN_QUEUE_MAX,
    &PORT_SOCKETS,
    &PORT_DROPS,
    &SERIES_DROPPED,
    &COLLECT_DURATION,
    &COLLECT_SUCCESS,
    &COLLECT_TIMESTAMP,
    &COLLECTIONS,
    &BUILD_INFO,
    &NODE_TCP_STATES,
];

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("SOCKDIAG_REVISION");

/// How the series are shaped (from the flags).
#[derive(Debug, Clone)]
pub struct Shape {
    /// Register the standard process_* metrics (tests leave them out).
    pub process: bool,
    /// Emit `node_tcp_connection_states` too.
    pub compat_node_exporter: bool,
    /// TCP listeners beyond this many are left out (`--collector.listeners.max`).
    pub max_listeners: usize,
    /// Unix listener paths beyond this many are summed as `@other`.
    pub max_unix_listeners: usize,
    /// Per-port series per protocol at most (`--collector.ports.max-series`).
    pub max_port_series: usize,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            process: true,
            compat_node_exporter: false,
            max_listeners: 1000,
            max_unix_listeners: 200,
            max_port_series: 2000,
        }
    }
}

fn opts(spec: &Spec) -> Opts {
    Opts::new(spec.name, spec.help)
}

/// The live metric objects, registered once and updated per collection.
pub struct Metrics {
    registry: Registry,
    shape: Shape,
    sockets: IntGaugeVec,
    receive_queue: IntGaugeVec,
    send_queue: IntGaugeVec,
    syn_queue: IntGaugeVec,
    listen_queue: IntGaugeVec,
    listen_queue_max: IntGaugeVec,
    listen_sockets: IntGaugeVec,
    listen_drops: IntCounterVec,
    udp_drops: IntGaugeVec,
    unix_sockets: IntGaugeVec,
    unix_receive_queue: IntGaugeVec,
    unix_send_queue: IntGaugeVec,
    unix_listen_queue: IntGaugeVec,
    unix_listen_queue_max: IntGaugeVec,
    port_sockets: IntGaugeVec,
    port_drops: IntGaugeVec,
    series_dropped: IntGaugeVec,
    duration: GaugeVec,
    success: IntGaugeVec,
    timestamp: GaugeVec,
    collections: IntCounterVec,
    node_tcp_states: IntGaugeVec,
}

fn gauges(spec: &Spec) -> IntGaugeVec {
    IntGaugeVec::new(opts(spec), spec.labels).expect("valid spec")
}

fn floats(spec: &Spec) -> GaugeVec {
    GaugeVec::new(opts(spec), spec.labels).expect("valid spec")
}

fn counters(spec: &Spec) -> IntCounterVec {
    IntCounterVec::new(opts(spec), spec.labels).expect("valid spec")
}

/// A value for an integer metric (the kernel's u64 sums fit i64 in practice;
/// saturate rather than wrap if one ever did not).
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Builds and registers the catalogue.
    pub fn new(shape: Shape) -> Metrics {
        let metrics = Metrics {
            registry: Registry::new(),
            sockets: gauges(&SOCKETS),
            receive_queue: gauges(&RECEIVE_QUEUE),
            send_queue: gauges(&SEND_QUEUE),
            syn_queue: gauges(&SYN_QUEUE),
            listen_queue: gauges(&LISTEN_QUEUE),
            listen_queue_max: gauges(&LISTEN_QUEUE_MAX),
            listen_sockets: gauges(&LISTEN_SOCKETS),
            listen_drops: counters(&LISTEN_DROPS),
            udp_drops: gauges(&UDP_DROPS),
            unix_sockets: gauges(&UNIX_SOCKETS),
            unix_receive_queue: gauges(&UNIX_RECEIVE_QUEUE),
            unix_send_queue: gauges(&UNIX_SEND_QUEUE),
            unix_listen_queue: gauges(&UNIX_LISTEN_QUEUE),
            unix_listen_queue_max: gauges(&UNIX_LISTEN_QUEUE_MAX),
            port_sockets: gauges(&PORT_SOCKETS),
            port_drops: gauges(&PORT_DROPS),
            series_dropped: gauges(&SERIES_DROPPED),
            duration: floats(&COLLECT_DURATION),
            success: gauges(&COLLECT_SUCCESS),
            timestamp: floats(&COLLECT_TIMESTAMP),
            collections: counters(&COLLECTIONS),
            node_tcp_states: gauges(&NODE_TCP_STATES),
            shape,
        };
        let build_info = gauges(&BUILD_INFO);
        build_info.with_label_values(&[VERSION, REVISION]).set(1);
        let mut collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(metrics.sockets.clone()),
            Box::new(metrics.receive_queue.clone()),
            Box::new(metrics.send_queue.clone()),
            Box::new(metrics.syn_queue.clone()),
            Box::new(metrics.listen_queue.clone()),
            Box::new(metrics.listen_queue_max.clone()),
            Box::new(metrics.listen_sockets.clone()),
            Box::new(metrics.listen_drops.clone()),
            Box::new(metrics.udp_drops.clone()),
            Box::new(metrics.unix_sockets.clone()),
            Box::new(metrics.unix_receive_queue.clone()),
            Box::new(metrics.unix_send_queue.clone()),
            Box::new(metrics.unix_listen_queue.clone()),
            Box::new(metrics.unix_listen_queue_max.clone()),
            Box::new(metrics.port_sockets.clone()),
            Box::new(metrics.port_drops.clone()),
            Box::new(metrics.series_dropped.clone()),
            Box::new(metrics.duration.clone()),
            Box::new(metrics.success.clone()),
            Box::new(metrics.timestamp.clone()),
            Box::new(metrics.collections.clone()),
            Box::new(build_info),
        ];
        if metrics.shape.compat_node_exporter {
            collectors.push(Box::new(metrics.node_tcp_states.clone()));
        }
        if metrics.shape.process {
            collectors.push(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        for collector in collectors {
            metrics.registry.register(collector).expect("unique names");
        }
        metrics
    }

    /// Replaces all values with one collection's outcome: `reports` has one
    /// entry per enabled collector, and `stats` is valid for those without
    /// an error. A failed collector's series are removed rather than shown
    /// stale or half-counted; the others are unaffected.
    pub fn record(&self, stats: Stats<'_>, reports: &[Report]) {
        for vec in [
            &self.sockets,
            &self.receive_queue,
            &self.send_queue,
            &self.syn_queue,
            &self.listen_queue,
            &self.listen_queue_max,
            &self.listen_sockets,
            &self.udp_drops,
            &self.unix_sockets,
            &self.unix_receive_queue,
            &self.unix_send_queue,
            &self.unix_listen_queue,
            &self.unix_listen_queue_max,
            &self.port_sockets,
            &self.port_drops,
            &self.series_dropped,
            &self.node_tcp_states,
        ] {
            vec.reset();
        }
        self.listen_drops.reset();
        for report in reports {
            let collector = &[report.kind.label()];
            self.collections.with_label_values(collector).inc();
            self.duration
                .with_label_values(collector)
                .set(report.duration.as_secs_f64());
            let at = report
                .started
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.timestamp
                .with_label_values(collector)
                .set(at.as_secs_f64());
            self.success
                .with_label_values(collector)
                .set(i64::from(report.error.is_none()));
            if report.error.is_some() {
                continue;
            }
            match report.kind {
                Kind::Tcp => self.record_tcp(stats),
                Kind::Listeners => self.record_listeners(stats),
                Kind::Udp => self.record_udp(stats),
                Kind::Unix => self.record_unix(stats),
            }
        }
    }

    fn record_tcp(&self, stats: Stats<'_>) {
        let tcp = stats.tcp;
        for family in Family::ALL {
            for state in TcpState::ALL {
                let labels = &["tcp", family.label(), state.label()];
                let (f, s) = (family as usize, state as usize);
                self.sockets
                    .with_label_values(labels)
                    .set(int(tcp.sockets[f][s]));
                self.receive_queue
                    .with_label_values(labels)
                    .set(int(tcp.receive_queue_bytes[f][s]));
                self.send_queue
                    .with_label_values(labels)
                    .set(int(tcp.send_queue_bytes[f][s]));
            }
        }
        for ((family, port), n) in tcp.syn_queue() {
            self.syn_queue
                .with_label_values(&["tcp", family.label(), &port.to_string()])
                .set(int(n));
        }
        let states = TcpState::ALL.map(|s| s.label());
        self.record_ports("tcp", &tcp.ports.series(), &states);
        if self.shape.compat_node_exporter {
            for state in TcpState::ALL {
                self.node_tcp_states
                    .with_label_values(&[state.label()])
                    .set(int(tcp.total(state)));
            }
        }
    }

    /// Per-port series for one protocol, capped at `max_port_series`.
    fn record_ports<const N: usize>(
        &self,
        protocol: &str,
        series: &[((crate::aggregate::Direction, u16), [u64; N])],
        states: &[&str; N],
    ) -> Vec<u16> {
        let keep = (self.shape.max_port_series / N).min(series.len());
        let mut kept_local = Vec::new();
        for ((direction, port), counts) in &series[..keep] {
            let port_label = port.to_string();
            for (state, n) in states.iter().zip(counts) {
                self.port_sockets
                    .with_label_values(&[protocol, direction.label(), &port_label, state])
                    .set(int(*n));
            }
            if *direction == crate::aggregate::Direction::Local {
                kept_local.push(*port);
            }
        }
        if !series.is_empty() {
            let dropped = self.series_dropped.with_label_values(&[PORT_SOCKETS.name]);
            dropped.add(int(((series.len() - keep) * N) as u64));
        }
        kept_local
    }

    fn record_listeners(&self, stats: Stats<'_>) {
        let listeners = stats.listen.listeners();
        let keep = self.shape.max_listeners.min(listeners.len());
        for (key, listener) in &listeners[..keep] {
            let address = format_address(key.family, &key.address);
            let port = key.port.to_string();
            let labels = &["tcp", key.family.label(), address.as_str(), port.as_str()];
            self.listen_queue
                .with_label_values(labels)
                .set(int(listener.queue));
            self.listen_queue_max
                .with_label_values(labels)
                .set(int(listener.max));
            self.listen_sockets
                .with_label_values(labels)
                .set(int(listener.sockets));
            self.listen_drops
                .with_label_values(labels)
                .inc_by(listener.drops);
        }
        self.series_dropped
            .with_label_values(&[LISTEN_QUEUE.name])
            .set(int((listeners.len() - keep) as u64));
    }

    fn record_udp(&self, stats: Stats<'_>) {
        let udp = stats.udp;
        for family in Family::ALL {
            for state in UdpState::ALL {
                let labels = &["udp", family.label(), state.label()];
                let (f, s) = (family as usize, state as usize);
                self.sockets
                    .with_label_values(labels)
                    .set(int(udp.sockets[f][s]));
                self.receive_queue
                    .with_label_values(labels)
                    .set(int(udp.receive_queue_bytes[f][s]));
                self.send_queue
                    .with_label_values(labels)
                    .set(int(udp.send_queue_bytes[f][s]));
            }
            self.udp_drops
                .with_label_values(&[family.label()])
                .set(int(udp.drops[family as usize]));
        }
        let states = UdpState::ALL.map(|s| s.label());
        let kept = self.record_ports("udp", &udp.ports.series(), &states);
        let mut cut = 0u64;
        for (port, drops) in udp.port_drops() {
            if kept.binary_search(&port).is_ok() {
                self.port_drops
                    .with_label_values(&["udp", &port.to_string()])
                    .set(int(drops));
            } else {
                cut += 1;
            }
        }
        if !udp.ports.series().is_empty() {
            self.series_dropped
                .with_label_values(&[PORT_DROPS.name])
                .set(int(cut));
        }
    }

    fn record_unix(&self, stats: Stats<'_>) {
        let unix = stats.unix;
        for kind in UnixType::ALL {
            for state in UnixState::ALL {
                let labels = &[kind.label(), state.label()];
                let (t, s) = (kind as usize, state as usize);
                self.unix_sockets
                    .with_label_values(labels)
                    .set(int(unix.sockets[t][s]));
                self.unix_receive_queue
                    .with_label_values(labels)
                    .set(int(unix.receive_queue_bytes[t][s]));
                self.unix_send_queue
                    .with_label_values(labels)
                    .set(int(unix.send_queue_bytes[t][s]));
            }
        }
        let listeners = unix.listeners();
        // Named paths compete for the cap; the summed @abstract / @unnamed
        // series are always kept.
        let max = self.shape.max_unix_listeners;
        let mut paths = 0;
        let mut other = crate::aggregate::UnixListener::default();
        let mut dropped = 0u64;
        for (name, listener) in &listeners {
            let label = if matches!(name, crate::aggregate::UnixName::Path(_)) {
                paths += 1;
                if paths > max {
                    other.queue += listener.queue;
                    other.max += listener.max;
                    dropped += 1;
                    continue;
                }
                name.label()
            } else {
                name.label()
            };
            self.unix_listen_queue
                .with_label_values(&[&label])
                .set(int(listener.queue));
            self.unix_listen_queue_max
                .with_label_values(&[&label])
                .set(int(listener.max));
        }
        if dropped > 0 {
            self.unix_listen_queue
                .with_label_values(&["@other"])
                .set(int(other.queue));
            self.unix_listen_queue_max
                .with_label_values(&["@other"])
                .set(int(other.max));
        }
        self.series_dropped
            .with_label_values(&[UNIX_LISTEN_QUEUE.name])
            .set(int(dropped));
    }

    /// The text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    use crate::aggregate::{PortSet, TcpStats};
    use crate::collect::CollectError;
    use crate::diag::{AF_INET, AF_INET6};
    use crate::parse::tests::{inet_diag_msg, inet_with_drops, unix_diag_msg, v4};

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn count(text: &str, metric: &str, filter: &str) -> usize {
        text.lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(filter))
            .count()
    }

    use crate::collect::OwnedStats as All;

    fn report(kind: Kind, ok: bool) -> Report {
        Report {
            kind,
            started: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_millis(5),
            error: (!ok).then_some(CollectError {
                request: "test",
                kind: crate::collect::ErrorKind::Eof,
            }),
        }
    }

    fn all_ok() -> Vec<Report> {
        Kind::ALL.into_iter().map(|k| report(k, true)).collect()
    }

    fn shape() -> Shape {
        Shape {
            process: false,
            ..Shape::default()
        }
    }

    #[test]
    fn catalogue_names_are_unique_and_in_base_units() {
        let mut names: Vec<_> = CATALOGUE.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
        for spec in CATALOGUE {
            let compat = spec.name == NODE_TCP_STATES.name;
            assert!(
                spec.name.starts_with("sockdiag_") || compat,
                "{}",
                spec.name
            );
            assert!(!spec.help.is_empty());
            assert!(
                !spec.name.ends_with("_count"),
                "reserved suffix: {}",
                spec.name
            );
        }
    }

    #[test]
    fn every_state_is_emitted_with_zeros() {
        let metrics = Metrics::new(shape());
        let mut all = All::default();
        let m = inet_diag_msg(AF_INET6, 8, [0; 16], 80, 9, 10, 20, 1);
        all.tcp.add(&m).unwrap();
        let l = inet_with_drops(AF_INET, 10, v4([127, 0, 0, 1]), 8080, 0, 2, 128, 7);
        all.listen.add(&l).unwrap();
        let u = inet_with_drops(AF_INET, 7, v4([0; 4]), 53, 0, 768, 0, 3);
        all.udp.add(&u).unwrap();
        all.unix.add(&unix_diag_msg(1, 1, None, 9, 0)).unwrap();
        metrics.record(all.stats(), &all_ok());
        let text = metrics.encode();
        for metric in [
            "sockdiag_sockets",
            "sockdiag_receive_queue_bytes",
            "sockdiag_send_queue_bytes",
        ] {
            assert_eq!(count(&text, metric, "protocol=\"tcp\""), 22, "{metric}");
            assert_eq!(count(&text, metric, "protocol=\"udp\""), 4, "{metric}");
        }
        for metric in [
            "sockdiag_unix_sockets",
            "sockdiag_unix_receive_queue_bytes",
            "sockdiag_unix_send_queue_bytes",
        ] {
            assert_eq!(count(&text, metric, ""), 9, "{metric}");
        }
        let cw = r#"{family="ipv6",protocol="tcp",state="close_wait"}"#;
        assert_eq!(value(&text, &format!("sockdiag_sockets{cw}")), Some(1.0));
        assert_eq!(
            value(&text, &format!("sockdiag_receive_queue_bytes{cw}")),
            Some(10.0)
        );
        assert_eq!(
            value(&text, &format!("sockdiag_send_queue_bytes{cw}")),
            Some(20.0)
        );
        let listener = r#"{address="127.0.0.1",family="ipv4",port="8080",protocol="tcp"}"#;
        for (metric, v) in [
            ("sockdiag_listen_queue", 2.0),
            ("sockdiag_listen_queue_max", 128.0),
            ("sockdiag_listen_sockets", 1.0),
            ("sockdiag_listen_drops_total", 7.0),
        ] {
            assert_eq!(
                value(&text, &format!("{metric}{listener}")),
                Some(v),
                "{metric}"
            );
        }
        assert!(text.contains("# TYPE sockdiag_listen_drops_total counter"));
        let udp = r#"{family="ipv4",protocol="udp",state="unconnected"}"#;
        assert_eq!(value(&text, &format!("sockdiag_sockets{udp}")), Some(1.0));
        assert_eq!(
            value(&text, &format!("sockdiag_receive_queue_bytes{udp}")),
            Some(768.0)
        );
        assert_eq!(
            value(&text, r#"sockdiag_udp_receive_drops{family="ipv4"}"#),
            Some(3.0)
        );
        assert_eq!(
            value(
                &text,
                r#"sockdiag_unix_sockets{state="connected",type="stream"}"#
            ),
            Some(1.0)
        );
        for kind in Kind::ALL {
            let c = format!("{{collector=\"{}\"}}", kind.label());
            assert_eq!(
                value(&text, &format!("sockdiag_collect_success{c}")),
                Some(1.0)
            );
            assert_eq!(
                value(&text, &format!("sockdiag_collect_timestamp_seconds{c}")),
                Some(1.7e9)
            );
            assert_eq!(
                value(&text, &format!("sockdiag_collections_total{c}")),
                Some(1.0)
            );
        }
        assert!(text.contains("# TYPE sockdiag_collections_total counter"));
        assert!(text.contains(&format!(
            "sockdiag_build_info{{revision=\"{REVISION}\",version=\"{VERSION}\"}} 1"
        )));
        assert!(!text.contains("node_tcp_connection_states"));
        assert!(!text.contains("sockdiag_port_sockets{"));
    }

    #[test]
    fn a_failed_collector_drops_only_its_series() {
        let metrics = Metrics::new(shape());
        let mut all = All::default();
        all.udp
            .add(&inet_with_drops(AF_INET, 7, v4([0; 4]), 53, 0, 0, 0, 0))
            .unwrap();
        metrics.record(all.stats(), &all_ok());
        let reports = vec![
            report(Kind::Tcp, false),
            report(Kind::Listeners, true),
            report(Kind::Udp, true),
            report(Kind::Unix, false),
        ];
        metrics.record(all.stats(), &reports);
        let text = metrics.encode();
        assert_eq!(
            count(&text, "sockdiag_sockets", "protocol=\"tcp\""),
            0,
            "{text}"
        );
        assert_eq!(count(&text, "sockdiag_sockets", "protocol=\"udp\""), 4);
        assert_eq!(count(&text, "sockdiag_unix_sockets", ""), 0);
        assert!(text.contains("sockdiag_collect_success{collector=\"tcp\"} 0"));
        assert!(text.contains("sockdiag_collect_success{collector=\"unix\"} 0"));
        assert!(text.contains("sockdiag_collect_success{collector=\"udp\"} 1"));
        assert!(text.contains("sockdiag_collections_total{collector=\"tcp\"} 2"));
    }

    #[test]
    fn disabled_collectors_leave_no_series() {
        let metrics = Metrics::new(shape());
        let all = All::default();
        metrics.record(all.stats(), &[report(Kind::Udp, true)]);
        let text = metrics.encode();
        assert_eq!(count(&text, "sockdiag_sockets", "protocol=\"tcp\""), 0);
        assert!(!text.contains("collector=\"tcp\""));
        assert!(text.contains("sockdiag_collect_success{collector=\"udp\"} 1"));
    }

    #[test]
    fn closed_listeners_disappear() {
        let metrics = Metrics::new(shape());
        let mut all = All::default();
        let l = inet_with_drops(AF_INET, 10, v4([0, 0, 0, 0]), 22, 0, 0, 128, 0);
        all.listen.add(&l).unwrap();
        metrics.record(all.stats(), &all_ok());
        assert!(metrics.encode().contains("port=\"22\""));
        all.listen.clear();
        metrics.record(all.stats(), &all_ok());
        assert!(!metrics.encode().contains("port=\"22\""));
    }

    #[test]
    fn caps_count_what_they_leave_out() {
        let metrics = Metrics::new(Shape {
            max_listeners: 2,
            max_unix_listeners: 1,
            max_port_series: 11 * 2,
            ..shape()
        });
        let mut all = All {
            tcp: TcpStats::new(PortSet::parse("1-100").unwrap()),
            ..All::default()
        };
        for port in 1..=5 {
            let l = inet_with_drops(AF_INET, 10, v4([0; 4]), port, 0, 1, 8, 0);
            all.listen.add(&l).unwrap();
            // Local port `port`, remote port 1000: one (local, port) key each.
            let m = inet_diag_msg(AF_INET, 1, v4([0; 4]), port, 1000, 0, 0, 1);
            all.tcp.add(&m).unwrap();
        }
        for path in [&b"/a"[..], b"/b", b"/c", b"\0abstract"] {
            all.unix
                .add(&unix_diag_msg(1, 10, Some(path), 1, 4))
                .unwrap();
        }
        metrics.record(all.stats(), &all_ok());
        let text = metrics.encode();
        assert_eq!(count(&text, "sockdiag_listen_queue", ""), 2);
        assert_eq!(
            value(
                &text,
                r#"sockdiag_series_dropped{metric="sockdiag_listen_queue"}"#
            ),
            Some(3.0)
        );
        // /a kept, /b and /c summed as @other, @abstract always kept.
        assert_eq!(count(&text, "sockdiag_unix_listen_queue", ""), 3, "{text}");
        assert_eq!(
            value(&text, r#"sockdiag_unix_listen_queue{path="@other"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(&text, r#"sockdiag_unix_listen_queue_max{path="@other"}"#),
            Some(8.0)
        );
        assert_eq!(
            value(
                &text,
                r#"sockdiag_series_dropped{metric="sockdiag_unix_listen_queue"}"#
            ),
            Some(2.0)
        );
        // Two (direction, port) keys of 11 states fit; three are cut.
        assert_eq!(count(&text, "sockdiag_port_sockets", ""), 22);
        assert_eq!(
            value(
                &text,
                r#"sockdiag_series_dropped{metric="sockdiag_port_sockets"}"#
            ),
            Some(33.0)
        );
    }

    #[test]
    fn node_exporter_compat_sums_families() {
        let metrics = Metrics::new(Shape {
            compat_node_exporter: true,
            ..shape()
        });
        let mut all = All::default();
        for family in [AF_INET, AF_INET6] {
            let m = inet_diag_msg(family, 8, [0; 16], 80, 9, 0, 0, 1);
            all.tcp.add(&m).unwrap();
        }
        metrics.record(all.stats(), &all_ok());
        let text = metrics.encode();
        assert_eq!(count(&text, "node_tcp_connection_states", ""), 11);
        assert_eq!(
            value(&text, r#"node_tcp_connection_states{state="close_wait"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(&text, r#"node_tcp_connection_states{state="time_wait"}"#),
            Some(0.0)
        );
        metrics.record(all.stats(), &[report(Kind::Tcp, false)]);
        assert_eq!(
            count(&metrics.encode(), "node_tcp_connection_states", ""),
            0
        );
    }

    #[test]
    fn process_metrics_are_included_when_asked() {
        let text = Metrics::new(Shape::default()).encode();
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        let _ = SystemTime::now();
    }
}
