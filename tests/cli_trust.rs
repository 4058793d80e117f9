//! `devbox trust`: the devbox root into and out of the user's NSS databases, in a throwaway
//! HOME (never the real user's stores), with the real `certutil`.

use std::path::Path;
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

fn devbox(home: &Path, args: &[&str]) -> std::process::Output {
    Command::cargo_bin("devbox")
        .unwrap()
        .env("HOME", home)
        .env("DEVBOX_HOME", home.join(".devbox"))
        .args(args)
        .output()
        .unwrap()
}

fn listing(db: &Path) -> String {
    let out = Command::new("certutil")
        .args(["-L", "-d"])
        .arg(format!("sql:{}", db.display()))
        .output()
        .expect("certutil (package libnss3-tools) runs");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn install_then_uninstall_leaves_the_stores_as_they_were() {
    let home = tempfile::tempdir().unwrap();
    let firefox = home.path().join(".mozilla/firefox/abc.default-release");
    std::fs::create_dir_all(&firefox).unwrap();
    let st = Command::new("certutil")
        .args(["-N", "--empty-password", "-d"])
        .arg(format!("sql:{}", firefox.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let before = listing(&firefox);

    let dry = devbox(home.path(), &["trust", "install", "--dry-run"]);
    assert!(dry.status.success());
    assert!(
        !home.path().join(".devbox/tls").exists(),
        "a dry run creates nothing"
    );
    assert!(String::from_utf8_lossy(&dry.stdout).contains("certutil -A -d sql:"));

    let out = devbox(home.path(), &["trust", "install"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chromium = home.path().join(".pki/nssdb");
    for db in [&chromium, &firefox] {
        assert!(listing(db).contains("devbox local CA"), "{}", db.display());
    }
    let status = devbox(home.path(), &["trust", "status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(text.matches("\ttrusted").count(), 2, "{text}");

    // Twice is the same as once.
    assert!(devbox(home.path(), &["trust", "install"]).status.success());
    assert_eq!(listing(&firefox).matches("devbox local CA").count(), 1);

    let out = devbox(home.path(), &["trust", "uninstall"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listing(&firefox), before);
    assert!(!listing(&chromium).contains("devbox local CA"));
    let status = devbox(home.path(), &["trust", "status"]);
    assert!(!String::from_utf8_lossy(&status.stdout).contains("\ttrusted"));
}

#[test]
fn without_certutil_the_error_names_the_package_and_nothing_is_created() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("devbox")
        .unwrap()
        .env("HOME", home.path())
        .env("DEVBOX_HOME", home.path().join(".devbox"))
        .env("PATH", home.path())
        .args(["trust", "install"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("libnss3-tools"), "{err}");
    assert!(!home.path().join(".devbox/tls").exists());
}

#[test]
fn a_corrupt_ca_is_reported_with_the_fix_and_left_alone() {
    let home = tempfile::tempdir().unwrap();
    let tls = home.path().join(".devbox/tls");
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::write(tls.join("ca.pem"), "not a certificate").unwrap();
    std::fs::write(tls.join("ca-key.pem"), "not a key").unwrap();
    let out = devbox(home.path(), &["trust", "install"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt") && err.contains("devbox trust"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(tls.join("ca.pem")).unwrap(),
        "not a certificate"
    );
}

/// `--system --dry-run` prints the system store's commands (sudo first unless root) after the
/// user's; nothing runs, the system store is untouched.
#[test]
fn system_dry_run_prints_the_system_commands_and_sudo_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let dry = devbox(home.path(), &["trust", "install", "--system", "--dry-run"]);
    assert!(dry.status.success(), "{dry:?}");
    let text = String::from_utf8_lossy(&dry.stdout);
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    let sudo = if nix::unistd::geteuid().is_root() {
        ""
    } else {
        "sudo "
    };
    let ca = home.path().join(".devbox/tls/ca.pem");
    let want_install = format!(
        "{sudo}install -m 0644 -o root -g root -T {} /usr/local/share/ca-certificates/devbox-{user}.crt",
        ca.display()
    );
    assert!(text.contains(&want_install), "{text}");
    assert!(
        text.ends_with(&format!("{sudo}update-ca-certificates\n")),
        "{text}"
    );
    let dry = devbox(
        home.path(),
        &["trust", "uninstall", "--system", "--dry-run"],
    );
    assert!(
        String::from_utf8_lossy(&dry.stdout).ends_with(&format!(
            "{sudo}rm -f /usr/local/share/ca-certificates/devbox-{user}.crt\n\
             {sudo}update-ca-certificates --fresh\n"
        )),
        "{dry:?}"
    );

    // Under sudo (as root, SUDO_USER set), --system would take root's CA: refused.
    if nix::unistd::geteuid().is_root() {
        let out = Command::cargo_bin("devbox")
            .unwrap()
            .env("HOME", home.path())
            .env("DEVBOX_HOME", home.path().join(".devbox"))
            .env("SUDO_USER", "ann")
            .args(["trust", "install", "--system"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("under sudo would use root's devbox CA, not ann's"),
            "{err}"
        );
    }
}
