//! The host terminal during an interactive session.
//!
//! - [`RawMode`] puts the terminal in raw mode and restores the saved settings when dropped,
//!   so every exit path (error, `?`, panic unwinding) gives the user a sane terminal back.
//! - [`WindowWatch`] turns SIGWINCH into a readable pipe (the self-pipe trick), so the
//!   `poll(2)` loop of the pump wakes up and forwards the new size as a window-change request.
//!   Signal dispositions are per process: one interactive session at a time.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};

use crate::ssh::pump::WindowChanges;

/// The terminal in raw mode; dropping it restores the previous settings.
pub(crate) struct RawMode {
    tty: OwnedFd,
    saved: Termios,
}

impl RawMode {
    pub(crate) fn enter(tty: BorrowedFd<'_>) -> nix::Result<RawMode> {
        let tty = tty
            .try_clone_to_owned()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)))?;
        let saved = tcgetattr(&tty)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&tty, SetArg::TCSADRAIN, &raw)?;
        Ok(RawMode { tty, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(&self.tty, SetArg::TCSADRAIN, &self.saved);
    }
}

/// The terminal size as (columns, rows, width in pixels, height in pixels), the order of the
/// SSH `pty-req` and `window-change` requests.
pub(crate) fn window_size(tty: BorrowedFd<'_>) -> Option<(u32, u32, u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes exactly one `struct winsize` through the pointer, which
    // points to a live, properly aligned local of that type; `tty` is an open descriptor.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then(|| {
        (
            u32::from(ws.ws_col),
            u32::from(ws.ws_row),
            u32::from(ws.ws_xpixel),
            u32::from(ws.ws_ypixel),
        )
    })
}

/// Write end of [`WINCH_PIPE`] for the signal handler, or -1 when no session watches.
static WINCH_WRITE_FD: AtomicI32 = AtomicI32::new(-1);
/// (read end, write end), both non-blocking. Created once and never closed, so the signal
/// handler can never write to a descriptor that was closed and reused.
static WINCH_PIPE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();
static WAKE_BYTE: u8 = 1;

extern "C" fn on_winch(_signal: libc::c_int) {
    let fd = WINCH_WRITE_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let saved = Errno::last_raw();
    // SAFETY: write(2) is async-signal-safe; `fd` is the write end of WINCH_PIPE, which is
    // never closed, and the buffer is a one-byte static. A full pipe fails with EAGAIN
    // (non-blocking), which is fine: a wake-up is already pending.
    unsafe { libc::write(fd, std::ptr::from_ref(&WAKE_BYTE).cast(), 1) };
    Errno::set_raw(saved);
}

fn winch_pipe() -> nix::Result<&'static (OwnedFd, OwnedFd)> {
    if let Some(pipe) = WINCH_PIPE.get() {
        return Ok(pipe);
    }
    let (read, write) = nix::unistd::pipe()?;
    for fd in [&read, &write] {
        fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    // Losing a race to another thread just drops our pair.
    let _ = WINCH_PIPE.set((read, write));
    Ok(WINCH_PIPE.get().expect("set just above"))
}

/// SIGWINCH delivered as readability of a pipe, for the duration of a session.
pub(crate) struct WindowWatch {
    tty: OwnedFd,
    previous: SigAction,
}

impl WindowWatch {
    pub(crate) fn install(tty: BorrowedFd<'_>) -> nix::Result<WindowWatch> {
        let tty = tty
            .try_clone_to_owned()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)))?;
        let (read, write) = winch_pipe()?;
        drain(read.as_fd());
        WINCH_WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(on_winch),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: `on_winch` only loads an atomic, calls write(2) and saves/restores errno,
        // all async-signal-safe; it touches no lock and allocates nothing.
        let previous = unsafe { sigaction(Signal::SIGWINCH, &action) }?;
        Ok(WindowWatch { tty, previous })
    }
}

impl Drop for WindowWatch {
    fn drop(&mut self) {
        WINCH_WRITE_FD.store(-1, Ordering::Relaxed);
        // SAFETY: reinstalls the disposition that was in place before `install`, which was
        // valid for this process then and still is.
        let _ = unsafe { sigaction(Signal::SIGWINCH, &self.previous) };
    }
}

impl WindowChanges for WindowWatch {
    fn fd(&self) -> BorrowedFd<'_> {
        // The pipe exists: `install` created it before this value did.
        WINCH_PIPE.get().expect("created by install").0.as_fd()
    }

    fn take(&mut self) -> Option<(u32, u32, u32, u32)> {
        drain(self.fd());
        window_size(self.tty.as_fd())
    }
}

fn drain(read: BorrowedFd<'_>) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(read, &mut buf), Ok(n) if n > 0) {}
}
