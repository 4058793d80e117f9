//! One file per verb; each only orchestrates the modules that do the work, and reaches a
//! machine's supervisor only through `supervisor::client`. `run` parses the command line,
//! settles the process's privileges for the verb (`host::privileged::enter`: under `sudo`
//! it first becomes the invoking user; then it keeps only what the verb needs), dispatches,
//! and turns errors into `error:` / `caused by:` / `hint:` lines and an exit code (`output`).

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
mod system;

use anyhow::Result;
use clap::Parser;

use crate::cli::{Cli, Command, DnsCommand, RoutesCommand, SystemCommand};
use crate::host::HostOs;
use crate::host::privileged::{self, Class};
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
    let (class, verb) = class_of(&cli.command, HostOs::current());
    if let Err(e) = privileged::enter(class, verb) {
        let e = anyhow::Error::new(e);
        output::error(&e, output::diagnostics::hint(&e));
        return EXIT_ERROR;
    }
    // Everything devbox creates is the user's alone (machine directories, disks, keys, logs,
    // sockets, QEMU's files), unless a mode is set explicitly. Images are not secret, and a
    // cache may be shared. (The NFS server sets the mode the guest asked for explicitly.)
    if !matches!(cli.command, Command::Image(_)) {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    }
    // After `enter`: under sudo, HOME is now the invoking user's.
    let store = Store::new(cli.home.clone(), cli.cache.clone());
    match dispatch(&store, cli.command) {
        Ok(code) => code,
        Err(e) => {
            output::error(&e, output::diagnostics::hint(&e));
            EXIT_ERROR
        }
    }
}

/// What `command` needs from the privilege door, and its name for messages. Only the
/// supervisor, `routes apply` and `dns install|uninstall` keep the two network capabilities
/// (on macOS, which has none, the last two need root); `system install|uninstall` need root;
/// `start` passes the capabilities on under sudo; every other verb holds none.
fn class_of(command: &Command, os: HostOs) -> (Class, &'static str) {
    let net = |verb| match os {
        HostOs::Linux => (Class::Net, verb),
        HostOs::Macos => (Class::Root, verb),
    };
    match command {
        Command::Supervise(_) => (Class::Net, "__supervise"),
        Command::Routes(RoutesCommand::Apply(a)) if !a.dry_run => net("routes apply"),
        Command::Dns(DnsCommand::Install(a)) if !a.dry_run => net("dns install"),
        Command::Dns(DnsCommand::Uninstall(a)) if !a.dry_run => net("dns uninstall"),
        Command::Start(_) => (Class::Spawner, "start"),
        Command::Restart(_) => (Class::Spawner, "restart"),
        Command::System(SystemCommand::Install(a)) if !a.dry_run => (Class::Root, "system install"),
        Command::System(SystemCommand::Uninstall(a)) if !a.dry_run => {
            (Class::Root, "system uninstall")
        }
        _ => (Class::Plain, "devbox"),
    }
}

fn dispatch(store: &Store, command: Command) -> Result<i32> {
    match command {
        Command::Create(a) => create::run(store, *a),
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
        Command::System(c) => system::run(store, c),
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
