//! The landing page at `/`: a small self-contained HTML page (no script,
//! no external asset, one inline style sheet) for a human checking on the
//! exporter: its version, links to the metrics and where the docs are, each
//! collector's health, and the served collection as tables, with what needs
//! a look highlighted: non-zero CLOSE_WAIT, accept queues over 80% full,
//! drops, failed collectors.
//!
//! It reads the collection a scrape is served (exposition and summary): the tables
//! come from its series (read back by `export::structured`), so the page
//! shows the scrape's numbers, and the text summary follows for the rest
//! (cgroups, namespace problems, collection errors). Every value from the
//! kernel or the user (unix socket paths, addresses, the telemetry path,
//! error texts) is HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::export::metrics::{REVISION, VERSION};
use crate::export::render::html_escape as esc;
use crate::export::structured::{self, Family, Series};
use crate::kernel::diag::TcpState;

/// Listeners and unix paths shown at most, fullest first.
const MAX_ROWS: usize = 50;
/// An accept queue this full (percent of its limit) is highlighted.
const FILL_WARN_PERCENT: f64 = 80.0;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
th,td{border:1px solid #bbb;padding:0.2em 0.6em;text-align:right}\
th{background:#eee}td:first-child,th:first-child{text-align:left}\
tr.warn td{background:#ffe08a}tr.bad td{background:#f7a1a1}\
td.mono{font-family:monospace;text-align:left}\
p.note{color:#555}";

/// The page for one collection (`text`, its exposition, and `summary`); `telemetry_path` is linked, `freshness` says
/// how old the data may be.
pub fn page(telemetry_path: &str, freshness: &str, text: &str, summary: &str) -> String {
    let path = esc(telemetry_path);
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>sockdiag_exporter</title><style>{STYLE}</style></head>\n<body>\n\
         <h1>sockdiag_exporter</h1>\n\
         <p>Linux socket states and queues over netlink sock_diag. Version {} (revision {}).</p>\n\
         <ul><li>Metrics: <a href=\"{path}\">{path}</a></li>\n\
         <li>Documentation: <code>man sockdiag_exporter</code>; what each metric means: \
         <code>/usr/share/doc/sockdiag-exporter/docs/metrics.md</code> (docs/metrics.md in the source)</li></ul>\n\
         <p class=\"note\">{}</p>\n",
        esc(VERSION),
        esc(REVISION),
        esc(freshness),
    );
    match structured::parse(text) {
        Ok(families) => tables(&mut out, &Families::new(families)),
        Err(e) => {
            let _ = writeln!(out, "<p>The series cannot be shown: {}</p>", esc(&e));
        }
    }
    let _ = write!(
        out,
        "<h2>Summary</h2>\n<pre>{}</pre>\n</body>\n</html>\n",
        esc(summary)
    );
    out
}

/// The families by name.
struct Families(BTreeMap<String, Family>);

impl Families {
    fn new(list: Vec<Family>) -> Families {
        Families(list.into_iter().map(|f| (f.name.clone(), f)).collect())
    }

    /// The series of `name` whose labels include every pair of `filter`.
    fn series<'a>(
        &'a self,
        name: &str,
        filter: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Series> + 'a {
        self.0
            .get(name)
            .into_iter()
            .flat_map(|f| f.series.iter())
            .filter(move |s| filter.iter().all(|(k, v)| s.label(k).unwrap_or("") == *v))
    }

    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.series(name, filter).map(|s| s.value).sum()
    }

    /// The netns label values, in order; `[""]` without --collector.netns.
    fn namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .series("sockdiag_collect_success", &[])
            .filter_map(|s| s.label("netns"))
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        out.dedup();
        out.sort();
        out.dedup();
        if out.is_empty() {
            out.push(String::new());
        }
        out
    }
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value:.3}")
    }
}

/// One table: a header row, then rows of (class, cells); cells are
/// escaped here.
fn table(out: &mut String, caption: &str, header: &[&str], rows: &[(&str, Vec<String>)]) {
    let _ = write!(out, "<h3>{}</h3>\n<table>\n<tr>", esc(caption));
    for h in header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>\n");
    for (class, cells) in rows {
        if class.is_empty() {
            out.push_str("<tr>");
        } else {
            let _ = write!(out, "<tr class=\"{class}\">");
        }
        for cell in cells {
            let _ = write!(out, "<td>{}</td>", esc(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn tables(out: &mut String, f: &Families) {
    health(out, f);
    for ns in f.namespaces() {
        if !ns.is_empty() {
            let _ = writeln!(out, "<h2>Network namespace {}</h2>", esc(&ns));
        }
        let filter = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, String)> {
            let mut v: Vec<(&'static str, String)> =
                extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
            if !ns.is_empty() {
                v.push(("netns", ns.clone()));
            }
            v
        };
        let tcp = filter(&[("protocol", "tcp")]);
        tcp_states(out, f, &borrow(&tcp));
        listeners(out, f, &borrow(&filter(&[])));
        udp(
            out,
            f,
            &borrow(&filter(&[("protocol", "udp")])),
            &borrow(&filter(&[])),
        );
        unix(out, f, &borrow(&filter(&[])));
    }
}

fn borrow<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Each collector's last collection: failed ones highlighted.
fn health(out: &mut String, f: &Families) {
    let mut rows = Vec::new();
    for s in f.series("sockdiag_collect_success", &[]) {
        let collector = s.label("collector").unwrap_or("");
        let netns = s.label("netns").unwrap_or("");
        let key = [("collector", collector), ("netns", netns)];
        let duration = f.sum("sockdiag_collect_duration_seconds", &key);
        let count = f.sum("sockdiag_collections_total", &key);
        let ok = s.value == 1.0;
        let mut cells = vec![collector.to_string()];
        if !netns.is_empty() || s.labels.iter().any(|(k, _)| k == "netns") {
            cells.push(netns.to_string());
        }
        cells.extend([
            if ok { "ok" } else { "failed" }.to_string(),
            format!("{duration:.3} s"),
            number(count),
        ]);
        rows.push((if ok { "" } else { "bad" }, cells));
    }
    let with_netns = rows.first().is_some_and(|(_, c)| c.len() == 5);
    let header: &[&str] = if with_netns {
        &[
            "collector",
            "netns",
            "last collection",
            "duration",
            "collections",
        ]
    } else {
        &["collector", "last collection", "duration", "collections"]
    };
    table(out, "Collectors", header, &rows);
}

/// TCP sockets and queue bytes per state; non-zero CLOSE_WAIT highlighted.
fn tcp_states(out: &mut String, f: &Families, base: &[(&str, &str)]) {
    if f.series("sockdiag_sockets", base).next().is_none() {
        return;
    }
    let mut rows = Vec::new();
    for state in TcpState::ALL {
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
            let mut v = base.to_vec();
            v.push(("state", state.label()));
            v.extend_from_slice(extra);
            v
        };
        let v4 = f.sum("sockdiag_sockets", &with(&[("family", "ipv4")]));
        let v6 = f.sum("sockdiag_sockets", &with(&[("family", "ipv6")]));
        let rq = f.sum("sockdiag_receive_queue_bytes", &with(&[]));
        let wq = f.sum("sockdiag_send_queue_bytes", &with(&[]));
        let class = if state == TcpState::CloseWait && v4 + v6 > 0.0 {
            "warn"
        } else {
            ""
        };
        rows.push((
            class,
            vec![
                state.label().to_string(),
                number(v4),
                number(v6),
                number(v4 + v6),
                number(rq),
                number(wq),
            ],
        ));
    }
    table(
        out,
        "TCP sockets by state",
        &[
            "state",
            "ipv4",
            "ipv6",
            "total",
            "receive queue bytes",
            "send queue bytes",
        ],
        &rows,
    );
}

/// TCP listeners, fullest accept queue first: over 80% full or dropping
/// highlighted.
fn listeners(out: &mut String, f: &Families, base: &[(&str, &str)]) {
    let mut rows: Vec<(f64, &str, Vec<String>)> = Vec::new();
    for s in f.series("sockdiag_listen_queue", base) {
        let key: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let max = f.sum("sockdiag_listen_queue_max", &key);
        let drops = f.sum("sockdiag_listen_drops_total", &key);
        let sockets = f.sum("sockdiag_listen_sockets", &key);
        let fill = if max > 0.0 {
            100.0 * s.value / max
        } else {
            0.0
        };
        let class = if drops > 0.0 || fill > FILL_WARN_PERCENT {
            "warn"
        } else {
            ""
        };
        rows.push((
            fill,
            class,
            vec![
                s.label("address").unwrap_or("").to_string(),
                s.label("port").unwrap_or("").to_string(),
                s.label("family").unwrap_or("").to_string(),
                number(sockets),
                number(s.value),
                number(max),
                format!("{fill:.0}%"),
                number(drops),
            ],
        ));
    }
    fullest(
        out,
        rows,
        "TCP listeners",
        "fullest accept queue first",
        &[
            "address",
            "port",
            "family",
            "sockets",
            "accept queue",
            "limit",
            "fill",
            "drops",
        ],
    );
}

/// UDP sockets by state and family, and receive drops (highlighted).
fn udp(out: &mut String, f: &Families, base: &[(&str, &str)], any: &[(&str, &str)]) {
    let mut states: Vec<String> = f
        .series("sockdiag_sockets", base)
        .filter_map(|s| s.label("state"))
        .map(str::to_string)
        .collect();
    states.sort();
    states.dedup();
    if states.is_empty() {
        return;
    }
    let mut rows = Vec::new();
    for state in &states {
        let with = |family: &'static str| -> Vec<(&str, &str)> {
            let mut v = base.to_vec();
            v.push(("state", state.as_str()));
            v.push(("family", family));
            v
        };
        let v4 = f.sum("sockdiag_sockets", &with("ipv4"));
        let v6 = f.sum("sockdiag_sockets", &with("ipv6"));
        rows.push((
            "",
            vec![state.clone(), number(v4), number(v6), number(v4 + v6)],
        ));
    }
    let drops = |family: &'static str| {
        let mut v = any.to_vec();
        v.push(("family", family));
        f.sum("sockdiag_udp_receive_drops", &v)
    };
    let (d4, d6) = (drops("ipv4"), drops("ipv6"));
    rows.push((
        if d4 + d6 > 0.0 { "warn" } else { "" },
        vec![
            "receive drops".into(),
            number(d4),
            number(d6),
            number(d4 + d6),
        ],
    ));
    table(
        out,
        "UDP sockets",
        &["state", "ipv4", "ipv6", "total"],
        &rows,
    );
}

/// Unix sockets by type and state, and unix listeners by path (escaped),
/// fullest first, over 80% highlighted.
fn unix(out: &mut String, f: &Families, base: &[(&str, &str)]) {
    let series: Vec<&Series> = f.series("sockdiag_unix_sockets", base).collect();
    if series.is_empty() {
        return;
    }
    let mut types: Vec<&str> = series.iter().filter_map(|s| s.label("type")).collect();
    types.sort();
    types.dedup();
    let mut states: Vec<&str> = series.iter().filter_map(|s| s.label("state")).collect();
    states.sort();
    states.dedup();
    let rows: Vec<(&str, Vec<String>)> = types
        .iter()
        .map(|t| {
            let mut cells = vec![t.to_string()];
            for state in &states {
                let mut key = base.to_vec();
                key.extend([("type", *t), ("state", *state)]);
                cells.push(number(f.sum("sockdiag_unix_sockets", &key)));
            }
            ("", cells)
        })
        .collect();
    let mut header = vec!["type"];
    header.extend(states.iter().copied());
    table(out, "Unix sockets", &header, &rows);

    let mut paths: Vec<(f64, &str, Vec<String>)> = Vec::new();
    for s in f.series("sockdiag_unix_listen_queue", base) {
        let key: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let max = f.sum("sockdiag_unix_listen_queue_max", &key);
        let fill = if max > 0.0 {
            100.0 * s.value / max
        } else {
            0.0
        };
        paths.push((
            fill,
            if fill > FILL_WARN_PERCENT { "warn" } else { "" },
            vec![
                s.label("path").unwrap_or("").to_string(),
                number(s.value),
                number(max),
                format!("{fill:.0}%"),
            ],
        ));
    }
    fullest(
        out,
        paths,
        "Unix listeners",
        "fullest first",
        &["path", "pending", "backlog", "fill"],
    );
}

/// A table of listeners, the fullest (by the first value of each row)
/// first, at most MAX_ROWS of them; none when there is no row.
fn fullest(
    out: &mut String,
    mut rows: Vec<(f64, &str, Vec<String>)>,
    what: &str,
    order: &str,
    header: &[&str],
) {
    if rows.is_empty() {
        return;
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total = rows.len();
    let shown: Vec<(&str, Vec<String>)> = rows
        .into_iter()
        .take(MAX_ROWS)
        .map(|(_, c, r)| (c, r))
        .collect();
    table(
        out,
        &format!("{what} ({} of {total}, {order})", shown.len()),
        header,
        &shown,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"sockdiag_collect_success{collector="tcp"} 1
sockdiag_collect_success{collector="unix"} 0
sockdiag_collect_duration_seconds{collector="tcp"} 0.002
sockdiag_collections_total{collector="tcp"} 3
sockdiag_sockets{family="ipv4",protocol="tcp",state="close_wait"} 2
sockdiag_sockets{family="ipv6",protocol="tcp",state="established"} 5
sockdiag_listen_queue{address="127.0.0.1",family="ipv4",port="80",protocol="tcp"} 9
sockdiag_listen_queue_max{address="127.0.0.1",family="ipv4",port="80",protocol="tcp"} 10
sockdiag_listen_drops_total{address="127.0.0.1",family="ipv4",port="80",protocol="tcp"} 0
sockdiag_listen_queue{address="::1",family="ipv6",port="81",protocol="tcp"} 1
sockdiag_listen_queue_max{address="::1",family="ipv6",port="81",protocol="tcp"} 10
sockdiag_listen_drops_total{address="::1",family="ipv6",port="81",protocol="tcp"} 0
sockdiag_listen_queue{address="::1",family="ipv6",port="82",protocol="tcp"} 0
sockdiag_listen_queue_max{address="::1",family="ipv6",port="82",protocol="tcp"} 10
sockdiag_listen_drops_total{address="::1",family="ipv6",port="82",protocol="tcp"} 4
sockdiag_sockets{family="ipv4",protocol="udp",state="unconnected"} 1
sockdiag_udp_receive_drops{family="ipv4"} 3
sockdiag_udp_receive_drops{family="ipv6"} 0
sockdiag_unix_sockets{state="listen",type="stream"} 1
sockdiag_unix_listen_queue{path="/run/<script>alert(1)</script>&\"x\""} 5
sockdiag_unix_listen_queue_max{path="/run/<script>alert(1)</script>&\"x\""} 5
"#;

    /// The `<tr>` rows of the page whose text contains `cell`.
    fn rows_with<'a>(page: &'a str, cell: &str) -> Vec<&'a str> {
        page.split("<tr")
            .filter(|r| r.contains(&format!("<td>{cell}</td>")))
            .collect()
    }

    #[test]
    fn highlights_what_needs_a_look() {
        let page = page("/metrics", "fresh", TEXT, "summary");
        let row = |cell: &str| {
            let rows = rows_with(&page, cell);
            assert_eq!(rows.len(), 1, "{cell}: {rows:?}\n{page}");
            rows[0]
        };
        assert!(row("close_wait").starts_with(" class=\"warn\""), "{page}");
        assert!(!row("established").contains("warn"));
        // 9 of 10: 90% full.
        assert!(row("80").starts_with(" class=\"warn\""), "{}", row("80"));
        assert!(row("80").contains("<td>90%</td>"));
        assert!(!row("81").contains("warn"));
        // Drops on an empty queue.
        assert!(row("82").starts_with(" class=\"warn\""));
        assert!(row("receive drops").starts_with(" class=\"warn\""));
        assert!(row("unix").starts_with(" class=\"bad\""), "{page}");
        assert!(row("unix").contains("<td>failed</td>"));
        assert!(!row("tcp").contains("bad"));
        // Fullest listener first.
        assert!(page.find("<td>80</td>") < page.find("<td>81</td>"));
        assert!(page.contains("<a href=\"/metrics\">/metrics</a>"));
        assert!(page.contains(VERSION));
    }

    #[test]
    fn escapes_paths_and_the_rest() {
        let page = page("/m<x>", "a & b", TEXT, "unix listener /run/<script>");
        assert!(!page.contains("<script"), "{page}");
        assert!(
            page.contains("<td>/run/&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;x&quot;</td>")
        );
        assert!(page.contains("<a href=\"/m&lt;x&gt;\">"));
        assert!(page.contains("a &amp; b"));
        assert!(page.contains("<pre>unix listener /run/&lt;script&gt;</pre>"));
    }

    /// With --collector.netns: the health table has a netns column, and
    /// each namespace its own tables with its own numbers.
    #[test]
    fn one_section_per_namespace() {
        let text = r#"sockdiag_collect_success{collector="netns",netns=""} 1
sockdiag_collect_success{collector="tcp",netns="host"} 1
sockdiag_collect_success{collector="tcp",netns="pod"} 0
sockdiag_sockets{family="ipv4",netns="host",protocol="tcp",state="close_wait"} 3
sockdiag_sockets{family="ipv4",netns="pod",protocol="tcp",state="close_wait"} 0
"#;
        let page = page("/metrics", "", text, "");
        assert!(page.contains("<th>netns</th>"), "{page}");
        assert!(
            page.contains("<tr class=\"bad\"><td>tcp</td><td>pod</td><td>failed</td>"),
            "{page}"
        );
        let host = page
            .find("<h2>Network namespace host</h2>")
            .expect("host section");
        let pod = page
            .find("<h2>Network namespace pod</h2>")
            .expect("pod section");
        let rows = |from: usize, to: usize| {
            page[from..to]
                .split("<tr")
                .find(|r| r.contains("<td>close_wait</td>"))
                .unwrap_or_default()
                .to_string()
        };
        let host_row = rows(host, pod);
        assert!(
            host_row.starts_with(" class=\"warn\"><td>close_wait</td><td>3</td>"),
            "{host_row}"
        );
        let pod_row = rows(pod, page.len());
        assert!(
            pod_row.starts_with("><td>close_wait</td><td>0</td>"),
            "{pod_row}"
        );
    }

    #[test]
    fn unreadable_series_are_said_not_hidden() {
        let page = page("/metrics", "", "x{", "s");
        assert!(
            page.contains("The series cannot be shown: line 1"),
            "{page}"
        );
        assert!(page.contains("<pre>s</pre>"));
    }
}
