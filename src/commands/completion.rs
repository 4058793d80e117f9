//! `devbox completion SHELL`: a completion script on stdout, and the completions it asks for.
//!
//! The scripts are clap_complete's dynamic ones: on each TAB the shell runs devbox again with
//! `_DEVBOX_COMPLETE=<shell>` and the words typed so far, and devbox answers from the same
//! command definition it parses with, so hidden commands (`__supervise`) are never offered
//! and machine names come from the store as it is now (see `cli::machine_names`).

use std::ffi::OsString;
use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};
use clap_complete::{CompleteEnv, Shell};

use crate::cli::{Cli, CompletionArgs};

/// The variable the scripts set when they ask devbox for completions.
const VAR: &str = "_DEVBOX_COMPLETE";

pub fn run(a: &CompletionArgs) -> Result<i32> {
    let shell: &dyn EnvCompleter = match a.shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
        Shell::Elvish => &Elvish,
        Shell::PowerShell => &Powershell,
        other => anyhow::bail!("no completion script for {other}"),
    };
    let mut script = Vec::new();
    // The scripts call `devbox` as found on PATH, like the command the user typed.
    shell.write_registration(VAR, "devbox", "devbox", "devbox", &mut script)?;
    std::io::stdout().lock().write_all(&script)?;
    Ok(0)
}

/// Answers the shell when `args` is its completion request (returns `true`: nothing else to
/// do); `false` for every ordinary run.
pub fn complete(args: &[OsString]) -> Result<bool, clap::Error> {
    if std::env::var_os(VAR).is_none_or(|v| v.is_empty() || v == "0") {
        return Ok(false);
    }
    let cwd = std::env::current_dir().ok();
    CompleteEnv::with_factory(Cli::command)
        .var(VAR)
        .bin("devbox")
        .completer("devbox")
        .try_complete(args.iter().cloned(), cwd.as_deref())
}
