//! The two per-namespace sysctls that decide which local ports `connect()`
//! may pick: `net.ipv4.ip_local_port_range` and
//! `net.ipv4.ip_local_reserved_ports` (both families use them). Their
//! parsing, and [`SysctlFiles`], the two files opened once inside the
//! namespace whose sockets are dumped.
//!
//! Why opened files: /proc/sys/net shows the namespace of the thread that
//! opens it, while the file's data is that namespace's from then on,
//! whichever thread reads it. So the files are opened where the netlink
//! socket is (the same thread, in the same namespace) and read with
//! `pread` at offset 0 on every collection: two syscalls, no namespace
//! switch, and the value follows later `sysctl -w` changes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const RANGE_PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const RESERVED_PATH: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// The local port range and the reserved ports of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPorts {
    /// `ip_local_port_range`, inclusive.
    pub low: u16,
    pub high: u16,
    /// `ip_local_reserved_ports`: inclusive ranges, as the kernel lists them.
    pub reserved: Vec<(u16, u16)>,
}

impl LocalPorts {
    /// The kernel's default (32768-60999, nothing reserved): what a fixture
    /// replay assumes, since recordings carry no sysctls.
    pub fn linux_default() -> LocalPorts {
        LocalPorts {
            low: 32768,
            high: 60999,
            reserved: Vec::new(),
        }
    }

    /// Parses the two files' text: "LOW\tHIGH\n" and "A,B-C,...\n" (empty
    /// when nothing is reserved).
    pub fn parse(range: &str, reserved: &str) -> Result<LocalPorts, String> {
        let bad_range = || format!("{RANGE_PATH}: expected two ports, got {range:?}");
        let mut parts = range.split_whitespace();
        let (Some(low), Some(high), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad_range());
        };
        let low: u16 = low.parse().map_err(|_| bad_range())?;
        let high: u16 = high.parse().map_err(|_| bad_range())?;
        if low > high {
            return Err(bad_range());
        }
        let mut list = Vec::new();
        let text = reserved.trim();
        if !text.is_empty() {
            let bad = || {
                format!("{RESERVED_PATH}: expected a list like 8080,9000-9010, got {reserved:?}")
            };
            for item in text.split(',') {
                let (a, b) = item.split_once('-').unwrap_or((item, item));
                let a: u16 = a.trim().parse().map_err(|_| bad())?;
                let b: u16 = b.trim().parse().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                list.push((a, b));
            }
        }
        Ok(LocalPorts {
            low,
            high,
            reserved: list,
        })
    }
}

/// The two sysctl files, opened in the namespace they describe.
#[derive(Debug)]
pub struct SysctlFiles {
    range: File,
    reserved: File,
    buffer: Vec<u8>,
}

impl SysctlFiles {
    /// Opens both files: call it on a thread inside the namespace wanted.
    pub fn open() -> io::Result<SysctlFiles> {
        Ok(SysctlFiles {
            range: File::open(RANGE_PATH)?,
            reserved: File::open(RESERVED_PATH)?,
            buffer: Vec::new(),
        })
    }

    /// Reads both, as they are now.
    pub fn read(&mut self) -> io::Result<LocalPorts> {
        let range = read_all(&self.range, &mut self.buffer)?;
        let reserved = read_all(&self.reserved, &mut self.buffer)?;
        LocalPorts::parse(&range, &reserved)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// The whole file from offset 0. A sysctl is generated on each read from
/// offset 0, so a short read means the end.
fn read_all(file: &File, buffer: &mut Vec<u8>) -> io::Result<String> {
    buffer.clear();
    let mut chunk = [0u8; 4096];
    loop {
        // At most 1 MiB: the reserved list is at most 65536 ports.
        if buffer.len() > 1 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "sysctl longer than 1 MiB",
            ));
        }
        let n = file.read_at(&mut chunk, buffer.len() as u64)?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buffer.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_formats() {
        let p = LocalPorts::parse("32768\t60999\n", "\n").unwrap();
        assert_eq!(p, LocalPorts::linux_default());
        let p = LocalPorts::parse("40000 40009\n", "8080,40003-40004\n").unwrap();
        assert_eq!((p.low, p.high), (40000, 40009));
        assert_eq!(p.reserved, vec![(8080, 8080), (40003, 40004)]);
    }

    #[test]
    fn rejects_what_is_not_a_range() {
        for (range, reserved) in [
            ("", ""),
            ("1", ""),
            ("1 2 3", ""),
            ("2 1", ""),
            ("1 70000", ""),
            ("1 2", "x"),
            ("1 2", "5-4"),
            ("1 2", "1,,2"),
        ] {
            let err = LocalPorts::parse(range, reserved).unwrap_err();
            assert!(err.contains("ip_local"), "{err}");
        }
    }

    #[test]
    fn reads_this_namespace() {
        let mut files = SysctlFiles::open().unwrap();
        let ports = files.read().unwrap();
        let text = std::fs::read_to_string(RANGE_PATH).unwrap();
        assert_eq!(
            ports,
            LocalPorts::parse(&text, &std::fs::read_to_string(RESERVED_PATH).unwrap()).unwrap()
        );
        // Read twice from the same files: pread from 0 each time.
        assert_eq!(files.read().unwrap(), ports);
    }
}
