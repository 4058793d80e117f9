//! The per-machine supervisor: a detached `devbox __supervise NAME` process that owns a running
//! machine and everything attached to it, and tears it all down when the machine ends. The
//! CLI talks to it only through [`client`].
//!
//! It holds `supervisor.lock` for its whole life (a free lock means it is gone), writes
//! `supervisor.pid`, and owns the machine's parts, started in order and stopped in reverse
//! ([`parts`]):
//! - the routes to the machine's Docker subnets (`crate::routes`, applied through the host
//!   applier and recorded in `$DEVBOX_HOME/routes.json` for the boot-time job);
//! - for a driver whose link is a TAP (qemu, kvm), the TAP device and the machine's outbound
//!   NAT (`nat.rs`, `crate::nat`): the TAP's descriptor is shared only with the guest, so the
//!   interface disappears when both are gone, even after SIGKILL (the NAT rules stay until
//!   the machine's next start replaces them, or its stop)
//!   (`host_net` decides what each kind of link needs; a vz machine's NIC is on
//!   Virtualization.framework's NAT and its guest reports the address DHCP gave it, `report`);
//! - the I/O runtime, and on it the NFS server exporting the machine's shares (bound to the
//!   machine's host-side IP, answering only the guest) and the DNS server for
//!   `<machine>.<tld>`, its containers and their aliases;
//! - the host resolver settings for the domains the machine owns (`crate::resolver`);
//! - once the guest is ready: the docker socket forwarder (`docker.sock` → the guest's
//!   `/var/run/docker.sock` over SSH), the container watcher feeding the DNS server, and the
//!   disk watcher;
//! - the driver's running machine (a QEMU child that dies with the supervisor, or the
//!   in-process kvm or vz machine).
//!
//! Files: `bring_up.rs` ([`Supervisor`]: every step from the image to the event loop),
//! `event_loop.rs` (reacts to events until the guest ends), `watchers.rs` (the threads:
//! `signals`, `ready`, `disk`, `resolver`), `state.rs` (the one writer of `state.json`),
//! `control.rs` (the control socket), `client.rs` (the CLI's side), `host_net.rs` (what the
//! machine's link needs), `routes.rs` (its routes, as a part), `report.rs` (a DHCP guest's
//! address), `parts.rs`, and `sys/` (the NFS server where it exists).
//!
//! Threads: the main one (bring-up, then the event loop), `control`, `signals`, `ready`,
//! `disk`, `resolver`, and the `io` runtime's workers. They talk to the main one through one
//! channel of [`Event`]s and change `state.json` only through the [`state::StateWriter`].

mod bring_up;
pub mod client;
pub mod control;
mod event_loop;
mod file_events;
mod host_net;
mod https;
mod nat;
mod parts;
mod remote;
mod report;
mod routes;
mod shares;
mod state;
mod sys;
mod watchers;

use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::Signal;

use crate::atomic_file::write_atomic;
use crate::machine::Store;
use crate::machine::lock::lock_supervisor;
use crate::machine::state::{Phase, StateFile};
use bring_up::Supervisor;
use state::StateWriter;

/// What the main loop reacts to.
pub enum Event {
    Control(control::ControlEvent),
    /// The guest of boot `boot` is ready.
    Ready {
        docker_version: String,
        boot: u32,
    },
    /// The guest cannot become ready: of boot `boot`, or of whichever boot runs (`None`: the
    /// console watcher, which follows the current boot's log).
    NotReady {
        reason: String,
        boot: Option<u32>,
    },
    /// The console shows a kernel panic during boot (the event loop boots once more).
    KernelPanic {
        reason: String,
    },
    Signal(Signal),
}

/// Timestamped line in `supervisor.log` (the supervisor's stderr).
pub(crate) fn log(msg: impl AsRef<str>) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    eprintln!("{now} {}", msg.as_ref());
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Runs the supervisor for machine `name` until the machine ends. `hint_of` finds the known
/// fix for a failure, which `state.json` carries to `devbox start` (the CLI's hint table,
/// `output::diagnostics::hint`: the supervisor does not reach up to the layer that prints).
pub fn run(
    store: &Store,
    name: &str,
    ready_timeout: Duration,
    hint_of: fn(&anyhow::Error) -> Option<String>,
) -> Result<()> {
    // Before any other thread exists: every thread inherits the blocked stop signals.
    let sigs = watchers::block_stop_signals()?;

    let dir = store.existing(name)?;
    let _lock = lock_supervisor(&dir)?;
    let spec = dir.load_spec()?;
    log(format!(
        "supervisor {} for machine {name}",
        std::process::id()
    ));
    write_atomic(
        &dir.pid_path(),
        format!("{}\n", std::process::id()).as_bytes(),
        0o600,
    )?;
    let state = StateWriter::new(&dir, StateFile::starting(std::process::id(), now()));

    let outcome = Supervisor::new(store, &dir, &spec, state.clone(), ready_timeout).run(sigs);

    dir.remove_runtime_files();
    match &outcome {
        Ok(why) => {
            log(format!("machine stopped: {why}"));
            state.update(|s| {
                s.phase = Phase::Stopped;
                s.step = "stopped".into();
                s.vm_pid = None;
                s.error = Some(why.clone());
            });
        }
        Err(e) => {
            log(format!("machine failed: {e:#}"));
            let hint = hint_of(e);
            if let Some(h) = &hint {
                log(format!("hint: {h}"));
            }
            state.update(|s| {
                s.phase = Phase::Failed;
                s.step = "failed".into();
                s.vm_pid = None;
                s.error = Some(format!("{e:#}"));
                s.hint = hint;
            });
        }
    }
    outcome.map(|_| ())
}
