//! The guest's console log (`serial.log`), capped in size.
//!
//! The guest decides how much it prints, and the guest is untrusted: a loop writing to
//! `/dev/ttyS0` must not fill the host filesystem that holds `DEVBOX_HOME`. Every driver writes
//! the console through [`ConsoleLog`]: when `serial.log` reaches [`MAX_BYTES`], it becomes
//! `serial.log.1` (replacing the older one) and a new `serial.log` starts. A boot rotates the
//! same way (`supervisor::bring_up`), so the previous boot's log is `serial.log.1` until the
//! new one fills. The two files together never hold more than twice [`MAX_BYTES`].
//!
//! Drivers whose guest console is a byte stream they do not write themselves feed it through
//! [`pump`], which also drains the stream when a write fails (a full disk), so the guest never
//! blocks on its console: QEMU's stdout through [`spawn_pump`], and for a hypervisor that
//! writes the console to a file descriptor of ours (Virtualization.framework's file-handle
//! attachment; its own file attachment has no cap), the write end of a [`pipe`].

use std::fs::File;
use std::io::{self, PipeWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// The most one console log file holds: several boots' worth of a normal console (a boot
/// prints about 50 KiB), small next to a machine's disk.
pub const MAX_BYTES: u64 = 4 << 20;

/// An append-only console log that rotates itself at a size cap.
#[derive(Debug)]
pub struct ConsoleLog {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    len: u64,
    max: u64,
}

/// The guest init's marker of a boot phase: `devbox-guest: phase NAME SECONDS`, SECONDS from
/// its `/proc/uptime` (assets/guest/README.md).
pub const PHASE_MARKER: &str = "devbox-guest: phase ";

/// The boot phases this boot's console log (`path`) records, in order: at most 16, each name
/// 1 to 16 lowercase letters and a time below a day, each later than the one before. The
/// guest is untrusted: anything else is left out. Reads the log's first MiB (the markers come
/// before `devbox-guest: ready`).
pub fn boot_phases(path: &Path) -> Vec<crate::machine::state::BootPhase> {
    let mut text = Vec::new();
    if let Ok(f) = File::open(path) {
        let _ = f.take(1 << 20).read_to_end(&mut text);
    }
    let mut out: Vec<crate::machine::state::BootPhase> = Vec::new();
    for line in String::from_utf8_lossy(&text).lines() {
        // Anywhere in the line: another writer (getty's prompt) may have begun it.
        let line = line.trim_end_matches('\r');
        let Some(at) = line.find(PHASE_MARKER) else {
            continue;
        };
        let rest = &line[at + PHASE_MARKER.len()..];
        let Some((name, secs)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(guest_s) = secs.parse::<f64>() else {
            continue;
        };
        let ok_name =
            (1..=16).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase());
        let in_order = out.last().is_none_or(|p| p.guest_s <= guest_s);
        if ok_name && guest_s.is_finite() && (0.0..86_400.0).contains(&guest_s) && in_order {
            out.push(crate::machine::state::BootPhase {
                name: name.to_owned(),
                guest_s,
            });
        }
        if out.len() == 16 {
            break;
        }
    }
    out
}

/// What a Linux kernel prints when it panics.
pub const KERNEL_PANIC: &str = "Kernel panic - not syncing";

/// How much of a console log's end [`kernel_panicked`] reads: a panic's report (oops,
/// registers, stack) is a few KiB and ends the log.
const PANIC_TAIL: u64 = 64 << 10;

/// Whether the guest's kernel panicked, as the end of its console log says. The guest is
/// untrusted and may print the same line: the answer only ever buys it one more boot.
pub fn kernel_panicked(path: &Path) -> bool {
    use std::io::{Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut tail = Vec::new();
    if file
        .seek(SeekFrom::Start(len.saturating_sub(PANIC_TAIL)))
        .is_err()
        || file.take(PANIC_TAIL).read_to_end(&mut tail).is_err()
    {
        return false;
    }
    String::from_utf8_lossy(&tail).contains(KERNEL_PANIC)
}

impl ConsoleLog {
    /// Opens (creating) `path` for appending, capped at [`MAX_BYTES`].
    pub fn open(path: &Path) -> io::Result<ConsoleLog> {
        ConsoleLog::with_cap(path, MAX_BYTES)
    }

    /// Opens `path` with another cap (tests).
    pub fn with_cap(path: &Path, max: u64) -> io::Result<ConsoleLog> {
        let file = open_append(path)?;
        let len = file.metadata().map_err(|e| with_path(e, path))?.len();
        Ok(ConsoleLog {
            path: path.to_owned(),
            file,
            len,
            max,
        })
    }

    /// Moves the full file to `<path>.1` and starts an empty one. A log someone deleted
    /// meanwhile has nothing to keep: the new one starts all the same.
    fn rotate(&mut self) -> io::Result<()> {
        let old = rotated_path(&self.path);
        match std::fs::rename(&self.path, &old) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(with_path(e, &self.path)),
        }
        self.file = open_append(&self.path)?;
        self.len = 0;
        Ok(())
    }
}

impl Write for ConsoleLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.len >= self.max {
            self.rotate()?;
        }
        let room = usize::try_from(self.max - self.len).unwrap_or(usize::MAX);
        let n = self
            .file
            .write(&buf[..buf.len().min(room)])
            .map_err(|e| with_path(e, &self.path))?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// `serial.log` → `serial.log.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Copies a console stream into `log` until the stream ends. A failed write (a full disk) is
/// reported once through `on_error` and the stream is still drained, so the guest does not
/// stall on a console nobody reads.
pub fn pump(mut from: impl Read, mut log: ConsoleLog, on_error: impl Fn(&io::Error)) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut failed = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if let Err(e) = log.write_all(&buf[..n])
            && !failed
        {
            failed = true;
            on_error(&e);
        }
    }
}

/// Runs [`pump`] on a thread of its own (`devbox-console`), which ends with the stream.
pub fn spawn_pump(
    from: impl Read + Send + 'static,
    log: ConsoleLog,
    on_error: impl Fn(&io::Error) + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("devbox-console".into())
        .spawn(move || pump(from, log, on_error))
}

/// The `on_error` of a driver's pump: a line in the supervisor's log, as the console stops
/// being kept.
pub fn report_to_supervisor(path: PathBuf) -> impl Fn(&io::Error) + Send + 'static {
    move |e| {
        crate::supervisor::log(format!(
            "the guest console is dropped from now on: writing {}: {e}",
            path.display()
        ))
    }
}

/// A pipe whose read end is pumped into `log` ([`spawn_pump`]); the write end is the guest's
/// console, for a hypervisor that writes it to a descriptor. The thread ends once every copy
/// of the write end is closed (the hypervisor released it).
pub fn pipe(
    log: ConsoleLog,
    on_error: impl Fn(&io::Error) + Send + 'static,
) -> io::Result<(PipeWriter, JoinHandle<()>)> {
    let (reader, writer) = io::pipe()?;
    let thread = spawn_pump(reader, log, on_error)?;
    Ok((writer, thread))
}

fn open_append(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| with_path(e, path))
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_phases_are_read_in_order_and_anything_odd_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        std::fs::write(
            &path,
            "[    0.5] Linux version 6.12\r\n\
             devbox-guest: init\r\n\
             devbox-guest: phase init 1.02\r\n\
             devbox-guest: phase disk 2.50\r\n\
             devbox-guest: phase Evil 3.00\r\n\
             devbox-guest: phase early 1.00\r\n\
             devbox-guest: phase nan NaN\r\n\
             Please press Enter to activate this console. devbox-guest: phase docker 12.75\r\n",
        )
        .unwrap();
        let got: Vec<(String, f64)> = boot_phases(&path)
            .into_iter()
            .map(|p| (p.name, p.guest_s))
            .collect();
        assert_eq!(
            got,
            [
                ("init".to_owned(), 1.02),
                ("disk".to_owned(), 2.5),
                ("docker".to_owned(), 12.75)
            ]
        );
        assert!(boot_phases(&dir.path().join("none")).is_empty());
    }

    #[test]
    fn a_panic_is_found_at_the_end_of_a_long_log_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        assert!(!kernel_panicked(&path), "no log: no panic");
        let mut text = b"Kernel panic - not syncing: long ago\n".to_vec();
        text.extend(std::iter::repeat_n(b'.', 2 * PANIC_TAIL as usize));
        std::fs::write(&path, &text).unwrap();
        assert!(!kernel_panicked(&path), "beyond the tail it reads");
        text.extend(b"\n[    0.92] Kernel panic - not syncing: Fatal exception in interrupt\n");
        std::fs::write(&path, &text).unwrap();
        assert!(kernel_panicked(&path));
    }

    fn size(p: &Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn a_guest_that_never_stops_printing_fills_at_most_two_files() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("serial.log");
        let mut log = ConsoleLog::with_cap(&path, 1000).unwrap();
        for i in 0..500 {
            writeln!(log, "line {i:04} of a flood").unwrap();
        }
        assert!(size(&path) <= 1000 && size(&rotated_path(&path)) == 1000);
        // The newest output is kept.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("line 0499 of a flood\n"), "{text}");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            2,
            "only serial.log and serial.log.1"
        );
    }

    #[test]
    fn reopening_counts_what_the_file_already_holds() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("serial.log");
        std::fs::write(&path, vec![b'x'; 900]).unwrap();
        let mut log = ConsoleLog::with_cap(&path, 1000).unwrap();
        log.write_all(&[b'y'; 300]).unwrap();
        assert_eq!(size(&rotated_path(&path)), 1000);
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'y'; 200]);
    }

    #[test]
    fn a_log_deleted_while_the_guest_runs_starts_again_at_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("serial.log");
        let mut log = ConsoleLog::with_cap(&path, 100).unwrap();
        log.write_all(&[b'a'; 60]).unwrap();
        std::fs::remove_file(&path).unwrap();
        log.write_all(&[b'b'; 60]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'b'; 20]);
        assert!(!rotated_path(&path).exists());
    }

    #[test]
    fn pump_copies_a_stream_to_the_end_under_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("serial.log");
        let log = ConsoleLog::with_cap(&path, 64 << 10).unwrap();
        let flood = vec![b'z'; 1 << 20];
        pump(&flood[..], log, |e| panic!("{e}"));
        assert_eq!(size(&path), 64 << 10);
        assert_eq!(size(&rotated_path(&path)), 64 << 10);
    }

    #[test]
    fn a_pipe_caps_what_its_writer_floods_and_ends_when_the_writer_closes() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("serial.log");
        let log = ConsoleLog::with_cap(&path, 4096).unwrap();
        let (mut guest, thread) = pipe(log, |e| panic!("{e}")).unwrap();
        for i in 0..2000 {
            writeln!(guest, "console line {i:05}").unwrap();
        }
        drop(guest);
        thread.join().unwrap();
        // 2000 lines of 19 bytes: nine full files went by, the current one holds the rest.
        let total = 2000 * "console line 00000\n".len() as u64;
        assert_eq!(size(&path), total % 4096);
        assert_eq!(size(&rotated_path(&path)), 4096);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("console line 01999\n"), "{text}");
    }

    #[test]
    fn a_pipe_is_drained_when_the_log_cannot_be_written() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("serial.log");
        let log = ConsoleLog::with_cap(&path, 1024).unwrap();
        // The log's directory is replaced by a file: rotation cannot create the new log.
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = errors.clone();
        let (mut guest, thread) =
            pipe(log, move |e| seen.lock().unwrap().push(e.to_string())).unwrap();
        guest.write_all(&[b'a'; 1024]).unwrap();
        std::fs::remove_dir_all(d.path()).unwrap();
        std::fs::write(d.path(), b"not a directory").unwrap();
        // Far more than a pipe buffer: the writer would block if nobody drained the pipe.
        guest.write_all(&vec![b'b'; 1 << 20]).unwrap();
        drop(guest);
        thread.join().unwrap();
        std::fs::remove_file(d.path()).unwrap();
        assert_eq!(errors.lock().unwrap().len(), 1, "reported once");
    }
}
