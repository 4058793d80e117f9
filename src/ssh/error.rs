//! The one error type of the SSH module. Variants carry what a user needs to act (address,
//! path, command); causes stay in `#[source]` and are not repeated in the message.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while generating keys or talking to a machine over SSH.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// Generating or encoding a key pair failed.
    #[error("cannot generate an ed25519 key pair")]
    KeyGen(#[source] ssh_key::Error),

    /// A public key given in OpenSSH one-line format could not be parsed.
    #[error("invalid OpenSSH public key `{key}`")]
    KeyParse {
        key: String,
        #[source]
        source: ssh_key::Error,
    },

    /// Writing a key file failed.
    #[error("cannot write key file {path}")]
    KeyWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The TCP connection to the machine could not be made.
    #[error("cannot connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// The SSH protocol handshake failed (no banner, connection closed, no common algorithm).
    #[error("SSH handshake with {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: ssh2::Error,
    },

    /// The server presented no host key after the handshake.
    #[error("SSH server at {addr} presented no host key")]
    NoHostKey { addr: SocketAddr },

    /// The server's host key is not the pinned one: not our machine, or a changed one.
    #[error(
        "host key of {addr} does not match the pinned key: expected {expected_fp}, got {actual_fp}"
    )]
    HostKeyMismatch {
        addr: SocketAddr,
        expected_fp: String,
        actual_fp: String,
    },

    /// Public-key authentication was refused.
    #[error("SSH authentication as `{user}` at {addr} with key {identity} failed")]
    Auth {
        addr: SocketAddr,
        user: String,
        identity: PathBuf,
        #[source]
        source: ssh2::Error,
    },

    /// The machine did not become reachable over SSH before the deadline.
    #[error("machine at {addr} did not answer SSH within {:.1}s", waited.as_secs_f64())]
    Unreachable {
        addr: SocketAddr,
        waited: Duration,
        #[source]
        source: Box<SshError>,
    },

    /// The SSH session failed while running a command or shell.
    #[error("SSH session to {addr} failed while running `{command}`")]
    Session {
        addr: SocketAddr,
        command: String,
        #[source]
        source: ssh2::Error,
    },

    /// Local I/O failed while running a command (reading its stdin, writing its output,
    /// polling the connection).
    #[error("local I/O failed while running `{command}` on {addr}")]
    LocalIo {
        addr: SocketAddr,
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// A command's bounded wait ran out: the server answered nothing before the deadline
    /// (a guest that stopped, or one whose kernel died, without closing the connection).
    #[error("`{command}` on {addr} timed out: the server answered nothing in time")]
    TimedOut { addr: SocketAddr, command: String },

    /// The host terminal could not be put into (or out of) raw mode or queried.
    #[error("cannot set up the local terminal for an interactive session")]
    Terminal(#[source] nix::Error),

    /// The local end of a socket forward could not be created.
    #[error("cannot listen on unix socket {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A forwarded connection could not be opened in the guest.
    #[error("cannot open a forwarded connection to {remote} on {addr}")]
    Forward {
        addr: SocketAddr,
        remote: String,
        #[source]
        source: ssh2::Error,
    },
}

impl SshError {
    /// A known fix for this error, phrased for the user, if there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            SshError::Connect { source, .. } => Some(match source.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "nothing listens for SSH there: is the machine running? Try `devbox start`"
                        .to_string()
                }
                std::io::ErrorKind::TimedOut => {
                    "the machine does not answer: check that it is running and that its \
                     host-only network is up (`devbox ls`)"
                        .to_string()
                }
                _ => return None,
            }),
            SshError::HostKeyMismatch { addr, .. } => Some(format!(
                "the server at {addr} is not the machine devbox created (its host key changed); \
                 if the machine was recreated outside devbox, recreate it with `devbox create`, \
                 otherwise check what else answers at that address"
            )),
            SshError::Auth { identity, .. } => Some(format!(
                "the guest does not accept {}; its authorized key comes from the config drive \
                 written at `devbox start`, restart the machine to refresh it",
                identity.display()
            )),
            SshError::Unreachable { .. } => Some(
                "the guest may still be booting or failed to boot: see its serial.log".to_string(),
            ),
            SshError::Listen { path, .. } if path.as_os_str().len() > 100 => Some(format!(
                "unix socket paths are limited to about 104 bytes; set a shorter DEVBOX_HOME \
                 ({} is {} bytes)",
                path.display(),
                path.as_os_str().len()
            )),
            SshError::Forward { remote, .. } => Some(format!(
                "check that {remote} exists in the guest and that its sshd allows stream-local \
                 forwarding (`AllowStreamLocalForwarding yes`)"
            )),
            _ => None,
        }
    }
}
