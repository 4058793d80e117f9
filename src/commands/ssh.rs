//! `devbox ssh [-t|-T] [--workdir DIR] NAME [CMD…]`: a command with stdin forwarded, its
//! output streamed and its exit code passed through (128 + n for signal n), or an interactive
//! shell, with OpenSSH's rules for when a terminal is requested. The pinned host key is
//! checked on every connection. Without `--workdir`, the command runs in the machine's view
//! of the current directory when that is inside a share (as Lima does).

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::cli::SshArgs;
use crate::machine::Store;
use crate::machine::share::ShareSpec;
use crate::output;
use crate::ssh;
use crate::ssh::quote;
use crate::supervisor::client;

pub fn run(store: &Store, a: &SshArgs) -> Result<i32> {
    let dir = store.existing(&a.name)?;
    let spec = dir.load_spec()?;
    client::require_running(&dir)?;
    let (pty, warning) = wants_pty(
        a.tty,
        a.no_tty,
        !a.command.is_empty(),
        std::io::stdin().is_terminal(),
    );
    if let Some(w) = warning {
        output::warn(w);
    }
    let workdir = match &a.workdir {
        Some(d) => Some(Workdir::Asked(d.clone())),
        None => std::env::current_dir()
            .ok()
            .and_then(|cwd| guest_dir(&spec.shares, &cwd))
            .map(Workdir::Share),
    };
    let command = remote_command(&a.command, workdir.as_ref());
    let target = client::ssh_target(&dir, &spec)?;
    let conn = ssh::Connection::connect(&target, Duration::from_secs(10))?;
    Ok(conn.shell(command.as_deref(), pty)?)
}

/// Whether to request a PTY, as OpenSSH decides: never with `-T`; with `-tt` always; with
/// `-t`, or for a shell without a command, when stdin is a terminal (`-t` without one gets
/// OpenSSH's warning).
pub fn wants_pty(
    t: u8,
    no_tty: bool,
    has_command: bool,
    stdin_tty: bool,
) -> (bool, Option<&'static str>) {
    if no_tty {
        return (false, None);
    }
    if t >= 2 {
        return (true, None);
    }
    if t == 1 || !has_command {
        if stdin_tty {
            return (true, None);
        }
        if t == 1 {
            return (
                false,
                Some(
                    "Pseudo-terminal will not be allocated because stdin is not a terminal (-tt forces one)",
                ),
            );
        }
    }
    (false, None)
}

/// Where the remote command runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Workdir {
    /// `--workdir`: not being able to enter it is an error.
    Asked(String),
    /// The current directory's path in the machine: tried, the login directory otherwise.
    Share(String),
}

/// The machine's path of host directory `cwd` when it is inside one of `shares`.
pub fn guest_dir(shares: &[ShareSpec], cwd: &Path) -> Option<String> {
    shares.iter().find_map(|s| {
        let rel = cwd.strip_prefix(&s.host_path).ok()?;
        let mut path = s.guest_path.trim_end_matches('/').to_owned();
        for part in rel.components() {
            path.push('/');
            path.push_str(part.as_os_str().to_str()?);
        }
        if path.is_empty() {
            path.push('/');
        }
        Some(path)
    })
}

/// The command line sent to the remote shell: `command` (or a login shell) in `workdir`.
/// `None`: the login shell in the login directory (the session's `shell` request).
pub fn remote_command(command: &[String], workdir: Option<&Workdir>) -> Option<String> {
    let cmd = (!command.is_empty()).then(|| shell_join(command));
    let Some(workdir) = workdir else {
        return cmd;
    };
    let cd = match workdir {
        Workdir::Asked(d) => format!("cd -- {} || exit 1", quote(d)),
        Workdir::Share(d) => format!("cd -- {} 2>/dev/null", quote(d)),
    };
    let run = cmd.unwrap_or_else(|| "exec \"${SHELL:-/bin/sh}\" -l".to_owned());
    Some(format!("{cd}\n{run}"))
}

/// Joins argv for the remote shell. A single argument is passed as it is (so
/// `devbox ssh m 'ls | wc -l'` works like OpenSSH); several are quoted one by one.
fn shell_join(args: &[String]) -> String {
    if let [one] = args {
        return one.clone();
    }
    args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_like_openssh() {
        assert_eq!(shell_join(&["ls | wc -l".into()]), "ls | wc -l");
        assert_eq!(
            shell_join(&["echo".into(), "a b".into(), "it's".into()]),
            r"echo 'a b' 'it'\''s'"
        );
    }

    #[test]
    fn a_terminal_as_openssh_requests_one() {
        // (-t count, -T, command given, stdin a terminal) → PTY
        assert!(wants_pty(0, false, false, true).0, "shell on a terminal");
        assert!(!wants_pty(0, false, false, false).0, "shell from a pipe");
        assert!(!wants_pty(0, false, true, true).0, "command without -t");
        assert!(wants_pty(1, false, true, true).0, "-t on a terminal");
        let (pty, warning) = wants_pty(1, false, true, false);
        assert!(!pty && warning.is_some(), "-t from a pipe warns");
        assert!(wants_pty(2, false, true, false).0, "-tt forces");
        assert!(!wants_pty(0, true, false, true).0, "-T never");
    }

    fn share(host: &str, guest: &str) -> ShareSpec {
        serde_norway::from_str(&format!("host_path: {host}\nguest_path: {guest}\n")).unwrap()
    }

    #[test]
    fn the_current_directory_maps_through_its_share() {
        let shares = [share("/home/u", "/home/u"), share("/src", "/work")];
        assert_eq!(
            guest_dir(&shares, Path::new("/home/u/p/q")).as_deref(),
            Some("/home/u/p/q")
        );
        assert_eq!(
            guest_dir(&shares, Path::new("/src/a")).as_deref(),
            Some("/work/a")
        );
        assert_eq!(
            guest_dir(&shares, Path::new("/src")).as_deref(),
            Some("/work")
        );
        assert_eq!(guest_dir(&shares, Path::new("/srcx")), None);
        assert_eq!(guest_dir(&shares, Path::new("/tmp")), None);
    }

    #[test]
    fn the_workdir_is_entered_before_the_command() {
        let cmd = ["pwd".to_owned()];
        assert_eq!(remote_command(&cmd, None).as_deref(), Some("pwd"));
        assert_eq!(remote_command(&[], None), None);
        assert_eq!(
            remote_command(&cmd, Some(&Workdir::Asked("/a b".into()))).as_deref(),
            Some("cd -- '/a b' || exit 1\npwd")
        );
        assert_eq!(
            remote_command(&[], Some(&Workdir::Share("/w".into()))).as_deref(),
            Some("cd -- /w 2>/dev/null\nexec \"${SHELL:-/bin/sh}\" -l")
        );
    }
}
