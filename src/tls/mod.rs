//! HTTPS for the names devbox serves (issue #16).
//!
//! - [`ca`]: the user's name-constrained root (`DEVBOX_HOME/tls/`), per-machine intermediates
//!   and 48-hour leaves, issued in memory.
//! - [`resolver`]: the SNI certificate resolver (leaves only for names the machine serves).
//! - [`proxy`]: the listener's accept loop and the relay to the container's HTTP port.
//!
//! TLS is terminated on the host, in each machine's supervisor, the same on Linux and macOS:
//! the keys never enter a guest, and the supervisor already knows the machine's names (its
//! DNS zone).

pub mod ca;
pub mod guest_rules;
pub mod proxy;
pub mod resolver;

/// One line to the supervisor's log (its stderr).
pub(crate) fn log(msg: &str) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    eprintln!("{now} tls: {msg}");
}
