//! Configuration value types: what a flag or config-file value means once
//! parsed (where to listen, how long, which ports), shared by the flag parser, the web
//! configuration file and the server. They sit below all of those, so the
//! parsers and the server depend on this module and never on each other.

use std::fmt;
use std::time::Duration;

/// Where to listen, as given by --web.listen-address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `:PORT`: every address, IPv6 and IPv4 where the host has IPv6.
    AnyHost(u16),
    /// `HOST:PORT` or `[IPv6]:PORT`; HOST is resolved when binding.
    Host(String, u16),
}

impl ListenAddr {
    /// Parses `:PORT`, `HOST:PORT` or `[IPv6]:PORT`.
    pub fn parse(s: &str) -> Result<ListenAddr, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT or :PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?} has an invalid port {port:?} (expected 0-65535)"))?;
        if host.is_empty() {
            return Ok(ListenAddr::AnyHost(port));
        }
        if let Some(inner) = host.strip_prefix('[') {
            let ip = inner
                .strip_suffix(']')
                .and_then(|ip| ip.parse::<std::net::Ipv6Addr>().ok())
                .ok_or_else(|| format!("{s:?} has an invalid IPv6 literal {host:?}"))?;
            return Ok(ListenAddr::Host(ip.to_string(), port));
        }
        if host.contains(':') {
            return Err(format!(
                "{s:?}: write IPv6 addresses in brackets, e.g. [::1]:{port}"
            ));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{s:?} has an invalid host {host:?}"));
        }
        Ok(ListenAddr::Host(host.to_string(), port))
    }
}

impl fmt::Display for ListenAddr {
    /// As the flag takes it: `:PORT`, `HOST:PORT` or `[IPv6]:PORT`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::AnyHost(port) => write!(f, ":{port}"),
            ListenAddr::Host(host, port) if host.contains(':') => write!(f, "[{host}]:{port}"),
            ListenAddr::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// Prometheus' duration units, largest first, in milliseconds: read by
/// [`duration`] and written by [`format_duration`].
const UNITS: &[(&str, u64)] = &[
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a Prometheus duration: one or more number+unit pairs from largest
/// to smallest unit, e.g. `500ms`, `5s`, `1m30s`, `2h`, `1d`, `0s`.
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {s:?}: expected a number and a unit (ms, s, m, h, d, w, y), e.g. 500ms, 5s or 1m30s")
    };
    let mut rest = s;
    let mut total_ms: u64 = 0;
    let mut last_unit = usize::MAX;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let index = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
        // Units must go from larger to smaller, each used once (as Prometheus).
        if last_unit != usize::MAX && index <= last_unit {
            return Err(bad());
        }
        last_unit = index;
        total_ms = number
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_millis(total_ms))
}

/// Writes a duration the way [`duration`] reads it and Prometheus writes
/// them (`1m30s`, `250ms`, `0s`), so that messages show a value in the
/// form the user wrote it rather than Rust's `Duration` debug form.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for &(unit, size) in UNITS {
        let size = u128::from(size);
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// A set of ports (`--collector.tcp.ports 22,80,8000-8100`), as a bitmap so
/// that checking a socket costs one load. The default is the empty set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet {
    bits: Vec<u64>,
    /// Ports listed one by one: their series are always emitted, zeros
    /// included. Ports inside ranges appear only while they have sockets.
    singles: Vec<u16>,
}

impl PortSet {
    /// Parses a comma-separated list of ports and inclusive ranges.
    pub fn parse(s: &str) -> Result<PortSet, String> {
        let mut set = PortSet {
            bits: vec![0; 1024],
            singles: Vec::new(),
        };
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "{p:?} in {s:?} is not a port (1-65535); expected a list like 22,80,8000-8100"
                )),
            }
        };
        for item in s.split(',') {
            if item.trim().is_empty() {
                return Err(format!(
                    "empty item in port list {s:?}; expected a list like 22,80,8000-8100"
                ));
            }
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        return Err(format!("port range {item:?} in {s:?} runs backwards"));
                    }
                    (a..=b).for_each(|p| set.insert(p));
                }
                None => {
                    let p = port(item)?;
                    set.insert(p);
                    set.singles.push(p);
                }
            }
        }
        set.singles.sort_unstable();
        set.singles.dedup();
        Ok(set)
    }

    fn insert(&mut self, port: u16) {
        self.bits[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    pub fn contains(&self, port: u16) -> bool {
        self.bits
            .get(usize::from(port >> 6))
            .is_some_and(|w| w & (1 << (port & 63)) != 0)
    }

    pub fn singles(&self) -> &[u16] {
        &self.singles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(ListenAddr::parse(":9"), Ok(ListenAddr::AnyHost(9)));
        assert_eq!(
            ListenAddr::parse("127.0.0.1:0"),
            Ok(ListenAddr::Host("127.0.0.1".into(), 0))
        );
        assert_eq!(
            ListenAddr::parse("[::1]:19275"),
            Ok(ListenAddr::Host("::1".into(), 19275))
        );
        assert_eq!(
            ListenAddr::parse("localhost:80"),
            Ok(ListenAddr::Host("localhost".into(), 80))
        );
        for bad in [
            "", "9100", ":", ":65536", ":-1", "[::1:80", "[zz]:80", "::1:80", "a b:80",
        ] {
            assert!(ListenAddr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn listen_addresses_print_as_written() {
        for s in [":9", "127.0.0.1:0", "[::1]:19275", "localhost:80"] {
            assert_eq!(ListenAddr::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn durations() {
        let ms = |n| Duration::from_millis(n);
        assert_eq!(duration("500ms"), Ok(ms(500)));
        assert_eq!(duration("5s"), Ok(ms(5000)));
        assert_eq!(duration("1m"), Ok(ms(60_000)));
        assert_eq!(duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(duration("1h1ms"), Ok(ms(3_600_001)));
        assert_eq!(duration("0s"), Ok(ms(0)));
        assert_eq!(duration("2d"), Ok(ms(172_800_000)));
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "-1s",
            "1.5s",
            "5s1m",
            "1s1s",
            " 5s",
            "99999999999999999999y",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(duration("5x").unwrap_err().contains("\"5x\""));
    }

    #[test]
    fn durations_print_as_written() {
        for s in ["0s", "250ms", "5s", "1m30s", "1h1ms", "2d", "1w", "1y2d"] {
            assert_eq!(format_duration(duration(s).unwrap()), s);
        }
        assert_eq!(format_duration(Duration::from_millis(90_000)), "1m30s");
    }

    #[test]
    fn port_sets_parse_lists_and_ranges() {
        let set = PortSet::parse("22, 5432,8000-8002,22").unwrap();
        for p in [22, 5432, 8000, 8001, 8002] {
            assert!(set.contains(p), "{p}");
        }
        for p in [1, 21, 23, 7999, 8003, 65535] {
            assert!(!set.contains(p), "{p}");
        }
        assert_eq!(set.singles(), &[22, 5432]);
        assert!(PortSet::parse("65535").unwrap().contains(65535));
        assert!(PortSet::default().is_empty());
        for bad in ["", "0", "65536", "a", "5-", "9-1", "1,,2", "-3"] {
            assert!(PortSet::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

/// One network of `--collector.tcp.remote-networks`: an IPv4 or IPv6
/// address with a prefix length, with no bits set past the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// IPv4 networks hold the address in the low 32 bits.
    pub v4: bool,
    pub address: u128,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8` or `2001:db8::/32`; a bare address is one host
    /// (/32 or /128).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let hint = "expected a network like 10.0.0.0/8 or 2001:db8::/32";
        let (address, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let (v4, address, bits) = match address.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => (true, u128::from(u32::from(a)), 32u8),
            Ok(std::net::IpAddr::V6(a)) => (false, u128::from(a), 128u8),
            Err(_) => {
                return Err(format!(
                    "{s:?} is not a network: {address:?} is not an IP address; {hint}"
                ))
            }
        };
        let prefix = match prefix {
            None => bits,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= bits => n,
                _ => {
                    return Err(format!(
                        "{s:?} is not a network: the prefix length must be 0-{bits}; {hint}"
                    ))
                }
            },
        };
        let cidr = Cidr {
            v4,
            address,
            prefix,
        };
        if address & !cidr.mask() != 0 {
            return Err(format!(
                "{s:?} is not a network: address bits are set past the /{prefix} prefix (the network is {})",
                Cidr { address: address & cidr.mask(), ..cidr }
            ));
        }
        Ok(cidr)
    }

    fn mask(&self) -> u128 {
        let bits = if self.v4 { 32 } else { 128 };
        let host = bits - u32::from(self.prefix);
        let all = if self.v4 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        if host >= 128 {
            0
        } else {
            all & !((1u128 << host) - 1) & all
        }
    }

    /// Whether it holds `address` (IPv4 in the low 32 bits when `v4`).
    #[inline]
    pub fn contains(&self, v4: bool, address: u128) -> bool {
        self.v4 == v4 && address & self.mask() == self.address
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.v4 {
            write!(
                f,
                "{}/{}",
                std::net::Ipv4Addr::from(self.address as u32),
                self.prefix
            )
        } else {
            write!(
                f,
                "{}/{}",
                std::net::Ipv6Addr::from(self.address),
                self.prefix
            )
        }
    }
}

/// `--collector.tcp.remote-networks`: a comma-separated list of networks,
/// each at most once. Empty by default (no per-network counts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<Cidr>);

impl Networks {
    pub fn parse(s: &str) -> Result<Networks, String> {
        let mut list = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!(
                    "empty item in network list {s:?}; expected a list like 10.0.0.0/8,2001:db8::/32"
                ));
            }
            let cidr = Cidr::parse(item)?;
            if list.contains(&cidr) {
                return Err(format!("network {cidr} is listed twice in {s:?}"));
            }
            list.push(cidr);
        }
        Ok(Networks(list))
    }
}

#[cfg(test)]
mod network_tests {
    use super::*;

    #[test]
    fn parses_networks_of_both_families() {
        let n = Networks::parse("10.0.0.0/8, 10.1.0.0/16,2001:db8::/32,192.0.2.7,0.0.0.0/0,::/0")
            .unwrap();
        let text: Vec<String> = n.0.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            text,
            [
                "10.0.0.0/8",
                "10.1.0.0/16",
                "2001:db8::/32",
                "192.0.2.7/32",
                "0.0.0.0/0",
                "::/0"
            ]
        );
        let ten = n.0[0];
        assert!(ten.contains(
            true,
            u128::from(u32::from(std::net::Ipv4Addr::new(10, 200, 0, 1)))
        ));
        assert!(!ten.contains(
            true,
            u128::from(u32::from(std::net::Ipv4Addr::new(11, 0, 0, 1)))
        ));
        assert!(!ten.contains(false, 10 << 24));
        assert!(n.0[4].contains(true, 12345));
        assert!(n.0[5].contains(false, u128::MAX));
        let v6 = n.0[2];
        assert!(v6.contains(
            false,
            u128::from("2001:db8:ffff::1".parse::<std::net::Ipv6Addr>().unwrap())
        ));
        assert!(!v6.contains(
            false,
            u128::from("2001:db9::1".parse::<std::net::Ipv6Addr>().unwrap())
        ));
    }

    #[test]
    fn rejects_bad_networks_naming_them() {
        for (bad, says) in [
            (
                "10.0.0.1/8",
                "past the /8 prefix (the network is 10.0.0.0/8)",
            ),
            ("10.0.0.0/33", "0-32"),
            ("2001:db8::/129", "0-128"),
            ("10.0.0/8", "not an IP address"),
            ("10.0.0.0/", "prefix length"),
            ("example.com/8", "not an IP address"),
            ("10.0.0.0/8,", "empty item"),
            ("10.0.0.0/8,10.0.0.0/8", "listed twice"),
        ] {
            let err = Networks::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(
                err.contains(bad) || err.contains("10.0.0.0/8"),
                "{bad}: {err}"
            );
        }
    }
}
