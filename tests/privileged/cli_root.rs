//! Tier 2 as root: the real binary against a temporary DEVBOX_HOME, where the check needs root
//! to take a privilege away (`setpriv` drops CAP_NET_ADMIN from a root process). Without root
//! or setpriv the check is reported as not run, except under `CI=true`, where it fails.

use crate::support::cli::{Env, fails_with, stderr, succeeds};
use crate::support::trials::{Missing, Trial, check, programs, root};

pub fn trials() -> Vec<Trial> {
    vec![check(
        "start_without_net_admin_names_the_privilege",
        root_and_setpriv,
        start_without_net_admin_names_the_privilege,
    )]
}

fn root_and_setpriv() -> Result<(), Missing> {
    root()?;
    programs(&[("setpriv", "util-linux")])
}

fn start_without_net_admin_names_the_privilege() {
    let env = Env::new();
    succeeds(&env.create_small(&[], "m"));
    let bin = assert_cmd::cargo::cargo_bin("devbox");
    let o = std::process::Command::new("setpriv")
        .args(["--bounding-set=-net_admin", "--inh-caps=-net_admin", "--"])
        .arg(bin)
        .args(["start", "m"])
        .env("DEVBOX_HOME", &env.home)
        .env("DEVBOX_CACHE", &env.cache)
        .env("DEVBOX_REGISTRY", &env.registry)
        .output()
        .unwrap();
    fails_with(&o, "CAP_NET_ADMIN");
    assert!(
        stderr(&o).contains("bounding set lacks NET_ADMIN"),
        "{}",
        stderr(&o)
    );
    // The way out: `system install`, or, on a host where it was done (the README's
    // quickstart leaves /usr/local/bin/devbox installed), the installed binary.
    let way_out = if std::path::Path::new(devbox::host::INSTALLED_BINARY).exists() {
        "use the installed devbox, /usr/local/bin/devbox, which has them"
    } else {
        "sudo devbox system install"
    };
    assert!(stderr(&o).contains(way_out), "{}", stderr(&o));
    assert!(!env.machine_dir("m").join("supervisor.pid").exists());
}
