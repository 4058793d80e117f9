//! Moving bytes over a non-blocking libssh2 session with `poll(2)`.
//!
//! Sessions are non-blocking once authenticated. Every libssh2 call may then return
//! `LIBSSH2_ERROR_EAGAIN`; the caller retries it after waiting for the socket in the
//! direction libssh2 reports (`block_directions`). Two libssh2 rules shape this file:
//! - an interrupted call must be repeated with the same arguments before anything else is
//!   sent (a half-sent packet blocks every other send of the session), which is why
//!   [`retry`] loops on one operation and the pumps keep unsent bytes and offer them again;
//! - reading one stream drains the socket into libssh2's packet queue, so data for another
//!   stream can sit in that queue while the socket is idle. Before sleeping in `poll`, the
//!   pump asks the channel whether data is already queued (`read_window().available`).
//!
//! [`run_channel`] is the pump of a command channel (stdout, stderr, stdin, window changes);
//! the socket forwarder has its own in `forward.rs`.

use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use ssh2::{BlockDirections, Channel, ErrorCode, Session};

/// Bytes moved per read; 32 KiB matches the SSH maximum packet payload libssh2 sends.
pub(super) const CHUNK: usize = 32 * 1024;

/// Why a pump or retried operation stopped.
#[derive(Debug)]
pub(super) enum Failure {
    /// The SSH session or channel failed.
    Ssh(ssh2::Error),
    /// Local I/O failed (reading stdin, writing output, polling).
    Local(io::Error),
    /// A deadline passed while waiting for the session.
    TimedOut,
    /// The host terminal could not be set up.
    Terminal(nix::Error),
}

/// `LIBSSH2_ERROR_EAGAIN` from libssh2.h; `ssh2` does not re-export the constants.
const LIBSSH2_ERROR_EAGAIN: i32 = -37;

pub(super) fn would_block(e: &ssh2::Error) -> bool {
    e.code() == ErrorCode::Session(LIBSSH2_ERROR_EAGAIN)
}

/// The poll events the session's socket must be watched for.
pub(super) fn session_events(session: &Session) -> PollFlags {
    match session.block_directions() {
        BlockDirections::Outbound => PollFlags::POLLOUT,
        BlockDirections::Both => PollFlags::POLLIN | PollFlags::POLLOUT,
        // Inbound, or nothing pending: incoming data is what we wait for.
        _ => PollFlags::POLLIN,
    }
}

/// `poll(2)` that treats an interrupting signal (SIGWINCH during a shell) as a wake-up.
pub(super) fn poll_fds(fds: &mut [PollFd], deadline: Option<Instant>) -> Result<(), Failure> {
    let timeout = match deadline {
        None => PollTimeout::NONE,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::TimedOut);
            }
            // Rounded up so we never spin on a sub-millisecond remainder.
            PollTimeout::try_from(left.as_millis().saturating_add(1)).unwrap_or(PollTimeout::MAX)
        }
    };
    match poll(fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(Failure::Local(e.into())),
    }
}

/// Repeats a libssh2 operation until it stops returning EAGAIN, sleeping in `poll` on the
/// session socket in between.
pub(super) fn retry<T>(
    session: &Session,
    socket: BorrowedFd<'_>,
    deadline: Option<Instant>,
    mut op: impl FnMut() -> Result<T, ssh2::Error>,
) -> Result<T, Failure> {
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if would_block(&e) => {
                let mut fds = [PollFd::new(socket, session_events(session))];
                poll_fds(&mut fds, deadline)?;
            }
            Err(e) => return Err(Failure::Ssh(e)),
        }
    }
}

/// Where a command's stdin comes from.
pub(super) enum Input<'a> {
    /// No stdin: EOF is sent at once.
    Closed,
    /// A reader, read on the pump thread whenever the channel can take more bytes. A read
    /// that blocks pauses the pump, so this suits files, buffers and pipes whose writer does
    /// not wait for this command's output.
    Reader(&'a mut dyn Read),
    /// A file descriptor (the terminal), read only when `poll` says it is readable.
    Fd(BorrowedFd<'a>),
}

/// A source of terminal size changes for a PTY channel.
pub(super) trait WindowChanges {
    /// Polled for `POLLIN`; readable when the size may have changed.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Consumes the wake-up and returns the new size (cols, rows, width px, height px).
    fn take(&mut self) -> Option<(u32, u32, u32, u32)>;
}

/// The output side of a command channel.
pub(super) struct Sinks<'a> {
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

/// Pumps a started command channel until the remote side has closed both output streams and
/// the channel, then returns the exit status (128 + n when killed by signal n, 255 when the
/// server reported a signal it did not name in a way we know).
pub(super) fn run_channel(
    session: &Session,
    socket: BorrowedFd<'_>,
    channel: &mut Channel,
    mut input: Input<'_>,
    sinks: Sinks<'_>,
    mut winch: Option<&mut dyn WindowChanges>,
    deadline: Option<Instant>,
) -> Result<i32, Failure> {
    let Sinks { stdout, stderr } = sinks;
    let mut buf = vec![0u8; CHUNK];
    let (mut out_done, mut err_done) = (false, false);
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_at = 0;
    let mut in_eof = matches!(input, Input::Closed);
    let mut in_ready = false;
    let mut eof_sent = false;
    let mut new_size: Option<(u32, u32, u32, u32)> = None;

    loop {
        let mut progress = false;

        if let Some((cols, rows, px_w, px_h)) = new_size {
            match channel.request_pty_size(cols, rows, Some(px_w), Some(px_h)) {
                Ok(()) => {
                    new_size = None;
                    progress = true;
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(Failure::Ssh(e)),
            }
        }

        progress |= drain(&mut channel.stream(0), stdout, &mut buf, &mut out_done)?;
        progress |= drain(&mut channel.stderr(), stderr, &mut buf, &mut err_done)?;

        if !in_eof && pending_at == pending.len() {
            let got = match &mut input {
                Input::Closed => Some(0),
                Input::Reader(r) => match r.read(&mut buf) {
                    Ok(n) => Some(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                    Err(e) => return Err(Failure::Local(e)),
                },
                Input::Fd(fd) if in_ready => {
                    in_ready = false;
                    match nix::unistd::read(*fd, &mut buf) {
                        Ok(n) => Some(n),
                        // EIO: the terminal hung up.
                        Err(Errno::EIO) => Some(0),
                        Err(Errno::EAGAIN | Errno::EINTR) => None,
                        Err(e) => return Err(Failure::Local(e.into())),
                    }
                }
                Input::Fd(_) => None,
            };
            match got {
                Some(0) => {
                    in_eof = true;
                    progress = true;
                }
                Some(n) => {
                    pending.clear();
                    pending.extend_from_slice(&buf[..n]);
                    pending_at = 0;
                    progress = true;
                }
                None => {}
            }
        }
        if pending_at < pending.len() {
            match channel.write(&pending[pending_at..]) {
                Ok(n) => {
                    pending_at += n;
                    progress |= n > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The command stopped reading (exited, or closed its stdin): like OpenSSH,
                // drop the rest of the input rather than failing the command.
                Err(_) if channel.eof() || out_done => {
                    pending_at = pending.len();
                    in_eof = true;
                    eof_sent = true;
                }
                Err(e) => return Err(Failure::Local(e)),
            }
        }
        if in_eof && pending_at == pending.len() && !eof_sent {
            match channel.send_eof() {
                Ok(()) => {
                    eof_sent = true;
                    progress = true;
                }
                Err(e) if would_block(&e) => {}
                // Already closed by the remote side: nothing left to tell it.
                Err(_) if channel.eof() => eof_sent = true,
                Err(e) => return Err(Failure::Ssh(e)),
            }
        }

        if out_done && err_done {
            // Output is over; the exit status arrives before the remote CLOSE. Keep feeding
            // stdin meanwhile: a command may still be reading after closing its output.
            match channel.wait_close() {
                Ok(()) => break,
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(Failure::Ssh(e)),
            }
        }

        // Queued data is only worth another pass while a stream can still take it.
        let queued = !(out_done && err_done) && channel.read_window().available > 0;
        if progress || queued {
            continue;
        }
        let want_input = matches!(input, Input::Fd(_)) && !in_eof && pending_at == pending.len();
        let mut fds = vec![PollFd::new(socket, session_events(session))];
        if let (true, Input::Fd(fd)) = (want_input, &input) {
            fds.push(PollFd::new(*fd, PollFlags::POLLIN));
        }
        let winch_at = fds.len();
        if let Some(w) = winch.as_deref() {
            fds.push(PollFd::new(w.fd(), PollFlags::POLLIN));
        }
        poll_fds(&mut fds, deadline)?;
        let ready = |i: usize| fds.get(i).and_then(|f| f.any()).unwrap_or(false);
        if want_input && ready(1) {
            in_ready = true;
        }
        let size_changed = winch.is_some() && ready(winch_at);
        drop(fds);
        if size_changed && let Some(w) = winch.as_deref_mut() {
            new_size = w.take().or(new_size);
        }
    }

    retry(session, socket, deadline, || channel.close())?;
    exit_status(channel).map_err(Failure::Ssh)
}

/// Reads everything currently available on one stream into `sink`. Returns whether anything
/// happened (data or end of stream).
fn drain(
    stream: &mut ssh2::Stream,
    sink: &mut dyn Write,
    buf: &mut [u8],
    done: &mut bool,
) -> Result<bool, Failure> {
    let mut progress = false;
    while !*done {
        match stream.read(buf) {
            Ok(0) => {
                *done = true;
                progress = true;
            }
            Ok(n) => {
                sink.write_all(&buf[..n]).map_err(Failure::Local)?;
                sink.flush().map_err(Failure::Local)?;
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(Failure::Local(e)),
        }
    }
    Ok(progress)
}

/// The exit status the way a shell reports it: the code, or 128 + n for death by signal n.
fn exit_status(channel: &Channel) -> Result<i32, ssh2::Error> {
    let signal = channel.exit_signal()?;
    if let Some(name) = signal.exit_signal {
        // The server sends the name without "SIG" (RFC 4254 §6.10).
        let number = format!("SIG{name}")
            .parse::<nix::sys::signal::Signal>()
            .map(|s| 128 + s as i32)
            .unwrap_or(255);
        return Ok(number);
    }
    channel.exit_status()
}

/// Closes a channel that is being abandoned after an error, waiting at most until
/// `deadline`, so that no half-sent CLOSE is left in the session for the next user.
pub(super) fn abandon(
    session: &Session,
    socket: BorrowedFd<'_>,
    channel: &mut Channel,
    deadline: Instant,
) -> bool {
    retry(session, socket, Some(deadline), || channel.close()).is_ok()
}
