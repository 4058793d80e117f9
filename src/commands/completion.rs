//! `devbox completion SHELL`: a completion script on stdout.

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionArgs};

pub fn run(a: &CompletionArgs) -> Result<i32> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "devbox", &mut std::io::stdout());
    Ok(0)
}
