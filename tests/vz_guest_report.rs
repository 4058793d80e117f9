//! The guest half of the vz report protocol against the host half: the udhcpc event script a
//! vz guest runs (`assets/macos/guest/udhcpc.script`) is executed with `ip` and `socat`
//! replaced by recorders, and what it would send over vsock is parsed by the host's
//! `guest_report::read`. Needs only `/bin/sh`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use devbox::hypervisor::guest_report;

const SCRIPT: &str = "assets/macos/guest/udhcpc.script";

/// A fake `ip` that logs its arguments, and a fake `socat` that logs its arguments and keeps
/// its stdin.
fn fake_tools(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("calls.log");
    let sent = dir.join("sent");
    for (name, body) in [
        ("ip", format!("echo \"ip $*\" >>'{}'\n", log.display())),
        (
            "socat",
            format!(
                "echo \"socat $*\" >>'{}'\ncat >>'{}'\n",
                log.display(),
                sent.display()
            ),
        ),
    ] {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn run_event(dir: &Path, event: &str) -> std::process::Output {
    let bin = fake_tools(dir);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    Command::new("/bin/sh")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT))
        .arg(event)
        .env("PATH", path)
        .env("RESOLV_CONF", dir.join("resolv.conf"))
        .env("interface", "eth0")
        .env("ip", "192.168.64.7")
        .env("mask", "24")
        .env("router", "192.168.64.1")
        .env("dns", "192.168.64.1 10.0.0.53")
        .output()
        .unwrap()
}

#[test]
fn a_bound_lease_configures_eth0_and_reports_the_address_the_host_parses() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_event(dir.path(), "bound");
    assert!(out.status.success(), "{out:?}");

    let calls = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    assert_eq!(
        calls,
        "ip addr flush dev eth0\n\
         ip addr add 192.168.64.7/24 dev eth0\n\
         ip link set eth0 up\n\
         ip route replace default via 192.168.64.1 dev eth0\n\
         socat -u - VSOCK-CONNECT:2:7201\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("resolv.conf")).unwrap(),
        "nameserver 192.168.64.1\nnameserver 10.0.0.53\n"
    );

    let sent = std::fs::read(dir.path().join("sent")).unwrap();
    let report = guest_report::read(&sent[..]).unwrap();
    assert_eq!(
        report.ip,
        "192.168.64.7".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert!(
        calls.contains(&format!("VSOCK-CONNECT:2:{}\n", guest_report::PORT)),
        "the script and the host agree on the port"
    );
}

#[test]
fn deconfig_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_event(dir.path(), "deconfig");
    assert!(out.status.success(), "{out:?}");
    assert!(!dir.path().join("sent").exists());
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    assert_eq!(calls, "ip addr flush dev eth0\nip link set eth0 up\n");
}
