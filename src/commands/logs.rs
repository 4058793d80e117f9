//! `devbox logs NAME [--source console|supervisor|docker] [--tail N] [--follow]`: the guest's
//! serial console (`serial.log`), the supervisor's log (`supervisor.log`), both files that
//! outlive the machine's run, or the guest's Docker engine log (`/var/log/docker.log`, read
//! over SSH, so only while the machine runs).
//!
//! All three are written by, or carry text from, the untrusted guest (the supervisor logs
//! container names and aliases). On a terminal their control characters are escaped
//! (`output::guest_text`), so an escape sequence is shown, not obeyed by the user's terminal;
//! into a pipe or a file the bytes go as they are, for tools that want them.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::{LogSource, LogsArgs};
use crate::machine::Store;
use crate::machine::store::MachineDir;
use crate::output::guest_text::GuestText;
use crate::supervisor::client;
use crate::{output, ssh};

/// Where the guest's dockerd writes (assets/guest/rootfs/usr/local/sbin/devbox-boot).
const DOCKER_LOG: &str = "/var/log/docker.log";

pub fn run(store: &Store, a: &LogsArgs) -> Result<i32> {
    let dir = store.existing(&a.name)?;
    let stdout = std::io::stdout();
    let mut sink = Sink::new(stdout.lock(), stdout.is_terminal());
    if !matches!(a.source, LogSource::Supervisor) {
        dir.load_spec()?.require_booted("logs")?;
    }
    match a.source {
        LogSource::Console => file(&dir, &dir.serial_log_path(), "console", a, &mut sink),
        LogSource::Supervisor => file(&dir, &dir.supervisor_log_path(), "supervisor", a, &mut sink),
        LogSource::Docker => docker(&dir, a, &mut sink),
    }
}

/// Standard output, escaped when it is a terminal.
pub struct Sink<W: Write> {
    out: W,
    text: Option<GuestText>,
}

impl<W: Write> Sink<W> {
    pub fn new(out: W, escape: bool) -> Sink<W> {
        Sink {
            out,
            text: escape.then(GuestText::new),
        }
    }

    /// Writes what an escaper still holds (the end of the input), and flushes.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if let Some(t) = &mut self.text {
            self.out.write_all(t.finish().as_bytes())?;
        }
        self.out.flush()
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.text {
            Some(t) => self.out.write_all(t.push(buf).as_bytes())?,
            None => self.out.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A log file of the machine's directory, from its last `--tail` lines, then as it grows.
fn file(
    dir: &MachineDir,
    path: &Path,
    what: &str,
    a: &LogsArgs,
    sink: &mut Sink<impl Write>,
) -> Result<i32> {
    if !path.exists() {
        output::info(format!(
            "Machine {} has no {what} log yet (it has never started){}",
            a.name,
            if a.follow {
                "; waiting for it (Ctrl-C stops)."
            } else {
                "."
            }
        ));
        if !a.follow {
            return Ok(0);
        }
    }
    let mut f = None;
    let mut pos = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = true;
    loop {
        let len = fs_err::metadata(path).map(|m| m.len()).ok();
        match len {
            // A new boot rotated the log (or the file is not there yet): start over.
            Some(len) if len < pos || f.is_none() => {
                let mut file = fs_err::File::open(path)?;
                pos = match (first, a.tail) {
                    (true, Some(n)) => tail_offset(&mut file, n)?,
                    _ => 0,
                };
                f = Some(file);
            }
            None => f = None,
            _ => {}
        }
        first = false;
        if let Some(file) = &mut f {
            file.seek(SeekFrom::Start(pos))?;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                sink.write_all(&buf[..n])?;
                pos += n as u64;
            }
        }
        sink.flush()?;
        // Keep following across restarts; stop only when the machine is gone.
        if !a.follow || !dir.path.exists() {
            sink.finish()?;
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Where the last `n` lines of `f` start (a last line without its newline counts).
pub fn tail_offset(f: &mut (impl Read + Seek), n: u64) -> std::io::Result<u64> {
    let end = f.seek(SeekFrom::End(0))?;
    if n == 0 {
        return Ok(end);
    }
    let mut block = vec![0u8; 64 * 1024];
    let mut at = end;
    let mut newlines = 0u64;
    while at > 0 {
        let size = block.len().min(at as usize);
        at -= size as u64;
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut block[..size])?;
        for i in (0..size).rev() {
            // The file's last newline ends its last line: it starts no line.
            if block[i] == b'\n' && at + i as u64 + 1 != end {
                newlines += 1;
                if newlines == n {
                    return Ok(at + i as u64 + 1);
                }
            }
        }
    }
    Ok(0)
}

/// The guest dockerd's log, through `tail` in the guest over SSH.
fn docker(dir: &MachineDir, a: &LogsArgs, sink: &mut Sink<impl Write>) -> Result<i32> {
    client::require_running(dir)
        .context("the Docker engine's log is read from the running guest")?;
    let spec = dir.load_spec()?;
    let target = client::ssh_target(dir, &spec)?;
    let conn = ssh::Connection::connect(&target, Duration::from_secs(10))?;
    let command = docker_command(a.tail, a.follow);
    // The guest's `tail` writes its complaints there: guest bytes too.
    let stderr = std::io::stderr();
    let mut errors = Sink::new(stderr.lock(), stderr.is_terminal());
    let status = conn.exec(&command, None, sink, &mut errors)?;
    sink.finish()?;
    errors.finish()?;
    Ok(status)
}

/// The guest's command for the Docker log: `tail` reads from the end of a file as
/// efficiently as from its start, and follows it with `-f`.
pub fn docker_command(tail: Option<u64>, follow: bool) -> String {
    let lines = match tail {
        Some(n) => n.to_string(),
        None => "+1".into(),
    };
    let follow = if follow { " -f" } else { "" };
    format!("exec tail -n {lines}{follow} {DOCKER_LOG}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn tail(text: &str, n: u64) -> &str {
        let at = tail_offset(&mut Cursor::new(text.as_bytes()), n).unwrap();
        &text[at as usize..]
    }

    #[test]
    fn tail_finds_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a\nb\nc\n", 3), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", 0), "");
        assert_eq!(tail("", 5), "");
        assert_eq!(tail("\n\n\n", 1), "\n");
        // Across the 64 KiB blocks it reads backwards.
        let big: String = (0..30_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail(&big, 3), "line 29997\nline 29998\nline 29999\n");
        assert_eq!(tail(&big, 30_000), big);
    }

    #[test]
    fn a_terminal_gets_escaped_text_and_a_pipe_the_bytes() {
        let hostile = b"ok\r\n\x1b]52;c;cHduZWQ=\x07\x1b[2Jend\n";
        let mut term = Sink::new(Vec::new(), true);
        term.write_all(&hostile[..7]).unwrap();
        term.write_all(&hostile[7..]).unwrap();
        term.finish().unwrap();
        assert_eq!(
            String::from_utf8(term.out).unwrap(),
            "ok\n\\u{1b}]52;c;cHduZWQ=\\u{7}\\u{1b}[2Jend\n"
        );
        let mut pipe = Sink::new(Vec::new(), false);
        pipe.write_all(hostile).unwrap();
        pipe.finish().unwrap();
        assert_eq!(pipe.out, hostile);
    }

    #[test]
    fn the_docker_log_command() {
        assert_eq!(
            docker_command(None, false),
            "exec tail -n +1 /var/log/docker.log"
        );
        assert_eq!(
            docker_command(Some(20), true),
            "exec tail -n 20 -f /var/log/docker.log"
        );
    }
}
