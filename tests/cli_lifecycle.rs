//! Tier 2: a machine's whole life through the real binary and the fake driver (no root, no
//! guest, no TAP): `start` spawns a real supervisor, which takes its lock, writes its pid and
//! state, starts its DNS server on loopback, serves its control socket and follows the fake
//! guest's readiness; `stop` powers the guest off through the supervisor; a guest that
//! crashes while it boots, a supervisor killed with SIGKILL and two `start`s at once each end
//! the way a user relies on.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

mod support;
use support::cli::{Env, fails_with, stderr, stdout, succeeds};

fn create(env: &Env, name: &str) {
    succeeds(&env.create_fake(name));
}

/// `devbox ARGS` with the fake guest behaving as `guest` says (see src/hypervisor/fake.rs).
fn run_with(env: &Env, guest: &str, args: &[&str]) -> Output {
    env.cmd()
        .args(args)
        .env("DEVBOX_FAKE_GUEST", guest)
        // No query is ever sent: the fake machine's DNS server only needs an upstream to start.
        .env("DEVBOX_DNS_UPSTREAMS", "127.0.0.1:53")
        .output()
        .unwrap()
}

fn status(env: &Env, name: &str) -> String {
    stdout(&env.run(&["status", name])).trim().to_owned()
}

fn state_json(env: &Env, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(env.machine_dir(name).join("state.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn supervisor_log(env: &Env, name: &str) -> String {
    std::fs::read_to_string(env.machine_dir(name).join("supervisor.log")).unwrap_or_default()
}

/// Waits (generously) for `done`.
#[track_caller]
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn runtime_files(env: &Env, name: &str) -> Vec<PathBuf> {
    ["control.sock", "supervisor.pid", "dns.json", "docker.sock"]
        .iter()
        .map(|f| env.machine_dir(name).join(f))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn start_stop_and_restart_run_the_supervisor_for_real() {
    let env = Env::new();
    create(&env, "m");
    assert_eq!(status(&env, "m"), "Stopped");

    let o = run_with(&env, "ready", &["start", "m"]);
    succeeds(&o);
    assert!(
        stderr(&o).contains("Machine m is running (fake,"),
        "{}",
        stderr(&o)
    );
    assert_eq!(status(&env, "m"), "Running");
    let st = state_json(&env, "m");
    assert_eq!(st["phase"], "running");
    assert_eq!(st["accel"], "fake");
    let pid = st["supervisor_pid"].as_u64().unwrap();
    assert_eq!(
        std::fs::read_to_string(env.machine_dir("m").join("supervisor.pid"))
            .unwrap()
            .trim(),
        pid.to_string()
    );
    // The supervisor's parts are up: its control socket answers, its DNS server's state is
    // recorded for `devbox dns install`, and the config drive was written for the boot.
    assert!(env.machine_dir("m").join("control.sock").exists());
    assert!(env.machine_dir("m").join("config.tar").exists());
    let dns: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.machine_dir("m").join("dns.json")).unwrap(),
    )
    .unwrap();
    assert!(
        dns["server"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{dns}"
    );
    assert_eq!(dns["domains"][0], "m.dev");
    let ls = stdout(&env.run(&["ls"]));
    assert!(ls.contains("Running") && ls.contains("fake"), "{ls}");
    // Starting a running machine is not an error.
    let again = run_with(&env, "ready", &["start", "m"]);
    succeeds(&again);
    assert!(
        stderr(&again).contains("already running"),
        "{}",
        stderr(&again)
    );
    // `rm` refuses a running machine.
    fails_with(&env.run(&["rm", "m"]), "is running");

    let o = env.run(&["stop", "m"]);
    succeeds(&o);
    assert!(stderr(&o).contains("Machine m stopped."), "{}", stderr(&o));
    assert_eq!(status(&env, "m"), "Stopped");
    let st = state_json(&env, "m");
    assert_eq!(st["phase"], "stopped");
    assert_eq!(st["error"], "the guest powered off");
    assert_eq!(runtime_files(&env, "m"), Vec::<PathBuf>::new());
    let log = supervisor_log(&env, "m");
    for line in [
        "pressing the power button",
        "stopping the resolver settings",
        "stopping the DNS server",
        "machine stopped: the guest powered off",
    ] {
        assert!(log.contains(line), "{line:?} not in the log:\n{log}");
    }

    // restart = stop (already stopped: fine) + start; then restart a running machine.
    succeeds(&run_with(&env, "ready", &["restart", "m"]));
    assert_eq!(status(&env, "m"), "Running");
    let first = state_json(&env, "m")["supervisor_pid"].as_u64().unwrap();
    succeeds(&run_with(&env, "ready", &["restart", "m"]));
    assert_eq!(status(&env, "m"), "Running");
    let second = state_json(&env, "m")["supervisor_pid"].as_u64().unwrap();
    assert_ne!(first, second, "restart runs a new supervisor");

    // --force kills the guest instead of powering it off.
    let o = env.run(&["stop", "--force", "m"]);
    succeeds(&o);
    assert_eq!(status(&env, "m"), "Stopped");
    assert_eq!(state_json(&env, "m")["error"], "the guest was killed");
    succeeds(&env.run(&["rm", "-y", "m"]));
}

#[test]
fn a_guest_that_crashes_during_boot_fails_the_start_with_its_console() {
    let env = Env::new();
    create(&env, "m");
    let o = run_with(&env, "crash", &["start", "m"]);
    fails_with(
        &o,
        "machine \"m\" did not become ready: the guest ended before it was ready: the fake \
         guest crashed during boot",
    );
    let err = stderr(&o);
    assert!(
        err.contains("kernel panic during boot"),
        "the console's end is shown: {err}"
    );
    assert!(
        err.contains("hint: the whole console log: devbox logs m"),
        "{err}"
    );
    assert_eq!(status(&env, "m"), "Failed");
    let st = env.run(&["status", "m"]);
    assert!(stderr(&st).contains("last start failed"), "{}", stderr(&st));
    assert_eq!(runtime_files(&env, "m"), Vec::<PathBuf>::new());
    // The next start works.
    succeeds(&run_with(&env, "ready", &["start", "m"]));
    succeeds(&env.run(&["stop", "m"]));
}

/// A kernel panic before ready (rare under QEMU's TCG, at about 1 s into a boot) costs one
/// more boot, logged, with the panicked boot's console kept; a second panic fails the start.
#[test]
fn a_kernel_panic_while_booting_gets_one_more_boot() {
    let env = Env::new();
    create(&env, "m");
    let o = run_with(&env, "panic-once", &["start", "m"]);
    succeeds(&o);
    assert_eq!(status(&env, "m"), "Running");
    let log = supervisor_log(&env, "m");
    assert!(
        log.contains("the guest's kernel panicked while booting")
            && log.contains("booting it once more"),
        "{log}"
    );
    let first = std::fs::read_to_string(env.machine_dir("m").join("serial.log.1")).unwrap();
    assert!(first.contains("Kernel panic - not syncing"), "{first}");
    let now = std::fs::read_to_string(env.machine_dir("m").join("serial.log")).unwrap();
    assert!(!now.contains("Kernel panic"), "{now}");
    succeeds(&env.run(&["stop", "m"]));

    let o = run_with(&env, "panic", &["start", "m"]);
    // The console watcher or the guest's end, whichever the supervisor sees first.
    fails_with(&o, "its kernel panicked at both boots");
    assert_eq!(
        supervisor_log(&env, "m")
            .matches("booting it once more")
            .count(),
        2,
        "one more boot per start, not more"
    );
    assert_eq!(status(&env, "m"), "Failed");
    assert_eq!(runtime_files(&env, "m"), Vec::<PathBuf>::new());
}

#[test]
fn a_guest_that_never_gets_ready_is_ended_at_the_deadline() {
    let env = Env::new();
    create(&env, "m");
    let o = run_with(&env, "hang", &["start", "m", "--timeout", "2"]);
    fails_with(
        &o,
        "did not become ready: the machine did not become ready: the guest did not report \
         ready in time",
    );
    assert_eq!(status(&env, "m"), "Failed");
    assert_eq!(runtime_files(&env, "m"), Vec::<PathBuf>::new());
}

#[test]
fn a_guest_that_says_it_cannot_get_ready_fails_start_at_once_with_its_reason() {
    let env = Env::new();
    create(&env, "m");
    let started = std::time::Instant::now();
    // A deadline far beyond the test's patience: only the guest's marker can end it early.
    let o = run_with(&env, "fatal", &["start", "m", "--timeout", "600"]);
    fails_with(
        &o,
        "the guest stopped booting: dockerd exited (see /var/log/docker.log)",
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "start ended at the marker, not at its 600 s deadline ({:?})",
        started.elapsed()
    );
    let err = stderr(&o);
    assert!(
        err.contains("devbox-guest: error: cannot mount the data disk"),
        "the console's end is shown: {err}"
    );
    assert_eq!(status(&env, "m"), "Failed");
    assert_eq!(runtime_files(&env, "m"), Vec::<PathBuf>::new());
    succeeds(&run_with(&env, "ready", &["start", "m"]));
    succeeds(&env.run(&["stop", "m"]));
}

#[test]
fn a_supervisor_killed_with_sigkill_is_crashed_and_start_recovers() {
    let env = Env::new();
    create(&env, "m");
    succeeds(&run_with(&env, "ready", &["start", "m"]));
    let pid = state_json(&env, "m")["supervisor_pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the supervisor's lock to be freed", || {
        status(&env, "m") == "Crashed"
    });
    let st = env.run(&["status", "m"]);
    assert!(
        stderr(&st).contains("died without stopping the machine"),
        "{}",
        stderr(&st)
    );
    assert!(stdout(&env.run(&["ls"])).contains("Crashed"));
    fails_with(&env.run(&["ssh", "m", "--", "true"]), "is not running");
    // What the dead supervisor left is still there, until `start` cleans it up.
    assert!(env.machine_dir("m").join("supervisor.pid").exists());

    let o = run_with(&env, "ready", &["start", "m"]);
    succeeds(&o);
    assert!(
        stderr(&o).contains("was left running by a supervisor that died; cleaning up"),
        "{}",
        stderr(&o)
    );
    assert_eq!(status(&env, "m"), "Running");
    assert_ne!(
        state_json(&env, "m")["supervisor_pid"].as_u64().unwrap() as i32,
        pid
    );
    succeeds(&env.run(&["stop", "m"]));
    assert_eq!(status(&env, "m"), "Stopped");
}

#[test]
fn two_starts_at_once_run_one_supervisor() {
    let env = Env::new();
    create(&env, "m");
    let start = || {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("devbox"));
        c.args(["start", "m"])
            .env("DEVBOX_HOME", &env.home)
            .env("DEVBOX_CACHE", &env.cache)
            .env("DEVBOX_REGISTRY", &env.registry)
            .env("DOCKER_CONFIG", &env.docker_config)
            .env("NO_COLOR", "1")
            .env("DEVBOX_FAKE_GUEST", "ready")
            .env("DEVBOX_FAKE_BOOT_MS", "1000")
            .env("DEVBOX_DNS_UPSTREAMS", "127.0.0.1:53")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (start(), start());
    let outputs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let ok = outputs.iter().filter(|o| o.status.success()).count();
    assert!(ok >= 1, "neither start succeeded: {outputs:?}");
    for o in &outputs {
        let err = stderr(o);
        assert!(
            err.contains("Machine m is running")
                || err.contains("already running")
                || (o.status.code() == Some(1)
                    && err.contains("another devbox command is working on machine \"m\"")),
            "unexpected outcome: {err}"
        );
    }
    assert_eq!(status(&env, "m"), "Running");
    let log = supervisor_log(&env, "m");
    assert_eq!(
        log.matches(" for machine m").count(),
        1,
        "one supervisor ran:\n{log}"
    );
    succeeds(&env.run(&["stop", "m"]));
}
