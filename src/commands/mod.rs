//! One file per verb; each only orchestrates the modules that do the work. `run` parses the
//! command line, dispatches, and turns errors into `error:` / `caused by:` / `hint:` lines and
//! an exit code.

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
            output::error(&e, hint(&e));
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
            crate::supervisor::run(store, &a.name, std::time::Duration::from_secs(a.timeout))?;
            Ok(0)
        }
    }
}

/// The first known fix found along the error's chain. The supervisor records it beside its
/// error in `state.json`, for `devbox start` to show.
pub(crate) fn hint(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(hint_of)
}

/// The hint of one error in the chain, if its type has one.
fn hint_of(cause: &(dyn std::error::Error + 'static)) -> Option<String> {
    macro_rules! hint_from {
        ($($t:ty),* $(,)?) => {
            $(
                if let Some(x) = cause.downcast_ref::<$t>() {
                    return x.hint();
                }
            )*
        };
    }
    hint_from!(
        CommandError,
        dns_allow::AllowError,
        crate::dns::policy::AllowanceError,
        crate::machine::store::StoreError,
        crate::machine::lock::LockError,
        crate::machine::spec::SpecError,
        crate::machine::guest_net::AddressError,
        crate::supervisor::netplan::NatLinkError,
        crate::hypervisor::HypervisorError,
        crate::image::ImageError,
        crate::image::build::BuildError,
        crate::image::pull::PullError,
        crate::net::NetError,
        crate::net::routes::RouteError,
        crate::host::HostError,
        crate::ssh::SshError,
        crate::dns::DnsError,
        crate::disk::DiskError,
    );
    // The NFS server exists only on Linux hosts for now (see src/nfs).
    #[cfg(target_os = "linux")]
    hint_from!(crate::nfs::NfsError);
    None
}

/// Errors that belong to the verbs themselves (machine in the wrong state, and such).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("machine {name:?} is not running (it is {state})")]
    NotRunning { name: String, state: String },
    #[error("machine {name:?} is running")]
    Running { name: String },
    #[error("machine {name:?} did not become ready: {reason}")]
    NotReady {
        name: String,
        reason: String,
        /// The supervisor's hint for `reason`, when it knows a fix.
        fix: Option<String>,
    },
    #[error("machine {name:?} did not stop within {seconds} s; its supervisor was killed")]
    StopTimeout { name: String, seconds: u64 },
}

impl CommandError {
    pub fn hint(&self) -> Option<String> {
        match self {
            CommandError::NotRunning { name, .. } => Some(format!("start it: devbox start {name}")),
            CommandError::Running { name } => {
                Some(format!("stop it first (devbox stop {name}) or use --force"))
            }
            CommandError::NotReady { fix: Some(fix), .. } => Some(fix.clone()),
            CommandError::NotReady {
                name, fix: None, ..
            } => Some(format!(
                "the whole console log: devbox logs {name}; `devbox inspect {name}` names the supervisor's log"
            )),
            CommandError::StopTimeout { .. } => None,
        }
    }
}
