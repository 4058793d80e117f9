//! SSH client for talking to a machine's guest, built on `ssh2` (libssh2).
//!
//! What it exposes:
//! - [`keys`]: ed25519 key generation in OpenSSH formats, atomic key files, SHA256
//!   fingerprints (the same text `ssh-keygen -lf` prints).
//! - [`Connection`]: one authenticated SSH session to a [`Target`]. The server's host key is
//!   compared with the key pinned at `devbox create` *before* any authentication; a mismatch
//!   is a hard [`SshError::HostKeyMismatch`]. [`Connection::exec`] runs a command and streams
//!   its output, [`Connection::shell`] runs an interactive session on the host terminal.
//! - [`wait_until_reachable`]: retries connecting while the machine boots.
//! - [`forward_unix_socket`]: a local unix socket whose connections are carried to a unix
//!   socket in the guest (the docker socket), as a [`Forwarder`] handle.
//!
//! Threads: `exec` and `shell` run on the caller's thread. A [`Forwarder`] owns one accept
//! thread plus one thread per forwarded connection, all ended by [`Forwarder::stop`].
//!
//! I/O model: every session is switched to non-blocking mode once authenticated, and all data
//! is moved by a `poll(2)`-driven pump (`pump.rs`). libssh2 serialises a session behind one
//! lock, so a blocking read on one stream would stall every other stream of that session;
//! with the pump, stdout, stderr and stdin of a command progress independently and a large
//! stderr cannot deadlock a large stdout.

mod error;
mod exec;
pub mod forward;
pub mod keys;
mod pump;
pub mod session;
mod shell;
mod sys;

pub use error::SshError;
pub use forward::{Forwarder, forward_unix_socket};
pub use keys::{KeyPair, fingerprint, generate_ed25519, write_keypair};
pub use session::{
    Connection, Output, Target, scan_host_key, scan_host_keys, wait_until_reachable,
};

/// `a` as one word of a POSIX shell command line: as it is when it holds only characters no
/// shell treats specially, else in single quotes (a quote inside becomes `'\''`).
pub fn quote(a: &str) -> String {
    if !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}
