//! Human renderings of a collection: the `dump --format table` summary and
//! the HTML landing page that shows the same table. (The Prometheus text is
//! rendered by `metrics`.)

use std::fmt::Write as _;

use crate::aggregate::TcpStats;
use crate::diag::{format_address, Family, TcpState};

/// How many listeners the summary shows.
pub const TOP_LISTENERS: usize = 10;

/// Lays out rows as aligned columns: the first `left` columns left-aligned,
/// the rest (numbers) right-aligned.
fn columns(rows: &[Vec<String>], left: usize) -> String {
    let width = |i: usize| rows.iter().filter_map(|r| r.get(i)).map(String::len).max();
    let widths: Vec<usize> = (0..rows.iter().map(Vec::len).max().unwrap_or(0))
        .map(|i| width(i).unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if i < left {
                let _ = write!(line, "{cell:<w$}", w = widths[i]);
            } else {
                let _ = write!(line, "{cell:>w$}", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn row(cells: impl IntoIterator<Item = String>) -> Vec<String> {
    cells.into_iter().collect()
}

/// The human summary: states by family, queue sums, fullest listeners.
pub fn table(stats: &TcpStats) -> String {
    let (v4, v6) = (Family::Ipv4 as usize, Family::Ipv6 as usize);
    let mut rows = vec![row(
        ["TCP sockets", "ipv4", "ipv6", "total"].map(String::from)
    )];
    for state in TcpState::ALL {
        let s = state as usize;
        rows.push(row([
            state.label().to_string(),
            stats.sockets[v4][s].to_string(),
            stats.sockets[v6][s].to_string(),
            stats.total(state).to_string(),
        ]));
    }
    let mut out = columns(&rows, 1);

    out.push('\n');
    let mut rows = vec![row([
        "Queued bytes",
        "recv ipv4",
        "send ipv4",
        "recv ipv6",
        "send ipv6",
    ]
    .map(String::from))];
    for state in TcpState::ALL {
        if state == TcpState::Listen {
            continue; // listeners queue connections, not bytes: see below
        }
        let s = state as usize;
        rows.push(row([
            state.label().to_string(),
            stats.receive_queue_bytes[v4][s].to_string(),
            stats.send_queue_bytes[v4][s].to_string(),
            stats.receive_queue_bytes[v6][s].to_string(),
            stats.send_queue_bytes[v6][s].to_string(),
        ]));
    }
    out.push_str(&columns(&rows, 1));

    out.push('\n');
    let mut listeners = stats.listeners();
    // Fullest first: by fill ratio, then by queue length.
    listeners.sort_by(|(ka, a), (kb, b)| {
        let fill = |l: &crate::aggregate::Listener| l.queue as f64 / l.max.max(1) as f64;
        fill(b)
            .total_cmp(&fill(a))
            .then(b.queue.cmp(&a.queue))
            .then(ka.cmp(kb))
    });
    let shown = listeners.len().min(TOP_LISTENERS);
    let _ = writeln!(
        out,
        "Fullest listeners ({shown} of {}, by accept queue fill)",
        listeners.len()
    );
    let mut rows = vec![row([
        "family", "address", "port", "queue", "max", "sockets",
    ]
    .map(String::from))];
    for (key, l) in listeners.iter().take(TOP_LISTENERS) {
        rows.push(row([
            key.family.label().to_string(),
            format_address(key.family, &key.address),
            key.port.to_string(),
            l.queue.to_string(),
            l.max.to_string(),
            l.sockets.to_string(),
        ]));
    }
    if listeners.is_empty() {
        out.push_str("(no listening sockets)\n");
    } else {
        out.push_str(&columns(&rows, 2));
    }
    out
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

/// The landing page at `/`: a link to the metrics, how fresh they are, and
/// the summary table (or the collection error).
pub fn landing_page(telemetry_path: &str, freshness: &str, summary: &str) -> String {
    let path = html_escape(telemetry_path);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>sockdiag_exporter</title></head>\n<body>\n\
         <h1>sockdiag_exporter</h1>\n\
         <p>Linux socket states and queues over netlink sock_diag. Metrics: <a href=\"{path}\">{path}</a></p>\n\
         <p>{}</p>\n<pre>{}</pre>\n<p>version {} revision {}</p>\n</body>\n</html>\n",
        html_escape(freshness),
        html_escape(summary),
        crate::metrics::VERSION,
        crate::metrics::REVISION,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{InetDiagMsg, AF_INET, AF_INET6};
    use crate::parse::tests::{inet_diag_msg, v4};

    fn stats() -> TcpStats {
        let mut stats = TcpStats::default();
        let msgs = [
            inet_diag_msg(AF_INET, 1, v4([127, 0, 0, 1]), 5, 6, 100, 7, 1),
            inet_diag_msg(AF_INET6, 1, [0; 16], 5, 6, 0, 0, 1),
            inet_diag_msg(AF_INET, 10, v4([0, 0, 0, 0]), 80, 0, 1, 100, 1),
            inet_diag_msg(AF_INET, 10, v4([127, 0, 0, 1]), 81, 0, 9, 10, 1),
        ];
        for m in &msgs {
            stats.add(InetDiagMsg::new(m).unwrap()).unwrap();
        }
        stats
    }

    #[test]
    fn table_shows_states_queues_and_fullest_listeners_first() {
        let text = table(&stats());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "TCP sockets  ipv4  ipv6  total");
        assert_eq!(lines[1], "established     1     1      2");
        assert!(lines.contains(&"listen          2     0      2"), "{text}");
        let flat: Vec<String> = lines
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert!(
            flat.contains(&"established 100 7 0 0".to_string()),
            "{text}"
        );
        // Listeners hold connections, not bytes: no listen row among the queues.
        assert_eq!(flat.iter().filter(|l| l.starts_with("listen ")).count(), 1);
        let fullest = lines.iter().position(|l| l.starts_with("Fullest")).unwrap();
        assert_eq!(
            lines[fullest],
            "Fullest listeners (2 of 2, by accept queue fill)"
        );
        assert!(lines[fullest + 2].contains("127.0.0.1") && lines[fullest + 2].contains("81"));
        assert!(lines[fullest + 3].contains("0.0.0.0"));
    }

    #[test]
    fn table_without_listeners_says_so() {
        assert!(table(&TcpStats::default()).contains("(no listening sockets)"));
    }

    #[test]
    fn landing_page_escapes_and_links() {
        let page = landing_page("/m<x>", "fresh & cached", "a<b");
        assert!(page.contains("<a href=\"/m&lt;x&gt;\">"));
        assert!(page.contains("fresh &amp; cached"));
        assert!(page.contains("<pre>a&lt;b</pre>"));
    }
}
