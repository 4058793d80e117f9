//! The event loop: owns the running machine and reacts to the [`Event`]s of the watchers and
//! the control socket until the guest ends. It starts the parts that need a ready guest (the
//! docker socket forwarder, the container watcher, the published-port forwarder
//! (`crate::ports`), the disk watcher), turns stop requests
//! and signals into a graceful stop (the guest powers off, killed after [`GRACEFUL_STOP`]),
//! and tells a machine that ended before it was ready (a failure) from one that was stopped.

use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::bring_up::{Reboot, Supervisor};
use super::control::ControlEvent;
use super::watchers::DiskWatch;
use super::{Event, log, now};
use crate::hypervisor::{RunningVm, console_log};
use crate::machine::state::Phase;
use crate::{dns, ports, ssh};

/// How long a guest gets to power off before it is killed.
const GRACEFUL_STOP: Duration = Duration::from_secs(60);

/// Name of the docker socket forwarder among the parts (stopped first at a stop).
const FORWARDER: &str = "docker socket forwarder";

/// The booted machine; killed if it is dropped while it still runs (an error in bring-up or
/// in the loop), so nothing outlives the supervisor's own failure.
pub struct Guest {
    vm: Box<dyn RunningVm>,
    ended: bool,
}

impl Guest {
    pub fn new(vm: Box<dyn RunningVm>) -> Guest {
        Guest { vm, ended: false }
    }

    pub fn as_mut(&mut self) -> &mut dyn RunningVm {
        self.vm.as_mut()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if !self.ended && matches!(self.vm.try_wait(), Ok(None)) {
            let _ = self.vm.kill();
        }
    }
}

/// What the event loop works with.
pub struct Running {
    pub vm: Guest,
    /// Where the guest answers SSH; `None` when the supervisor does not reach the guest
    /// ([`crate::machine::GuestAccess::DriverReport`]).
    pub target: Option<ssh::Target>,
    /// The guest's address, where published ports are forwarded.
    pub guest_ip: std::net::Ipv4Addr,
    /// The DNS server's records, for the container watcher.
    pub records: Option<dns::RecordsHandle>,
    pub io: tokio::runtime::Handle,
    /// Taken by the one boot allowed after a kernel panic before ready.
    pub reboot: Option<Box<Reboot>>,
    /// When this boot's guest process started.
    pub booted: Instant,
}

/// Runs until the guest ends; returns why it ended (or the failure).
pub fn run(sv: &mut Supervisor, mut m: Running) -> Result<String> {
    let mut stopping: Option<Instant> = None;
    loop {
        if let Some(exit) = m.vm.as_mut().try_wait()? {
            m.vm.ended = true;
            let before_ready = sv.state.phase() == Phase::Starting && stopping.is_none();
            let panicked = before_ready && console_log::kernel_panicked(&sv.dir.serial_log_path());
            if panicked && let Some(reboot) = m.reboot.take() {
                boot_again(sv, &mut m, &reboot)?;
                continue;
            }
            sv.parts.stop_one(FORWARDER);
            return if before_ready {
                Err(anyhow::anyhow!(
                    "the guest ended before it was ready: {}{}",
                    exit.description,
                    if panicked { BOTH_PANICKED } else { "" }
                ))
            } else {
                Ok(exit.description)
            };
        }
        if let Some(since) = stopping
            && since.elapsed() > GRACEFUL_STOP
        {
            log("the guest did not power off in time; killing it");
            m.vm.as_mut().kill()?;
            continue;
        }
        match sv.rx.recv_timeout(Duration::from_millis(200)) {
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
            // A report about an earlier boot (the one that panicked) is stale.
            Ok(
                Event::Ready { boot, .. }
                | Event::NotReady {
                    boot: Some(boot), ..
                },
            ) if boot != sv.boot_number.load(Ordering::SeqCst) => {}
            Ok(Event::Ready { docker_version, .. }) => {
                if stopping.is_none() {
                    ready(sv, &mut m, &docker_version)?;
                }
            }
            Ok(Event::NotReady { reason, .. }) => {
                if stopping.is_none() {
                    m.vm.as_mut().kill()?;
                    return Err(anyhow::anyhow!(
                        "the machine did not become ready: {reason}"
                    ));
                }
            }
            // Stale when the current boot's console shows no panic: the line came from the
            // boot before, already booted again.
            Ok(Event::KernelPanic { reason })
                if stopping.is_none()
                    && sv.state.phase() == Phase::Starting
                    && console_log::kernel_panicked(&sv.dir.serial_log_path()) =>
            {
                match m.reboot.take() {
                    Some(reboot) => boot_again(sv, &mut m, &reboot)?,
                    None => {
                        m.vm.as_mut().kill()?;
                        return Err(anyhow::anyhow!(
                            "the machine did not become ready: the guest's kernel panicked: \
                             {reason}{BOTH_PANICKED}"
                        ));
                    }
                }
            }
            Ok(Event::KernelPanic { .. }) => {}
            Ok(Event::Control(ControlEvent::Stop { force })) => {
                if force {
                    log("stop requested (force): killing the guest");
                    sv.parts.stop_one(FORWARDER);
                    m.vm.as_mut().kill()?;
                    stopping.get_or_insert_with(Instant::now);
                } else if stopping.is_none() {
                    begin_graceful_stop(sv, &mut m);
                    stopping = Some(Instant::now());
                }
            }
            Ok(Event::Signal(sig)) => {
                if stopping.is_none() {
                    log(format!("{sig} received"));
                    begin_graceful_stop(sv, &mut m);
                    stopping = Some(Instant::now());
                }
            }
        }
    }
}

/// Said when the boot after a kernel panic panicked too.
const BOTH_PANICKED: &str = "; its kernel panicked at both boots (the console of each: `devbox \
                             logs`, and serial.log.1 in the machine's directory for the first)";

/// Ends the panicked guest (a reset under emulation may hang instead of ending) and boots
/// it once more.
fn boot_again(sv: &mut Supervisor, m: &mut Running, reboot: &Reboot) -> Result<()> {
    if !m.vm.ended {
        m.vm.as_mut().kill()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.vm.as_mut().try_wait()?.is_none() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the guest did not end after its kernel panicked, even killed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m.vm.ended = true;
    }
    log(
        "the guest's kernel panicked while booting (that boot's console is kept as \
         serial.log.1); booting it once more",
    );
    m.vm = sv.reboot(reboot, m.target.as_ref())?;
    m.booted = Instant::now();
    Ok(())
}

/// The guest is ready: starts what needs it (over SSH: the docker socket, the container
/// watcher, the published ports, the disk watcher) and says the machine runs.
fn ready(sv: &mut Supervisor, m: &mut Running, docker_version: &str) -> Result<()> {
    if let Some(target) = &m.target {
        match ssh::forward_unix_socket(target, &sv.dir.docker_socket_path(), "/var/run/docker.sock")
        {
            Ok(f) => sv.parts.hold(FORWARDER, f),
            Err(e) => {
                m.vm.as_mut().kill()?;
                return Err(anyhow::Error::new(e).context("forwarding the docker socket"));
            }
        }
        if let Some(records) = &m.records {
            let watch = m.io.spawn(dns::watch_containers(
                sv.dir.docker_socket_path(),
                records.clone(),
            ));
            sv.parts
                .add(Task("container watcher", watch.abort_handle()));
        }
        let state = sv.state.clone();
        let forwarder = m.io.spawn(ports::run(
            sv.dir.docker_socket_path(),
            m.guest_ip,
            Box::new(move |ports| state.update(|s| s.ports = ports)),
        ));
        sv.parts
            .add(Task("published-port forwarder", forwarder.abort_handle()));
        // HTTPS is a convenience on top of a running machine: a CA problem is logged with
        // its fix and the machine runs without it. It needs the machine's DNS names, and a
        // guest of devbox's to redirect (not an adopted host).
        if let Some(records) = m.records.as_ref().filter(|_| !remote(sv)) {
            match super::https::start(super::https::HttpsSetup {
                store: sv.store,
                spec: sv.spec,
                records: records.clone(),
                guest_ip: m.guest_ip,
                target: target.clone(),
                io: &m.io,
            }) {
                Ok(https) => sv.parts.add(https),
                Err(e) => log(format!(
                    "HTTPS is off for this machine: {e:#}{}",
                    crate::output::diagnostics::hint(&e)
                        .map(|h| format!(" (hint: {h})"))
                        .unwrap_or_default()
                )),
            }
        }
    }
    log(format!("ready: Docker {docker_version} answers"));
    record_boot_phases(sv, m.booted);
    sv.state.update(|s| {
        s.phase = Phase::Running;
        s.step = "running".into();
        s.ready = Some(now());
    });
    if let Some(target) = &m.target {
        let shares = sv
            .spec
            .shares
            .iter()
            .map(|s| super::file_events::Share {
                host: s.host_path.clone(),
                guest: s.guest_path.clone(),
            })
            .collect();
        // Like HTTPS, a convenience on top of a running machine: a failure is logged.
        match super::file_events::start(target, shares, sv.echo.clone()) {
            Ok(Some(watcher)) => sv.parts.add(watcher),
            Ok(None) => {}
            Err(e) => log(format!("file events are off for this machine: {e:#}")),
        }
        // The data disk is devbox's own only in a machine devbox booted.
        if !remote(sv) {
            sv.parts.add(DiskWatch::spawn(
                target.clone(),
                sv.state.clone(),
                sv.dir.clone(),
            ));
        }
    }
    Ok(())
}

/// Records the boot's phases (`state.json`'s `boot`) from the guest's console markers, in the
/// background: the console reaches the log through the emulated serial port and the driver's
/// pump, so the last marker may land a moment after the machine is ready (bounded: 5 s).
fn record_boot_phases(sv: &Supervisor, booted: Instant) {
    let ready_after_s = (booted.elapsed().as_secs_f64() * 100.0).round() / 100.0;
    let (path, state) = (sv.dir.serial_log_path(), sv.state.clone());
    let spawned = std::thread::Builder::new()
        .name("boot-phases".into())
        .spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut phases = console_log::boot_phases(&path);
            while phases.last().is_none_or(|p| p.name != "docker") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                phases = console_log::boot_phases(&path);
            }
            if phases.is_empty() {
                return;
            }
            let list: Vec<String> = phases
                .iter()
                .map(|p| format!("{} {:.2} s", p.name, p.guest_s))
                .collect();
            log(format!(
                "boot phases (guest uptime): {}; ready {ready_after_s:.2} s after the guest's \
                 process started",
                list.join(", ")
            ));
            state.update(|s| {
                s.boot = Some(crate::machine::state::BootTimes {
                    ready_after_s,
                    phases,
                })
            });
        });
    if let Err(e) = spawned {
        log(format!("boot phases are not recorded: {e}"));
    }
}

/// Whether the machine is a host adopted over SSH (never powered off, no disk of devbox's).
fn remote(sv: &Supervisor) -> bool {
    sv.spec.driver.capabilities().guest == crate::machine::GuestAccess::Remote
}

/// How long asking for a power-off over SSH may take.
const POWEROFF_ASK: Duration = Duration::from_secs(10);

/// Asks the guest to power off: through SSH when it answers (the guest stops dockerd and
/// unmounts its disk first), else through the driver's power button.
fn begin_graceful_stop(sv: &mut Supervisor, m: &mut Running) {
    log(if remote(sv) {
        "stopping: disconnecting from the host"
    } else {
        "stopping: asking the guest to power off"
    });
    sv.state.update(|s| {
        s.phase = Phase::Stopping;
        s.step = "stopping".into();
    });
    sv.parts.stop_one(FORWARDER);
    if remote(sv) {
        // An adopted host is the user's: it keeps running, devbox only lets go of it.
        let _ = m.vm.as_mut().request_stop();
        return;
    }
    let via_ssh = match &m.target {
        Some(target) => ssh::Connection::connect(target, Duration::from_secs(5))
            // Bounded: a guest that hangs with its connection open must not hold the loop.
            .and_then(|c| c.exec_capture_until("poweroff", Instant::now() + POWEROFF_ASK))
            .map(drop)
            .map_err(|e| format!("poweroff over SSH failed ({e})")),
        None => Err("the guest is not reached over SSH".to_owned()),
    };
    if let Err(why) = via_ssh {
        log(format!("{why}; pressing the power button"));
        if let Err(e) = m.vm.as_mut().request_stop() {
            log(format!("power button failed: {e}"));
        }
    }
}

/// A task on the I/O runtime, aborted when the machine ends.
struct Task(&'static str, tokio::task::AbortHandle);

impl super::parts::Part for Task {
    fn name(&self) -> &str {
        self.0
    }
    fn stop(self: Box<Self>) {
        self.1.abort();
    }
}
