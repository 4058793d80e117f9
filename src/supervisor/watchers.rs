//! The supervisor's watcher threads. Each reports to the event loop through the one channel
//! of [`Event`]s, or keeps one thing up to date on its own:
//! - `signals`: SIGTERM, SIGINT and SIGHUP become a graceful stop;
//! - `ready`: once per boot, waits for the guest to be ready (over SSH: SSH answers, then the
//!   guest's ready file; or the driver's own report) and says so once;
//! - `disk` ([`DiskWatch`], a part): measures the guest filesystem every 30 s while the machine
//!   runs, into `state.json`;
//! - `resolver` ([`ResolverWatch`], a part): follows the DNS server's aliases into `dns.json`
//!   and the host's resolver.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};

use super::parts::Part;
use super::state::StateWriter;
use super::{Event, log};
use crate::machine::MachineDir;
use crate::machine::state::Phase;
use crate::resolver::ResolverSync;
use crate::{disk, dns, ssh};

/// How often the guest filesystem's fill level is measured while the machine runs.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(30);
/// How often the served aliases are compared with the host resolver's domains.
const RESOLVER_CHECK_EVERY: Duration = Duration::from_millis(200);

/// Blocks the stop signals in this thread and every thread it starts from now on; the
/// `signals` thread receives them with sigwait. Call before any other thread exists.
pub fn block_stop_signals() -> Result<SigSet> {
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block().context("blocking signals")?;
    Ok(sigs)
}

pub fn spawn_signals(sigs: SigSet, tx: Sender<Event>) {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(sig) = sigs.wait() {
                if tx.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        })
        .expect("spawning the signal thread");
}

/// Waits for SSH, then for Docker, and reports once, unless a later boot replaced the one it
/// watches (`boots` moved past the number it started with): then it ends without a word.
pub fn spawn_ready_over_ssh(
    target: ssh::Target,
    boots: Arc<AtomicU32>,
    deadline: Instant,
    state: StateWriter,
    tx: Sender<Event>,
) {
    let boot = boots.load(Ordering::SeqCst);
    std::thread::Builder::new()
        .name("ready".into())
        .spawn(move || {
            state.step("waiting for SSH");
            let current = || boots.load(Ordering::SeqCst) == boot;
            let event = match wait_ready(&target, deadline, &state, &current) {
                Ok(docker_version) => Event::Ready {
                    docker_version,
                    boot,
                },
                Err(reason) => Event::NotReady {
                    reason,
                    boot: Some(boot),
                },
            };
            if current() {
                let _ = tx.send(event);
            }
        })
        .expect("spawning the readiness thread");
}

/// How long one look at the guest's ready file may take: a guest that vanished (a kernel
/// panic) leaves a connection that answers nothing, ever.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

fn wait_ready(
    target: &ssh::Target,
    deadline: Instant,
    state: &StateWriter,
    current: &dyn Fn() -> bool,
) -> Result<String, String> {
    let conn = ssh::wait_until_reachable(target, deadline).map_err(|e| format!("SSH: {e}"))?;
    if current() {
        state.step("waiting for Docker");
    }
    let mut last = String::new();
    while Instant::now() < deadline && current() {
        // The guest writes Docker's version to /run/devbox/ready once Docker answers and its
        // firewall rule for routed container access is in place (assets/guest/README.md);
        // reading it costs no docker command, which is slow to start in a guest.
        let until = deadline.min(Instant::now() + READY_CHECK_TIMEOUT);
        match conn.exec_capture_until("cat /run/devbox/ready", until) {
            Ok(out) if out.status == 0 => {
                return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            }
            Ok(out) => last = String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => return Err(format!("SSH: {e}")),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "Docker did not answer in time (last error: {last})"
    ))
}

/// Passes the driver's readiness report on, or says it did not come by `deadline`.
pub fn spawn_ready_from_driver(
    report: Receiver<Result<String, String>>,
    boot: u32,
    deadline: Instant,
    state: StateWriter,
    tx: Sender<Event>,
) {
    std::thread::Builder::new()
        .name("ready".into())
        .spawn(move || {
            state.step("waiting for the guest");
            let wait = deadline.saturating_duration_since(Instant::now());
            let event = match report.recv_timeout(wait) {
                Ok(Ok(docker_version)) => Event::Ready {
                    docker_version,
                    boot,
                },
                Ok(Err(reason)) => Event::NotReady {
                    reason,
                    boot: Some(boot),
                },
                Err(RecvTimeoutError::Timeout) => Event::NotReady {
                    reason: "the guest did not report ready in time".into(),
                    boot: Some(boot),
                },
                // The machine ended first; the event loop sees that on its own.
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let _ = tx.send(event);
        })
        .expect("spawning the readiness thread");
}

/// The guest init's marker for a boot step without which the machine can never be ready
/// (sshd, containerd or dockerd failed, no docker client): assets/guest/README.md.
pub const FATAL_MARKER: &str = "devbox-guest: fatal: ";

/// Longest fatal reason kept from the console: the guest is untrusted, and a reason is one
/// line for the user, not a place for the guest to pour text into.
const FATAL_REASON_MAX: usize = 300;

/// Follows the console log (`path`, rotated at every boot by `bring_up`) while the machine
/// starts, and reports at once when the guest says it cannot become ready, so `start` fails
/// with the guest's reason instead of waiting out the whole readiness deadline; a kernel panic
/// is reported as [`Event::KernelPanic`] (the event loop boots once more) and the watch goes
/// on with the next boot's log. Ends when the machine leaves [`Phase::Starting`] or at
/// `deadline` (the readiness watcher reports that).
pub fn spawn_console_fatal(
    path: std::path::PathBuf,
    deadline: Instant,
    state: StateWriter,
    tx: Sender<Event>,
) {
    std::thread::Builder::new()
        .name("console-fatal".into())
        .spawn(move || {
            let mut scan = FatalScan::default();
            while Instant::now() < deadline && state.phase() == Phase::Starting {
                match scan.poll(&path) {
                    Some(Fatal::Panic(reason)) => {
                        log(format!(
                            "the guest's kernel panicked while booting: {reason}"
                        ));
                        let _ = tx.send(Event::KernelPanic { reason });
                    }
                    Some(Fatal::Guest(reason)) => {
                        log(format!("the guest cannot become ready: {reason}"));
                        let _ = tx.send(Event::NotReady {
                            reason: format!("the guest stopped booting: {reason}"),
                            boot: None,
                        });
                        return;
                    }
                    None => {}
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .expect("spawning the console watcher");
}

/// A console line that says the boot cannot succeed.
#[derive(Debug, PartialEq, Eq)]
enum Fatal {
    /// The guest init's [`FATAL_MARKER`], with its reason.
    Guest(String),
    /// The kernel's panic line, with its reason.
    Panic(String),
}

/// Reads a growing console log from where it left off, line by line, for [`FATAL_MARKER`] and
/// kernel panics.
#[derive(Debug, Default)]
struct FatalScan {
    /// The file being read (its inode): a new file (the next boot's) is read from its start.
    file: Option<u64>,
    offset: u64,
    /// The end of the last read when it stopped inside a line.
    partial: Vec<u8>,
}

impl FatalScan {
    /// The first fatal line written since the last call, its reason escaped for a terminal.
    fn poll(&mut self, path: &std::path::Path) -> Option<Fatal> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        let mut file = std::fs::File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        if meta.len() < self.offset || self.file != Some(meta.ino()) {
            // Rotated at its size cap or at a boot: the new file starts from the beginning.
            self.file = Some(meta.ino());
            self.offset = 0;
            self.partial.clear();
        }
        file.seek(SeekFrom::Start(self.offset)).ok()?;
        // Bounded per poll, like the log itself (4 MiB cap): a chatty guest is read in steps.
        let mut chunk = Vec::new();
        let n = file.take(1 << 20).read_to_end(&mut chunk).ok()?;
        self.offset += n as u64;
        self.partial.extend_from_slice(&chunk);
        let mut found = None;
        let mut rest = self.partial.as_slice();
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let line = &rest[..end];
            rest = &rest[end + 1..];
            if found.is_none() {
                found = fatal_reason(line);
            }
        }
        // A partial line longer than any marker line is not kept whole: its start is enough.
        let keep = rest.len().min(FATAL_MARKER.len() + FATAL_REASON_MAX);
        self.partial = rest[..keep].to_vec();
        found
    }
}

/// The reason in a console line holding [`FATAL_MARKER`] or a kernel panic (anywhere: the
/// kernel may print on the same line first), escaped and cut to [`FATAL_REASON_MAX`] bytes.
fn fatal_reason(line: &[u8]) -> Option<Fatal> {
    // The guest kernel's own last words: with `panic=-1` it should reset at once, but a reset
    // under emulation has been seen to hang instead, leaving start to wait out its deadline.
    const PANIC: &str = "Kernel panic - not syncing: ";
    let (marker, panic) = [(FATAL_MARKER, false), (PANIC, true)]
        .into_iter()
        .find(|(m, _)| line.windows(m.len()).any(|w| w == m.as_bytes()))?;
    let marker = marker.as_bytes();
    let at = line.windows(marker.len()).position(|w| w == marker)?;
    let mut reason = &line[at + marker.len()..];
    if reason.last() == Some(&b'\r') {
        reason = &reason[..reason.len() - 1];
    }
    let reason = &reason[..reason.len().min(FATAL_REASON_MAX)];
    let reason = crate::output::guest_text::escape(reason);
    Some(if panic {
        Fatal::Panic(reason)
    } else {
        Fatal::Guest(reason)
    })
}

/// A background thread that runs until told to stop, then is joined.
struct Stoppable {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Stoppable {
    fn spawn(name: &str, body: impl FnOnce(&dyn Fn(Duration) -> bool) + Send + 'static) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Sleeps up to `d`; true once asked to stop.
                let sleep = |d: Duration| {
                    let (lock, cv) = &*flag;
                    let stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let (stopped, _) = cv
                        .wait_timeout_while(stopped, d, |s| !*s)
                        .unwrap_or_else(|p| p.into_inner());
                    *stopped
                };
                body(&sleep)
            })
            .expect("spawning a watcher thread");
        Stoppable {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Measures the guest filesystem right away and then every [`DISK_CHECK_EVERY`] while the
/// machine runs, records it in `state.json` (so `status` and `ls` read it without reaching the
/// guest), and logs when it crosses [`disk::WARN_PCT`] either way. Also says once whether the
/// host filesystem can take back what the guest frees.
pub struct DiskWatch(Stoppable);

impl DiskWatch {
    pub fn spawn(target: ssh::Target, state: StateWriter, dir: MachineDir) -> DiskWatch {
        DiskWatch(Stoppable::spawn("disk", move |sleep| {
            log(disk::probe_reclaim(&dir.path).describe());
            let mut conn: Option<ssh::Connection> = None;
            let mut last_pct: Option<u8> = None;
            while state.phase() == Phase::Running {
                if conn.is_none() {
                    conn = ssh::Connection::connect(&target, Duration::from_secs(5)).ok();
                }
                match conn.as_ref().map(disk::measure_guest) {
                    Some(Ok(sample)) => {
                        // Logged when crossing the threshold, and at each change above it.
                        let was_full = last_pct.is_some_and(|p| p >= disk::WARN_PCT);
                        let full = sample.is_nearly_full();
                        if full != was_full || (full && last_pct != Some(sample.used_pct)) {
                            match disk::fullness_warning(&dir.name, &sample) {
                                Some(w) => log(format!("warning: {w}")),
                                None => log(format!(
                                    "disk: the guest filesystem is back to {}% full",
                                    sample.used_pct
                                )),
                            }
                        }
                        last_pct = Some(sample.used_pct);
                        state.update(|s| s.disk = Some(sample));
                    }
                    Some(Err(e)) => {
                        log(format!("disk: {e:#}"));
                        conn = None;
                    }
                    None => {}
                }
                if sleep(DISK_CHECK_EVERY) {
                    break;
                }
            }
        }))
    }
}

impl Part for DiskWatch {
    fn name(&self) -> &str {
        "disk watch"
    }
    fn stop(self: Box<Self>) {
        self.0.stop();
    }
}

/// Keeps `dns.json` and the host's resolver in line with the aliases the DNS server serves;
/// stopping it removes `dns.json`.
pub struct ResolverWatch(Stoppable);

impl ResolverWatch {
    pub fn spawn(mut sync: ResolverSync, records: dns::RecordsHandle) -> ResolverWatch {
        ResolverWatch(Stoppable::spawn("resolver", move |sleep| {
            loop {
                for line in sync.sync(&records.zone().routed_domains(), records.refused()) {
                    log(line);
                }
                if sleep(RESOLVER_CHECK_EVERY) {
                    break;
                }
            }
            // `sync` drops here, which removes dns.json.
        }))
    }
}

impl Part for ResolverWatch {
    fn name(&self) -> &str {
        "resolver settings"
    }
    fn stop(self: Box<Self>) {
        self.0.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_stoppable_thread_stops_at_once_and_is_joined() {
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let t = Stoppable::spawn("test", move |sleep| {
            while !sleep(Duration::from_secs(3600)) {}
            r.store(true, Ordering::SeqCst);
        });
        let started = Instant::now();
        t.stop();
        assert!(ran.load(Ordering::SeqCst), "joined after the body ended");
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn a_fatal_console_line_is_found_once_whole_across_reads_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let append = |b: &[u8]| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b).unwrap();
        };
        let mut scan = FatalScan::default();
        assert_eq!(scan.poll(&path), None, "no log yet");
        append(b"devbox-guest: init\r\ndevbox-guest: error: cannot mount the share\r\n");
        assert_eq!(scan.poll(&path), None, "an error is not fatal");
        // Split in the middle of the marker: nothing until the line is whole.
        append(b"[   3.1] random: crng init done devbox-guest: fa");
        assert_eq!(scan.poll(&path), None);
        append(b"tal: dockerd exited \x1b]0;owned\x07(see log)\r\n");
        assert_eq!(
            scan.poll(&path),
            Some(Fatal::Guest(
                "dockerd exited \\u{1b}]0;owned\\u{7}(see log)".into()
            )),
            "found after the kernel's text on the same line, escape sequences shown, not obeyed"
        );
        assert_eq!(scan.poll(&path), None, "reported once");
        // Rotation: a new, shorter file is read from its start.
        std::fs::remove_file(&path).unwrap();
        append(b"devbox-guest: fatal: sshd did not start\n");
        assert_eq!(
            scan.poll(&path),
            Some(Fatal::Guest("sshd did not start".into()))
        );
        // A new boot's file (another inode), even a longer one, is read from its start too.
        let old = dir.path().join("serial.log.1");
        std::fs::rename(&path, &old).unwrap();
        append(&[b'.'; 4096]);
        append(b"\n[ 0.92] Kernel panic - not syncing: Fatal exception in interrupt\n");
        assert_eq!(
            scan.poll(&path),
            Some(Fatal::Panic("Fatal exception in interrupt".into()))
        );
    }

    #[test]
    fn a_fatal_reason_is_cut_to_one_short_line() {
        let mut line = FATAL_MARKER.as_bytes().to_vec();
        line.extend(std::iter::repeat_n(b'x', 10_000));
        let Some(Fatal::Guest(reason)) = fatal_reason(&line) else {
            panic!("a guest's fatal line")
        };
        assert_eq!(reason.len(), FATAL_REASON_MAX);
        assert_eq!(fatal_reason(b"devbox-guest: error: no lease"), None);
        assert_eq!(
            fatal_reason(b"[   17.22] Kernel panic - not syncing: Fatal exception in interrupt\r"),
            Some(Fatal::Panic("Fatal exception in interrupt".into()))
        );
    }
}
