//! SSH client for talking to a machine's guest, built on `ssh2` (libssh2).
//!
//! [`keys`]: ed25519 key generation in OpenSSH formats, atomic key files, SHA256
//! fingerprints (the same text `ssh-keygen -lf` prints).

mod error;
pub mod keys;

pub use error::SshError;
pub use keys::{KeyPair, fingerprint, generate_ed25519, write_keypair};
