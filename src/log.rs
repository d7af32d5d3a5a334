//! A minimal logger on stderr, in the shapes Prometheus' own tools print
//! with `--log.format`: logfmt (`ts=... level=info msg="..." key=value`,
//! the default) or JSON, one object per line with the same keys, sorted by
//! name as node_exporter's go-kit JSON logger writes them
//! (`{"err":"...","level":"error","msg":"...","ts":"..."}`). The level and
//! the format are global, set once at start.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

impl Level {
    pub fn parse(s: &str) -> Result<Level, String> {
        match s {
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warn" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            _ => Err(format!(
                "unknown log level {s:?}, expected debug, info, warn or error"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// `--log.format`: how each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Logfmt = 0,
    Json = 1,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "logfmt" => Ok(Format::Logfmt),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown log format {s:?}, expected logfmt or json")),
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static FORMAT: AtomicU8 = AtomicU8::new(Format::Logfmt as u8);

pub fn set_format(format: Format) {
    FORMAT.store(format as u8, Ordering::Relaxed);
}

fn format() -> Format {
    match FORMAT.load(Ordering::Relaxed) {
        1 => Format::Json,
        _ => Format::Logfmt,
    }
}

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line in the `--log.format` set at start.
pub fn log(level: Level, msg: &str, fields: &[(&str, &dyn fmt::Display)]) {
    if !enabled(level) {
        return;
    }
    let line = line(format(), SystemTime::now(), level, msg, fields);
    eprintln!("{line}");
}

/// One line without its newline: logfmt `ts=... level=L msg="M" k=v ...`
/// (values with spaces, quotes or `=` quoted), or a JSON object whose keys
/// are sorted by name and whose values are all strings.
pub fn line(
    format: Format,
    now: SystemTime,
    level: Level,
    msg: &str,
    fields: &[(&str, &dyn fmt::Display)],
) -> String {
    let ts = timestamp(now);
    match format {
        Format::Logfmt => {
            let mut line = format!("ts={ts} level={} msg=", level.name());
            quote(&mut line, msg);
            for (key, value) in fields {
                let value = value.to_string();
                let _ = write!(line, " {key}=");
                if value.is_empty() || value.contains([' ', '"', '=', '\n', '\t']) {
                    quote(&mut line, &value);
                } else {
                    line.push_str(&value);
                }
            }
            line
        }
        Format::Json => {
            let mut pairs: Vec<(&str, String)> = vec![
                ("ts", ts),
                ("level", level.name().to_string()),
                ("msg", msg.to_string()),
            ];
            for (key, value) in fields {
                // A field cannot replace ts, level or msg: a JSON object
                // with a repeated key is read differently by each parser.
                if !pairs.iter().any(|(k, _)| k == key) {
                    pairs.push((key, value.to_string()));
                }
            }
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            let mut line = String::from("{");
            for (i, (key, value)) in pairs.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                json::string(&mut line, key);
                line.push(':');
                json::string(&mut line, value);
            }
            line.push('}');
            line
        }
    }
}

fn quote(out: &mut String, s: &str) {
    let _ = write!(out, "{s:?}");
}

/// RFC 3339 UTC with milliseconds, computed without a date crate
/// (days-to-civil conversion from Howard Hinnant's algorithm).
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_242_914_123);
        assert_eq!(timestamp(t), "2026-11-21T06:35:14.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn logfmt_lines() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_242_914_123);
        let line = line(
            Format::Logfmt,
            t,
            Level::Warn,
            "it broke",
            &[("err", &"a \"b\""), ("n", &3)],
        );
        assert_eq!(
            line,
            "ts=2026-11-21T06:35:14.123Z level=warn msg=\"it broke\" err=\"a \\\"b\\\"\" n=3"
        );
    }

    #[test]
    fn json_lines_have_sorted_keys_and_escaped_values() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_242_914_123);
        let line = line(
            Format::Json,
            t,
            Level::Error,
            "cannot \"x\"\nnext",
            &[("err", &"<b>\\"), ("address", &":1"), ("msg", &"not me")],
        );
        assert_eq!(
            line,
            r#"{"address":":1","err":"<b>\\","level":"error","msg":"cannot \"x\"\nnext","ts":"2026-11-21T06:35:14.123Z"}"#
        );
    }

    #[test]
    fn parses_formats() {
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert_eq!(Format::parse("logfmt"), Ok(Format::Logfmt));
        assert!(Format::parse("JSON").unwrap_err().contains("\"JSON\""));
    }

    #[test]
    fn parses_levels() {
        assert_eq!(Level::parse("warn"), Ok(Level::Warn));
        assert!(Level::parse("loud").unwrap_err().contains("\"loud\""));
    }
}
