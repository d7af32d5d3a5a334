//! The series of a collection as data: the Prometheus text exposition read
//! back into families, and `dump --format json`, which writes them grouped
//! by the collector they belong to. Reading the text the server serves,
//! rather than keeping a second rendering of the collectors' counts, makes
//! the JSON carry exactly the numbers of the Prometheus output, by
//! construction. The landing page reads its tables from here too.
//!
//! Which collector a family belongs to: the one whose `specs()` declares
//! it; for the health series (`sockdiag_collect_*`, `sockdiag_collections_total`)
//! the `collector` label; for the families several collectors share
//! (`sockdiag_sockets`, queues, per-port series) the `protocol` label; a
//! `sockdiag_series_dropped` series follows the metric it counts; the
//! cgroup and netns series belong to those collectors, and the node_exporter
//! compatibility series to tcp. The rest (build info, process metrics, a
//! shared cap without a protocol) is `other`.

use std::collections::BTreeMap;

use crate::collectors::Kind;
use crate::json;

/// One series: its labels (sorted by name, as in the text) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Series {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One metric family as the text gives it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub help: String,
    pub series: Vec<Series>,
}

/// Reads a text exposition (format 0.0.4, as `Families::encode` writes
/// it) into its families, in the text's order. Err names the line that
/// cannot be read.
pub fn parse(text: &str) -> Result<Vec<Family>, String> {
    let mut families: Vec<Family> = Vec::new();
    let family = |families: &mut Vec<Family>, name: &str| -> usize {
        match families.iter().rposition(|f| f.name == name) {
            Some(at) => at,
            None => {
                families.push(Family {
                    name: name.to_string(),
                    ..Family::default()
                });
                families.len() - 1
            }
        }
    };
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let at = family(&mut families, name);
            families[at].help = unescape(help, false).map_err(|e| bad(&e))?;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| bad("no type"))?;
            let at = family(&mut families, name);
            families[at].kind = kind.to_string();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, labels, value) = series_line(line).map_err(|e| bad(&e))?;
        // A histogram's or summary's series (`_bucket`, `_sum`, `_count`)
        // stay with the family they follow.
        let owner = families
            .last()
            .filter(|f| {
                matches!(f.kind.as_str(), "histogram" | "summary")
                    && name
                        .strip_prefix(f.name.as_str())
                        .is_some_and(|suffix| matches!(suffix, "_bucket" | "_sum" | "_count"))
            })
            .map(|f| f.name.clone())
            .unwrap_or_else(|| name.to_string());
        let at = family(&mut families, &owner);
        let mut labels = labels;
        if owner != name {
            labels.insert(0, ("__name__".into(), name.to_string()));
        }
        families[at].series.push(Series { labels, value });
    }
    Ok(families)
}

/// A series line read: its metric name, labels (as in the text, sorted by
/// name) and value.
pub type Line<'a> = (&'a str, Vec<(String, String)>, f64);

/// One series line (not a comment); Err says why it cannot be read.
pub fn series_line(line: &str) -> Result<Line<'_>, String> {
    let (name, labels, rest) = match line.find(['{', ' ']) {
        Some(at) if line.as_bytes()[at] == b'{' => {
            let (labels, used) = labels(&line[at + 1..])?;
            (&line[..at], labels, &line[at + 1 + used..])
        }
        Some(at) => (&line[..at], Vec::new(), &line[at..]),
        None => return Err("no value".into()),
    };
    let value_text = rest.trim().split(' ').next().unwrap_or("");
    let value = match value_text {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| "not a number".to_string())?,
    };
    Ok((name, labels, value))
}

/// The label pairs after `{` up to and including `}`; the bytes used.
fn labels(text: &str) -> Result<(Vec<(String, String)>, usize), String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((out, text.len() - after.len()));
        }
        let (name, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        // The value ends at the first quote not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or("unterminated label value")?;
        out.push((name.to_string(), unescape(&after[..end], true)?));
        rest = &after[end + 1..];
    }
}

/// Undoes the text format's escapes: `\\`, `\n`, and in label values `\"`.
fn unescape(s: &str, label: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if label => out.push('"'),
            other => return Err(format!("unknown escape \\{}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

/// The group (a collector's name, or `other`) a series belongs to.
pub fn owner(family: &str, series: &Series) -> &'static str {
    let kind_of = |name: &str| {
        Kind::ALL
            .into_iter()
            .find(|k| k.specs().iter().any(|s| s.name == name))
            .map(Kind::label)
    };
    let by_label = |label: &str| {
        let value = series.label(label)?;
        Kind::ALL
            .into_iter()
            .map(Kind::label)
            .chain(["netns", "cgroup"])
            .find(|k| *k == value)
    };
    if let Some(kind) = kind_of(family) {
        return kind;
    }
    let found = match family {
        "sockdiag_collect_duration_seconds"
        | "sockdiag_collect_success"
        | "sockdiag_collect_timestamp_seconds"
        | "sockdiag_collections_total" => by_label("collector"),
        "sockdiag_series_dropped" => match series.label("metric") {
            Some("sockdiag_cgroup_sockets") => Some("cgroup"),
            Some(metric) => kind_of(metric),
            None => None,
        },
        "sockdiag_cgroup_sockets" => Some("cgroup"),
        "node_tcp_connection_states" => Some("tcp"),
        name if name.starts_with("sockdiag_netns_") => Some("netns"),
        _ => by_label("protocol"),
    };
    found.unwrap_or("other")
}

/// `dump --format json`: the families of `text` grouped by collector:
/// `{"collectors": {"tcp": {"sockdiag_sockets": {"type": ..., "help": ...,
/// "series": [{"labels": {...}, "value": N}, ...]}, ...}, ...}, "other": {...}}`.
/// One series per line, so that `grep` works too.
pub fn to_json(text: &str) -> Result<String, String> {
    let mut groups: BTreeMap<&'static str, Vec<Family>> = BTreeMap::new();
    for family in parse(text)? {
        for series in &family.series {
            let group = groups.entry(owner(&family.name, series)).or_default();
            match group.last_mut().filter(|f| f.name == family.name) {
                Some(f) => f.series.push(series.clone()),
                None => group.push(Family {
                    series: vec![series.clone()],
                    ..family.clone()
                }),
            }
        }
    }
    let other = groups.remove("other").unwrap_or_default();
    let mut out = String::from("{\n  \"collectors\": {");
    for (i, (name, families)) in groups.iter().enumerate() {
        out.push_str(if i == 0 { "\n    " } else { ",\n    " });
        json::string(&mut out, name);
        out.push_str(": ");
        write_families(&mut out, families, "    ");
    }
    out.push_str(if groups.is_empty() {
        "},\n"
    } else {
        "\n  },\n"
    });
    out.push_str("  \"other\": ");
    write_families(&mut out, &other, "  ");
    out.push_str("\n}\n");
    Ok(out)
}

fn write_families(out: &mut String, families: &[Family], indent: &str) {
    if families.is_empty() {
        out.push_str("{}");
        return;
    }
    out.push('{');
    for (i, family) in families.iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        out.push_str(indent);
        out.push_str("  ");
        json::string(out, &family.name);
        out.push_str(": {\"type\": ");
        json::string(out, &family.kind);
        out.push_str(", \"help\": ");
        json::string(out, &family.help);
        out.push_str(", \"series\": [");
        for (j, series) in family.series.iter().enumerate() {
            out.push_str(if j == 0 { "\n" } else { ",\n" });
            out.push_str(indent);
            out.push_str("    {\"labels\": {");
            for (k, (name, value)) in series.labels.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                json::string(out, name);
                out.push_str(": ");
                json::string(out, value);
            }
            out.push_str("}, \"value\": ");
            json::number(out, series.value);
            out.push('}');
        }
        out.push('\n');
        out.push_str(indent);
        out.push_str("  ]}");
    }
    out.push('\n');
    out.push_str(indent);
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP node_tcp_connection_states States.
# TYPE node_tcp_connection_states gauge
node_tcp_connection_states{state="close_wait"} 1
# HELP process_cpu_seconds_total CPU.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 0.25
# HELP sockdiag_collect_duration_seconds Wall time.
# TYPE sockdiag_collect_duration_seconds gauge
sockdiag_collect_duration_seconds{collector="tcp"} 0.000123
sockdiag_collect_duration_seconds{collector="unix"} 0.5
# HELP sockdiag_series_dropped Cut.
# TYPE sockdiag_series_dropped gauge
sockdiag_series_dropped{metric="sockdiag_listen_queue"} 2
sockdiag_series_dropped{metric="sockdiag_port_sockets"} 3
# HELP sockdiag_sockets Sockets \\ with "quotes"\nand lines.
# TYPE sockdiag_sockets gauge
sockdiag_sockets{family="ipv4",protocol="tcp",state="listen"} 6
sockdiag_sockets{family="ipv4",protocol="udp",state="close"} 1e+06
# HELP sockdiag_unix_listen_queue Queue.
# TYPE sockdiag_unix_listen_queue gauge
sockdiag_unix_listen_queue{path="/run/<script>\"a\\b\nc"} 7
"#;

    /// Every (group, name, labels, value) in the JSON, read back with
    /// serde_json, and every (name, labels, value) in the text.
    /// (group, family, labels, value).
    type Flat = (String, String, Vec<(String, String)>, f64);

    fn flatten(json: &str) -> Vec<Flat> {
        let value: serde_json::Value = serde_json::from_str(json).expect(json);
        let mut out = Vec::new();
        let mut groups: Vec<(String, &serde_json::Value)> = value["collectors"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v))
            .collect();
        groups.push(("other".into(), &value["other"]));
        for (group, families) in groups {
            for (name, family) in families.as_object().unwrap() {
                for series in family["series"].as_array().unwrap() {
                    let labels = series["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                        .collect();
                    let value = series["value"].as_f64().unwrap();
                    out.push((group.clone(), name.clone(), labels, value));
                }
            }
        }
        out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        out
    }

    #[test]
    fn json_has_every_series_of_the_text_grouped_by_collector() {
        let json = to_json(TEXT).unwrap();
        let got = flatten(&json);
        let mut want = Vec::new();
        for family in parse(TEXT).unwrap() {
            for series in &family.series {
                let mut labels = series.labels.clone();
                labels.sort();
                want.push((
                    owner(&family.name, series).to_string(),
                    family.name.clone(),
                    labels,
                    series.value,
                ));
            }
        }
        want.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        assert_eq!(got, want, "{json}");
        assert_eq!(got.len(), 9);
        let group_of = |name: &str, value: f64| {
            got.iter()
                .find(|s| s.1 == name && s.3 == value)
                .map(|s| s.0.as_str())
        };
        assert_eq!(group_of("node_tcp_connection_states", 1.0), Some("tcp"));
        assert_eq!(group_of("process_cpu_seconds_total", 0.25), Some("other"));
        assert_eq!(
            group_of("sockdiag_collect_duration_seconds", 0.000123),
            Some("tcp")
        );
        assert_eq!(
            group_of("sockdiag_collect_duration_seconds", 0.5),
            Some("unix")
        );
        assert_eq!(group_of("sockdiag_series_dropped", 2.0), Some("listeners"));
        assert_eq!(group_of("sockdiag_series_dropped", 3.0), Some("other"));
        assert_eq!(group_of("sockdiag_sockets", 6.0), Some("tcp"));
        assert_eq!(group_of("sockdiag_sockets", 1e6), Some("udp"));
        assert_eq!(group_of("sockdiag_unix_listen_queue", 7.0), Some("unix"));
        let unix = got.iter().find(|s| s.0 == "unix" && s.3 == 7.0).unwrap();
        assert_eq!(unix.2, [("path".into(), "/run/<script>\"a\\b\nc".into())]);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value["collectors"]["udp"]["sockdiag_sockets"]["help"],
            "Sockets \\ with \"quotes\"\nand lines."
        );
        assert_eq!(
            value["collectors"]["udp"]["sockdiag_sockets"]["type"],
            "gauge"
        );
    }

    #[test]
    fn bad_text_is_an_error_naming_the_line() {
        for bad in ["x{a=\"1} 2", "x 1.2.3", "x{a=1} 2", "x", "x{a=\"\\q\"} 1"] {
            let err = parse(bad).unwrap_err();
            assert!(err.starts_with("line 1: "), "{bad}: {err}");
        }
        assert_eq!(
            to_json("").unwrap(),
            "{\n  \"collectors\": {},\n  \"other\": {}\n}\n"
        );
    }

    #[test]
    fn families_are_told_apart_by_name_not_prefix() {
        let text =
            "a_queue 1\na_queue_max 2\n# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_count 3\n";
        let families = parse(text).unwrap();
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a_queue", "a_queue_max", "h"]);
        assert_eq!(families[2].series[1].label("__name__"), Some("h_count"));
    }
}
