//! Prerequisites and small helpers of the end-to-end tests (real guests in network
//! namespaces).

use std::path::{Path, PathBuf};

/// Why the end-to-end tests cannot run here, if they cannot.
pub fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (network namespaces and TAP devices)".into());
    }
    for (prog, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("ip", "iproute2"),
        ("docker", "docker CLI"),
        ("busybox", "busybox-static"),
        ("curl", "curl"),
        ("dig", "bind9-dnsutils"),
        ("dnsmasq", "dnsmasq-base"),
        ("pgrep", "procps"),
        ("sysctl", "procps"),
        ("nft", "nftables"),
        ("iptables", "iptables"),
        ("docker-registry", "docker-registry"),
        // the raw NFS client of tests/e2e/shares.rs, built statically (libc6-dev's libc.a)
        ("cc", "gcc"),
    ] {
        if which(prog).is_none() {
            return Some(format!("{prog} is not installed ({pkg})"));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    None
}

/// The first of `programs` (program, Debian package) that is not on PATH, as a reason.
pub fn missing_programs(programs: &[(&str, &str)]) -> Option<String> {
    programs
        .iter()
        .find(|(prog, _)| which(prog).is_none())
        .map(|(prog, pkg)| format!("{prog} is not installed ({pkg})"))
}

pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// The devbox binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_devbox"))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
