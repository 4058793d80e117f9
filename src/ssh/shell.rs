//! Interactive sessions on the host terminal ([`Connection::shell`]): `devbox ssh dev` and
//! `devbox ssh dev -- cmd`, on the caller's thread.
//!
//! The caller decides whether a PTY is requested (OpenSSH's rules are `commands/ssh.rs`'s);
//! with one, the host terminal goes to raw mode when stdin is a terminal (restored by a guard
//! on every exit path) and SIGWINCH is forwarded as a window-change request. Stdin is always
//! forwarded, so `echo hi | devbox ssh dev cat` works.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::SshError;
use super::pump::{self, Input, Sinks, WindowChanges};
use super::session::Connection;
use super::sys::terminal::{RawMode, WindowWatch, window_size};

/// The size announced when the terminal does not report one.
const DEFAULT_SIZE: (u32, u32, u32, u32) = (80, 24, 0, 0);
const ABANDON_TIMEOUT: Duration = Duration::from_secs(2);

impl Connection {
    /// Runs `cmd`, or the user's login shell when `None`, wired to this process's stdin,
    /// stdout and stderr, on a PTY when `pty`. Returns the exit status (128 + n when killed
    /// by signal n).
    pub fn shell(&self, cmd: Option<&str>, pty: bool) -> Result<i32, SshError> {
        let label = cmd.unwrap_or("login shell");
        let _busy = self.exclusive();
        let stdin = io::stdin();
        let stdin_fd = stdin.as_fd();
        let is_tty = nix::unistd::isatty(stdin_fd).unwrap_or(false);

        let mut channel = self
            .retry(None, || self.session.channel_session())
            .map_err(|f| self.error(label, f))?;
        let mut started = Ok(());
        if pty {
            let size = window_size(stdin_fd).unwrap_or(DEFAULT_SIZE);
            let term = std::env::var("TERM")
                .ok()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "xterm".to_string());
            started = self.retry(None, || channel.request_pty(&term, None, Some(size)));
        }
        let started = started.and_then(|()| {
            self.retry(None, || match cmd {
                Some(c) => channel.exec(c),
                None => channel.shell(),
            })
        });

        let result = started.and_then(|()| {
            // The guards live until the end of this closure: the terminal is restored before
            // the caller prints anything, error or not.
            let is_tty = pty && is_tty;
            let mut watch = match is_tty {
                true => Some(WindowWatch::install(stdin_fd).map_err(terminal)?),
                false => None,
            };
            let _raw = match is_tty {
                true => Some(RawMode::enter(stdin_fd).map_err(terminal)?),
                false => None,
            };
            let (mut stdout, mut stderr) = (io::stdout().lock(), io::stderr().lock());
            let status = pump::run_channel(
                &self.session,
                self.socket_fd(),
                &mut channel,
                Input::Fd(stdin_fd),
                Sinks {
                    stdout: &mut stdout,
                    stderr: &mut stderr,
                },
                watch.as_mut().map(|w| w as &mut dyn WindowChanges),
                None,
            );
            let _ = stdout.flush();
            status
        });
        result.map_err(|f| {
            pump::abandon(
                &self.session,
                self.socket_fd(),
                &mut channel,
                Instant::now() + ABANDON_TIMEOUT,
            );
            self.error(label, f)
        })
    }
}

/// Terminal setup failures travel through the pump's failure type until mapped.
fn terminal(e: nix::Error) -> pump::Failure {
    pump::Failure::Terminal(e)
}
