//! The `collect[]` and `exclude[]` URL parameters of a scrape: which
//! collectors it runs, as node_exporter's (and windows_exporter's,
//! mysqld_exporter's), so Prometheus can scrape cheap collectors often and
//! expensive ones rarely with two jobs (`params: {collect[]: [udp]}`).
//!
//! Kept apart from the routing so that the rules are tested on their own:
//! - the query is split on `&`, keys and values percent-decoded (`%5B%5D`
//!   as Prometheus sends it, either case) with `+` as a space, as Go's
//!   `url.ParseQuery`; a bad escape is a 400 (Go drops the pair silently);
//!   other parameters are ignored, as node_exporter does;
//! - `collect[]=NAME`, repeatable, names a collector (its `collector` label:
//!   tcp, listeners, udp, unix); repeats count once; every name that is
//!   unknown, empty, or a collector the flags disabled is a 400 that names
//!   them all (node_exporter 1.5 names only the first);
//! - `exclude[]=NAME` (node_exporter 1.8): every enabled collector but
//!   those; with `collect[]` in the same query a 400, as node_exporter;
//!   excluding every enabled collector is a 400 (node_exporter would then
//!   run them all);
//! - `netns` and `cgroup` are scopes, not collectors: they apply to
//!   whichever collectors a scrape runs (cgroup rows come with tcp), so
//!   naming them is a 400 that says so;
//! - a query that names every enabled collector is the unfiltered scrape,
//!   with the same cache entry.

use crate::collectors::{Kind, KindSet};

/// Why a query's filter is refused (400), said the way the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The collectors a scrape with query `query` runs, given those the flags
/// `enabled`.
pub fn selection(query: &str, enabled: KindSet) -> Result<KindSet, Refused> {
    let mut collect = Vec::new();
    let mut exclude = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key)?;
        match key.as_str() {
            "collect[]" => collect.push(decode(value)?),
            "exclude[]" => exclude.push(decode(value)?),
            _ => {}
        }
    }
    match (collect.is_empty(), exclude.is_empty()) {
        (true, true) => Ok(enabled),
        (false, false) => Err(Refused(
            "collect[] and exclude[] cannot be combined in one scrape".into(),
        )),
        (false, true) => {
            let kinds = kinds("collect[]", &collect, enabled)?;
            Ok(KindSet::of(&kinds))
        }
        (true, false) => {
            let mut set = enabled;
            for kind in kinds("exclude[]", &exclude, enabled)? {
                set.remove(kind);
            }
            if set.is_empty() {
                return Err(Refused(format!(
                    "exclude[] leaves no collector to run (enabled: {})",
                    enabled.names()
                )));
            }
            Ok(set)
        }
    }
}

/// The collectors `names` name, or a refusal naming every bad one.
fn kinds(param: &str, names: &[String], enabled: KindSet) -> Result<Vec<Kind>, Refused> {
    let mut unknown = Vec::new();
    let mut scopes = Vec::new();
    let mut disabled = Vec::new();
    let mut kinds = Vec::new();
    for name in names {
        match KindSet::kind_named(name) {
            Some(kind) if enabled.contains(kind) => kinds.push(kind),
            Some(_) => disabled.push(format!("{name:?}")),
            None if name == "netns" || name == "cgroup" => scopes.push(format!("{name:?}")),
            None => unknown.push(format!("{name:?}")),
        }
    }
    let mut problems = Vec::new();
    if !unknown.is_empty() {
        problems.push(format!(
            "unknown collector in {param}: {} (collectors: {})",
            unknown.join(", "),
            KindSet::all().names()
        ));
    }
    if !scopes.is_empty() {
        problems.push(format!(
            "not a collector in {param}: {} (--collector.netns and --collector.cgroup apply to whichever collectors a scrape runs; cgroup rows come with tcp)",
            scopes.join(", ")
        ));
    }
    if !disabled.is_empty() {
        problems.push(format!(
            "collector disabled by flags in {param}: {} (enabled: {})",
            disabled.join(", "),
            enabled.names()
        ));
    }
    if problems.is_empty() {
        Ok(kinds)
    } else {
        Err(Refused(problems.join("; ")))
    }
}

/// Percent-decodes a query key or value, `+` as a space (as Go's
/// `url.QueryUnescape`); bytes that are not UTF-8 become U+FFFD.
fn decode(raw: &str) -> Result<String, Refused> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(byte) = hex else {
                    let end = (i + 3).min(bytes.len());
                    return Err(Refused(format!(
                        "bad percent-encoding {:?} in the query",
                        String::from_utf8_lossy(&bytes[i..end])
                    )));
                };
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kinds: &[Kind]) -> KindSet {
        KindSet::of(kinds)
    }

    #[test]
    fn no_filter_is_every_enabled_collector() {
        let enabled = set(&[Kind::Tcp, Kind::Udp]);
        for query in ["", "&", "x=1", "collect=udp", "collect%5B=udp"] {
            assert_eq!(selection(query, enabled), Ok(enabled), "{query}");
        }
    }

    #[test]
    fn collect_names_collectors_however_encoded() {
        let all = KindSet::all();
        for query in [
            "collect[]=udp&collect[]=unix",
            "collect%5B%5D=udp&collect%5b%5d=unix",
            "collect[]=unix&x=1&collect[]=udp&collect[]=udp",
            "collect[]=%75dp&collect[]=unix",
        ] {
            assert_eq!(
                selection(query, all),
                Ok(set(&[Kind::Udp, Kind::Unix])),
                "{query}"
            );
        }
        assert_eq!(
            selection(
                "collect[]=tcp&collect[]=listeners&collect[]=udp&collect[]=unix",
                all
            ),
            Ok(all),
            "every collector is the unfiltered scrape"
        );
    }

    #[test]
    fn unknown_empty_scope_and_disabled_names_are_refused_by_name() {
        let enabled = set(&[Kind::Tcp, Kind::Udp]);
        let refused = |q: &str| selection(q, enabled).unwrap_err().0;
        let text = refused("collect[]=nope&collect[]=udp&collect[]=bad+name");
        assert!(
            text.starts_with(r#"unknown collector in collect[]: "nope", "bad name" (collectors: tcp, listeners, udp, unix)"#),
            "{text}"
        );
        assert!(refused("collect[]=").contains(r#"unknown collector in collect[]: """#));
        assert!(refused("collect[]").contains(r#"unknown collector in collect[]: """#));
        assert!(
            refused("collect[]=UDP").contains(r#""UDP""#),
            "case matters"
        );
        let text = refused("collect[]=unix&collect[]=netns");
        assert!(
            text.contains(r#"not a collector in collect[]: "netns""#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"collector disabled by flags in collect[]: "unix" (enabled: tcp, udp)"#
            ),
            "{text}"
        );
        assert!(refused("exclude[]=cgroup").contains(r#"not a collector in exclude[]: "cgroup""#));
        assert!(refused("collect[]=%zz").contains(r#"bad percent-encoding "%zz""#));
        assert!(refused("collect[]=udp%").contains(r#""%""#));
        assert!(refused("collect[]=udp%4").contains(r#""%4""#));
    }

    #[test]
    fn exclude_removes_from_the_enabled_collectors() {
        let enabled = set(&[Kind::Tcp, Kind::Listeners, Kind::Udp]);
        assert_eq!(
            selection("exclude[]=tcp", enabled),
            Ok(set(&[Kind::Listeners, Kind::Udp]))
        );
        assert!(selection("exclude[]=unix", enabled)
            .unwrap_err()
            .0
            .contains("disabled by flags in exclude[]"));
        let none = selection("exclude[]=tcp&exclude[]=listeners&exclude[]=udp", enabled);
        assert!(none
            .unwrap_err()
            .0
            .starts_with("exclude[] leaves no collector"));
        assert_eq!(
            selection("collect[]=tcp&exclude[]=udp", enabled)
                .unwrap_err()
                .0,
            "collect[] and exclude[] cannot be combined in one scrape"
        );
    }

    #[test]
    fn decoding() {
        assert_eq!(decode("a%20b+c%2B").unwrap(), "a b c+");
        assert_eq!(decode("%ff").unwrap(), "\u{fffd}");
        assert!(decode("%").is_err() && decode("%g0").is_err() && decode("%+1").is_err());
    }
}
