//! Adopting a host over SSH (`devbox::remote`, issue #21) against a real OpenSSH server on
//! loopback. The test world's guests have no package manager and no systemd, so the commands
//! that install and start Docker are checked here as a recording: the server's sessions get a
//! PATH whose `apt-get`, `systemctl`, `sudo` and (once "installed") `docker` are scripts that
//! log how they were called, while `sh`, `id` and `uname` are the real ones.

use std::time::Duration;

use devbox::remote::settings::{HostSettings, SettingsError};
use devbox::remote::{self, Facts};
use devbox::ssh::{Connection, fingerprint, scan_host_key, scan_host_keys};

mod support;
use support::sshd::{CONNECT, SSHD, Sshd, calls, fake_bin, fake_engine, have, server};

const STEP: Duration = Duration::from_secs(30);

#[test]
fn the_host_key_is_read_without_authenticating() {
    if !have(SSHD) {
        return;
    }
    let sshd = Sshd::start();
    let key = scan_host_key(sshd.target.addr, CONNECT).unwrap();
    assert_eq!(
        fingerprint(&key).unwrap(),
        fingerprint(&sshd.target.host_key).unwrap()
    );
    // What is read is what a pinned connection then accepts.
    let mut target = sshd.target.clone();
    target.host_key = key;
    Connection::connect(&target, CONNECT).unwrap();
    assert_eq!(
        sshd.log().matches("Accepted publickey").count(),
        1,
        "{}",
        sshd.log()
    );
}

#[test]
fn every_host_key_is_seen_and_the_expected_one_pinned() {
    if !(have(SSHD) && have("/usr/bin/ssh-keygen")) {
        return;
    }
    let sshd = Sshd::prepare();
    let rsa = sshd.dir.path().join("host_rsa");
    let made = std::process::Command::new("/usr/bin/ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .unwrap();
    assert!(made.success());
    sshd.configure(&format!("HostKey {}\n", rsa.display()));
    let mut sshd = sshd;
    sshd.spawn();
    sshd.wait_listening();

    let keys = scan_host_keys(sshd.target.addr, CONNECT).unwrap();
    let rsa_pub = std::fs::read_to_string(rsa.with_extension("pub")).unwrap();
    let fps: Vec<String> = keys.iter().map(|k| fingerprint(k).unwrap()).collect();
    assert_eq!(
        fps,
        [
            fingerprint(&sshd.target.host_key).unwrap(),
            fingerprint(&rsa_pub).unwrap()
        ],
        "strongest first"
    );
    // The RSA key, when that is the one the user checked, is pinned, and connecting with it
    // works.
    let rsa_fp = fingerprint(&rsa_pub).unwrap();
    let pinned = remote::choose_host_key("loopback", &keys, Some(&rsa_fp)).unwrap();
    let mut target = sshd.target.clone();
    target.host_key = pinned;
    Connection::connect(&target, CONNECT).unwrap();
    // A fingerprint the host does not have: both sides shown.
    let other = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    let err = remote::choose_host_key("loopback", &keys, Some(other)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(other) && fps.iter().all(|f| msg.contains(f.as_str())),
        "{msg}"
    );

    // Nothing listens: a connection error, not an empty list.
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], support::sshd::free_port()));
    assert!(matches!(
        scan_host_keys(closed, CONNECT),
        Err(devbox::ssh::SshError::Connect { .. })
    ));
}

#[test]
fn docker_is_installed_from_the_distribution_with_the_recorded_commands() {
    if !have(SSHD) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    fake_bin(&bin);
    let sshd = server(&bin);
    let conn = sshd.connect();

    let facts = remote::gather(&conn, STEP).unwrap();
    let euid = nix::unistd::geteuid().as_raw();
    assert_eq!(facts.uid, Some(euid), "{facts:?}");
    assert!(facts.apt && !facts.docker_cli, "{facts:?}");
    assert_eq!(facts.docker_version, None);
    assert_eq!(facts.arch, std::env::consts::ARCH);
    if !facts.debian_family() {
        eprintln!("skipping the plan: this host is not Debian or Ubuntu ({facts:?})");
        return;
    }
    let plan = remote::plan(&facts, "loopback", &sshd.target.user).unwrap();
    remote::run(&conn, &plan, STEP).unwrap();
    // Each step reached the host as planned: through sudo -n exactly when not root.
    let mut want = Vec::new();
    for step in &plan.steps {
        let cmd = step.strip_prefix("sudo -n ").unwrap_or(step);
        if step.starts_with("sudo -n ") {
            want.push(format!("sudo -n {cmd}"));
        }
        let cmd = cmd
            .strip_prefix("env DEBIAN_FRONTEND=noninteractive ")
            .unwrap_or(cmd);
        want.push(cmd.to_owned());
    }
    assert_eq!(calls(&bin), want);
    assert!(
        want.iter().any(|c| c == "apt-get install -q -y docker.io"),
        "{want:?}"
    );
    // The engine answers now: nothing more to do.
    let after = remote::gather(&conn, STEP).unwrap();
    assert_eq!(after.docker_version.as_deref(), Some("26.1.5-fake"));
    assert!(
        remote::plan(&after, "loopback", "u")
            .unwrap()
            .steps
            .is_empty()
    );
}

#[test]
fn a_failed_installation_says_which_command_and_why() {
    if !have(SSHD) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    fake_bin(&bin);
    std::fs::write(bin.join("fail-install"), "").unwrap();
    let sshd = server(&bin);
    let conn = sshd.connect();
    let facts = Facts {
        uid: Some(0),
        os_id: "debian".into(),
        apt: true,
        ..Facts::default()
    };
    let plan = remote::plan(&facts, "loopback", "root").unwrap();
    let err = remote::run(&conn, &plan, STEP).unwrap_err().to_string();
    assert!(
        err.contains("apt-get install -q -y docker.io")
            && err.contains("status 100")
            && err.contains("Unable to locate package docker.io"),
        "{err}"
    );
    // What the host printed is shown, not obeyed: its escape sequence (here one that would
    // write the user's clipboard) reaches the message escaped.
    assert!(
        !err.contains('\x1b') && !err.contains('\x07') && err.contains("\\u{1b}]52;c;"),
        "{err}"
    );
    // Stopped at the failure: nothing ran after it.
    assert_eq!(
        calls(&bin).last().unwrap(),
        "apt-get install -q -y docker.io"
    );
}

fn systemd_host() -> Facts {
    Facts {
        uid: Some(nix::unistd::geteuid().as_raw()),
        sudo: true,
        os_id: "debian".into(),
        apt: true,
        systemd: true,
        docker_cli: true,
        docker_version: Some("26.1.5".into()),
        ..Facts::default()
    }
}

#[test]
fn settings_are_merged_kept_once_and_put_back() {
    if !have(SSHD) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    fake_bin(&bin);
    fake_engine(&bin);
    let etc = work.path().join("etc-docker");
    let sshd = server(&bin);
    let conn = sshd.connect();
    let facts = systemd_host();
    let settings = HostSettings {
        conn: &conn,
        facts: &facts,
        host: "loopback",
        etc_docker: etc.to_str().unwrap(),
        timeout: STEP,
    };
    let ours = |bip: &str| {
        serde_json::json!({ "bip": bip, "labels": ["devbox.machine=box"] })
            .as_object()
            .unwrap()
            .clone()
    };
    let daemon = etc.join("daemon.json");
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&daemon).unwrap()).unwrap()
    };
    let restarts = || {
        calls(&bin)
            .iter()
            .filter(|c| c.as_str() == "systemctl restart docker.service")
            .count()
    };

    // A host with settings of its own: kept, devbox's set over them.
    std::fs::create_dir_all(&etc).unwrap();
    let original = "{\"log-driver\": \"journald\", \"bip\": \"10.1.0.1/24\"}\n";
    std::fs::write(&daemon, original).unwrap();
    settings.apply(&ours("172.18.0.1/16")).unwrap();
    assert_eq!(read()["log-driver"], "journald");
    assert_eq!(read()["bip"], "172.18.0.1/16");
    assert_eq!(restarts(), 1);
    // Adopted again: devbox's file is not taken for the host's.
    settings.apply(&ours("172.20.0.1/16")).unwrap();
    assert_eq!(read()["bip"], "172.20.0.1/16");
    assert!(settings.restore().unwrap());
    assert_eq!(std::fs::read_to_string(&daemon).unwrap(), original);
    assert_eq!(restarts(), 3);
    assert!(!settings.restore().unwrap(), "nothing left to restore");
    assert_eq!(restarts(), 3);

    // A host without daemon.json gets none back.
    std::fs::remove_file(&daemon).unwrap();
    settings.apply(&ours("172.18.0.1/16")).unwrap();
    assert_eq!(read()["bip"], "172.18.0.1/16");
    assert!(settings.restore().unwrap());
    assert!(!daemon.exists());
    assert_eq!(
        std::fs::read_dir(&etc).unwrap().count(),
        0,
        "nothing of devbox's left"
    );

    // A file devbox cannot read is left alone, and the engine is not touched.
    std::fs::write(&daemon, "[1, 2]\n").unwrap();
    let before = restarts();
    let err = settings.apply(&ours("172.18.0.1/16")).unwrap_err();
    assert!(matches!(err, SettingsError::Unreadable { .. }), "{err:?}");
    assert!(err.to_string().contains("daemon.json"), "{err}");
    assert_eq!(std::fs::read_to_string(&daemon).unwrap(), "[1, 2]\n");
    assert_eq!(restarts(), before);
    assert_eq!(std::fs::read_dir(&etc).unwrap().count(), 1);
}

#[test]
fn nothing_is_written_where_the_engine_cannot_be_restarted_and_a_dead_engine_is_reported() {
    if !have(SSHD) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    fake_bin(&bin);
    fake_engine(&bin);
    let etc = work.path().join("etc-docker");
    let sshd = server(&bin);
    let conn = sshd.connect();
    let ours = serde_json::json!({ "bip": "172.18.0.1/16" })
        .as_object()
        .unwrap()
        .clone();
    let mut facts = systemd_host();
    facts.systemd = false;
    let settings = HostSettings {
        conn: &conn,
        facts: &facts,
        host: "loopback",
        etc_docker: etc.to_str().unwrap(),
        timeout: Duration::from_secs(3),
    };
    let err = settings.apply(&ours).unwrap_err();
    assert!(matches!(err, SettingsError::NoRestart { .. }), "{err:?}");
    assert!(!etc.exists());

    // The engine does not come back after the restart: said, with where to look.
    std::fs::write(bin.join("engine-down"), "").unwrap();
    let facts = systemd_host();
    let settings = HostSettings {
        facts: &facts,
        ..settings
    };
    let err = settings.apply(&ours).unwrap_err();
    assert!(matches!(err, SettingsError::NotBack { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("journalctl"));
}
