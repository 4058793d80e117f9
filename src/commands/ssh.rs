//! `devbox ssh NAME [-- CMD…]`: a command with its output streamed and its exit code passed
//! through, or an interactive shell. The pinned host key is checked on every connection.

use std::time::Duration;

use anyhow::Result;

use crate::cli::SshArgs;
use crate::machine::Store;
use crate::ssh;
use crate::supervisor::client;

pub fn run(store: &Store, a: &SshArgs) -> Result<i32> {
    let dir = store.existing(&a.name)?;
    let spec = dir.load_spec()?;
    client::require_running(&dir)?;
    let target = client::ssh_target(&dir, &spec)?;
    let conn = ssh::Connection::connect(&target, Duration::from_secs(10))?;
    let code = if a.command.is_empty() {
        conn.shell(None)?
    } else {
        let cmd = shell_join(&a.command);
        let mut stdin = std::io::stdin();
        let mut stdout = std::io::stdout();
        let mut stderr = std::io::stderr();
        let input: Option<&mut dyn std::io::Read> = if std::io::IsTerminal::is_terminal(&stdin) {
            None
        } else {
            Some(&mut stdin)
        };
        conn.exec(&cmd, input, &mut stdout, &mut stderr)?
    };
    Ok(code)
}

/// Joins argv for the remote shell. A single argument is passed as it is (so
/// `devbox ssh m -- 'ls | wc -l'` works like OpenSSH); several are quoted one by one.
fn shell_join(args: &[String]) -> String {
    if args.len() == 1 {
        return args[0].clone();
    }
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn joins_like_openssh() {
        assert_eq!(super::shell_join(&["ls | wc -l".into()]), "ls | wc -l");
        assert_eq!(
            super::shell_join(&["echo".into(), "a b".into(), "it's".into()]),
            r"echo 'a b' 'it'\''s'"
        );
    }
}
