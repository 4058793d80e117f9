//! `devbox start NAME`: spawn the machine's supervisor detached and wait until it reports the
//! machine ready (SSH answers and `docker info` works), showing its progress.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::CommandError;
use crate::cli::StartArgs;
use crate::machine::lock::lock_machine;
use crate::machine::state::{observe, read_state_file};
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
                let reason = read_state_file(dir)?
                    .and_then(|f| f.error)
                    .unwrap_or_else(|| "the supervisor exited".into());
                return Err(not_ready(dir, reason));
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
                format!("timed out after {} s", limit.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn not_ready(dir: &MachineDir, reason: String) -> anyhow::Error {
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
    CommandError::NotReady {
        name: dir.name.clone(),
        reason,
    }
    .into()
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
