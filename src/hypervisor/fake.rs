//! The fake driver: a machine with no guest, for devbox's tier-2 tests (`tests/cli*.rs`: the
//! real binary, a temporary `DEVBOX_HOME`, no root, no guest). Built only with the cargo
//! feature `fake-hypervisor`, which `cargo test` turns on; every other build refuses it.
//!
//! Only the guest and its network are fake. Its capabilities ask for no TAP, no routes and
//! no shares, and say that the machine reports its own readiness, so everything else runs
//! for real: `devbox start` spawning the supervisor and following its progress, the
//! supervisor's lock, pid and state files, the DNS server (on loopback), the config drive,
//! the control socket, signals, `stop` (the power button), crash detection.
//!
//! The "guest" is a thread. It checks the boot files the supervisor prepared, writes a few
//! console lines to the serial log, and after a short boot either reports ready or ends,
//! as `DEVBOX_FAKE_GUEST` says (read by the supervisor, which inherits `devbox start`'s
//! environment):
//! - unset or `ready`: ready after `DEVBOX_FAKE_BOOT_MS` (default 300) milliseconds;
//! - `crash`: the guest ends during boot, before it is ready;
//! - `panic`: its kernel panics during boot (the kernel's panic line on the console), at
//!   every boot; `panic-once`: only at the first boot of a start, then it boots ready;
//! - `hang`: it never becomes ready (the supervisor's deadline ends it);
//! - `fatal`: it prints the guest init's `devbox-guest: fatal:` marker (a step without which
//!   it can never be ready failed) and then hangs, as a real guest whose dockerd died does.
//!
//! The power button powers it off after a moment; `kill` ends it at once.

use std::io::Write;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{Accel, BootConfig, Driver, Hypervisor, HypervisorError, RunningVm, VmExit};

/// What the fake guest does after booting (`DEVBOX_FAKE_GUEST`).
pub const BEHAVIOUR_ENV: &str = "DEVBOX_FAKE_GUEST";
/// How long the fake guest takes to boot, in milliseconds (`DEVBOX_FAKE_BOOT_MS`).
pub const BOOT_MS_ENV: &str = "DEVBOX_FAKE_BOOT_MS";
/// The Docker version the fake guest reports.
pub const DOCKER_VERSION: &str = "0.0.0-fake";

/// How long the fake guest takes to power off after the power button.
const POWER_OFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Ready,
    Crash,
    Panic,
    PanicOnce,
    Hang,
    Fatal,
}

impl Behaviour {
    fn from_env() -> Result<Behaviour, HypervisorError> {
        match std::env::var(BEHAVIOUR_ENV).as_deref() {
            Err(_) | Ok("") | Ok("ready") => Ok(Behaviour::Ready),
            Ok("crash") => Ok(Behaviour::Crash),
            Ok("panic") => Ok(Behaviour::Panic),
            Ok("panic-once") => Ok(Behaviour::PanicOnce),
            Ok("hang") => Ok(Behaviour::Hang),
            Ok("fatal") => Ok(Behaviour::Fatal),
            Ok(other) => Err(HypervisorError::Unavailable {
                driver: Driver::Fake,
                reason: format!(
                    "{BEHAVIOUR_ENV}={other:?}: expected ready, crash, panic, panic-once, hang or fatal"
                ),
            }),
        }
    }
}

pub struct Fake {
    accel: Accel,
    /// Boots so far (one supervisor's start boots once, or twice after a panic).
    boots: std::sync::atomic::AtomicUsize,
}

impl Fake {
    pub fn new() -> Fake {
        Fake {
            accel: Accel {
                name: "fake",
                reason: "devbox's test driver: no guest runs".into(),
            },
            boots: Default::default(),
        }
    }
}

impl Default for Fake {
    fn default() -> Fake {
        Fake::new()
    }
}

impl Hypervisor for Fake {
    fn driver(&self) -> Driver {
        Driver::Fake
    }

    fn accel(&self) -> &Accel {
        &self.accel
    }

    fn preflight(&self) -> Result<(), HypervisorError> {
        Ok(())
    }

    fn boot(&self, cfg: BootConfig) -> Result<Box<dyn RunningVm>, HypervisorError> {
        let first = self.boots.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        let behaviour = match Behaviour::from_env()? {
            Behaviour::PanicOnce if first => Behaviour::Panic,
            Behaviour::PanicOnce => Behaviour::Ready,
            b => b,
        };
        let boot = std::env::var(BOOT_MS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_millis(300));
        if cfg.tap.is_some() {
            return Err(HypervisorError::Unavailable {
                driver: Driver::Fake,
                reason: "the supervisor gave the fake driver a TAP device, which its \
                         capabilities do not ask for"
                    .into(),
            });
        }
        // What a real driver opens first: a missing file fails the boot here too.
        let files = [&cfg.kernel, &cfg.initrd, &cfg.data_disk, &cfg.config_drive];
        for path in files.into_iter().chain(cfg.root_image.as_ref()) {
            fs_err::metadata(path)?;
        }
        let mut console = super::console_log::ConsoleLog::open(&cfg.serial_log)?;
        writeln!(
            console,
            "fake guest {}: booting ({} CPUs, {} MiB)",
            cfg.name, cfg.cpus, cfg.memory_mib
        )?;

        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = channel();
        let guest = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("fake-guest".into())
            .spawn(move || guest.run(behaviour, boot, console, ready_tx))?;
        Ok(Box::new(FakeMachine {
            shared,
            ready: Some(ready_rx),
        }))
    }
}

/// The fake guest's state, shared between its thread and the supervisor.
#[derive(Default)]
struct Shared {
    state: Mutex<GuestState>,
    changed: Condvar,
}

#[derive(Default)]
struct GuestState {
    power_button: bool,
    killed: bool,
    exit: Option<VmExit>,
}

impl Shared {
    /// The guest's life: boot, then wait for the power button or a kill.
    fn run(
        &self,
        behaviour: Behaviour,
        boot: Duration,
        mut console: super::console_log::ConsoleLog,
        ready: Sender<Result<String, String>>,
    ) {
        let mut line = |s: &str| {
            let _ = writeln!(console, "{s}");
        };
        if self.wait(boot, |s| s.killed || s.power_button) {
            return self.end("the fake guest was stopped while it booted");
        }
        match behaviour {
            Behaviour::Crash => {
                line("fake guest: kernel panic during boot");
                return self.end("the fake guest crashed during boot");
            }
            Behaviour::Panic | Behaviour::PanicOnce => {
                line("[    0.923314] Kernel panic - not syncing: Fatal exception in interrupt");
                return self.end("the guest powered off");
            }
            Behaviour::Ready => {
                line("devbox-guest: ready");
                let _ = ready.send(Ok(DOCKER_VERSION.into()));
            }
            Behaviour::Hang => line("fake guest: hanging before it is ready"),
            Behaviour::Fatal => {
                line("devbox-guest: error: cannot mount the data disk /dev/vdb");
                line("devbox-guest: fatal: dockerd exited (see /var/log/docker.log)");
            }
        }
        while !self.wait(Duration::from_secs(3600), |s| s.killed || s.power_button) {}
        if self.state.lock().expect("fake guest state").killed {
            return;
        }
        line("fake guest: power button pressed, powering off");
        if !self.wait(POWER_OFF, |s| s.killed) {
            self.end("the guest powered off");
        }
    }

    /// Waits up to `limit` for `done`; returns whether it came.
    fn wait(&self, limit: Duration, done: impl Fn(&GuestState) -> bool) -> bool {
        let state = self.state.lock().expect("fake guest state");
        let (state, _) = self
            .changed
            .wait_timeout_while(state, limit, |s| !done(s))
            .expect("fake guest state");
        done(&state)
    }

    fn end(&self, description: &str) {
        let mut s = self.state.lock().expect("fake guest state");
        s.exit.get_or_insert(VmExit {
            description: description.into(),
        });
        self.changed.notify_all();
    }
}

struct FakeMachine {
    shared: Arc<Shared>,
    ready: Option<Receiver<Result<String, String>>>,
}

impl RunningVm for FakeMachine {
    fn pid(&self) -> Option<u32> {
        None
    }

    fn request_stop(&mut self) -> Result<(), HypervisorError> {
        let mut s = self.shared.state.lock().expect("fake guest state");
        s.power_button = true;
        self.shared.changed.notify_all();
        Ok(())
    }

    fn kill(&mut self) -> Result<(), HypervisorError> {
        let mut s = self.shared.state.lock().expect("fake guest state");
        s.killed = true;
        s.exit.get_or_insert(VmExit {
            description: "the guest was killed".into(),
        });
        self.shared.changed.notify_all();
        Ok(())
    }

    fn try_wait(&mut self) -> Result<Option<VmExit>, HypervisorError> {
        Ok(self
            .shared
            .state
            .lock()
            .expect("fake guest state")
            .exit
            .clone())
    }

    fn take_ready_report(&mut self) -> Option<Receiver<Result<String, String>>> {
        self.ready.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    fn boot_config(dir: &Path) -> BootConfig {
        let file = |name: &str| {
            let p = dir.join(name);
            std::fs::write(&p, "x").unwrap();
            p
        };
        BootConfig {
            name: "m".into(),
            cpus: 1,
            memory_mib: 512,
            kernel: file("vmlinuz"),
            initrd: file("initrd.img"),
            root_image: None,
            data_disk: file("disk.raw"),
            config_drive: file("config.tar"),
            tap: None,
            mac: "52:54:00:12:34:56".into(),
            share_nic: None,
            serial_log: dir.join("serial.log"),
            monitor_socket: PathBuf::from("/nonexistent"),
        }
    }

    fn wait_exit(vm: &mut dyn RunningVm) -> VmExit {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(exit) = vm.try_wait().unwrap() {
                return exit;
            }
            assert!(Instant::now() < deadline, "the fake guest never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn it_reports_ready_and_powers_off_at_the_power_button() {
        let d = tempfile::tempdir().unwrap();
        let mut vm = Fake::new().boot(boot_config(d.path())).unwrap();
        let ready = vm.take_ready_report().unwrap();
        assert_eq!(
            ready.recv_timeout(Duration::from_secs(5)).unwrap(),
            Ok(DOCKER_VERSION.to_owned())
        );
        assert!(vm.take_ready_report().is_none(), "handed out once");
        assert_eq!(vm.try_wait().unwrap(), None);
        vm.request_stop().unwrap();
        assert_eq!(wait_exit(vm.as_mut()).description, "the guest powered off");
        let console = std::fs::read_to_string(d.path().join("serial.log")).unwrap();
        assert!(console.contains("devbox-guest: ready"), "{console}");
    }

    #[test]
    fn a_missing_boot_file_fails_the_boot() {
        let d = tempfile::tempdir().unwrap();
        let cfg = boot_config(d.path());
        std::fs::remove_file(&cfg.config_drive).unwrap();
        let err = Fake::new().boot(cfg).err().expect("boot fails");
        assert!(err.to_string().contains("config.tar"), "{err}");
    }

    #[test]
    fn kill_ends_it_at_once() {
        let d = tempfile::tempdir().unwrap();
        let mut vm = Fake::new().boot(boot_config(d.path())).unwrap();
        vm.kill().unwrap();
        assert_eq!(wait_exit(vm.as_mut()).description, "the guest was killed");
    }
}
