//! devbox: a developer machine orchestrator. The binary's `main` calls [`run`]; everything
//! else lives in the modules below (see ARCHITECTURE in the README).

pub mod atomic_file;
pub mod cli;
pub mod commands;
pub mod disk;
pub mod dns;
pub mod docker_context;
pub mod hint;
pub mod host;
pub mod hypervisor;
pub mod image;
pub mod machine;
pub mod nat;
pub mod net;
pub mod nfs;
pub mod output;
pub mod ports;
pub mod remote;
pub mod resolver;
pub mod routes;
pub mod ssh;
pub mod supervisor;
pub mod swarm;
pub mod tls;

/// Parses `args`, runs the verb, prints any error with its causes and hint, and returns the
/// process exit code.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    commands::run(args)
}
