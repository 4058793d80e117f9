//! Tier 2: a host without the firewall tool outbound NAT needs. `devbox start` runs the
//! real supervisor, which makes the machine's TAP device and then asks the host applier for
//! the machine's NAT; with no `nft` in the system's directories (devbox looks there, not in
//! the caller's PATH) that fails, naming the package to install, and the machine is not left
//! running. The start runs in network and mount namespaces of its own (`unshare --net
//! --mount`, an empty tmpfs over `/usr/sbin` and a real `/sbin`), so nothing reaches the
//! host's interfaces, firewall or files; it needs root, util-linux's `unshare` and QEMU (the
//! driver's preflight comes first).

use std::process::Output;

mod support;
use support::cli::{Env, fails_with, stderr, stdout, succeeds};

fn prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    support::guest::missing_programs(&[
        ("unshare", "util-linux"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ])
}

/// `devbox start NAME` in network and mount namespaces of its own where the system's
/// `sbin` directories are empty, with `path` as its whole PATH.
fn start_isolated(env: &Env, name: &str, path: &std::path::Path) -> Output {
    let unshare = support::guest::which("unshare").unwrap();
    let mut c = std::process::Command::new(unshare);
    c.args([
        "--net",
        "--mount",
        "--",
        "/bin/sh",
        "-c",
        "/bin/mount -t tmpfs tmpfs /usr/sbin && \
         if [ -d /sbin ] && [ ! -L /sbin ]; then /bin/mount -t tmpfs tmpfs /sbin; fi && \
         exec \"$0\" \"$@\"",
    ])
    .arg(support::guest::bin())
    .args(["start", name, "--timeout", "60"])
    .env("PATH", path)
    .env("DEVBOX_HOME", &env.home)
    .env("DEVBOX_CACHE", &env.cache)
    // The test's own lease registry, where `create` took the machine's lease (never the
    // host's /var/lib/devbox).
    .env("DEVBOX_REGISTRY", &env.registry)
    .env("NO_COLOR", "1");
    c.output().unwrap()
}

#[test]
fn a_host_without_nft_is_told_which_package_to_install() {
    if let Some(why) = prerequisite() {
        if support::ci() {
            panic!("prerequisite missing under CI=true: {why}");
        }
        eprintln!("SKIPPED a_host_without_nft_is_told_which_package_to_install: {why}");
        return;
    }
    let env = Env::new();
    succeeds(&env.run(&["create", "m", "--no-share"]));
    // A PATH with QEMU (for the driver's preflight) and nothing else, and nothing in the
    // system's sbin directories: no `nft`, no `iptables`.
    let bin = tempfile::tempdir().unwrap();
    let qemu = support::guest::which("qemu-system-x86_64").unwrap();
    std::os::unix::fs::symlink(&qemu, bin.path().join("qemu-system-x86_64")).unwrap();

    let o = start_isolated(&env, "m", bin.path());
    fails_with(
        &o,
        "outbound NAT needs the `nft` command, which is not installed",
    );
    assert!(
        stderr(&o).contains("sudo apt-get install nftables"),
        "{}",
        stderr(&o)
    );
    let ls = stdout(&env.run(&["ls"]));
    assert!(ls.contains('m') && !ls.contains("running"), "{ls}");
}
