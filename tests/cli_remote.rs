//! `devbox create --driver ssh` (issue #21) against a real OpenSSH server on loopback whose
//! sessions get a PATH of recording commands (`support::sshd::fake_bin`): a host is adopted
//! with its key pinned, and each host devbox cannot or must not adopt is refused with the
//! problem and the fix, leaving nothing behind (no machine directory, no lease).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

mod support;
use support::cli::{Env, stderr, stdout};
use support::sshd::{SSHD, Sshd, calls, fake_bin, fake_engine, free_port, have, server};

fn adopt(env: &Env, sshd: &Sshd, name: &str, extra: &[&str]) -> Output {
    let port = sshd.target.addr.port().to_string();
    let key = sshd.target.identity.to_str().unwrap().to_owned();
    let mut args = vec![
        "create",
        name,
        "--driver",
        "ssh",
        "--ssh-host",
        "127.0.0.1",
        "--ssh-port",
        &port,
        "--ssh-user",
        &sshd.target.user,
    ];
    if !extra.contains(&"--ssh-key") {
        args.extend(["--ssh-key", key.as_str()]);
    }
    args.extend_from_slice(extra);
    env.run(&args)
}

fn script(bin: &Path, name: &str, body: &str) {
    let p = bin.join(name);
    let _ = std::fs::remove_file(&p);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Nothing of machine `name` exists: no directory, no lease.
#[track_caller]
fn nothing_left(env: &Env, name: &str) {
    assert!(!env.machine_dir(name).exists(), "{name}'s directory exists");
    let leases = std::fs::read_dir(&env.registry)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".lease"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leases, 0, "a lease was left in {}", env.registry.display());
}

#[track_caller]
fn refused(o: &Output, needles: &[&str]) {
    let all = format!("{}{}", stderr(o), stdout(o));
    assert_eq!(o.status.code(), Some(1), "{all}");
    for n in needles {
        assert!(all.contains(n), "should say {n:?}:\n{all}");
    }
}

#[test]
fn a_host_with_docker_is_adopted_with_its_key_pinned() {
    if !have(SSHD) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    no_systemd(&bin);
    let sshd = server(&bin);
    let env = Env::new();
    let o = adopt(&env, &sshd, "far", &[]);
    let all = format!("{}{}", stderr(&o), stdout(&o));
    assert!(o.status.success(), "{all}");
    let fp = devbox::ssh::fingerprint(&sshd.target.host_key).unwrap();
    assert!(all.contains(&fp), "the pinned key is shown: {all}");
    assert!(all.contains("Docker 26.1.5-fake"), "{all}");
    assert!(all.contains("does not run systemd"), "{all}");
    let dir = env.machine_dir("far");
    let pinned = std::fs::read_to_string(dir.join("ssh_host_ed25519_key.pub")).unwrap();
    assert_eq!(devbox::ssh::fingerprint(&pinned).unwrap(), fp);
    let yaml = std::fs::read_to_string(dir.join("machine.yaml")).unwrap();
    assert!(yaml.contains("driver: ssh"), "{yaml}");
    // Nothing of a booted machine's: no disk, no keys of devbox's.
    assert!(!dir.join("disk.raw").exists() && !dir.join("id_ed25519").exists());

    let ls: serde_json::Value = serde_json::from_str(&stdout(&env.run(&["ls", "--json"]))).unwrap();
    let row = &ls["machines"][0];
    assert_eq!(row["driver"], "ssh");
    assert_eq!(row["ip"], "127.0.0.1");
    assert!(row["memory_mib"].is_null(), "{row}");
    // What acts on a machine devbox boots says it does not apply.
    for verb in [
        &["upgrade", "far"][..],
        &["edit", "far", "--cpus", "1"],
        &["logs", "far"],
        &["ssh-config", "far"],
        &["disk", "usage", "far"],
    ] {
        refused(
            &env.run(verb),
            &["far is the host 127.0.0.1 adopted over SSH"],
        );
    }
    // Swarm ports open between local machines only.
    refused(
        &env.run(&["swarm", "init", "far"]),
        &["far is a host adopted over SSH", "local machines"],
    );
    // --purge looks for settings of devbox's on the host: none were written there.
    let o = env.run(&["rm", "-y", "--purge", "far"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("No settings of devbox's on 127.0.0.1"),
        "{}",
        stderr(&o)
    );
    nothing_left(&env, "far");
}

#[test]
fn hosts_that_cannot_be_adopted_are_refused_and_leave_nothing() {
    if !have(SSHD) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    no_systemd(&bin);
    let sshd = server(&bin);
    let env = Env::new();
    let real_fp = devbox::ssh::fingerprint(&sshd.target.host_key).unwrap();

    // A host key the host does not hold: both fingerprints.
    let other = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    let o = adopt(&env, &sshd, "far", &["--ssh-host-key", other]);
    refused(&o, &[other, &real_fp, "ssh-keygen -lf"]);
    nothing_left(&env, "far");
    refused(
        &adopt(&env, &sshd, "far", &["--ssh-host-key", "SHA256:short"]),
        &["not an SSH key fingerprint"],
    );

    // A key the host does not accept.
    let stranger = work.path().join("stranger");
    let pair = devbox::ssh::generate_ed25519("stranger").unwrap();
    devbox::ssh::write_keypair(&pair, &stranger, &stranger.with_extension("pub")).unwrap();
    let o = adopt(
        &env,
        &sshd,
        "far",
        &["--ssh-key", stranger.to_str().unwrap()],
    );
    refused(&o, &["refused the key", "ssh-copy-id"]);
    nothing_left(&env, "far");
    let o = adopt(&env, &sshd, "far", &["--ssh-key", "/nonexistent/key"]);
    refused(&o, &["no SSH key at /nonexistent/key", "ssh-keygen"]);

    // Nothing listens.
    let port = free_port().to_string();
    let o = env.run(&[
        "create",
        "far",
        "--driver",
        "ssh",
        "--ssh-host",
        "127.0.0.1",
        "--ssh-port",
        &port,
        "--ssh-key",
        sshd.target.identity.to_str().unwrap(),
    ]);
    refused(&o, &["cannot reach SSH on 127.0.0.1", "--ssh-port"]);
    nothing_left(&env, "far");

    // No Docker and no apt-get.
    std::fs::remove_file(bin.join("docker")).unwrap();
    std::fs::remove_file(bin.join("apt-get")).unwrap();
    refused(
        &adopt(&env, &sshd, "far", &[]),
        &["has no apt-get", "install Docker on the host yourself"],
    );
    nothing_left(&env, "far");

    // Not root, and no sudo without a password.
    fake_bin_apt(&bin);
    script(&bin, "id", "[ \"$1\" = -u ] && echo 1000 || echo uid=1000");
    script(
        &bin,
        "sudo",
        "echo 'sudo: a password is required' >&2; exit 1",
    );
    refused(
        &adopt(&env, &sshd, "far", &[]),
        &["is not root and cannot use sudo", "NOPASSWD"],
    );
    nothing_left(&env, "far");

    // Flags of a booted machine, and --ssh-host without the ssh driver.
    refused(
        &adopt(&env, &sshd, "far", &["--share", "/tmp"]),
        &["--share cannot be used with --driver ssh"],
    );
    let o = env.run(&[
        "create",
        "far",
        "--driver",
        "fake",
        "--ssh-host",
        "example.test",
    ]);
    refused(&o, &["--ssh-host adopts an existing host"]);
    nothing_left(&env, "far");
}

/// A host with Docker and without systemd: devbox writes no settings to it (the settings
/// and their restart are `tests/remote_adopt.rs`'s, in a directory of the test's own, never
/// this host's /etc/docker).
/// A user who is not root, with sudo, on a host without Docker: the CLI installs Debian's
/// engine through `sudo -n` and makes the user join the `docker` group (the socket is
/// forwarded over SSH, which cannot go through sudo), as the commands the host received show.
/// (No systemd here, so that nothing reaches this host's own /etc/docker.)
#[test]
fn a_user_who_is_not_root_gets_docker_through_sudo_and_joins_its_group() {
    if !have(SSHD) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    fake_bin(&bin);
    std::fs::remove_file(bin.join("systemctl")).unwrap();
    script(&bin, "id", "[ \"$1\" = -u ] && echo 1000 || echo uid=1000");
    let log = bin.join("calls.log");
    script(
        &bin,
        "usermod",
        &format!("echo \"usermod $*\" >> {}", log.display()),
    );
    let sshd = server(&bin);
    let env = Env::new();
    let o = adopt(&env, &sshd, "far", &[]);
    let all = format!("{}{}", stderr(&o), stdout(&o));
    assert!(o.status.success(), "{all}");
    assert!(all.contains("Docker 26.1.5-fake"), "{all}");
    let user = &sshd.target.user;
    let want = [
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -q".to_owned(),
        "apt-get update -q".to_owned(),
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -q -y docker.io".to_owned(),
        "apt-get install -q -y docker.io".to_owned(),
        format!("sudo -n usermod -aG docker {user}"),
        format!("usermod -aG docker {user}"),
    ];
    let got: Vec<String> = calls(&bin)
        .into_iter()
        .filter(|c| !c.starts_with("sudo -n true") && !c.contains("version"))
        .collect();
    assert_eq!(got, want, "{all}");
    assert!(env.machine_dir("far").join("machine.yaml").exists());
}

fn no_systemd(bin: &Path) {
    fake_bin(bin);
    fake_engine(bin);
    std::fs::remove_file(bin.join("systemctl")).unwrap();
}

/// An `apt-get` that records and succeeds without installing anything.
fn fake_bin_apt(bin: &Path) {
    script(
        bin,
        "apt-get",
        &format!("echo \"apt-get $*\" >> {}/calls.log", bin.display()),
    );
}
