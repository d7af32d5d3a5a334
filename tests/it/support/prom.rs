//! A tiny Prometheus text-format (0.0.4) parser (`parse_prometheus`) and
//! the parser of `dump --format table`'s TCP rows.

use std::collections::BTreeMap;

use super::*;

pub type Labels = Vec<(String, String)>;

/// A parsed exposition: samples keyed by (name, labels sorted by name),
/// plus the `# TYPE` and `# HELP` lines.
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    pub samples: BTreeMap<(String, Labels), f64>,
    pub types: BTreeMap<String, String>,
    pub helps: BTreeMap<String, String>,
}

impl Exposition {
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut l: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        self.samples.get(&(name.to_string(), l)).copied()
    }

    /// Like `get`, panicking with the series name when it is missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("series {name}{labels:?} missing from the exposition"))
    }

    pub fn series(&self, name: &str) -> Vec<(Labels, f64)> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    }
}

/// Parses the Prometheus text format 0.0.4. Errors on malformed lines and on
/// duplicate series.
pub fn parse_prometheus(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    for (no, line) in text.lines().enumerate() {
        let no = no + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("TYPE ") {
                let mut it = r.splitn(2, ' ');
                let name = it.next().unwrap_or("").to_string();
                let ty = it.next().unwrap_or("").trim().to_string();
                if out.types.insert(name.clone(), ty).is_some() {
                    return Err(format!("line {no}: second TYPE for {name}"));
                }
            } else if let Some(r) = rest.strip_prefix("HELP ") {
                let mut it = r.splitn(2, ' ');
                let name = it.next().unwrap_or("").to_string();
                out.helps.insert(name, it.next().unwrap_or("").to_string());
            }
            continue;
        }
        let (name, labels, rest) =
            parse_sample_head(line).map_err(|e| format!("line {no} {line:?}: {e}"))?;
        let mut parts = rest.split_whitespace();
        let v = parts
            .next()
            .ok_or_else(|| format!("line {no} {line:?}: no value"))?;
        let value = match v {
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            _ => v
                .parse::<f64>()
                .map_err(|e| format!("line {no} {line:?}: bad value: {e}"))?,
        };
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|e| format!("line {no} {line:?}: bad timestamp: {e}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("line {no} {line:?}: trailing garbage"));
        }
        if out.samples.insert((name.clone(), labels), value).is_some() {
            return Err(format!("line {no} {line:?}: duplicate series"));
        }
    }
    Ok(out)
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

fn parse_sample_head(line: &str) -> Result<(String, Labels, &str), String> {
    let name_end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map(|(i, _)| i)
        .unwrap_or(line.len());
    if name_end == 0 {
        return Err("no metric name".into());
    }
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Labels::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        loop {
            while let Some(&(_, ' ')) = chars.peek() {
                chars.next();
            }
            match chars.peek() {
                Some(&(i, '}')) => {
                    rest = &r[i + 1..];
                    break;
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            let mut lname = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    lname.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if lname.is_empty() || lname.starts_with(|c: char| c.is_ascii_digit()) {
                return Err("bad label name".into());
            }
            if chars.next().map(|x| x.1) != Some('=') {
                return Err(format!("expected '=' after label {lname}"));
            }
            if chars.next().map(|x| x.1) != Some('"') {
                return Err(format!("expected '\"' after {lname}="));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|x| x.1) {
                    None => return Err("unterminated label value".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|x| x.1) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape \\{other:?}")),
                    },
                    Some(c) => value.push(c),
                }
            }
            if labels.iter().any(|(k, _)| *k == lname) {
                return Err(format!("label {lname} twice"));
            }
            labels.push((lname, value));
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => {
                    rest = &r[i + 1..];
                    break;
                }
                _ => return Err("expected ',' or '}' after a label".into()),
            }
        }
    }
    if !rest.starts_with(' ') && !rest.starts_with('\t') {
        return Err("expected whitespace before the value".into());
    }
    labels.sort();
    Ok((name, labels, rest))
}

// ---------------------------------------------------------------------------

/// Parses `dump --format table` into state -> (ipv4, ipv6, total) for the
/// TCP sockets section (the rows after the `TCP sockets` header up to the
/// first line that is not a state row).
pub fn parse_table_states(text: &str) -> Result<Vec<(String, [u64; 3])>, String> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("TCP sockets"));
    let header = lines.next().ok_or("no `TCP sockets` header line")?;
    let cols: Vec<&str> = header.split_whitespace().collect();
    if cols != ["TCP", "sockets", "ipv4", "ipv6", "total"] {
        return Err(format!("unexpected header {header:?}"));
    }
    let mut rows = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 4 || !STATES.contains(&f[0]) {
            break;
        }
        let mut nums = [0u64; 3];
        for i in 0..3 {
            nums[i] = f[i + 1]
                .parse()
                .map_err(|_| format!("bad number in row {l:?}"))?;
        }
        rows.push((f[0].to_string(), nums));
    }
    Ok(rows)
}
