//! Test binaries whose tests may not be able to run on every host. They have `harness = false`
//! in Cargo.toml and run on libtest-mimic, whose trials can decide at run time that they
//! cannot run here: such a trial is reported `ignored, <why>` and counted as ignored, never as
//! passed (libtest's `#[test]` can only pass or fail once it runs).
//!
//! A binary lists its trials in `main`:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     trials::run(vec![
//!         trials::check("tap_is_removed_on_close", needs_root, tap_is_removed_on_close),
//!     ])
//! }
//! fn needs_root() -> Result<(), Missing> { ... }
//! fn tap_is_removed_on_close() { assert!(...) }   // panics on failure, like a #[test]
//! ```
//!
//! A `#[test]` function in such a binary is not compiled at all (no libtest), so it would
//! silently never run: `.ci/test` refuses one.
#![allow(dead_code)]

use std::fmt::Display;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use libtest_mimic::{Arguments, Completion, Failed, Trial};

use super::ci;

/// Why a trial cannot run on this host.
#[derive(Debug)]
pub enum Missing {
    /// Something CI has (root, a package `.ci/install-deps` installs): under `CI=true` its
    /// absence fails the trial; elsewhere the trial is not run.
    Prerequisite(String),
    /// Something this host cannot do at all, CI's included (hardware KVM under `kvm_pvm`): the
    /// trial is not run, under `CI=true` too.
    Unsupported(String),
}

/// Always met.
pub fn nothing() -> Result<(), Missing> {
    Ok(())
}

/// Root, which network namespaces and TAP devices need.
pub fn root() -> Result<(), Missing> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Missing::Prerequisite(
            "needs root (network namespaces, TAP devices): run as root, e.g. sudo bash .ci/test"
                .into(),
        ))
    }
}

/// The outcome of a trial that cannot run: ignored with the reason, or a failure under
/// `CI=true` when CI must be able to run it.
pub fn not_run(missing: Missing) -> Result<Completion, Failed> {
    match missing {
        Missing::Prerequisite(why) if ci() => Err(Failed::from(format!(
            "{why} (CI=true: a missing prerequisite is a failure)"
        ))),
        Missing::Prerequisite(why) | Missing::Unsupported(why) => Ok(Completion::ignored_with(why)),
    }
}

/// A trial: `body` runs when `requires` is met and fails by panicking, as a `#[test]` does.
pub fn check(
    name: &str,
    requires: impl FnOnce() -> Result<(), Missing> + Send + 'static,
    body: impl FnOnce() + Send + 'static,
) -> Trial {
    let owned = name.to_owned();
    Trial::ignorable_test(name, move || {
        if let Err(missing) = requires() {
            return not_run(missing);
        }
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        record(&owned, t.elapsed());
        match outcome {
            Ok(()) => Ok(Completion::Completed),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Durations of the trials that ran, in the order they finished.
static DURATIONS: Mutex<Vec<(String, Duration)>> = Mutex::new(Vec::new());

pub fn record(name: &str, took: Duration) {
    DURATIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((name.to_owned(), took));
}

/// Runs the trials with the command line's arguments (filters, `--list`, `--test-threads`,
/// `--ignored`...), then prints how long each trial that ran took.
pub fn run(trials: Vec<Trial>) -> ExitCode {
    run_with(Arguments::from_args(), trials)
}

pub fn run_with(args: Arguments, trials: Vec<Trial>) -> ExitCode {
    let listing = args.list;
    let conclusion = libtest_mimic::run(&args, trials);
    let durations = std::mem::take(&mut *DURATIONS.lock().unwrap_or_else(|e| e.into_inner()));
    if !listing && !durations.is_empty() {
        let width = durations.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut table = String::from("trial durations:\n");
        for (name, took) in &durations {
            table.push_str(&format!(
                "  {name:<width$}  {:>7.1} s\n",
                took.as_secs_f64()
            ));
        }
        // Straight to stderr, unbuffered, after libtest-mimic's summary.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), table.as_bytes());
    }
    conclusion.exit_code()
}

/// A reason naming the first of `programs` (program, Debian package) missing from PATH.
pub fn programs(programs: &[(&str, &str)]) -> Result<(), Missing> {
    match super::guest::missing_programs(programs) {
        Some(why) => Err(Missing::Prerequisite(why)),
        None => Ok(()),
    }
}

impl Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Prerequisite(why) | Missing::Unsupported(why) => f.write_str(why),
        }
    }
}
