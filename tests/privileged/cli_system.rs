//! Tier 2 as root: `devbox system …`, the privilege rules at the entry and the lease registry,
//! through the real binary against a temporary `DEVBOX_HOME` and registry. Nothing here changes
//! the host: installs are `--dry-run`, and the commands that would need root run as `nobody`
//! (setpriv), where they must refuse before doing anything. The check of a host without
//! `system install` sees an empty `/var/lib` in a private mount namespace (`unshare`).
//!
//! Needs root and util-linux (setpriv, unshare): without them the trials are reported as not
//! run, except under `CI=true`, where they fail.

use crate::support::cli::{Env, fails_with, stderr, stdout, succeeds};
use crate::support::trials::{Missing, Trial, check, programs, root};

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

pub fn trials() -> Vec<Trial> {
    vec![
        check(
            "system_install_needs_root_and_says_how",
            root_and_setpriv,
            system_install_needs_root_and_says_how,
        ),
        check(
            "system_install_dry_run_prints_the_plan_as_any_user",
            root_and_setpriv,
            system_install_dry_run_prints_the_plan_as_any_user,
        ),
        check(
            "sudo_variables_that_disagree_are_refused_with_the_way_out",
            root,
            sudo_variables_that_disagree_are_refused_with_the_way_out,
        ),
        check(
            "root_creates_the_registry_on_demand_and_create_takes_a_lease",
            root,
            root_creates_the_registry_on_demand_and_create_takes_a_lease,
        ),
        check(
            "create_or_start_before_system_install_names_it_and_makes_nothing",
            root_and_setpriv,
            create_or_start_before_system_install_names_it_and_makes_nothing,
        ),
    ]
}

fn root_and_setpriv() -> Result<(), Missing> {
    root()?;
    programs(&[("setpriv", "util-linux"), ("unshare", "util-linux")])
}

/// The command line of `devbox ARGS` as `nobody`, with every capability dropped (setpriv),
/// in `env`'s home.
fn nobody_args(args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ]
    .map(str::to_owned)
    .to_vec();
    v.push(crate::support::bin_for_any_user().display().to_string());
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

fn as_nobody(env: &Env, args: &[&str]) -> Output {
    let argv = nobody_args(args);
    Command::new(&argv[0])
        .args(&argv[1..])
        .env("DEVBOX_HOME", &env.home)
        .env("DEVBOX_CACHE", &env.cache)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn system_install_needs_root_and_says_how() {
    let env = Env::new();
    let o = as_nobody(&env, &["system", "install"]);
    fails_with(
        &o,
        "`devbox system install` changes the host's system files and needs root",
    );
    assert!(
        stderr(&o).contains("hint: run `sudo devbox system install`"),
        "{}",
        stderr(&o)
    );
    let o = as_nobody(&env, &["system", "uninstall"]);
    fails_with(&o, "needs root");
}

fn system_install_dry_run_prints_the_plan_as_any_user() {
    let env = Env::new();
    let o = as_nobody(&env, &["system", "install", "--dry-run"]);
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
    fails_with(&o, "cannot act as the user who ran sudo");
    assert!(stderr(&o).contains("without sudo"), "{}", stderr(&o));
    assert!(!env.home.exists(), "nothing created");
}

fn root_creates_the_registry_on_demand_and_create_takes_a_lease() {
    let env = Env::new();
    let create = |name: &str| env.create_fake(name);
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
    succeeds(&env.run(&["rm", "-y", "a"]));
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

/// A host without `system install`: a private mount namespace with an empty `/var/lib` (so
/// the check does not depend on this host's), where `nobody` creates a machine, then starts one. A user's
/// registry cannot be moved (`DEVBOX_REGISTRY` is root's only), and root would create it.
fn create_or_start_before_system_install_names_it_and_makes_nothing() {
    let env = Env::new();
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("mount -t tmpfs -o mode=0755 tmpfs /var/lib && exec \"$@\"")
        .arg("sh")
        .args(nobody_args(&[
            "create",
            "m",
            "--driver",
            "fake",
            "--no-share",
        ]))
        .env("DEVBOX_HOME", &env.home)
        .env("DEVBOX_CACHE", &env.cache)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    fails_with(&o, "devbox is not set up on this host");
    assert!(
        stderr(&o).contains("sudo devbox system install"),
        "{}",
        stderr(&o)
    );
    assert!(!env.machine_dir("m").exists());

    // `start` of a machine that exists (made by root here, then given to `nobody`, as a
    // machine of an earlier version or one kept across `system uninstall` would be): the
    // same error, before any supervisor, lease or state file exists.
    succeeds(&env.run(&["create", "m", "--driver", "fake", "--no-share"]));
    let base = env.home.parent().unwrap();
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_tree(&env.home, 65534);
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("mount -t tmpfs -o mode=0755 tmpfs /var/lib && exec \"$@\"")
        .arg("sh")
        .args(nobody_args(&["start", "m"]))
        .env("DEVBOX_HOME", &env.home)
        .env("DEVBOX_CACHE", &env.cache)
        .env("DEVBOX_FAKE_GUEST", "ready")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    fails_with(&o, "devbox is not set up on this host");
    assert!(
        stderr(&o).contains("sudo devbox system install"),
        "{}",
        stderr(&o)
    );
    let machine = env.machine_dir("m");
    for f in ["supervisor.pid", "state.json", "supervisor.log"] {
        assert!(!machine.join(f).exists(), "start made {f}");
    }
}

fn chown_tree(dir: &std::path::Path, uid: u32) {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid)).unwrap();
    if std::fs::symlink_metadata(dir).unwrap().is_dir() {
        for e in std::fs::read_dir(dir).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}
