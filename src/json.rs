//! JSON text, written by hand: string escaping (RFC 8259) and numbers, for
//! the JSON log lines (`--log.format json`) and `dump --format json`. The
//! output is a handful of flat objects and arrays, so a serializer crate
//! would add a dependency for two functions.

use std::fmt::Write as _;

/// Appends `s` as a JSON string literal: quotes, backslashes and every
/// control character escaped, everything else (UTF-8) as is.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a number. JSON has no NaN or infinities: those are written as
/// the strings Prometheus uses for them ("NaN", "+Inf", "-Inf").
pub fn number(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("\"NaN\"");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "\"+Inf\"" } else { "\"-Inf\"" });
    } else {
        // Rust prints finite floats without exponent or trailing ".0"
        // for whole numbers beyond what Display adds; both are valid JSON.
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> String {
        let mut out = String::new();
        string(&mut out, text);
        out
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(s("plain"), "\"plain\"");
        assert_eq!(s("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(s("l1\nl2\t\r"), "\"l1\\nl2\\t\\r\"");
        assert_eq!(s("\u{0}\u{1b}\u{7f}"), "\"\\u0000\\u001b\\u007f\"");
        assert_eq!(s("<script>é"), "\"<script>é\"");
    }

    #[test]
    fn numbers_are_json() {
        let n = |v: f64| {
            let mut out = String::new();
            number(&mut out, v);
            out
        };
        assert_eq!(n(16.0), "16");
        assert_eq!(n(0.25), "0.25");
        assert_eq!(n(-3.5), "-3.5");
        assert_eq!(n(f64::NAN), "\"NaN\"");
        assert_eq!(n(f64::INFINITY), "\"+Inf\"");
        assert_eq!(n(1e21), "1000000000000000000000");
    }
}
