//! HTTPS for the names devbox serves (issue #16).
//!
//! - [`ca`]: the user's name-constrained root (`DEVBOX_HOME/tls/`), per-machine intermediates
//!   and 48-hour leaves, issued in memory.
//!
//! TLS is terminated on the host, in each machine's supervisor, the same on Linux and macOS:
//! the keys never enter a guest, and the supervisor already knows the machine's names (its
//! DNS zone).

pub mod ca;
