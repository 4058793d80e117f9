//! One file per verb; each only orchestrates the modules that do the work, and reaches a
//! machine's supervisor only through `supervisor::client`. `run` parses the command line,
//! dispatches, and turns errors into `error:` / `caused by:` / `hint:` lines and an exit code
//! (`output`).

mod completion;
mod create;
mod disk;
mod dns;
mod dns_allow;
mod env;
mod image;
mod inspect;
mod ip;
mod logs;
mod ls;
mod rm;
mod routes;
mod ssh;
mod start;
mod status;
mod stop;

use anyhow::Result;
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::machine::Store;
use crate::output;

/// Exit code for errors (clap uses 2 for usage errors).
const EXIT_ERROR: i32 = 1;

pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let store = Store::new(cli.home.clone(), cli.cache.clone());
    match dispatch(&store, cli.command) {
        Ok(code) => code,
        Err(e) => {
            output::error(&e, output::diagnostics::hint(&e));
            EXIT_ERROR
        }
    }
}

fn dispatch(store: &Store, command: Command) -> Result<i32> {
    match command {
        Command::Create(a) => create::run(store, a),
        Command::Start(a) => start::run(store, &a),
        Command::Stop(a) => stop::run(store, &a),
        Command::Restart(a) => {
            stop::run(
                store,
                &crate::cli::StopArgs {
                    name: a.name.clone(),
                    force: false,
                },
            )?;
            start::run(store, &a)
        }
        Command::Rm(a) => rm::run(store, &a),
        Command::Ls(a) => ls::run(store, &a),
        Command::Status(a) => status::run(store, &a),
        Command::Inspect(a) => inspect::run(store, &a.name),
        Command::Ip(a) => ip::run(store, &a.name),
        Command::Ssh(a) => ssh::run(store, &a),
        Command::Logs(a) => logs::run(store, &a),
        Command::Env(a) => env::run(store, &a),
        Command::Image(c) => image::run(store, c),
        Command::Routes(c) => routes::run(store, c),
        Command::Dns(c) => dns::run(store, c),
        Command::Disk(c) => disk::run(store, c),
        Command::Completion(a) => completion::run(&a),
        Command::Supervise(a) => {
            crate::supervisor::run(
                store,
                &a.name,
                std::time::Duration::from_secs(a.timeout),
                output::diagnostics::hint,
            )?;
            Ok(0)
        }
    }
}
