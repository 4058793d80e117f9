//! Tier 2: `devbox disk` against a temporary DEVBOX_HOME, no guest: resize refusals and a
//! successful grow, `disk usage` of a stopped machine, and the fullness warning of `status`
//! and `ls` from what a supervisor recorded.

use std::os::unix::fs::MetadataExt;

mod support;
use support::cli::{Env, fails_with, stderr, stdout, succeeds};

impl Env {
    /// A stopped 2G machine.
    fn create(&self, name: &str) {
        succeeds(&self.create_small(&["--no-share"], name));
    }

    fn disk_bytes_in_spec(&self, name: &str) -> u64 {
        let text = std::fs::read_to_string(self.machine_dir(name).join("machine.yaml")).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("disk_bytes:"))
            .expect("disk_bytes in machine.yaml");
        line["disk_bytes:".len()..].trim().parse().unwrap()
    }

    /// What a supervisor writes: `phase` and, optionally, its last disk measurement.
    fn write_state(&self, name: &str, phase: &str, disk: Option<serde_json::Value>) {
        let mut state = serde_json::json!({
            "phase": phase, "step": phase, "supervisor_pid": std::process::id(), "vm_pid": null,
            "accel": "tcg", "accel_reason": "x", "started": "2026-11-21T00:00:00Z",
            "ready": null, "error": null
        });
        if let Some(d) = disk {
            state["disk"] = d;
        }
        std::fs::write(self.machine_dir(name).join("state.json"), state.to_string()).unwrap();
    }
}

const GIB: u64 = 1 << 30;

fn disk_len(env: &Env, name: &str) -> u64 {
    std::fs::metadata(env.machine_dir(name).join("disk.raw"))
        .unwrap()
        .len()
}

#[test]
fn shrinking_is_refused_with_the_reason() {
    let env = Env::new();
    env.create("m");
    let o = env.run(&["disk", "resize", "m", "1G"]);
    fails_with(&o, "cannot shrink machine \"m\"'s disk from 2G to 1G");
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--disk-size"), "{}", stderr(&o));
    assert_eq!(disk_len(&env, "m"), 2 * GIB);
    assert_eq!(env.disk_bytes_in_spec("m"), 2 * GIB);
}

#[test]
fn a_size_that_is_not_a_size_is_refused() {
    let env = Env::new();
    env.create("m");
    for bad in ["big", "4Q", "1.2.3G", ""] {
        let o = env.run(&["disk", "resize", "m", bad]);
        fails_with(&o, "invalid size");
    }
    assert_eq!(disk_len(&env, "m"), 2 * GIB);
}

#[test]
fn resizing_a_running_machine_is_refused() {
    let env = Env::new();
    env.create("m");
    env.write_state("m", "running", None);
    // Hold the supervisor lock as a live supervisor would.
    let f = std::fs::File::create(env.machine_dir("m").join("supervisor.lock")).unwrap();
    let _held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let o = env.run(&["disk", "resize", "m", "4G"]);
    fails_with(&o, "machine \"m\" is running");
    assert!(stderr(&o).contains("devbox stop m"), "{}", stderr(&o));
    assert_eq!(disk_len(&env, "m"), 2 * GIB);
    assert_eq!(env.disk_bytes_in_spec("m"), 2 * GIB);
}

#[test]
fn growing_a_stopped_machine_keeps_the_file_sparse_and_updates_the_spec() {
    let env = Env::new();
    env.create("m");
    let o = env.run(&["disk", "resize", "m", "4G"]);
    succeeds(&o);
    assert!(stderr(&o).contains("from 2G to 4G"), "{}", stderr(&o));
    let meta = std::fs::metadata(env.machine_dir("m").join("disk.raw")).unwrap();
    assert_eq!(meta.len(), 4 * GIB);
    assert!(meta.blocks() * 512 < 1 << 20, "still sparse");
    assert_eq!(env.disk_bytes_in_spec("m"), 4 * GIB);
    // `ls` shows the new size; the same size again is not an error.
    assert!(stdout(&env.run(&["ls"])).contains("4G"));
    let again = env.run(&["disk", "resize", "m", "4G"]);
    succeeds(&again);
    assert!(stderr(&again).contains("already 4G"), "{}", stderr(&again));
    // No temp file left next to machine.yaml.
    let leftovers: Vec<_> = std::fs::read_dir(env.machine_dir("m"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn usage_of_a_stopped_machine_reports_the_host_file() {
    let env = Env::new();
    env.create("m");
    let o = env.run(&["disk", "usage", "m"]);
    succeeds(&o);
    let out = stdout(&o);
    assert!(out.contains("not measured (machine stopped)"), "{out}");
    assert!(out.contains("2G apparent"), "{out}");
    assert!(out.contains("reclaim: available"), "{out}");
    let j: serde_json::Value =
        serde_json::from_slice(&env.run(&["disk", "usage", "m", "--json"]).stdout).unwrap();
    assert_eq!(j["host"]["apparent_bytes"], 2 * GIB);
    assert!(j["host"]["allocated_bytes"].as_u64().unwrap() < 1 << 20);
    assert_eq!(j["reclaim"], "available");
    assert!(j["guest"].is_null());
}

#[test]
fn status_and_ls_warn_from_80_percent() {
    let env = Env::new();
    env.create("m");
    let sample = |pct: u8| {
        serde_json::json!({
            "size_bytes": 2 * GIB, "used_bytes": (u64::from(pct) * 20) << 20,
            "avail_bytes": (u64::from(100 - pct) * 20) << 20, "used_pct": pct,
            "reserve_held": true, "measured": "2026-11-21T00:00:00Z"
        })
    };
    env.write_state("m", "stopped", Some(sample(79)));
    let st = env.run(&["status", "m"]);
    assert_eq!(st.status.code(), Some(3), "stopped: {}", stderr(&st));
    assert!(!stderr(&st).contains("warning"), "{}", stderr(&st));

    env.write_state("m", "stopped", Some(sample(91)));
    let st = env.run(&["status", "m"]);
    assert_eq!(st.status.code(), Some(3), "stopped: {}", stderr(&st));
    assert_eq!(stdout(&st).trim(), "Stopped");
    assert!(
        stderr(&st)
            .contains("warning: machine m: the guest filesystem (/var/lib/docker) is 91% full"),
        "{}",
        stderr(&st)
    );
    let ls = env.run(&["ls"]);
    succeeds(&ls);
    assert!(stderr(&ls).contains("91% full"), "{}", stderr(&ls));
    let j: serde_json::Value = serde_json::from_slice(&env.run(&["ls", "--json"]).stdout).unwrap();
    assert_eq!(j["machines"][0]["disk_used_pct"], 91);
    // The recorded figure comes back in `disk usage` of the stopped machine.
    let u = stdout(&env.run(&["disk", "usage", "m"]));
    assert!(u.contains("91% full") && u.contains("last measured"), "{u}");
}
