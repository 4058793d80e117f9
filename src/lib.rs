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
// Linux-only for now: READDIR cookies are the host's `d_off` and WRITE's DATA_SYNC is
// fdatasync(2), neither of which macOS has (rustix exposes neither for Apple targets).
#[cfg(target_os = "linux")]
pub mod nfs;
pub mod output;
pub mod ports;
pub mod resolver;
pub mod routes;
pub mod ssh;
pub mod supervisor;
pub mod tls;

/// Parses `args`, runs the verb, prints any error with its causes and hint, and returns the
/// process exit code.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    commands::run(args)
}
