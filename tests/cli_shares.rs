//! Tier 2: what may be shared, decided by the real binary at `create` and again at `start`,
//! against a temporary DEVBOX_HOME (no guest).
//!
//! The start checks run in the supervisor, after it made the machine's TAP device: those
//! tests run `devbox start` in a network namespace of its own (`unshare --net`), so nothing
//! reaches the host's interfaces; they need root and util-linux's `unshare`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

mod support;
use support::cli::{Env, fails_with, stderr, stdout, succeeds};

const USER: u32 = 1000;

fn create(env: &Env, name: &str, extra: &[&str]) -> Output {
    let mut flags = vec!["--driver", "qemu"];
    flags.extend_from_slice(extra);
    env.create_small(&flags, name)
}

/// A directory owned by an ordinary user, under the environment's temporary directory.
fn user_dir(env: &Env, rel: &str) -> PathBuf {
    let base = env.home.parent().unwrap();
    let dir = base.join(rel);
    std::fs::create_dir_all(&dir).unwrap();
    for at in dir.ancestors().take_while(|a| a.starts_with(base)) {
        std::os::unix::fs::chown(at, Some(USER), Some(USER)).unwrap();
    }
    dir.canonicalize().unwrap()
}

fn spec_text(env: &Env, name: &str) -> String {
    std::fs::read_to_string(env.machine_dir(name).join("machine.yaml")).unwrap()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn no_default_share_as_root_without_sudo_user() {
    if !is_root() {
        eprintln!("SKIPPED no_default_share_as_root_without_sudo_user: needs root");
        return;
    }
    let env = Env::new();
    let o = env
        .cmd()
        .env_remove("SUDO_USER")
        .env("HOME", "/root")
        .args([
            "create",
            "--cpus",
            "1",
            "--memory",
            "512",
            "--disk-size",
            "2G",
            "--driver",
            "qemu",
            "dev",
        ])
        .output()
        .unwrap();
    succeeds(&o);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        out.contains("No default share: devbox runs as root without SUDO_USER"),
        "{out}"
    );
    assert!(!out.contains("Share: /root"), "{out}");
    assert!(
        !spec_text(&env, "dev").contains("host_path"),
        "{}",
        spec_text(&env, "dev")
    );
}

#[test]
fn devbox_state_and_cache_are_never_shared() {
    let env = Env::new();
    std::fs::create_dir_all(env.home.join("machines")).unwrap();
    for dir in [
        env.home.clone(),
        env.home.join("machines"),
        env.cache.clone(),
    ] {
        std::os::unix::fs::chown(&dir, Some(USER), Some(USER)).unwrap();
        let share = format!("{}:/x", dir.display());
        let o = create(&env, "dev", &["--share", &share]);
        fails_with(&o, "is devbox's own");
        fails_with(&o, "is never shared");
        assert!(!env.machine_dir("dev").exists());
    }
    // A share that contains them is fine: the file server hides them from the guest.
    let parent = user_dir(&env, "");
    let o = create(
        &env,
        "dev",
        &["--share", &format!("{}:/x", parent.display())],
    );
    succeeds(&o);
}

#[test]
fn nested_shares_are_refused() {
    let env = Env::new();
    let outer = user_dir(&env, "work");
    let inner = user_dir(&env, "work/data");
    for shares in [[&outer, &inner], [&inner, &outer]] {
        let o = create(
            &env,
            "dev",
            &[
                "--share",
                &format!("{}:/a", shares[0].display()),
                "--share",
                &format!("{}:/b:ro", shares[1].display()),
            ],
        );
        fails_with(&o, "overlap");
        assert!(!env.machine_dir("dev").exists());
    }
}

#[test]
fn a_root_owned_share_needs_the_flag_and_is_recorded() {
    if !is_root() {
        eprintln!("SKIPPED a_root_owned_share_needs_the_flag_and_is_recorded: needs root");
        return;
    }
    let env = Env::new();
    let dir = env.home.parent().unwrap().join("srv");
    std::fs::create_dir(&dir).unwrap();
    let share = format!("{}:/srv", dir.display());
    let o = create(&env, "dev", &["--share", &share]);
    fails_with(&o, "owned by root");
    fails_with(&o, "--allow-root-share");
    let o = create(&env, "dev", &["--share", &share, "--allow-root-share"]);
    succeeds(&o);
    assert!(stderr(&o).contains("(owned by root)"), "{}", stderr(&o));
    assert!(spec_text(&env, "dev").contains("allow_root: true"));
    // The flag alone does nothing without a share to apply to.
    let o = create(&env, "other", &["--allow-root-share"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Rewrites the machine's spec with `edit` applied to its text.
fn edit_spec(env: &Env, name: &str, edit: impl Fn(&str) -> String) {
    let p = env.machine_dir(name).join("machine.yaml");
    let t = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, edit(&t)).unwrap();
}

#[test]
fn a_spec_edited_into_nested_or_state_shares_is_refused_on_every_read() {
    let env = Env::new();
    let outer = user_dir(&env, "work");
    let inner = user_dir(&env, "work/data");
    let other = user_dir(&env, "other");
    let o = create(
        &env,
        "dev",
        &[
            "--share",
            &format!("{}:/a", outer.display()),
            "--share",
            &format!("{}:/b", other.display()),
        ],
    );
    succeeds(&o);
    let other_text = other.display().to_string();
    let inner_text = inner.display().to_string();
    edit_spec(&env, "dev", |t| t.replace(&other_text, &inner_text));
    fails_with(&env.run(&["inspect", "dev"]), "overlap");
    // `start` too; in a namespace of its own all the same: should the check ever be missed,
    // the start would go on to make the machine's TAP device and routes.
    if let Some(why) = start_prerequisite() {
        if support::ci() {
            panic!("prerequisite missing under CI=true: {why}");
        }
        eprintln!("SKIPPED the start half of this test: {why}");
        return;
    }
    fails_with(&start_isolated(&env, "dev"), "overlap");
}

/// `devbox start` in a network namespace of its own (see the module header).
fn start_isolated(env: &Env, name: &str) -> Output {
    let mut c = std::process::Command::new("unshare");
    c.args(["--net", "--"])
        .arg(support::guest::bin())
        .args(["start", name, "--timeout", "60"])
        .env("DEVBOX_HOME", &env.home)
        .env("DEVBOX_CACHE", &env.cache)
        .env("DOCKER_CONFIG", &env.docker_config)
        .env("NO_COLOR", "1");
    c.output().unwrap()
}

fn start_prerequisite() -> Option<String> {
    if !is_root() {
        return Some("needs root".into());
    }
    support::guest::missing_programs(&[
        ("unshare", "util-linux"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ])
}

#[test]
fn a_share_replaced_on_the_host_is_refused_at_start() {
    if let Some(why) = start_prerequisite() {
        if support::ci() {
            panic!("prerequisite missing under CI=true: {why}");
        }
        eprintln!("SKIPPED a_share_replaced_on_the_host_is_refused_at_start: {why}");
        return;
    }
    let env = Env::new();
    let data = user_dir(&env, "work/data");
    let outside = user_dir(&env, "outside");
    let o = create(
        &env,
        "dev",
        &["--share", &format!("{}:/data", data.display())],
    );
    succeeds(&o);
    let moved = data.with_file_name("data.old");
    std::fs::rename(&data, &moved).unwrap();

    // A symlink where the directory was: the share is not opened through it.
    std::os::unix::fs::symlink(&outside, &data).unwrap();
    let o = start_isolated(&env, "dev");
    fails_with(&o, "symlink");
    std::fs::remove_file(&data).unwrap();

    // Another directory at the same path: not the one shared at create.
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(USER), Some(USER)).unwrap();
    let o = start_isolated(&env, "dev");
    fails_with(&o, "not the directory that was shared");
    assert!(std::fs::metadata(&data).unwrap().ino() != std::fs::metadata(&moved).unwrap().ino());
    // A directory given to root since: refused without the opt-in.
    std::fs::remove_dir(&data).unwrap();
    std::fs::rename(&moved, &data).unwrap();
    std::os::unix::fs::chown(&data, Some(0), Some(0)).unwrap();
    let o = start_isolated(&env, "dev");
    fails_with(&o, "owned by root");
}

#[test]
fn a_share_edited_into_the_state_directory_is_refused_at_start() {
    if let Some(why) = start_prerequisite() {
        if support::ci() {
            panic!("prerequisite missing under CI=true: {why}");
        }
        eprintln!("SKIPPED a_share_edited_into_the_state_directory_is_refused_at_start: {why}");
        return;
    }
    let env = Env::new();
    let dir = user_dir(&env, "proj");
    let o = create(&env, "dev", &["--share", &format!("{}:/p", dir.display())]);
    succeeds(&o);
    let home = env.home.canonicalize().unwrap();
    let inside = home.join("machines");
    edit_spec(&env, "dev", |t| {
        t.replace(&dir.display().to_string(), &inside.display().to_string())
    });
    let o = start_isolated(&env, "dev");
    fails_with(&o, "is devbox's own state directory");
    assert!(Path::new(&inside).is_dir());
}
