//! The Rust image builder's package choice against apt's, on the real Debian archive: for
//! both suites (Debian 13 trixie, the default, and Debian 12 bookworm), both arches and both
//! kernel flavours, the closure `devbox image build` resolves must be the one `apt-get install
//! --no-install-recommends` chooses on an empty system from the same `InRelease` files (the
//! apt-based builder's method, with the same sources: the suite, its `-updates` and its
//! `-security`, `main`). The host's apt (Debian 12's 2.6 here) resolves trixie's index too.
//!
//! Run on purpose, not in CI (it needs `apt-get` and the real archive):
//! `cargo test --test image_apt_parity -- --ignored --nocapture`. It prints both closures'
//! differences (none, when they agree) and fails on any. apt runs with a private state in a
//! temporary directory; the host's apt state and sources are not read or touched.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use devbox::image::build::{Arch, Kernel, package_list};
use devbox::image::debian::fetch::{Fetcher, Retry};
use devbox::image::debian::keys::Keyring;
use devbox::image::debian::{
    Archive, ArchiveOptions, DEFAULT_MIRROR, DEFAULT_SECURITY_MIRROR, Suite, mirror_url,
};

#[test]
#[ignore = "needs apt-get and the Debian archive; run once by hand (see the header)"]
fn rust_resolver_chooses_what_apt_chooses() {
    let mut differences = 0;
    for suite in [Suite::Trixie, Suite::Bookworm] {
        for arch in [Arch::X86_64, Arch::Arm64] {
            for kernel in [Kernel::Cloud, Kernel::Generic] {
                differences += compare(suite, arch, kernel);
            }
        }
    }
    assert_eq!(differences, 0, "the closures differ (see above)");
}

/// Prints the differences for one suite, arch and kernel flavour; returns how many.
fn compare(suite: Suite, arch: Arch, kernel: Kernel) -> usize {
    let tmp = tempfile::tempdir().unwrap();
    let wanted = package_list(suite, arch, kernel);
    let debian_arch = arch.debian();

    // apt first, then devbox: then compare the InRelease files each one read.
    let apt = tmp.path().join("apt");
    let apt_closure = apt_resolve(&apt, suite, debian_arch, &wanted);

    let lists = tmp.path().join("lists");
    let (mirror, security) = (
        mirror_url(DEFAULT_MIRROR).unwrap(),
        mirror_url(DEFAULT_SECURITY_MIRROR).unwrap(),
    );
    let sources = suite.sources(&mirror, &security);
    let keyring = Keyring::pinned(suite.keys()).unwrap();
    let fetcher = Fetcher::new(Retry::default(), false).unwrap();
    let archive = Archive::open(
        &fetcher,
        &ArchiveOptions {
            sources: &sources,
            keyring: &keyring,
            arch: debian_arch,
            lists: &lists,
            refresh: true,
            now: SystemTime::now(),
        },
    )
    .unwrap();
    let ours: BTreeMap<String, String> = archive
        .resolve(&wanted)
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.version))
        .collect();

    let name = suite.name();
    for dist in [
        format!("debian_dists_{name}"),
        format!("debian_dists_{name}-updates"),
        format!("debian-security_dists_{name}-security"),
    ] {
        let name = format!("deb.debian.org_{dist}_InRelease");
        let a = fs_err::read(apt.join("lists").join(&name)).unwrap();
        let b = fs_err::read(lists.join(&name)).unwrap();
        assert!(
            a == b,
            "{name}: the mirror changed between apt's read and devbox's; run again"
        );
    }

    let suite = suite.name();
    let mut diff = 0;
    for (name, v) in &apt_closure {
        match ours.get(name) {
            Some(w) if w == v => {}
            Some(w) => {
                println!("{suite} {debian_arch} {kernel:?}: {name}: apt {v}, devbox {w}");
                diff += 1;
            }
            None => {
                println!("{suite} {debian_arch} {kernel:?}: {name} {v}: apt only");
                diff += 1;
            }
        }
    }
    for (name, v) in &ours {
        if !apt_closure.contains_key(name) {
            println!("{suite} {debian_arch} {kernel:?}: {name} {v}: devbox only");
            diff += 1;
        }
    }
    println!(
        "{suite} {debian_arch} {kernel:?}: apt chose {} packages, devbox {}; {diff} differences",
        apt_closure.len(),
        ours.len()
    );
    diff
}

/// `apt-get -s install` against a private, empty state with the build's sources.
fn apt_resolve(root: &Path, suite: Suite, arch: &str, wanted: &[&str]) -> BTreeMap<String, String> {
    let suite = suite.name();
    for d in ["lists/partial", "archives/partial", "cache"] {
        fs_err::create_dir_all(root.join(d)).unwrap();
    }
    fs_err::write(root.join("status"), "").unwrap();
    fs_err::write(
        root.join("sources.list"),
        format!(
            "deb {DEFAULT_MIRROR} {suite} main\n\
             deb {DEFAULT_MIRROR} {suite}-updates main\n\
             deb {DEFAULT_SECURITY_MIRROR} {suite}-security main\n"
        ),
    )
    .unwrap();
    let apt = |args: &[&str]| {
        let o = |k: &str, v: &Path| format!("{k}={}", v.display());
        let out = Command::new("apt-get")
            .arg("-q")
            .args(["-o", &o("Dir::Etc::SourceList", &root.join("sources.list"))])
            .args(["-o", "Dir::Etc::SourceParts=/nonexistent"])
            .args(["-o", &o("Dir::State::Lists", &root.join("lists"))])
            .args(["-o", &o("Dir::State::status", &root.join("status"))])
            .args(["-o", &o("Dir::Cache", &root.join("cache"))])
            .args(["-o", &o("Dir::Cache::archives", &root.join("archives"))])
            .args(["-o", "Debug::NoLocking=1"])
            .args(["-o", "APT::Install-Recommends=false"])
            .args(["-o", &format!("APT::Architecture={arch}")])
            .args(["-o", &format!("APT::Architectures={arch}")])
            .args(["-o", "APT::Sandbox::User=root"])
            .args(["-o", "Acquire::Languages=none"])
            .env("LC_ALL", "C")
            .args(args)
            .output()
            .expect("apt-get runs");
        assert!(
            out.status.success(),
            "apt-get {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    apt(&["update"]);
    let mut args = vec!["-s", "install"];
    args.extend_from_slice(wanted);
    apt(&args)
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .map(|rest| {
            let name = rest.split_whitespace().next().unwrap().to_owned();
            let version = rest
                .split_once('(')
                .and_then(|(_, v)| v.split_whitespace().next())
                .unwrap()
                .to_owned();
            (name, version)
        })
        .collect()
}
