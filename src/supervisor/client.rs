//! The CLI's side of the supervisor: everything a command needs from a machine's supervisor
//! goes through here, so no command reaches into the supervisor's internals.
//!
//! - [`preflight`], [`spawn`] and [`wait_ready`]: what `devbox start` does, in that order;
//!   progress comes back through a callback, so the caller decides how to show it.
//! - [`stop`]: a stop request over the control socket, waiting until the supervisor is gone
//!   (and killing it when it does not answer or takes too long).
//! - [`request`]: one control request ([`Request::Status`], [`Request::Stop`]).
//! - [`cleanup_stale`]: what a supervisor that died left behind.
//! - [`ssh_target`], [`require_running`], [`dns_state`]: reaching a running machine.
//! - [`console_tail`], [`supervisor_log_tail`]: the logs to show when a start failed.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub use super::control::{Reply, Request};
use crate::hint::Hint;
use crate::host::privileged;
use crate::machine::guest_net::guest_address;
use crate::machine::lock::supervisor_alive;
use crate::machine::state::{StateFile, observe, read_state_file};
use crate::machine::{Link, MachineDir, MachineSpec, MachineState, Observed, Store};
use crate::net::lease::{LeaseError, LeaseInfo, Registry, real_uid};
use crate::resolver::DnsState;
use crate::{hypervisor, image, ssh};

/// Longer than the supervisor's own graceful-stop limit, so it normally finishes first.
const STOP_LIMIT: Duration = Duration::from_secs(90);

/// Errors of a machine in the wrong state for a command, or of a supervisor that did not do
/// what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("machine {name:?} is not running (it is {state})")]
    NotRunning { name: String, state: String },
    #[error("machine {name:?} is running")]
    Running { name: String },
    #[error("machine {name:?} did not become ready: {reason}")]
    NotReady {
        name: String,
        reason: String,
        /// The supervisor's hint for `reason`, when it knows a fix.
        fix: Option<String>,
    },
    #[error("machine {name:?} did not stop within {seconds} s; its supervisor was killed")]
    StopTimeout { name: String, seconds: u64 },
    #[error(
        "machine {name:?} needs CAP_NET_ADMIN and CAP_NET_BIND_SERVICE for its network device \
         and DNS server, and its supervisor would not have them: {why}"
    )]
    NoNetPrivileges {
        name: String,
        why: String,
        exe: std::path::PathBuf,
    },
    #[error("machine {name:?} needs {TUN}, which you cannot open")]
    NoTun { name: String },
}

impl Hint for ClientError {
    fn hint(&self) -> Option<String> {
        match self {
            ClientError::NotRunning { name, .. } => Some(format!("start it: devbox start {name}")),
            ClientError::Running { name } => {
                Some(format!("stop it first (devbox stop {name}) or use --force"))
            }
            ClientError::NotReady { fix: Some(fix), .. } => Some(fix.clone()),
            ClientError::NotReady {
                name, fix: None, ..
            } => Some(format!(
                "the whole console log: devbox logs {name}; `devbox inspect {name}` names the supervisor's log"
            )),
            ClientError::StopTimeout { .. } => None,
            ClientError::NoNetPrivileges { exe, .. } => {
                let installed = std::path::Path::new(crate::host::INSTALLED_BINARY);
                if exe != installed && privileged::has_installed_caps(installed).unwrap_or(false) {
                    Some(format!(
                        "use the installed devbox, {}, which has them (this is {})",
                        installed.display(),
                        exe.display()
                    ))
                } else {
                    Some(
                        "set devbox up once with `sudo devbox system install`, then run \
                         /usr/local/bin/devbox as yourself"
                            .into(),
                    )
                }
            }
            ClientError::NoTun { .. } => match crate::host::install::tun_check(
                std::fs::metadata(TUN)
                    .ok()
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions())),
            ) {
                crate::host::install::Check::Fix { fix, .. } => Some(fix),
                _ => None,
            },
        }
    }
}

/// Sends one request to the machine's supervisor and reads its reply.
pub fn request(dir: &MachineDir, req: &Request) -> std::io::Result<Reply> {
    super::control::request(&dir.control_socket_path(), req)
}

/// Removes the files a dead supervisor left behind.
pub fn cleanup_stale(dir: &MachineDir) {
    dir.remove_runtime_files();
}

/// Everything that can be checked before spawning a supervisor, so the error comes straight
/// back to the user with nothing created: the image, the driver, the registry and the
/// machine's lease, and for a TAP link the privileges the supervisor will hold and access to
/// `/dev/net/tun`. Also makes the machine's files private (machines of earlier versions).
pub fn preflight(store: &Store, dir: &MachineDir, spec: &MachineSpec) -> Result<()> {
    if spec.remote.is_some() {
        // An adopted host: no image, no driver, no network device; its lease is its own.
        dir.make_private()?;
        let registry = Registry::system();
        registry.ensure()?;
        return claim_lease(&registry, dir, spec);
    }
    image::find(&store.cache, Some(&spec.image))?;
    let hv = hypervisor::for_driver(spec.driver)?;
    hv.preflight()?;
    dir.make_private()?;
    let registry = Registry::system();
    registry.ensure()?;
    claim_lease(&registry, dir, spec)?;
    if hv.capabilities().link == Link::Tap {
        let exe = std::env::current_exe().context("finding the devbox executable")?;
        if let Err(why) = privileged::supervisor_will_have_net_privileges(&exe) {
            return Err(ClientError::NoNetPrivileges {
                name: spec.name.clone(),
                why,
                exe,
            }
            .into());
        }
        let tun = std::path::Path::new(TUN);
        if nix::unistd::access(
            tun,
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        )
        .is_err()
        {
            return Err(ClientError::NoTun {
                name: spec.name.clone(),
            }
            .into());
        }
    }
    Ok(())
}

const TUN: &str = "/dev/net/tun";

/// The machine's lease: it must be the caller's. A machine created before the registry
/// existed has none; it takes its index's lease now if nobody holds it.
fn claim_lease(registry: &Registry, dir: &MachineDir, spec: &MachineSpec) -> Result<()> {
    let index = spec.network.index;
    match registry.owned(index) {
        Ok(_) => return Ok(()),
        Err(LeaseError::NotYours { .. }) if registry.list()?.iter().all(|l| l.index != index) => {}
        Err(e) => return Err(e.into()),
    }
    let info = LeaseInfo {
        uid: real_uid(),
        user: std::env::var("USER").unwrap_or_default(),
        machine: spec.name.clone(),
        dir: fs_err::canonicalize(&dir.path)?,
        docker: spec.docker.routed().to_vec(),
    };
    let _host = registry.lock()?;
    registry.take(index, &info)?;
    registry.owned(index)?;
    Ok(())
}

/// Spawns the machine's supervisor, detached, logging to `supervisor.log`.
pub fn spawn(store: &Store, dir: &MachineDir, ready_timeout_s: u64) -> Result<()> {
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
        .arg(ready_timeout_s.to_string())
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

/// A machine that became ready.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The acceleration the driver uses (`kvm`, `tcg`, `vz`, `fake`).
    pub accel: String,
    pub elapsed: Duration,
}

/// Follows a freshly spawned supervisor until its machine runs, reporting each step it
/// records through `on_step`. A supervisor that does not start, fails, or is not done within
/// `limit` is a [`ClientError::NotReady`] carrying the supervisor's reason and hint (a late
/// one is killed first).
pub fn wait_ready(
    dir: &MachineDir,
    limit: Duration,
    on_step: &mut dyn FnMut(&str),
) -> Result<Ready> {
    let started = Instant::now();
    // The supervisor needs a moment to take its lock and write its first state.
    let mut seen_alive = false;
    loop {
        let obs = observe(dir)?;
        if let Some(f) = &obs.file {
            on_step(&f.step);
        }
        match obs.state {
            MachineState::Running => {
                let f = obs.file.expect("running has a state file");
                return Ok(Ready {
                    accel: f.accel.unwrap_or_else(|| "?".into()),
                    elapsed: started.elapsed(),
                });
            }
            MachineState::Starting | MachineState::Stopping => seen_alive = true,
            MachineState::Failed | MachineState::Stopped | MachineState::Crashed
                if seen_alive || obs.file.is_some() =>
            {
                return Err(failure(&dir.name, read_state_file(dir)?).into());
            }
            _ => {}
        }
        if started.elapsed() > limit || (!seen_alive && started.elapsed() > Duration::from_secs(10))
        {
            let _ = request(dir, &Request::Stop { force: true });
            return Err(ClientError::NotReady {
                name: dir.name.clone(),
                reason: format!("timed out after {} s", limit.as_secs()),
                fix: None,
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Why a start failed, as the supervisor recorded it: its error, and its hint (such as the
/// `codesign` command for a binary without the virtualization entitlement on macOS), which
/// would otherwise stay in `state.json`: the supervisor runs detached.
fn failure(name: &str, file: Option<StateFile>) -> ClientError {
    let (reason, fix) = match file {
        Some(f) => (f.error, f.hint),
        None => (None, None),
    };
    ClientError::NotReady {
        name: name.to_owned(),
        reason: reason.unwrap_or_else(|| "the supervisor exited".into()),
        fix,
    }
}

/// How a stop went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The machine was not running.
    Already,
    /// Its supervisor had died; what it left was cleaned up.
    WasCrashed,
    /// The supervisor stopped the machine and exited.
    Now,
}

/// Stops a machine whose command lock the caller holds: asks its supervisor (a guest
/// poweroff, or a kill with `force`) and waits until the supervisor is gone. `on_start` runs
/// once a stop is under way; `on_warn` hears about a supervisor that did not answer.
pub fn stop(
    dir: &MachineDir,
    force: bool,
    on_start: &mut dyn FnMut(),
    on_warn: &mut dyn FnMut(String),
) -> Result<Stopped> {
    match observe(dir)?.state {
        MachineState::Stopped | MachineState::Failed => return Ok(Stopped::Already),
        MachineState::Crashed => {
            cleanup_stale(dir);
            return Ok(Stopped::WasCrashed);
        }
        _ => {}
    }
    on_start();
    if let Err(e) = request(dir, &Request::Stop { force }) {
        on_warn(format!("the supervisor did not answer ({e}); killing it"));
        kill_supervisor(dir);
    }
    let started = Instant::now();
    while supervisor_alive(dir)? {
        if started.elapsed() > STOP_LIMIT {
            kill_supervisor(dir);
            return Err(ClientError::StopTimeout {
                name: dir.name.clone(),
                seconds: STOP_LIMIT.as_secs(),
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Stopped::Now)
}

/// SIGKILL to the supervisor; its guest process dies with it (parent-death signal).
fn kill_supervisor(dir: &MachineDir) {
    let Some(pid) = observe(dir)
        .ok()
        .and_then(|o| o.file)
        .map(|f| f.supervisor_pid)
    else {
        return;
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while supervisor_alive(dir).unwrap_or(false) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    cleanup_stale(dir);
}

/// The machine's observed state, when it runs; [`ClientError::NotRunning`] otherwise.
pub fn require_running(dir: &MachineDir) -> Result<Observed> {
    let obs = observe(dir)?;
    if obs.state != MachineState::Running {
        return Err(ClientError::NotRunning {
            name: dir.name.clone(),
            state: obs.state.as_str().to_lowercase(),
        }
        .into());
    }
    Ok(obs)
}

/// The SSH target for a machine, at its current address ([`guest_address`]).
pub fn ssh_target(dir: &MachineDir, spec: &MachineSpec) -> Result<ssh::Target> {
    if let Some(r) = &spec.remote {
        return remote_target(dir, r);
    }
    let ip = guest_address(spec, &observe(dir)?)?;
    ssh_target_at(dir, ip)
}

/// The SSH target of a host adopted over SSH: its address, port, user and key from the spec,
/// its host key pinned at create.
pub fn remote_target(dir: &MachineDir, r: &crate::machine::RemoteSpec) -> Result<ssh::Target> {
    let host_key = fs_err::read_to_string(dir.host_pub_path())?;
    Ok(ssh::Target {
        addr: std::net::SocketAddr::new(r.address.into(), r.port),
        user: r.user.clone(),
        identity: r.identity.clone(),
        host_key: host_key.trim().to_owned(),
    })
}

/// The SSH target for a machine whose guest is at `ip`, with its pinned host key.
pub fn ssh_target_at(dir: &MachineDir, ip: std::net::Ipv4Addr) -> Result<ssh::Target> {
    let host_key = fs_err::read_to_string(dir.host_pub_path())?;
    Ok(ssh::Target {
        addr: std::net::SocketAddr::new(ip.into(), 22),
        user: "root".into(),
        identity: dir.client_key_path(),
        host_key: host_key.trim().to_owned(),
    })
}

/// The running machine's DNS server and owned domains (`dns.json`).
pub fn dns_state(dir: &MachineDir) -> Result<DnsState> {
    DnsState::load(dir)?.ok_or_else(|| {
        ClientError::NotRunning {
            name: dir.name.clone(),
            state: "stopped".into(),
        }
        .into()
    })
}

/// The last `n` lines of the machine's console.
pub fn console_tail(dir: &MachineDir, n: usize) -> String {
    tail(&dir.serial_log_path(), n)
}

/// The last `n` lines of the supervisor's log.
pub fn supervisor_log_tail(dir: &MachineDir, n: usize) -> String {
    tail(&dir.supervisor_log_path(), n)
}

/// The last `n` lines of a log, escaped for the terminal: both logs hold text the guest chose
/// (its console; container names and aliases in the supervisor's).
fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = crate::output::guest_text::escape(&text);
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
            accel: Some("vz".into()),
            error: Some(error.into()),
            hint,
            ..StateFile::starting(1, String::new())
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
        let hint = crate::output::diagnostics::hint(&err);
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

    /// `start` prints these tails when a boot fails: the guest's escape sequences are shown
    /// as text, not sent to the terminal.
    #[test]
    fn log_tails_escape_what_the_guest_wrote() {
        let d = tempfile::tempdir().unwrap();
        let dir = MachineDir {
            name: "dev".into(),
            path: d.path().to_owned(),
        };
        std::fs::write(
            dir.serial_log_path(),
            "one\r\ntwo \x1b]52;c;aGk=\x07\r\nthree \x1b[2J\r\n",
        )
        .unwrap();
        assert_eq!(
            console_tail(&dir, 2),
            "two \\u{1b}]52;c;aGk=\\u{7}\nthree \\u{1b}[2J"
        );
        std::fs::write(dir.supervisor_log_path(), "alias \x1b]0;x\x07 refused\n").unwrap();
        assert_eq!(
            supervisor_log_tail(&dir, 5),
            "alias \\u{1b}]0;x\\u{7} refused"
        );
    }
}
