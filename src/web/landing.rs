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
//!
//! The page's size and the memory it takes are bounded, whatever the
//! number of namespaces (`--collector.netns`): the text, which the cache
//! keeps gzip-compressed, is read line by line twice, never whole. The
//! first pass ranks the namespaces by what needs a look ([`Digest`]: a
//! failed collector, then CLOSE_WAIT, drops or a full accept queue, then
//! the most sockets) and the page shows an overview of the first
//! [`MAX_OVERVIEW`]; the second keeps only the series of the first
//! [`MAX_NAMESPACES`], which get the full tables and their part of the
//! summary. The page says how many it leaves out; /metrics has them all.
//! (With 500 namespaces reading the whole text into families took 30 MB
//! and made a 2 MB page.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use crate::export::metrics::{REVISION, VERSION};
use crate::export::render::html_escape as esc;
use crate::export::structured::{self, Family, Series};
use crate::kernel::diag::TcpState;

/// Listeners and unix paths shown at most, fullest first.
const MAX_ROWS: usize = 50;
/// An accept queue this full (percent of its limit) is highlighted.
const FILL_WARN_PERCENT: f64 = 80.0;
/// Namespaces shown with their full tables at most, the first by rank.
pub const MAX_NAMESPACES: usize = 10;
/// Namespaces listed in the overview at most, the first by rank.
pub const MAX_OVERVIEW: usize = 50;
/// Non-empty accept queues remembered while waiting for their limits'
/// series (they follow in the text); beyond this, fill is not checked.
const MAX_QUEUES: usize = 100_000;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
th,td{border:1px solid #bbb;padding:0.2em 0.6em;text-align:right}\
th{background:#eee}td:first-child,th:first-child{text-align:left}\
tr.warn td{background:#ffe08a}tr.bad td{background:#f7a1a1}\
td.mono{font-family:monospace;text-align:left}\
p.note{color:#555}";

/// A collection's text exposition, read line by line: calling it calls its
/// argument with every line (without the newline), in order. It is called
/// twice.
pub type Text<'a> = &'a dyn Fn(&mut dyn FnMut(&str));

/// The page for one collection (`text`, its exposition, and `summary`,
/// its human summary, read once); `telemetry_path` is linked, `freshness`
/// says how old the data may be.
pub fn page(telemetry_path: &str, freshness: &str, text: Text<'_>, summary: Text<'_>) -> String {
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
    let mut shown = None;
    match Ranking::read(text) {
        Ok(ranking) => {
            let chosen = ranking.chosen();
            if ranking.with_netns {
                overview(&mut out, &ranking);
            }
            match structured::parse(&ranking.keep(text, &chosen)) {
                Ok(families) => tables(&mut out, &Families::new(families), &ranking.order()),
                Err(e) => {
                    let _ = writeln!(out, "<p>The series cannot be shown: {}</p>", esc(&e));
                }
            }
            if ranking.with_netns && ranking.namespaces.len() > chosen.len() {
                shown = Some(chosen);
            }
        }
        Err(e) => {
            let _ = writeln!(out, "<p>The series cannot be shown: {}</p>", esc(&e));
        }
    }
    let summary = summary_of(summary, shown.as_ref());
    let _ = write!(
        out,
        "<h2>Summary</h2>\n<pre>{}</pre>\n</body>\n</html>\n",
        esc(&summary)
    );
    out
}

/// What one namespace's series add up to: enough to rank it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Digest {
    collectors: u32,
    failed: u32,
    tcp: f64,
    udp: f64,
    unix: f64,
    close_wait: f64,
    /// Listener and UDP receive drops.
    drops: f64,
    /// TCP and unix listeners over FILL_WARN_PERCENT full.
    full: u32,
}

impl Digest {
    /// Has something highlighted.
    fn warn(&self) -> bool {
        self.close_wait > 0.0 || self.drops > 0.0 || self.full > 0
    }

    fn sockets(&self) -> f64 {
        self.tcp + self.udp + self.unix
    }

    fn add(&mut self, other: &Digest) {
        self.collectors += other.collectors;
        self.failed += other.failed;
        self.tcp += other.tcp;
        self.udp += other.udp;
        self.unix += other.unix;
        self.close_wait += other.close_wait;
        self.drops += other.drops;
        self.full += other.full;
    }
}

/// The first pass over the text: each namespace's [`Digest`], ranked.
struct Ranking {
    /// Namespace label (`""` without --collector.netns) to its digest.
    namespaces: BTreeMap<String, Digest>,
    /// The series have a netns label (--collector.netns).
    with_netns: bool,
}

impl Ranking {
    /// Reads every series line once; Err names the first unreadable line.
    fn read(text: Text<'_>) -> Result<Ranking, String> {
        let mut namespaces: BTreeMap<String, Digest> = BTreeMap::new();
        let mut with_netns = false;
        let mut error = None;
        // Non-empty accept queues by metric and the text of their labels,
        // until their limit's series comes.
        let mut queues: HashMap<(bool, String), f64> = HashMap::new();
        let mut n = 0;
        text(&mut |line: &str| {
            n += 1;
            if error.is_some() || line.is_empty() || line.starts_with('#') {
                return;
            }
            let (name, labels, value) = match structured::series_line(line) {
                Ok(series) => series,
                Err(why) => {
                    error = Some(format!("line {n}: {why}: {line:?}"));
                    return;
                }
            };
            let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let ns = label("netns");
            with_netns |= ns.is_some();
            let ns = ns.unwrap_or("");
            let digest = match namespaces.get_mut(ns) {
                Some(d) => d,
                None => namespaces.entry(ns.to_string()).or_default(),
            };
            // The labels' text: a queue and its limit have the same.
            let raw = || line[name.len()..].rsplit_once(' ').map_or("", |(l, _)| l);
            match name {
                "sockdiag_collect_success" => {
                    digest.collectors += 1;
                    digest.failed += u32::from(value != 1.0);
                }
                "sockdiag_sockets" => match label("protocol") {
                    Some("tcp") => {
                        digest.tcp += value;
                        if label("state") == Some(TcpState::CloseWait.label()) {
                            digest.close_wait += value;
                        }
                    }
                    Some("udp") => digest.udp += value,
                    _ => {}
                },
                "sockdiag_unix_sockets" => digest.unix += value,
                "sockdiag_listen_drops_total" | "sockdiag_udp_receive_drops" => {
                    digest.drops += value
                }
                "sockdiag_listen_queue" | "sockdiag_unix_listen_queue"
                    if value > 0.0 && queues.len() < MAX_QUEUES =>
                {
                    queues.insert(
                        (name.starts_with("sockdiag_unix"), raw().to_string()),
                        value,
                    );
                }
                "sockdiag_listen_queue_max" | "sockdiag_unix_listen_queue_max" => {
                    let key = (name.starts_with("sockdiag_unix"), raw().to_string());
                    if let Some(queue) = queues.remove(&key) {
                        if value > 0.0 && 100.0 * queue / value > FILL_WARN_PERCENT {
                            digest.full += 1;
                        }
                    }
                }
                _ => {}
            }
        });
        if let Some(e) = error {
            return Err(e);
        }
        if with_netns {
            // The series of no namespace (the netns collector's own health).
            namespaces.remove("");
        }
        Ok(Ranking {
            namespaces,
            with_netns,
        })
    }

    /// Every namespace, the one that most needs a look first: a failed
    /// collector, then something highlighted, then the most sockets, then
    /// by name.
    fn ranked(&self) -> Vec<(&String, &Digest)> {
        let mut all: Vec<(&String, &Digest)> = self.namespaces.iter().collect();
        all.sort_by(|(an, a), (bn, b)| {
            b.failed
                .cmp(&a.failed)
                .then(b.warn().cmp(&a.warn()))
                .then(b.sockets().total_cmp(&a.sockets()))
                .then(an.cmp(bn))
        });
        all
    }

    /// The namespaces shown in full, in rank order.
    fn order(&self) -> Vec<String> {
        self.ranked()
            .into_iter()
            .take(MAX_NAMESPACES)
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn chosen(&self) -> HashSet<String> {
        self.order().into_iter().collect()
    }

    /// The second pass: the text of the series of the `chosen` namespaces
    /// and of no namespace, with every comment line.
    fn keep(&self, text: Text<'_>, chosen: &HashSet<String>) -> String {
        let mut out = String::new();
        text(&mut |line: &str| {
            let keep = line.starts_with('#')
                || match structured::series_line(line) {
                    Ok((_, labels, _)) => labels
                        .iter()
                        .find(|(n, _)| n == "netns")
                        .map_or(true, |(_, v)| v.is_empty() || chosen.contains(v)),
                    Err(_) => !line.is_empty(),
                };
            if keep {
                out.push_str(line);
                out.push('\n');
            }
        });
        out
    }
}

/// With --collector.netns: every namespace's totals, the first
/// MAX_OVERVIEW by rank, and how many the page shows in full.
fn overview(out: &mut String, ranking: &Ranking) {
    let ranked = ranking.ranked();
    let count = ranked.len();
    let mut total = Digest::default();
    for (_, d) in &ranked {
        total.add(d);
    }
    let full = count.min(MAX_NAMESPACES);
    let _ = writeln!(
        out,
        "<h2>Network namespaces</h2>\n<p class=\"note\">{count} network namespaces collected. \
         Ranked by what needs a look: a failed collector first, then CLOSE_WAIT, drops or an \
         accept queue over {FILL_WARN_PERCENT:.0}% full, then the most sockets. The first \
         {} are listed here and the first {full} shown in full below; /metrics has every \
         namespace's series.</p>",
        count.min(MAX_OVERVIEW)
    );
    let class = |d: &Digest| match () {
        _ if d.failed > 0 => "bad",
        _ if d.warn() => "warn",
        _ => "",
    };
    let cells = |name: String, d: &Digest| {
        vec![
            name,
            format!("{} of {}", d.failed, d.collectors),
            number(d.tcp),
            number(d.close_wait),
            number(d.udp),
            number(d.unix),
            number(d.drops),
            number(f64::from(d.full)),
        ]
    };
    let mut rows = vec![(class(&total), cells(format!("all {count}"), &total))];
    for (name, d) in ranked.iter().take(MAX_OVERVIEW) {
        rows.push((class(d), cells(name.to_string(), d)));
    }
    table(
        out,
        &format!(
            "Network namespaces ({} of {count}, most in need of a look first)",
            count.min(MAX_OVERVIEW)
        ),
        &[
            "netns",
            "failed collectors",
            "TCP sockets",
            "close_wait",
            "UDP sockets",
            "unix sockets",
            "drops",
            "queues over 80% full",
        ],
        &rows,
    );
}

/// The summary's lines, with only the sections of the `chosen`
/// namespaces if given, and its closing lines (discovery), with a note on
/// the rest.
fn summary_of(summary: Text<'_>, chosen: Option<&HashSet<String>>) -> String {
    const HEADING: &str = "=== Network namespace ";
    let mut out = String::new();
    let mut keep = true;
    let mut left_out = 0;
    summary(&mut |line: &str| {
        if let Some(chosen) = chosen {
            if let Some(rest) = line.strip_prefix(HEADING) {
                let name = rest.strip_suffix(" ===").unwrap_or(rest);
                keep = chosen.contains(name);
                left_out += usize::from(!keep);
            } else if line.starts_with("Network namespaces: ") {
                keep = true;
            }
        }
        if keep {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(line);
        }
    });
    if left_out > 0 {
        let _ = write!(
            out,
            "\n({left_out} more namespaces left out here: `sockdiag_exporter dump --collector.netns --format table` prints every one)"
        );
    }
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

/// The health table, then each namespace's tables: those of `order` in
/// that order (all of them if it is empty).
fn tables(out: &mut String, f: &Families, order: &[String]) {
    health(out, f);
    let present = f.namespaces();
    let namespaces: Vec<String> = match order.is_empty() {
        true => present,
        false => order
            .iter()
            .filter(|ns| present.contains(ns))
            .cloned()
            .collect(),
    };
    for ns in namespaces {
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

    /// `text` as a [`Text`].
    fn lines(text: &str) -> impl Fn(&mut dyn FnMut(&str)) + '_ {
        move |each| text.lines().for_each(&mut *each)
    }

    fn page(path: &str, freshness: &str, text: &str, summary: &str) -> String {
        super::page(path, freshness, &lines(text), &lines(summary))
    }

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
    /// each namespace its own tables with its own numbers, the one that
    /// most needs a look first.
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
        // pod's failed collector ranks it first.
        assert!(pod < host, "{page}");
        let host_row = rows(host, page.len());
        assert!(
            host_row.starts_with(" class=\"warn\"><td>close_wait</td><td>3</td>"),
            "{host_row}"
        );
        let pod_row = rows(pod, host);
        assert!(
            pod_row.starts_with("><td>close_wait</td><td>0</td>"),
            "{pod_row}"
        );
    }

    /// With more namespaces than MAX_NAMESPACES: the overview ranks them
    /// (failed, then highlighted, then the most sockets) with their totals,
    /// only the first get full tables and summary sections, and the page
    /// says how many it leaves out.
    #[test]
    fn many_namespaces_are_ranked_and_bounded() {
        let count = 3 * MAX_OVERVIEW;
        let mut text = String::from(
            "# HELP sockdiag_collect_success Whether it worked.\n# TYPE sockdiag_collect_success gauge\n",
        );
        let mut summary = String::new();
        for i in 0..count {
            let ns = format!("ns{i:03}");
            // ns007 failed; ns100 has a close_wait; ns050 the most sockets.
            let ok = u8::from(i != 7);
            let _ = writeln!(
                text,
                "sockdiag_collect_success{{collector=\"tcp\",netns=\"{ns}\"}} {ok}"
            );
            let sockets = if i == 50 { 1000 } else { i };
            let _ = writeln!(text, "sockdiag_sockets{{family=\"ipv4\",netns=\"{ns}\",protocol=\"tcp\",state=\"established\"}} {sockets}");
            let cw = u8::from(i == 100);
            let _ = writeln!(text, "sockdiag_sockets{{family=\"ipv4\",netns=\"{ns}\",protocol=\"tcp\",state=\"close_wait\"}} {cw}");
            let _ = writeln!(
                summary,
                "=== Network namespace {ns} ===\n\nsection of {ns}\n"
            );
        }
        summary.push_str("Network namespaces: 150 collected\n");
        let page = page("/metrics", "", &text, &summary);
        let overview = page
            .split("<h3>")
            .find(|t| t.starts_with("Network namespaces ("))
            .expect("an overview table");
        assert!(
            overview.starts_with(&format!("Network namespaces ({MAX_OVERVIEW} of {count},")),
            "{overview}"
        );
        let total: usize = (0..count)
            .map(|i| if i == 50 { 1000 } else { i })
            .sum::<usize>()
            + 1;
        assert!(
            overview.contains(&format!("<tr class=\"bad\"><td>all {count}</td><td>1 of {count}</td><td>{total}</td><td>1</td>")),
            "{overview}"
        );
        let order: Vec<usize> = ["ns007", "ns100", "ns050", "ns149"]
            .iter()
            .map(|ns| overview.find(&format!("<td>{ns}</td>")).expect(ns))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{overview}");
        assert!(!overview.contains("<td>ns000</td>"), "beyond MAX_OVERVIEW");
        // Full sections: the first MAX_NAMESPACES by rank only.
        assert_eq!(
            page.matches("<h2>Network namespace ").count(),
            MAX_NAMESPACES,
            "{page}"
        );
        assert!(page.contains("<h2>Network namespace ns007</h2>"));
        assert!(!page.contains("<h2>Network namespace ns000</h2>"));
        assert!(page.contains("section of ns100") && !page.contains("section of ns000"));
        assert!(page.contains("Network namespaces: 150 collected"));
        assert!(page.contains(&format!(
            "({} more namespaces left out here",
            count - MAX_NAMESPACES
        )));
        // The health table has the shown namespaces' rows only.
        assert_eq!(
            page.matches("<td>tcp</td>").count(),
            MAX_NAMESPACES,
            "{page}"
        );
        assert!(page.len() < 60_000, "{} bytes", page.len());
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
