//! The `collect[]`/`exclude[]` URL parameters against the real server:
//! only the named collectors' series and health come back, bad names are
//! a 400 that names them, and the cache keeps one collection per set of
//! collectors. These need no private namespace (no sockets of their own
//! are counted), on 127.0.0.1:0 in the host namespace.

use crate::support::*;
use std::collections::BTreeSet;
use std::thread;

/// The collectors whose health series a scrape carries.
fn collectors(m: &Exposition) -> BTreeSet<String> {
    m.series("sockdiag_collect_success")
        .into_iter()
        .filter_map(|(labels, _)| {
            labels
                .into_iter()
                .find(|(k, _)| k == "collector")
                .map(|(_, v)| v)
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// The protocols of the `sockdiag_sockets` series.
fn protocols(m: &Exposition) -> BTreeSet<String> {
    m.series("sockdiag_sockets")
        .into_iter()
        .filter_map(|(labels, _)| {
            labels
                .into_iter()
                .find(|(k, _)| k == "protocol")
                .map(|(_, v)| v)
        })
        .collect()
}

fn scrape(server: &Server, path: &str) -> Exposition {
    let r = server.get(path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    parse_prometheus(&r.text()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn total(m: &Exposition, collector: &str) -> Option<f64> {
    m.get("sockdiag_collections_total", &[("collector", collector)])
}

#[test]
fn only_the_named_collectors_series_and_health_appear() {
    let server = Server::start(&["--cache.ttl", "1m"]);
    let all = scrape(&server, "/metrics");
    assert_eq!(collectors(&all), set(&["tcp", "listeners", "udp", "unix"]));
    assert!(protocols(&all).contains("tcp"), "{:?}", protocols(&all));

    // As Prometheus sends `params: {collect[]: [udp, unix]}`.
    let path = "/metrics?collect%5B%5D=udp&collect%5B%5D=unix";
    let m = scrape(&server, path);
    assert_eq!(collectors(&m), set(&["udp", "unix"]));
    assert!(!protocols(&m).contains("tcp"), "{:?}", protocols(&m));
    for name in ["sockdiag_listen_sockets", "sockdiag_listen_queue"] {
        assert!(m.series(name).is_empty(), "{name} in a udp+unix scrape");
    }
    assert_eq!(
        m.value("sockdiag_collect_success", &[("collector", "udp")]),
        1.0
    );
    // The exporter's own series stay, as in node_exporter.
    assert_eq!(m.series("sockdiag_build_info").len(), 1);
    // A repeated name counts once; exclude[] is every enabled one but.
    let m = scrape(&server, "/metrics?collect[]=tcp&collect[]=tcp");
    assert_eq!(collectors(&m), set(&["tcp"]));
    let m = scrape(&server, "/metrics?exclude%5B%5D=tcp&exclude[]=unix");
    assert_eq!(collectors(&m), set(&["listeners", "udp"]));
}

#[test]
fn bad_names_are_400_naming_them() {
    let server = Server::start(&["--no-collector.unix"]);
    for (query, said) in [
        ("collect[]=nope&collect[]=bogus", r#""nope", "bogus""#),
        ("collect%5B%5D=", r#"unknown collector in collect[]: """#),
        (
            "collect[]=unix",
            r#"collector disabled by flags in collect[]: "unix" (enabled: tcp, listeners, udp)"#,
        ),
        (
            "collect[]=netns",
            r#"not a collector in collect[]: "netns""#,
        ),
        ("collect[]=udp&exclude[]=tcp", "cannot be combined"),
        ("collect[]=%zz", "bad percent-encoding"),
    ] {
        let r = server.get(&format!("/metrics?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert!(r.text().contains(said), "{query}: {}", r.text());
    }
    // The connection and the server carry on.
    assert_eq!(server.get("/metrics?collect[]=udp").status, 200);
}

#[test]
fn the_cache_keeps_one_collection_per_set() {
    // A long window: nothing expires during the test.
    let server = Server::start(&["--cache.ttl", "1m"]);
    let udp = scrape(&server, "/metrics?collect[]=udp");
    assert_eq!(total(&udp, "udp"), Some(1.0));
    let unix = scrape(&server, "/metrics?collect[]=unix");
    assert_eq!(total(&unix, "unix"), Some(1.0), "a collection of its own");
    assert_eq!(total(&unix, "udp"), None);
    // The same set again within the window: the same collection.
    let again = server.get("/metrics?collect[]=udp");
    assert_eq!(
        again.text(),
        server.get("/metrics?collect%5B%5D=udp").text()
    );
    let again = parse_prometheus(&again.text()).unwrap();
    assert_eq!(total(&again, "udp"), Some(1.0), "served from the cache");
    // The unfiltered scrape is a third set; its collection counts the
    // earlier ones too (the counters are the exporter's, not the set's).
    let all = scrape(&server, "/metrics");
    assert_eq!(total(&all, "udp"), Some(2.0));
    assert_eq!(total(&all, "unix"), Some(2.0));
    assert_eq!(total(&all, "tcp"), Some(1.0));
    // Naming every enabled collector is the unfiltered scrape's entry.
    let named = scrape(
        &server,
        "/metrics?collect[]=unix&collect[]=udp&collect[]=listeners&collect[]=tcp",
    );
    assert_eq!(total(&named, "tcp"), Some(1.0));
    assert_eq!(
        total(&scrape(&server, "/metrics?collect[]=udp"), "udp"),
        Some(1.0)
    );
}

#[test]
fn scrapes_for_different_sets_at_once_each_get_their_own() {
    let server = Server::start(&["--cache.ttl", "0s"]);
    let sets = [
        ("/metrics?collect[]=tcp", set(&["tcp"])),
        ("/metrics?collect[]=udp", set(&["udp"])),
        (
            "/metrics?collect[]=unix&collect[]=listeners",
            set(&["listeners", "unix"]),
        ),
        ("/metrics", set(&["tcp", "listeners", "udp", "unix"])),
    ];
    for _ in 0..3 {
        thread::scope(|scope| {
            let scrapes: Vec<_> = sets
                .iter()
                .flat_map(|s| [s, s])
                .map(|(path, want)| {
                    let server = &server;
                    scope.spawn(move || (path, want, scrape(server, path)))
                })
                .collect();
            for handle in scrapes {
                let (path, want, m) = handle.join().unwrap();
                assert_eq!(&collectors(&m), want, "{path}");
            }
        });
    }
}
