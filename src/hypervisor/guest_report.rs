//! The guest's report over vsock: how a guest whose address the host did not choose tells the
//! host where it is. On macOS the vz driver puts the guest on Virtualization.framework's NAT,
//! where vmnet's DHCP server picks the address, and reading it back from
//! `/var/db/dhcpd_leases` is unreliable (DUID client ids since macOS 15, MACs without leading
//! zeros, stale entries: research/vmm.md §5.2). So the guest says it itself.
//!
//! Protocol, version 1. Once the guest has its address and sshd runs, it connects to the host
//! (vsock CID 2) on port [`PORT`], writes one ASCII line and closes:
//!
//! ```text
//! devbox-ready 1 ip=192.168.64.3
//! ```
//!
//! Words are separated by spaces; `1` is the protocol version; words `key=value` with other
//! keys are ignored, so a later guest may add fields without breaking this host. A host reads
//! at most [`MAX_LINE`] bytes from a connection. The guest may report again (after a DHCP
//! renewal); each report stands on its own.
//!
//! Pure: parsing only. The vz driver owns the listener (`vz/vsock.rs`).

use std::io::Read;
use std::net::Ipv4Addr;

/// The host's vsock port the guest reports to.
pub const PORT: u32 = 7201;
/// Longest report line a host accepts, newline included.
pub const MAX_LINE: usize = 256;
const MAGIC: &str = "devbox-ready";
const VERSION: u32 = 1;

/// What a guest reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestReport {
    /// The guest's address on its NIC: where SSH (and so the readiness wait) reaches it.
    pub ip: Ipv4Addr,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("the guest's report is not a devbox-ready line: {line:?}")]
    NotAReport { line: String },
    #[error("the guest speaks report protocol version {version}; this devbox knows version 1")]
    Version { version: String },
    #[error("the guest's report has no ip= field: {line:?}")]
    MissingIp { line: String },
    #[error("the guest reported an invalid IPv4 address {value:?}")]
    BadIp { value: String },
    #[error("the guest's report is longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("the guest closed the connection before a full report line")]
    Truncated,
    #[error("the guest's report is not ASCII")]
    NotAscii,
    #[error("reading the guest's report")]
    Io(#[source] ErrorKindError),
}

/// An I/O error kind as a comparable error (reports are compared in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ErrorKindError(pub std::io::ErrorKind);

/// Parses one report line (without or with its trailing newline).
pub fn parse(line: &str) -> Result<GuestReport, ReportError> {
    let line = line.trim_end_matches(['\n', '\r']);
    if !line.is_ascii() {
        return Err(ReportError::NotAscii);
    }
    let mut words = line.split(' ').filter(|w| !w.is_empty());
    if words.next() != Some(MAGIC) {
        return Err(ReportError::NotAReport { line: line.into() });
    }
    match words.next() {
        Some(v) if v.parse::<u32>() == Ok(VERSION) => {}
        Some(v) => return Err(ReportError::Version { version: v.into() }),
        None => return Err(ReportError::NotAReport { line: line.into() }),
    }
    let ip = words
        .find_map(|w| w.strip_prefix("ip="))
        .ok_or_else(|| ReportError::MissingIp { line: line.into() })?;
    let ip = ip
        .parse::<Ipv4Addr>()
        .map_err(|_| ReportError::BadIp { value: ip.into() })?;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
        return Err(ReportError::BadIp {
            value: ip.to_string(),
        });
    }
    Ok(GuestReport { ip })
}

/// Reads one report from a connection: bytes up to the first newline, at most [`MAX_LINE`].
/// A connection that ends without a newline is [`ReportError::Truncated`], so a guest killed
/// mid-write never yields half an address.
pub fn read(conn: impl Read) -> Result<GuestReport, ReportError> {
    let mut conn = conn;
    let mut buf = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    loop {
        match conn.read(&mut byte) {
            Ok(0) => return Err(ReportError::Truncated),
            Ok(_) => {
                buf.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
                if buf.len() >= MAX_LINE {
                    return Err(ReportError::TooLong);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReportError::Io(ErrorKindError(e.kind()))),
        }
    }
    let line = std::str::from_utf8(&buf).map_err(|_| ReportError::NotAscii)?;
    parse(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> GuestReport {
        GuestReport {
            ip: s.parse().unwrap(),
        }
    }

    #[test]
    fn parses_the_version_1_line() {
        assert_eq!(
            parse("devbox-ready 1 ip=192.168.64.3\n"),
            Ok(ip("192.168.64.3"))
        );
        assert_eq!(
            parse("devbox-ready 1 ip=192.168.64.3\r\n"),
            Ok(ip("192.168.64.3"))
        );
        assert_eq!(parse("devbox-ready 1 ip=10.0.2.15"), Ok(ip("10.0.2.15")));
    }

    #[test]
    fn ignores_unknown_fields_and_extra_spaces() {
        assert_eq!(
            parse("devbox-ready  1 host=dev ip=192.168.65.7 docker=27.5.1"),
            Ok(ip("192.168.65.7"))
        );
    }

    #[test]
    fn rejects_other_lines_versions_and_addresses() {
        assert!(matches!(
            parse("hello 1 ip=192.168.64.3"),
            Err(ReportError::NotAReport { .. })
        ));
        assert!(matches!(
            parse("devbox-ready"),
            Err(ReportError::NotAReport { .. })
        ));
        assert_eq!(
            parse("devbox-ready 2 ip=192.168.64.3"),
            Err(ReportError::Version {
                version: "2".into()
            })
        );
        assert!(matches!(
            parse("devbox-ready 1 addr=192.168.64.3"),
            Err(ReportError::MissingIp { .. })
        ));
        for bad in [
            "192.168.64",
            "192.168.64.300",
            "0.0.0.0",
            "127.0.0.1",
            "",
            "fe80::1",
        ] {
            assert!(
                matches!(
                    parse(&format!("devbox-ready 1 ip={bad}")),
                    Err(ReportError::BadIp { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            parse("devbox-ready 1 ip=192.168.64.3 név=x"),
            Err(ReportError::NotAscii)
        );
    }

    #[test]
    fn reads_one_line_and_stops_there() {
        let mut conn: &[u8] = b"devbox-ready 1 ip=192.168.64.9\ntrailing junk";
        assert_eq!(read(&mut conn), Ok(ip("192.168.64.9")));
        assert_eq!(
            conn, b"trailing junk",
            "nothing past the newline is consumed"
        );
    }

    #[test]
    fn a_connection_closed_mid_line_is_truncated() {
        assert_eq!(
            read(&b"devbox-ready 1 ip=192.168.64.9"[..]),
            Err(ReportError::Truncated)
        );
        assert_eq!(read(&b""[..]), Err(ReportError::Truncated));
    }

    #[test]
    fn a_guest_cannot_send_an_endless_line() {
        let endless = std::io::repeat(b'x');
        assert_eq!(read(endless), Err(ReportError::TooLong));
        // Exactly MAX_LINE bytes with the newline is still accepted.
        let mut line = String::from("devbox-ready 1 ip=192.168.64.9 pad=");
        line.push_str(&"x".repeat(MAX_LINE - line.len() - 1));
        line.push('\n');
        assert_eq!(line.len(), MAX_LINE);
        assert_eq!(read(line.as_bytes()), Ok(ip("192.168.64.9")));
    }
}
