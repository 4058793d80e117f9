//! `devbox start NAME`: spawn the machine's supervisor detached and wait until it reports the
//! machine ready (SSH answers and `docker info` works), showing its progress.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::CommandError;
use crate::cli::StartArgs;
use crate::machine::lock::lock_machine;
use crate::machine::state::{StateFile, observe, read_state_file};
use crate::machine::{MachineDir, MachineState, Store};
use crate::{hypervisor, image, net, output};

pub fn run(store: &Store, a: &StartArgs) -> Result<i32> {
    let dir = store.existing(&a.name)?;
    let spec = dir.load_spec()?;
    let _lock = lock_machine(&dir)?;

    let observed = observe(&dir)?;
    match observed.state {
        MachineState::Running => {
            output::info(format!("Machine {} is already running.", a.name));
            return Ok(0);
        }
        MachineState::Starting | MachineState::Stopping => {
            return Err(crate::machine::lock::LockError::Busy {
                name: a.name.clone(),
            }
            .into());
        }
        MachineState::Crashed => {
            output::warn(format!(
                "machine {} was left running by a supervisor that died; cleaning up",
                a.name
            ));
            cleanup_stale(&dir);
        }
        MachineState::Stopped | MachineState::Failed => {}
    }

    // Everything that can be checked before spawning is checked here, so the error comes
    // straight back to the user with nothing created.
    image::find(&store.cache, Some(&spec.image))?;
    hypervisor::for_driver(spec.driver)?.preflight()?;
    if !net::have_net_admin() {
        return Err(net::NetError::NoPrivilege {
            what: format!("creating the network device for machine {}", a.name),
        }
        .into());
    }

    spawn_supervisor(store, &dir, a.timeout)?;
    wait_ready(&dir, Duration::from_secs(a.timeout + 10))
}

/// Files a dead supervisor left behind.
pub fn cleanup_stale(dir: &MachineDir) {
    for p in [
        dir.docker_socket_path(),
        dir.control_socket_path(),
        dir.qmp_socket_path(),
        dir.pid_path(),
    ] {
        let _ = std::fs::remove_file(p);
    }
}

fn spawn_supervisor(store: &Store, dir: &MachineDir, timeout: u64) -> Result<()> {
    let exe = std::env::current_exe().context("finding the devbox executable")?;
    let log = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.supervisor_log_path())?;
    let log2 = log.try_clone()?;
    // A state file from an earlier run must not be mistaken for this one's.
    let _ = std::fs::remove_file(dir.state_path());
    Command::new(exe)
        .arg("__supervise")
        .arg(&dir.name)
        .arg("--timeout")
        .arg(timeout.to_string())
        .env("DEVBOX_HOME", &store.home)
        .env("DEVBOX_CACHE", &store.cache)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.into_parts().0))
        .stderr(Stdio::from(log2.into_parts().0))
        // Its own process group: a Ctrl-C at the terminal must not reach the supervisor.
        .process_group(0)
        .spawn()
        .context("spawning the machine supervisor")?;
    Ok(())
}

fn wait_ready(dir: &MachineDir, limit: Duration) -> Result<i32> {
    let started = Instant::now();
    let mut progress = output::Progress::new(&format!("Starting {}", dir.name));
    // The supervisor needs a moment to take its lock and write its first state.
    let mut seen_alive = false;
    loop {
        let obs = observe(dir)?;
        if let Some(f) = &obs.file {
            progress.set(&format!("Starting {}: {}", dir.name, f.step));
        }
        match obs.state {
            MachineState::Running => {
                let f = obs.file.expect("running has a state file");
                progress.finish(&format!(
                    "Machine {} is running ({}, {:.1} s). Try: devbox ssh {} -- docker info",
                    dir.name,
                    f.accel.as_deref().unwrap_or("?"),
                    started.elapsed().as_secs_f64(),
                    dir.name
                ));
                return Ok(0);
            }
            MachineState::Starting | MachineState::Stopping => seen_alive = true,
            MachineState::Failed | MachineState::Stopped | MachineState::Crashed
                if seen_alive || obs.file.is_some() =>
            {
                progress.abandon();
                return Err(not_ready(dir, failure(&dir.name, read_state_file(dir)?)));
            }
            _ => {}
        }
        if started.elapsed() > limit || (!seen_alive && started.elapsed() > Duration::from_secs(10))
        {
            progress.abandon();
            let _ = crate::supervisor::control::request(
                &dir.control_socket_path(),
                &crate::supervisor::control::Request::Stop { force: true },
            );
            return Err(not_ready(
                dir,
                CommandError::NotReady {
                    name: dir.name.clone(),
                    reason: format!("timed out after {} s", limit.as_secs()),
                    fix: None,
                },
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Why a start failed, as the supervisor recorded it: its error, and its hint (such as the
/// `codesign` command for a binary without the virtualization entitlement on macOS), which
/// would otherwise stay in `state.json`: the supervisor runs detached.
fn failure(name: &str, file: Option<StateFile>) -> CommandError {
    let (reason, fix) = match file {
        Some(f) => (f.error, f.hint),
        None => (None, None),
    };
    CommandError::NotReady {
        name: name.to_owned(),
        reason: reason.unwrap_or_else(|| "the supervisor exited".into()),
        fix,
    }
}

/// Shows the ends of the console and supervisor logs, then returns `failure`.
fn not_ready(dir: &MachineDir, failure: CommandError) -> anyhow::Error {
    let tail = console_tail(dir, 25);
    if !tail.is_empty() {
        output::info(format!(
            "Last lines of the console ({}):",
            dir.serial_log_path().display()
        ));
        output::info(&tail);
    }
    let sup = console_tail_of(&dir.supervisor_log_path(), 5);
    if !sup.is_empty() {
        output::info(format!(
            "Last lines of {}:",
            dir.supervisor_log_path().display()
        ));
        output::info(&sup);
    }
    failure.into()
}

pub fn console_tail(dir: &MachineDir, n: usize) -> String {
    console_tail_of(&dir.serial_log_path(), n)
}

fn console_tail_of(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::HypervisorError;
    use crate::hypervisor::vz_plan::VzError;
    use crate::machine::state::Phase;

    fn failed(error: &str, hint: Option<String>) -> StateFile {
        StateFile {
            phase: Phase::Failed,
            step: "failed".into(),
            supervisor_pid: 1,
            vm_pid: None,
            accel: Some("vz".into()),
            accel_reason: None,
            started: String::new(),
            ready: None,
            error: Some(error.into()),
            disk: None,
            guest_ip: None,
            hint,
        }
    }

    /// The path a macOS binary without the entitlement takes: the driver's typed error in the
    /// supervisor, its hint recorded in state.json, and `devbox start` showing exactly that.
    #[test]
    fn the_supervisors_codesign_hint_reaches_the_user() {
        let binary = std::path::PathBuf::from("/Users/me/.cargo/bin/devbox");
        let err = anyhow::Error::new(HypervisorError::Vz(VzError::MissingEntitlement {
            binary: binary.clone(),
        }))
        .context("booting the machine");
        let hint = crate::commands::hint(&err);
        let file = failed(&format!("{err:#}"), hint);
        // state.json round trip, as between the two processes.
        let file: StateFile = serde_json::from_slice(&serde_json::to_vec(&file).unwrap()).unwrap();
        let e = failure("dev", Some(file));
        assert!(
            e.to_string()
                .contains("is not signed with the com.apple.security.virtualization"),
            "{e}"
        );
        assert_eq!(
            e.hint().unwrap(),
            "sign the binary with the entitlement (from devbox's source tree): codesign --force \
             --sign - --entitlements assets/macos/devbox.entitlements \
             '/Users/me/.cargo/bin/devbox'"
        );
    }

    #[test]
    fn without_a_known_fix_the_logs_are_the_hint() {
        let e = failure(
            "dev",
            Some(failed("the guest ended before it was ready", None)),
        );
        assert!(
            e.hint()
                .unwrap()
                .starts_with("the whole console log: devbox logs dev")
        );
        let e = failure("dev", None);
        assert_eq!(
            e.to_string(),
            "machine \"dev\" did not become ready: the supervisor exited"
        );
    }
}
