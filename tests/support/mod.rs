//! Helpers shared by the integration tests: golden files, a network namespace per test, and
//! the trials of the test binaries that may not be able to run on every host (`trials`).
//! Each test crate uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod cli;
pub mod guest;
pub mod sshd;
pub mod trials;

/// Compares `actual` with `tests/golden/<dir>/<name>` (`dir` may be empty).
/// `UPDATE_GOLDEN=1` rewrites the file instead; review the diff before committing it.
#[track_caller]
pub fn golden(dir: &str, name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(dir)
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("golden files live in a directory")).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        want,
        "{} differs from the rendered output",
        path.display()
    );
}

/// A copy of the devbox binary that any user can run, for the tests that run devbox as
/// another user (`nobody`, the users a test creates). The build's own path may be under a
/// directory only root can enter (a clone made in `mktemp -d`, mode 0700), and those tests
/// must not depend on where the tree was cloned. One copy per test process, in a 0755
/// directory of the temp dir; copies left by earlier test processes that have exited are
/// removed first.
#[cfg(unix)]
pub fn bin_for_any_user() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::OnceLock;
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let tmp = std::env::temp_dir();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("devbox-bin-")) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = tmp.join(format!("devbox-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("devbox");
        std::fs::copy(env!("CARGO_BIN_EXE_devbox"), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    })
    .clone()
}

/// Whether a missing prerequisite must fail the test (`CI=true`) rather than skip it.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Runs `f` on a thread inside a fresh network namespace (`unshare(CLONE_NEWNET)` on that
/// thread only, so the host's interfaces and routes are never touched; the namespace goes
/// when the thread ends). Needs root: a trial that calls it requires [`trials::root`].
#[cfg(target_os = "linux")]
pub fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use nix::sched::{CloneFlags, unshare};
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            f()
        });
        match worker.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
