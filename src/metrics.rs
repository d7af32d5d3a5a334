//! The metric catalogue: every metric's name, HELP text and labels live here
//! and nowhere else, and [`Metrics::record`] is the one place values are set.
//!
//! Conventions: base units (`_bytes`, `_seconds`); counts and bytes never
//! share a metric; every family x state series is emitted, zeros included,
//! so dashboards never see gaps; lowercase label values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::aggregate::TcpStats;
use crate::diag::{format_address, Family, TcpState};

/// One metric's definition.
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

const BY_STATE: &[&str] = &["protocol", "family", "state"];
const BY_LISTENER: &[&str] = &["protocol", "family", "address", "port"];
const BY_COLLECTOR: &[&str] = &["collector"];

pub const SOCKETS: Spec = Spec {
    name: "sockdiag_sockets",
    help: "Sockets by protocol, address family and state, as the kernel reports them over sock_diag (request sockets count as syn_recv; TIME_WAIT sockets in their FIN_WAIT2 substate count as fin_wait2, as in ss).",
    labels: BY_STATE,
};
pub const RECEIVE_QUEUE: Spec = Spec {
    name: "sockdiag_receive_queue_bytes",
    help: "Bytes received but not yet read by the application, summed over non-listening sockets (listeners are in sockdiag_listen_queue).",
    labels: BY_STATE,
};
pub const SEND_QUEUE: Spec = Spec {
    name: "sockdiag_send_queue_bytes",
    help: "Bytes written by the application but not yet acknowledged by the peer, summed over non-listening sockets.",
    labels: BY_STATE,
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
pub const COLLECT_DURATION: Spec = Spec {
    name: "sockdiag_collect_duration_seconds",
    help: "Wall time of the collection whose data is served.",
    labels: BY_COLLECTOR,
};
pub const COLLECT_SUCCESS: Spec = Spec {
    name: "sockdiag_collect_success",
    help: "1 if the collection whose data is served succeeded, 0 if it failed (its socket series are then left out).",
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

/// The catalogue, in output order (the encoder sorts by name anyway).
pub const CATALOGUE: &[&Spec] = &[
    &SOCKETS,
    &RECEIVE_QUEUE,
    &SEND_QUEUE,
    &LISTEN_QUEUE,
    &LISTEN_QUEUE_MAX,
    &LISTEN_SOCKETS,
    &COLLECT_DURATION,
    &COLLECT_SUCCESS,
    &COLLECT_TIMESTAMP,
    &COLLECTIONS,
    &BUILD_INFO,
];

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("SOCKDIAG_REVISION");

fn opts(spec: &Spec) -> Opts {
    Opts::new(spec.name, spec.help)
}

/// The live metric objects, registered once and updated per collection.
pub struct Metrics {
    registry: Registry,
    sockets: IntGaugeVec,
    receive_queue: IntGaugeVec,
    send_queue: IntGaugeVec,
    listen_queue: IntGaugeVec,
    listen_queue_max: IntGaugeVec,
    listen_sockets: IntGaugeVec,
    duration: GaugeVec,
    success: IntGaugeVec,
    timestamp: GaugeVec,
    collections: IntCounterVec,
}

/// What one collection produced, for [`Metrics::record`].
pub struct Outcome<'a> {
    /// The counts, or None when the collection failed.
    pub stats: Option<&'a TcpStats>,
    pub started: SystemTime,
    pub duration: Duration,
}

impl Metrics {
    /// Builds and registers the catalogue, plus the standard process_*
    /// metrics when `process` is true (tests leave them out for stable output).
    pub fn new(process: bool) -> Metrics {
        let registry = Registry::new();
        let gauges = |spec: &Spec| IntGaugeVec::new(opts(spec), spec.labels).expect("valid spec");
        let floats = |spec: &Spec| GaugeVec::new(opts(spec), spec.labels).expect("valid spec");
        let metrics = Metrics {
            sockets: gauges(&SOCKETS),
            receive_queue: gauges(&RECEIVE_QUEUE),
            send_queue: gauges(&SEND_QUEUE),
            listen_queue: gauges(&LISTEN_QUEUE),
            listen_queue_max: gauges(&LISTEN_QUEUE_MAX),
            listen_sockets: gauges(&LISTEN_SOCKETS),
            duration: floats(&COLLECT_DURATION),
            success: gauges(&COLLECT_SUCCESS),
            timestamp: floats(&COLLECT_TIMESTAMP),
            collections: IntCounterVec::new(opts(&COLLECTIONS), COLLECTIONS.labels)
                .expect("valid spec"),
            registry,
        };
        let build_info = gauges(&BUILD_INFO);
        build_info.with_label_values(&[VERSION, REVISION]).set(1);
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(metrics.sockets.clone()),
            Box::new(metrics.receive_queue.clone()),
            Box::new(metrics.send_queue.clone()),
            Box::new(metrics.listen_queue.clone()),
            Box::new(metrics.listen_queue_max.clone()),
            Box::new(metrics.listen_sockets.clone()),
            Box::new(metrics.duration.clone()),
            Box::new(metrics.success.clone()),
            Box::new(metrics.timestamp.clone()),
            Box::new(metrics.collections.clone()),
            Box::new(build_info),
        ];
        for collector in collectors {
            metrics.registry.register(collector).expect("unique names");
        }
        if process {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            metrics
                .registry
                .register(Box::new(process))
                .expect("unique names");
        }
        metrics
    }

    /// Replaces all values with one collection's outcome. A failed
    /// collection removes the socket series rather than showing stale or
    /// half-counted numbers as current.
    pub fn record(&self, outcome: &Outcome<'_>) {
        const COLLECTOR: &[&str] = &["tcp"];
        for vec in [
            &self.sockets,
            &self.receive_queue,
            &self.send_queue,
            &self.listen_queue,
            &self.listen_queue_max,
            &self.listen_sockets,
        ] {
            vec.reset();
        }
        self.collections.with_label_values(COLLECTOR).inc();
        self.duration
            .with_label_values(COLLECTOR)
            .set(outcome.duration.as_secs_f64());
        let at = outcome
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.timestamp
            .with_label_values(COLLECTOR)
            .set(at.as_secs_f64());
        self.success
            .with_label_values(COLLECTOR)
            .set(i64::from(outcome.stats.is_some()));
        let Some(stats) = outcome.stats else {
            return;
        };
        for family in Family::ALL {
            for state in TcpState::ALL {
                let labels = &["tcp", family.label(), state.label()];
                let (f, s) = (family as usize, state as usize);
                self.sockets
                    .with_label_values(labels)
                    .set(stats.sockets[f][s] as i64);
                self.receive_queue
                    .with_label_values(labels)
                    .set(stats.receive_queue_bytes[f][s] as i64);
                self.send_queue
                    .with_label_values(labels)
                    .set(stats.send_queue_bytes[f][s] as i64);
            }
        }
        for (key, listener) in stats.listeners() {
            let address = format_address(key.family, &key.address);
            let port = key.port.to_string();
            let labels = &["tcp", key.family.label(), address.as_str(), port.as_str()];
            self.listen_queue
                .with_label_values(labels)
                .set(listener.queue as i64);
            self.listen_queue_max
                .with_label_values(labels)
                .set(listener.max as i64);
            self.listen_sockets
                .with_label_values(labels)
                .set(listener.sockets as i64);
        }
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
    use crate::diag::{InetDiagMsg, AF_INET, AF_INET6};
    use crate::parse::tests::{inet_diag_msg, v4};

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn catalogue_names_are_unique_and_in_base_units() {
        let mut names: Vec<_> = CATALOGUE.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
        for spec in CATALOGUE {
            assert!(spec.name.starts_with("sockdiag_"), "{}", spec.name);
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
        let metrics = Metrics::new(false);
        let mut stats = TcpStats::default();
        let m = inet_diag_msg(AF_INET6, 8, [0; 16], 80, 9, 10, 20, 1);
        stats.add(InetDiagMsg::new(&m).unwrap()).unwrap();
        let l = inet_diag_msg(AF_INET, 10, v4([127, 0, 0, 1]), 8080, 0, 2, 128, 1);
        stats.add(InetDiagMsg::new(&l).unwrap()).unwrap();
        metrics.record(&Outcome {
            stats: Some(&stats),
            started: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_millis(5),
        });
        let text = metrics.encode();
        for metric in [
            "sockdiag_sockets",
            "sockdiag_receive_queue_bytes",
            "sockdiag_send_queue_bytes",
        ] {
            let series = text
                .lines()
                .filter(|l| l.starts_with(&format!("{metric}{{")))
                .count();
            assert_eq!(series, 22, "{metric}");
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
        assert_eq!(
            value(&text, &format!("sockdiag_listen_queue{listener}")),
            Some(2.0)
        );
        assert_eq!(
            value(&text, &format!("sockdiag_listen_queue_max{listener}")),
            Some(128.0)
        );
        assert_eq!(
            value(&text, &format!("sockdiag_listen_sockets{listener}")),
            Some(1.0)
        );
        let tcp = r#"{collector="tcp"}"#;
        assert_eq!(
            value(&text, &format!("sockdiag_collect_success{tcp}")),
            Some(1.0)
        );
        assert_eq!(
            value(&text, &format!("sockdiag_collect_timestamp_seconds{tcp}")),
            Some(1.7e9)
        );
        assert_eq!(
            value(&text, &format!("sockdiag_collections_total{tcp}")),
            Some(1.0)
        );
        assert!(text.contains("# TYPE sockdiag_collections_total counter"));
        assert!(text.contains(&format!(
            "sockdiag_build_info{{revision=\"{REVISION}\",version=\"{VERSION}\"}} 1"
        )));
    }

    #[test]
    fn a_failed_collection_drops_socket_series() {
        let metrics = Metrics::new(false);
        let stats = TcpStats::default();
        let at = UNIX_EPOCH;
        metrics.record(&Outcome {
            stats: Some(&stats),
            started: at,
            duration: Duration::ZERO,
        });
        metrics.record(&Outcome {
            stats: None,
            started: at,
            duration: Duration::ZERO,
        });
        let text = metrics.encode();
        assert!(!text.contains("sockdiag_sockets{"), "{text}");
        assert!(text.contains("sockdiag_collect_success{collector=\"tcp\"} 0"));
        assert!(text.contains("sockdiag_collections_total{collector=\"tcp\"} 2"));
    }

    #[test]
    fn closed_listeners_disappear() {
        let metrics = Metrics::new(false);
        let mut stats = TcpStats::default();
        let l = inet_diag_msg(AF_INET, 10, v4([0, 0, 0, 0]), 22, 0, 0, 128, 1);
        stats.add(InetDiagMsg::new(&l).unwrap()).unwrap();
        fn outcome(stats: &TcpStats) -> Outcome<'_> {
            Outcome {
                stats: Some(stats),
                started: UNIX_EPOCH,
                duration: Duration::ZERO,
            }
        }
        metrics.record(&outcome(&stats));
        assert!(metrics.encode().contains("port=\"22\""));
        stats.clear();
        metrics.record(&outcome(&stats));
        assert!(!metrics.encode().contains("port=\"22\""));
    }

    #[test]
    fn process_metrics_are_included_when_asked() {
        let text = Metrics::new(true).encode();
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
