//! The walking skeleton: create refuses what it must, the machine boots, SSH and the host's
//! docker CLI reach it, its console has the boot's markers.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::MACHINE;
use crate::harness::Harness;
use crate::machine::Machine;
use crate::support::guest::text;

/// A subnet that collides with a route the host already has is refused, naming it, and
/// nothing is created or changed.
pub fn create_refuses_a_subnet_routed_elsewhere(h: &Harness) {
    let st = Command::new("ip")
        .args(["-n", &h.netns, "route", "add", "172.30.0.0/16", "dev", "lo"])
        .status()
        .unwrap();
    assert!(st.success());
    let c = h.devbox(&[
        "create",
        "clash",
        "--no-share",
        "--docker-subnet",
        "172.30.0.1/16",
    ]);
    assert_eq!(c.status.code(), Some(1), "{}", text(&c.stderr));
    for needle in ["172.30.0.0/16", "lo", "--docker-subnet"] {
        assert!(
            text(&c.stderr).contains(needle),
            "{needle}: {}",
            text(&c.stderr)
        );
    }
    assert!(
        h.routes().contains("172.30.0.0/16 dev lo"),
        "foreign route left untouched"
    );
    assert!(!h.home.join("machines/clash").exists());
}

pub fn start_boots_and_a_second_start_is_not_an_error(m: &Machine) {
    assert_eq!(m.status(), "Running");
    assert!(m.h.tap_exists());
    let again = m.devbox(&["start", MACHINE]);
    assert!(
        again.status.success(),
        "start of a running machine is not an error"
    );
    assert!(text(&again.stderr).contains("already running"));
}

pub fn ssh_runs_commands_with_their_exit_code(m: &Machine) {
    assert_eq!(m.ssh("uname -r").trim(), m.image.kernel_version);
    // The engine is the image's docker.io (Docker reports the upstream part of the package
    // version: 26.1.5+dfsg1 for 26.1.5+dfsg1-9+deb13u1+b1).
    let server = m.ssh("docker info --format '{{.ServerVersion}}'");
    let server = server.trim();
    assert!(
        server.len() > 1 && m.image.docker_package.starts_with(server),
        "docker info in the guest: {server:?}, image's docker.io {}",
        m.image.docker_package
    );
    let code = m.ssh_output("sh -c 'echo out; echo err >&2; exit 7'");
    assert_eq!(
        code.status.code(),
        Some(7),
        "remote exit code passed through"
    );
    assert_eq!(text(&code.stdout).trim(), "out");
    assert_eq!(text(&code.stderr).trim(), "err");
}

/// The console log (`devbox logs`) has the guest's first line and its readiness marker, and
/// no boot error.
pub fn console_has_the_boot_markers(m: &Machine) {
    // The guest prints its marker once it sees Docker answer; it polls, so it may come a
    // moment after devbox's own readiness check.
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = m.ok(&["logs", MACHINE]);
        if log.contains("devbox-guest: ready") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "console log has the readiness marker:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let lines: Vec<&str> = log.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(
        lines.contains(&"devbox-guest: init"),
        "the guest's first line is on the console:\n{log}"
    );
    let errors: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("devbox-guest: error"))
        .collect();
    assert!(errors.is_empty(), "boot errors: {errors:?}");

    // The boot's phases, from the guest's markers, in `devbox inspect` (issue #20).
    // Recorded from the console within moments of ready (its last marker may lag a little).
    let deadline = Instant::now() + Duration::from_secs(20);
    let inspect: serde_json::Value = loop {
        let v: serde_json::Value = serde_json::from_str(&m.ok(&["inspect", MACHINE])).unwrap();
        let last = v["runtime"]["boot"]["phases"]
            .as_array()
            .and_then(|p| p.last())
            .map(|p| p["name"] == "docker");
        if last == Some(true) || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let boot = &inspect["runtime"]["boot"];
    let names: Vec<&str> = boot["phases"]
        .as_array()
        .unwrap_or_else(|| panic!("runtime.boot.phases: {inspect}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "root",
            "init",
            "drivers",
            "disk",
            "network",
            "sshd",
            "shares",
            "containerd",
            "docker"
        ],
        "{boot}"
    );
    let times: Vec<f64> = boot["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["guest_s"].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{boot}");
    let ready = boot["ready_after_s"].as_f64().unwrap();
    assert!(
        // A second for the two clocks (the host's, the guest's uptime).
        ready + 1.0 >= times[times.len() - 1] && ready < 600.0,
        "ready on the host after the guest's last phase: {boot}"
    );
    eprintln!("[e2e] boot phases: {boot}");
}

/// The host's docker CLI through the forwarded socket: a registry-less image, a container.
pub fn host_docker_cli_through_the_forwarded_socket(m: &Machine) {
    let info = m.docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        info.status.success(),
        "docker info via DOCKER_HOST: {}",
        text(&info.stderr)
    );
    m.busybox_image();
    let run = m.docker(&[
        "run",
        "--rm",
        "bb:e2e",
        "/bin/echo",
        "hello from a container",
    ]);
    assert!(run.status.success(), "docker run: {}", text(&run.stderr));
    assert_eq!(text(&run.stdout).trim(), "hello from a container");
}
