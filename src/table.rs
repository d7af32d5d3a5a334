//! Plain-text tables for the `dump --format table` summary and the landing
//! page: aligned columns, and the "fullest listeners" ranking.

use std::fmt::Write as _;

use crate::cap;

/// How many listeners the summary shows.
pub const TOP_LISTENERS: usize = 10;

/// Lays out rows as aligned columns: the first `left` columns left-aligned,
/// the rest (numbers) right-aligned.
pub fn columns(rows: &[Vec<String>], left: usize) -> String {
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

pub fn row(cells: impl IntoIterator<Item = String>) -> Vec<String> {
    cells.into_iter().collect()
}

/// The [`TOP_LISTENERS`] fullest listeners (fill ratio, then queue length,
/// then key), under their section heading.
pub fn fullest<K: Ord, L>(
    out: &mut String,
    what: &str,
    listeners: Vec<(K, L)>,
    queue_max: impl Fn(&L) -> (u64, u64),
) -> Vec<(K, L)> {
    let fill = |l: &L| {
        let (queue, max) = queue_max(l);
        (queue as f64 / max.max(1) as f64, queue)
    };
    let capped = cap::ranked(listeners, TOP_LISTENERS, |a, b| {
        let ((fa, qa), (fb, qb)) = (fill(a), fill(b));
        fb.total_cmp(&fa).then(qb.cmp(&qa))
    });
    let _ = writeln!(
        out,
        "Fullest {what} ({} of {}, by accept queue fill)",
        capped.rows.len(),
        capped.total()
    );
    capped.rows
}
