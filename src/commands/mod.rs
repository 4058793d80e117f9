//! One file per verb; each only orchestrates the modules that do the work, and reaches a
//! machine's supervisor only through `supervisor::client`. `run` parses the command line,
//! settles the process's privileges for the verb (`host::privileged::enter`: under `sudo`
//! it first becomes the invoking user; then it keeps only what the verb needs), dispatches,
//! and turns errors into `error:` / `caused by:` / `hint:` lines and an exit code (`output`).

mod completion;
pub(crate) mod cp;
mod create;
mod create_remote;
mod disk;
mod dns;
mod dns_allow;
pub(crate) mod edit;
mod env;
mod image;
pub(crate) mod image_rm;
mod inspect;
mod ip;
pub(crate) mod logs;
pub(crate) mod ls;
pub(crate) mod rm;
mod routes;
mod ssh;
pub(crate) mod ssh_config;
mod start;
mod status;
mod stop;
mod swarm;
mod system;
pub mod trust;
pub(crate) mod upgrade;
mod use_context;

use anyhow::Result;
use clap::Parser;

use crate::cli::{Cli, Command, DnsCommand, Machines, RoutesCommand, SwarmCommand, SystemCommand};
use crate::hint::Hint;
use crate::host::HostOs;
use crate::host::privileged::{self, Class};
use crate::machine::Store;
use crate::machine::store::StoreError;
use crate::output;

/// Exit code for errors (clap uses 2 for usage errors).
const EXIT_ERROR: i32 = 1;

pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    // The shell asking for completions (the scripts of `devbox completion` set the variable).
    match completion::complete(&args) {
        Ok(true) => return 0,
        Ok(false) => {}
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    }
    // Asked for JSON: a refused command line is a JSON error document on stdout too.
    let json_asked = args.iter().any(|a| a == "--json");
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            if json_asked && e.use_stderr() {
                output::json::usage_error(&e);
            }
            let _ = e.print();
            return e.exit_code();
        }
    };
    let json = cli.command.json();
    let fail = |e: &anyhow::Error| {
        if json {
            output::json::error(e);
        }
        output::error(e, output::diagnostics::hint(e));
        EXIT_ERROR
    };
    let (class, verb) = class_of(&cli.command, HostOs::current());
    if let Err(e) = privileged::enter(class, verb) {
        return fail(&anyhow::Error::new(e));
    }
    // Everything devbox creates is the user's alone (machine directories, disks, keys, logs,
    // sockets, QEMU's files), unless a mode is set explicitly. Images are not secret, and a
    // cache may be shared. (The NFS server sets the mode the guest asked for explicitly.)
    // `cp` writes the user's own files where they asked: those get the user's umask.
    if !matches!(cli.command, Command::Image(_) | Command::Cp(_)) {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    }
    // After `enter`: under sudo, HOME is now the invoking user's.
    let store = Store::new(cli.home.clone(), cli.cache.clone());
    match dispatch(&store, cli.command) {
        Ok(code) => code,
        Err(e) => fail(&e),
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
        Command::Swarm(SwarmCommand::Join(_)) => net("swarm join"),
        Command::Swarm(SwarmCommand::Leave(_)) => net("swarm leave"),
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
        Command::Start(a) => each(store, &a.machines, |name| {
            start::run(store, name, a.timeout)
        }),
        Command::Stop(a) => each(store, &a.machines, |name| stop::run(store, name, a.force)),
        Command::Restart(a) => each(store, &a.machines, |name| {
            stop::run(store, name, false)?;
            start::run(store, name, a.timeout)
        }),
        Command::Rm(a) => rm::run(store, &a),
        Command::Ls(a) => ls::run(store, &a),
        Command::Status(a) => status::run(store, &a),
        Command::Inspect(a) => inspect::run(store, &a.name),
        Command::Ip(a) => ip::run(store, &a.name),
        Command::Ssh(a) => ssh::run(store, &a),
        Command::SshConfig(a) => ssh_config::run(store, &a),
        Command::Cp(a) => cp::run(store, &a),
        Command::Use(a) => use_context::run(store, &a),
        Command::Logs(a) => logs::run(store, &a),
        Command::Env(a) => env::run(store, &a),
        Command::Edit(a) => edit::run(store, &a),
        Command::Upgrade(a) => upgrade::run(store, &a),
        Command::Image(c) => image::run(store, c),
        Command::Routes(c) => routes::run(store, c),
        Command::Dns(c) => dns::run(store, c),
        Command::Disk(c) => disk::run(store, c),
        Command::Trust(c) => trust::run(store, c),
        Command::System(c) => system::run(store, c),
        Command::Swarm(c) => swarm::run(store, c),
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

/// A bulk verb (`start`, `stop`, `restart`, `rm` with several machines) after trying each.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} machines failed (each error is above)")]
pub struct BulkError {
    failed: usize,
    total: usize,
}

impl Hint for BulkError {
    fn hint(&self) -> Option<String> {
        None
    }
}

/// The machines a bulk verb names: every machine for `--all` (none is not an error), else
/// the names given, each once and in order, all known before anything is done.
pub(crate) fn resolve(store: &Store, m: &Machines) -> Result<Vec<String>> {
    if m.all {
        return Ok(store.names()?);
    }
    let mut names: Vec<String> = Vec::new();
    for n in &m.names {
        // Not a machine name, another user's directory, or no such machine: the store's
        // errors. A directory whose machine.yaml is gone or broken can still be removed.
        let dir = store.machine(n)?;
        match fs_err::metadata(&dir.path) {
            Ok(meta) if meta.is_dir() => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(e.into()),
            _ => return Err(StoreError::NotFound { name: n.clone() }.into()),
        }
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    Ok(names)
}

/// Runs `f` for each machine `m` names. One machine: its error is the command's. Several:
/// every machine is tried, each failure printed as it happens, and the command fails after.
fn each(store: &Store, m: &Machines, f: impl FnMut(&str) -> Result<i32>) -> Result<i32> {
    let names = resolve(store, m)?;
    if names.is_empty() {
        output::info("No machines.");
        return Ok(0);
    }
    each_name(&names, f)
}

/// [`each`] for names already resolved.
pub(crate) fn each_name(names: &[String], mut f: impl FnMut(&str) -> Result<i32>) -> Result<i32> {
    if let [one] = names {
        return f(one);
    }
    let mut failed = 0;
    for name in names {
        if let Err(e) = f(name) {
            let hint = output::diagnostics::hint(&e);
            output::error(&e.context(format!("machine {name}")), hint);
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(BulkError {
            failed,
            total: names.len(),
        }
        .into());
    }
    Ok(0)
}
