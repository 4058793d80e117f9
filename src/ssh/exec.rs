//! Running a command in the machine: [`Connection::exec`] streams, [`Connection::exec_capture`]
//! collects. Both run on the caller's thread through the channel pump in `pump.rs`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::SshError;
use super::pump::{self, Input, Sinks};
use super::session::{Connection, Output};

/// How long an abandoned channel may take to close before the session is left as it is.
const ABANDON_TIMEOUT: Duration = Duration::from_secs(2);

impl Connection {
    /// Runs `cmd` through the remote user's shell. Output is written to `stdout` and `stderr`
    /// as it arrives; `stdin`, if given, is sent to the command followed by EOF (without it
    /// the command sees EOF at once). Returns the exit status, or 128 + n when the command
    /// was killed by signal n.
    pub fn exec(
        &self,
        cmd: &str,
        stdin: Option<&mut dyn Read>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<i32, SshError> {
        self.exec_until(cmd, stdin, stdout, stderr, None)
    }

    /// [`Connection::exec`], given up (an error) at `deadline`.
    pub fn exec_until_deadline(
        &self,
        cmd: &str,
        stdin: Option<&mut dyn Read>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
        deadline: Instant,
    ) -> Result<i32, SshError> {
        self.exec_until(cmd, stdin, stdout, stderr, Some(deadline))
    }

    /// [`Connection::exec`], given up at `deadline` (the connection may then be dead: a guest
    /// that vanished without a FIN or RST answers nothing, ever).
    fn exec_until(
        &self,
        cmd: &str,
        stdin: Option<&mut dyn Read>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
        deadline: Option<Instant>,
    ) -> Result<i32, SshError> {
        let _busy = self.exclusive();
        let mut channel = self
            .retry(deadline, || self.session.channel_session())
            .map_err(|f| self.error(cmd, f))?;
        let input = match stdin {
            Some(r) => Input::Reader(r),
            None => Input::Closed,
        };
        let result = self.retry(deadline, || channel.exec(cmd)).and_then(|()| {
            pump::run_channel(
                &self.session,
                self.socket_fd(),
                &mut channel,
                input,
                Sinks { stdout, stderr },
                None,
                deadline,
            )
        });
        result.map_err(|f| {
            pump::abandon(
                &self.session,
                self.socket_fd(),
                &mut channel,
                Instant::now() + ABANDON_TIMEOUT,
            );
            self.error(cmd, f)
        })
    }

    /// Runs `cmd` with no stdin and returns its exit status and complete output.
    pub fn exec_capture(&self, cmd: &str) -> Result<Output, SshError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = self.exec(cmd, None, &mut stdout, &mut stderr)?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// [`Connection::exec_capture`], given up (an error) at `deadline`.
    pub fn exec_capture_until(&self, cmd: &str, deadline: Instant) -> Result<Output, SshError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = self.exec_until(cmd, None, &mut stdout, &mut stderr, Some(deadline))?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}
