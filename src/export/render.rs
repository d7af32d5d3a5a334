//! Human renderings of a collection: the `dump --format table` summary
//! (also shown at the foot of the landing page, `web::landing`) and the
//! HTML escaping the page uses. (The Prometheus text is rendered by
//! `metrics`.)

use std::fmt::Write as _;

use crate::cap;
use crate::collectors::{Report, Stats};
use crate::kernel::diag::TcpState;
use crate::scope::cgroup_attribution::CgroupRows;
use crate::scope::namespaces::{NetnsOutcome, Part};
use crate::table::{columns, row};

/// The human summary: one section per collector that ran (its numbers, or
/// why it failed), then how each collection went.
pub fn table(stats: Stats<'_>, reports: &[Report]) -> String {
    let mut out = String::new();
    for report in reports {
        if !out.is_empty() {
            out.push('\n');
        }
        if let Some(error) = &report.error {
            let _ = writeln!(out, "{} collection failed: {error}", report.kind.label());
            continue;
        }
        stats.table(report.kind, &mut out);
    }
    if !out.is_empty() {
        out.push('\n');
    }
    let mut rows = vec![row(["Collector", "result", "duration"].map(String::from))];
    for report in reports {
        rows.push(row([
            report.kind.label().to_string(),
            if report.error.is_none() {
                "ok"
            } else {
                "failed"
            }
            .to_string(),
            format!("{:.3}s", report.duration.as_secs_f64()),
        ]));
    }
    out.push_str(&columns(&rows, 2));
    out
}

/// The whole summary: [`table`] for a single namespace; with
/// `--collector.netns` one table per namespace under a heading, then how
/// discovery went.
pub fn summary(
    parts: &[Part<'_>],
    netns: Option<&NetnsOutcome>,
    cgroups: &[(&str, CgroupRows)],
) -> String {
    let mut out = String::new();
    write_summary(&mut out, parts, netns, cgroups).expect("writing to a String cannot fail");
    out
}

/// [`summary`] written to `out` a namespace at a time (the server packs it
/// as it is made: with 500 namespaces it is about 0.7 MB of text).
pub fn write_summary(
    out: &mut dyn std::fmt::Write,
    parts: &[Part<'_>],
    netns: Option<&NetnsOutcome>,
    cgroups: &[(&str, CgroupRows)],
) -> std::fmt::Result {
    let with_cgroups = |label: &str, mut text: String| {
        if let Some((_, rows)) = cgroups.iter().find(|(l, _)| *l == label) {
            text.push('\n');
            cgroup_table(&mut text, rows);
        }
        text
    };
    let Some(netns) = netns else {
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                out.write_str("\n")?;
            }
            out.write_str(&with_cgroups(p.label, table(p.stats, p.reports)))?;
        }
        return Ok(());
    };
    for part in parts {
        writeln!(out, "=== Network namespace {} ===\n", part.label)?;
        out.write_str(&with_cgroups(part.label, table(part.stats, part.reports)))?;
        out.write_str("\n")?;
    }
    writeln!(
        out,
        "Network namespaces: {} collected, {} beyond --collector.netns.max, {} served from an earlier collection and {} not yet collected (--collector.netns.budget), {:.3}s",
        netns.namespaces.len(),
        netns.skipped,
        netns.stale,
        netns.pending,
        netns.health.duration.as_secs_f64()
    )?;
    for problem in &netns.problems {
        writeln!(out, "  incomplete: {problem}")?;
    }
    Ok(())
}

/// How many cgroups the summary shows.
pub const TOP_CGROUPS: usize = 10;

/// The cgroups with the most TCP sockets, and the states asked about most.
fn cgroup_table(out: &mut String, rows: &CgroupRows) {
    let states = [
        TcpState::Established,
        TcpState::CloseWait,
        TcpState::TimeWait,
        TcpState::Listen,
    ];
    let top = cap::ranked(
        rows.rows.iter().map(|(label, counts)| (label, counts)),
        TOP_CGROUPS,
        cap::by_weight(|v: &&[u64; TcpState::COUNT]| v.iter().sum()),
    );
    let _ = writeln!(
        out,
        "TCP sockets by cgroup ({} of {}, most sockets first)",
        top.rows.len(),
        top.total()
    );
    let mut table = vec![row(["cgroup", "total"]
        .into_iter()
        .map(String::from)
        .chain(states.iter().map(|s| s.label().to_string())))];
    for (label, counts) in top.rows {
        table.push(row([label.clone(), counts.iter().sum::<u64>().to_string()]
            .into_iter()
            .chain(states.iter().map(|s| counts[*s as usize].to_string()))));
    }
    out.push_str(&columns(&table, 1));
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::tcp::TcpStats;
    use crate::collectors::Kind;
    use crate::config::PortSet;
    use crate::kernel::diag::{AF_INET, AF_INET6};
    use crate::kernel::dump::{CollectError, ErrorKind};
    use crate::kernel::parse::tests::{inet_diag_msg, inet_with_drops, unix_diag_msg, v4};
    use std::time::{Duration, SystemTime};

    use crate::collectors::OwnedStats as All;

    fn all() -> All {
        let mut all = All {
            tcp: TcpStats::new(PortSet::parse("5").unwrap()),
            ..All::default()
        };
        for m in [
            inet_diag_msg(AF_INET, 1, v4([127, 0, 0, 1]), 5, 6, 100, 7, 1),
            inet_diag_msg(AF_INET6, 1, [0; 16], 5, 6, 0, 0, 1),
            inet_diag_msg(AF_INET, 10, v4([0, 0, 0, 0]), 80, 0, 1, 100, 1),
            inet_diag_msg(AF_INET, 3, v4([127, 0, 0, 1]), 81, 7, 0, 0, 0),
        ] {
            all.tcp.add(&m).unwrap();
        }
        for m in [
            inet_with_drops(AF_INET, 10, v4([0, 0, 0, 0]), 80, 0, 1, 100, 0),
            inet_with_drops(AF_INET, 10, v4([127, 0, 0, 1]), 81, 0, 9, 10, 4),
        ] {
            all.listen.add(&m).unwrap();
        }
        let u = inet_with_drops(AF_INET, 7, v4([0; 4]), 53, 0, 768, 0, 3);
        all.udp.add(&u).unwrap();
        let x = unix_diag_msg(1, 10, Some(b"/run/x.sock"), 2, 16);
        all.unix.add(&x).unwrap();
        all
    }

    fn reports(failed: Option<Kind>) -> Vec<Report> {
        Kind::ALL
            .into_iter()
            .map(|kind| Report {
                kind,
                started: SystemTime::UNIX_EPOCH,
                duration: Duration::from_millis(2),
                error: (Some(kind) == failed).then_some(CollectError {
                    request: "unix",
                    kind: ErrorKind::Eof,
                }),
            })
            .collect()
    }

    fn render(all: &All, failed: Option<Kind>) -> String {
        table(all.stats(), &reports(failed))
    }

    fn flat(text: &str) -> Vec<String> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }

    #[test]
    fn summary_per_namespace_with_cgroups() {
        let all = all();
        let reports = reports(None);
        let parts = [
            Part {
                label: "host",
                stats: all.stats(),
                reports: &reports,
            },
            Part {
                label: "ino:4026532999",
                stats: all.stats(),
                reports: &reports,
            },
        ];
        let mut busy = [0u64; TcpState::COUNT];
        busy[TcpState::CloseWait as usize] = 5;
        busy[TcpState::Established as usize] = 2;
        let mut quiet = [0u64; TcpState::COUNT];
        quiet[TcpState::Listen as usize] = 1;
        let rows = CgroupRows {
            rows: vec![("/a.service".into(), quiet), ("/b.service".into(), busy)],
            dropped: 0,
        };
        let cgroups = [("ino:4026532999", rows)];
        // Without netns: one table, no heading.
        let one = summary(&parts[..1], None, &[]);
        assert!(!one.contains("Network namespace"), "{one}");
        let outcome = NetnsOutcome {
            health: crate::outcome::Health {
                started: SystemTime::UNIX_EPOCH,
                duration: Duration::from_millis(3),
                ok: false,
            },
            problems: vec![crate::scope::netns_problem::Problem::NoSysAdmin],
            namespaces: Vec::new(),
            skipped: 4,
            unreadable: 0,
            stale: 2,
            pending: 1,
            empty: Vec::new(),
        };
        let text = summary(&parts, Some(&outcome), &cgroups);
        let flat = flat(&text);
        let at = |row: &str| {
            flat.iter()
                .position(|l| l == row)
                .unwrap_or_else(|| panic!("{row:?} missing:\n{text}"))
        };
        let host = at("=== Network namespace host ===");
        let pod = at("=== Network namespace ino:4026532999 ===");
        let by_cgroup = at("TCP sockets by cgroup (2 of 2, most sockets first)");
        assert!(host < pod && pod < by_cgroup, "{text}");
        // Most sockets first: b (7) before a (1).
        assert_eq!(flat[by_cgroup + 2], "/b.service 7 2 5 0 0");
        assert_eq!(flat[by_cgroup + 3], "/a.service 1 0 0 0 1");
        at(&format!(
            "incomplete: {}",
            crate::scope::netns_problem::Problem::NoSysAdmin
        ));
        assert!(
            text.contains("0 collected, 4 beyond --collector.netns.max, 2 served from an earlier collection and 1 not yet"),
            "{text}"
        );
    }

    #[test]
    fn table_shows_every_collector() {
        let text = render(&all(), None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "TCP sockets  ipv4  ipv6  total");
        assert_eq!(lines[1], "established     1     1      2");
        let flat = flat(&text);
        let has = |row: &str| flat.iter().any(|l| l == row);
        assert!(has("listen 1 0 1"), "{text}");
        assert!(has("established 100 7 0 0"), "{text}");
        // Listeners hold connections, not bytes: no listen row among the queues.
        assert_eq!(flat.iter().filter(|l| l.starts_with("listen ")).count(), 1);
        assert!(has("SYN queue port half-open"), "{text}");
        assert!(has("ipv4 81 1"), "{text}");
        assert!(has("5 local 2 0 0 0 0 0 0 0 0 0 0"), "{text}");
        let fullest = lines
            .iter()
            .position(|l| l.starts_with("Fullest listeners"))
            .unwrap();
        assert_eq!(
            lines[fullest],
            "Fullest listeners (2 of 2, by accept queue fill)"
        );
        assert!(flat[fullest + 1].ends_with("sockets drops"));
        assert_eq!(flat[fullest + 2], "ipv4 127.0.0.1 81 9 10 1 4");
        assert!(lines[fullest + 3].contains("0.0.0.0"));
        assert!(has("unconnected 1 0 768 0 0 0"), "{text}");
        assert!(has("receive drops 3 0"), "{text}");
        assert!(has("stream 1 0 0 0 0"), "{text}");
        assert!(has("/run/x.sock 2 16 1"), "{text}");
        assert!(has("unix ok 0.002s"), "{text}");
    }

    #[test]
    fn table_names_a_failed_collector_and_keeps_the_rest() {
        let text = render(&all(), Some(Kind::Unix));
        assert!(
            text.contains("unix collection failed: unix dump: the answer ended before NLMSG_DONE"),
            "{text}"
        );
        assert!(!text.contains("Unix sockets"));
        assert!(text.contains("TCP sockets"));
        assert!(flat(&text).iter().any(|l| l == "unix failed 0.002s"));
    }

    #[test]
    fn table_without_listeners_says_so() {
        let text = render(&All::default(), None);
        assert!(text.contains("(no listening sockets)"));
        assert!(text.contains("(no listening unix sockets)"));
    }

    #[test]
    fn table_and_landing_page_show_per_port_health() {
        use crate::kernel::diag::{INET_DIAG_INFO, INET_DIAG_MSG_LEN};
        use crate::kernel::parse::tests::rtattr;
        let mut all = All {
            tcp: TcpStats::new(PortSet::parse("443").unwrap()),
            ..All::default()
        };
        all.tcp.read_info(true);
        all.tcp.clear();
        // A client of :443 with tcpi_rtt 3 ms, 2 retransmissions in all,
        // 1 outstanding.
        let mut info = vec![0u8; 248];
        info[36..40].copy_from_slice(&1u32.to_ne_bytes()); // tcpi_retrans
        info[68..72].copy_from_slice(&3000u32.to_ne_bytes()); // tcpi_rtt
        info[100..104].copy_from_slice(&2u32.to_ne_bytes()); // tcpi_total_retrans
        let mut m = inet_diag_msg(AF_INET, 1, v4([127, 0, 0, 1]), 40000, 443, 0, 0, 1);
        assert_eq!(m.len(), INET_DIAG_MSG_LEN);
        m.extend(rtattr(INET_DIAG_INFO, &info));
        all.tcp.add(&m).unwrap();
        let text = table(all.stats(), &reports(None));
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let at = lines
            .iter()
            .position(|l| l.first() == Some(&"TCP") && l.get(1) == Some(&"health"))
            .expect("a TCP health section");
        // all, then 443 local (nothing) and 443 remote (the client).
        assert_eq!(
            lines[at + 1],
            ["all", "all", "1", "5ms", "5ms", "1", "2", "0"]
        );
        assert_eq!(
            lines[at + 2],
            ["443", "local", "0", "-", "-", "0", "0", "0"]
        );
        assert_eq!(
            lines[at + 3],
            ["443", "remote", "1", "5ms", "5ms", "1", "2", "0"]
        );
    }
}
