//! HTTPS for the names devbox serves (issue #16).
//!
//! - [`ca`]: the user's name-constrained root (`DEVBOX_HOME/tls/`), per-machine intermediates
//!   and 48-hour leaves, issued in memory.
//! - [`resolver`]: the SNI certificate resolver (leaves only for names the machine serves).
//! - [`proxy`]: the listener's accept loop and the relay to the container's HTTP port.
//! - [`guest_rules`]: the guest's DEVBOX-HTTPS chain (which connections reach the listener).
//! - [`trust`]: the user's trust stores and the commands that change them.
//!
//! TLS is terminated on the host, in each machine's supervisor, the same on Linux and macOS:
//! the keys never enter a guest, and the supervisor already knows the machine's names (its
//! DNS zone).

pub mod ca;
pub mod guest_rules;
pub mod proxy;
pub mod resolver;
pub mod trust;

/// Loads the user's CA, creating it on first use for `dev`, the TLD of every machine in
/// `store` and the special-use TLDs.
pub fn load_or_create_ca(store: &crate::machine::store::Store) -> Result<ca::Ca, ca::CaError> {
    let tlds: Vec<String> = store
        .names()
        .unwrap_or_default()
        .iter()
        .filter_map(|n| store.machine(n).and_then(|d| d.load_spec()).ok())
        .map(|spec| spec.tld)
        .collect();
    ca::Ca::load_or_create(&ca::CaPaths::new(&store.home), &tlds)
}

/// One line to the supervisor's log (its stderr).
pub(crate) fn log(msg: &str) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    eprintln!("{now} tls: {msg}");
}
