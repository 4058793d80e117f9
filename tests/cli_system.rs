//! Tier 2: `devbox system …`, the privilege rules at the entry and the lease registry, through
//! the real binary against a temporary `DEVBOX_HOME` and registry. Nothing here changes the
//! host: installs are `--dry-run`, and the commands that would need root run as `nobody`
//! (setpriv), where they must refuse before doing anything.

mod support;
use support::cli::{Env, fails_with, stderr, stdout, succeeds};

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `devbox ARGS` as `nobody`, with every capability dropped (setpriv), in `env`'s home.
fn as_nobody(env: &Env, args: &[&str]) -> Option<Output> {
    if !is_root() || support::guest::which("setpriv").is_none() {
        if support::ci() {
            panic!("needs root and setpriv (CI=true)");
        }
        eprintln!("not run: needs root and setpriv");
        return None;
    }
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(assert_cmd::cargo::cargo_bin("devbox"))
        .args(args)
        .env("DEVBOX_HOME", &env.home)
        .env("DEVBOX_CACHE", &env.cache)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    Some(o)
}

#[test]
fn system_install_needs_root_and_says_how() {
    let env = Env::new();
    let Some(o) = as_nobody(&env, &["system", "install"]) else {
        return;
    };
    fails_with(
        &o,
        "`devbox system install` changes the host's system files and needs root",
    );
    assert!(
        stderr(&o).contains("hint: run `sudo devbox system install`"),
        "{}",
        stderr(&o)
    );
    let o = as_nobody(&env, &["system", "uninstall"]).unwrap();
    fails_with(&o, "needs root");
}

#[test]
fn system_install_dry_run_prints_the_plan_as_any_user() {
    let env = Env::new();
    let Some(o) = as_nobody(&env, &["system", "install", "--dry-run"]) else {
        return;
    };
    succeeds(&o);
    let plan = stdout(&o);
    for line in [
        "# devbox host plan for linux (devbox system install)",
        "install -d -o root -g root -m 0755 /var/lib/devbox",
        "install -d -o root -g root -m 1777 /var/lib/devbox/leases",
        "setcap cap_net_admin,cap_net_bind_service+ep /usr/local/bin/devbox",
        "write /var/lib/devbox/install.json",
        "systemctl enable --now devbox-routes.service",
    ] {
        assert!(plan.contains(line), "{line:?} missing from:\n{plan}");
    }
    // The checks come with it, each with its fix.
    assert!(stderr(&o).contains("/dev/net/tun"), "{}", stderr(&o));
}

#[test]
fn sudo_variables_that_disagree_are_refused_with_the_way_out() {
    let env = Env::new();
    let o = env
        .cmd()
        .args(["ls"])
        .env("SUDO_USER", "no-such-devbox-user")
        .env("SUDO_UID", "4242")
        .env("SUDO_GID", "4242")
        .output()
        .unwrap();
    if !is_root() {
        // Not root: sudo's variables mean nothing, the user is the user.
        succeeds(&o);
        return;
    }
    fails_with(&o, "cannot act as the user who ran sudo");
    assert!(stderr(&o).contains("without sudo"), "{}", stderr(&o));
    assert!(!env.home.exists(), "nothing created");
}

#[test]
fn root_genuine_creates_the_registry_on_demand_and_create_takes_a_lease() {
    if !is_root() {
        eprintln!("not run: needs root (the registry must be root's)");
        return;
    }
    let env = Env::new();
    let create = |name: &str| {
        env.run(&[
            "create",
            "--driver",
            "fake",
            "--no-share",
            "--cpus",
            "1",
            "--memory",
            "512",
            "--disk-size",
            "2G",
            name,
        ])
    };
    succeeds(&create("a"));
    succeeds(&create("b"));
    let leases = env.registry.join("leases");
    assert_eq!(
        std::fs::metadata(&leases).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
    let mut names: Vec<String> = std::fs::read_dir(&leases)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["0", "1"], "one lease per machine");
    let lease: serde_json::Value =
        serde_json::from_slice(&std::fs::read(leases.join("1")).unwrap()).unwrap();
    assert_eq!(lease["machine"], "b");
    assert_eq!(
        std::fs::metadata(leases.join("1")).unwrap().mode() & 0o777,
        0o644
    );
    // Private files.
    let m = env.machine_dir("a");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&m), 0o700);
    assert_eq!(mode(&m.join("disk.raw")), 0o600);
    assert_eq!(mode(&m.join("machine.yaml")), 0o600);

    // Another user's lease on index 2: a new machine skips it and its Docker subnets.
    std::fs::write(
        leases.join("2"),
        r#"{"uid": 4242, "user": "other", "machine": "x", "dir": "/home/other/.devbox/machines/x",
            "docker": ["172.22.0.0/16", "172.23.0.0/16"]}"#,
    )
    .unwrap();
    nix::unistd::chown(
        &leases.join("2"),
        Some(nix::unistd::Uid::from_raw(4242)),
        None,
    )
    .unwrap();
    succeeds(&create("c"));
    let spec = std::fs::read_to_string(env.machine_dir("c").join("machine.yaml")).unwrap();
    assert!(spec.contains("index: 3"), "{spec}");
    assert!(spec.contains("bridge: 172.24.0.1/16"), "{spec}");

    // rm gives the lease back; a lease whose home is gone is reclaimed at the next create.
    succeeds(&env.run(&["rm", "a"]));
    assert!(!leases.join("0").exists());
    std::fs::remove_dir_all(env.machine_dir("b")).unwrap();
    succeeds(&create("d"));
    let spec = std::fs::read_to_string(env.machine_dir("d").join("machine.yaml")).unwrap();
    assert!(spec.contains("index: 0"), "{spec}");
    assert!(!leases.join("1").exists(), "b's lease was reclaimed");
    assert!(
        leases.join("2").exists(),
        "another user's lease is never touched"
    );
}

#[test]
fn start_before_system_install_names_it_and_makes_nothing() {
    let env = Env::new();
    // A user's registry cannot be moved (DEVBOX_REGISTRY is root's only); here root's
    // points at a directory that does not exist, as on a host without `system install`:
    // root would create it, so the check runs as nobody.
    let Some(o) = as_nobody(&env, &["create", "m", "--driver", "fake", "--no-share"]) else {
        return;
    };
    if std::path::Path::new("/var/lib/devbox/leases").exists() {
        eprintln!("not run: this host has a lease registry (system install was run)");
        return;
    }
    fails_with(&o, "devbox is not set up on this host");
    assert!(
        stderr(&o).contains("sudo devbox system install"),
        "{}",
        stderr(&o)
    );
    assert!(!env.machine_dir("m").exists());
}
