//! One authenticated SSH session to a machine, and waiting for a machine to answer.
//!
//! [`Connection::connect`] order matters: TCP connect (bounded), SSH handshake, then the
//! server's host key is compared with the pinned one and only then do we authenticate, so a
//! private key is never offered to an impostor. After authentication the session is put in
//! non-blocking mode for good; all later I/O goes through `pump.rs`.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ssh_key::Algorithm;
use ssh_key::sha2::{Digest, Sha256};
use ssh2::{MethodType, Session};

use super::SshError;
use super::keys::parse_public;
use super::pump::{self, Failure};

/// Where and how to reach a machine's SSH server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub user: String,
    /// The private key file used for public-key authentication.
    pub identity: PathBuf,
    /// The server's public host key, pinned at creation, OpenSSH one-line format.
    pub host_key: String,
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit code, or 128 + n when killed by signal n.
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// An authenticated SSH session to a machine.
///
/// Methods take `&self` but run one at a time: the session's blocking/non-blocking state and
/// libssh2's resume-after-EAGAIN rules do not allow two pumps to share a session, so a second
/// concurrent `exec` waits for the first. Open one `Connection` per concurrent command.
pub struct Connection {
    pub(super) session: Session,
    /// A second handle on the socket the session owns, to `poll(2)` it.
    pub(super) socket: TcpStream,
    pub(super) addr: SocketAddr,
    busy: Mutex<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects, checks the host key against `t.host_key`, then authenticates with the key
    /// file `t.identity`. `timeout` bounds the TCP connect and each protocol step.
    pub fn connect(t: &Target, timeout: Duration) -> Result<Connection, SshError> {
        let addr = t.addr;
        // Parse the pinned key first: a broken pin must not even open a connection.
        let pinned = parse_public(&t.host_key)?;
        let pinned_blob = pinned.to_bytes().map_err(|source| SshError::KeyParse {
            key: t.host_key.clone(),
            source,
        })?;
        let expected_fp = pinned.fingerprint(ssh_key::HashAlg::Sha256).to_string();

        let connect_err = |source| SshError::Connect { addr, source };
        let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(connect_err)?;
        tcp.set_nodelay(true).map_err(connect_err)?;
        // Lets a long idle forward notice a machine that vanished without a FIN or RST.
        nix::sys::socket::setsockopt(&tcp, nix::sys::socket::sockopt::KeepAlive, &true)
            .map_err(|e| connect_err(e.into()))?;
        let socket = tcp.try_clone().map_err(connect_err)?;

        let handshake_err = |source| SshError::Handshake { addr, source };
        let mut session = Session::new().map_err(handshake_err)?;
        session.set_timeout(u32::try_from(timeout.as_millis().max(1)).unwrap_or(u32::MAX));
        // Ask only for the pinned key's algorithm, so that a server holding several host keys
        // shows the one we can check. An algorithm libssh2 lacks is left to the comparison
        // below, which then reports the mismatch.
        let _ = session.method_pref(MethodType::HostKey, host_key_methods(&pinned.algorithm()));
        session.set_tcp_stream(tcp);
        session.handshake().map_err(handshake_err)?;

        let (blob, _) = session.host_key().ok_or(SshError::NoHostKey { addr })?;
        if blob != pinned_blob.as_slice() {
            let hash: [u8; 32] = Sha256::digest(blob).into();
            return Err(SshError::HostKeyMismatch {
                addr,
                expected_fp,
                actual_fp: ssh_key::Fingerprint::Sha256(hash).to_string(),
            });
        }

        session
            .userauth_pubkey_file(&t.user, None, &t.identity, None)
            .map_err(|source| SshError::Auth {
                addr,
                user: t.user.clone(),
                identity: t.identity.clone(),
                source,
            })?;
        session.set_blocking(false);
        Ok(Connection {
            session,
            socket,
            addr,
            busy: Mutex::new(()),
        })
    }

    /// The machine address this connection talks to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serialises pumps on this session (see the type's documentation).
    pub(super) fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.busy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn socket_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Runs a libssh2 operation to completion on this (non-blocking) session.
    pub(super) fn retry<T>(
        &self,
        deadline: Option<Instant>,
        op: impl FnMut() -> Result<T, ssh2::Error>,
    ) -> Result<T, Failure> {
        pump::retry(&self.session, self.socket_fd(), deadline, op)
    }

    /// Turns a pump failure into the module error, naming the command.
    pub(super) fn error(&self, command: &str, failure: Failure) -> SshError {
        let (addr, command) = (self.addr, command.to_string());
        match failure {
            Failure::Ssh(source) => SshError::Session {
                addr,
                command,
                source,
            },
            Failure::Local(source) => SshError::LocalIo {
                addr,
                command,
                source,
            },
            Failure::TimedOut => SshError::TimedOut { addr, command },
            Failure::Terminal(source) => SshError::Terminal(source),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Best effort: one non-blocking attempt, so that sshd logs a clean disconnect.
        let _ = self
            .session
            .disconnect(None, "devbox: connection closed", None);
    }
}

/// The host key the SSH server at `addr` presents, in OpenSSH one-line format, learnt without
/// authenticating (nothing is offered to the server): what `devbox create --driver ssh` pins
/// for a host devbox did not create. The strongest key the server holds is asked for first
/// (ed25519, then ECDSA, then RSA), as OpenSSH's client does. `timeout` bounds the TCP connect
/// and the handshake.
pub fn scan_host_key(addr: SocketAddr, timeout: Duration) -> Result<String, SshError> {
    scan_host_key_of(addr, timeout, &HOST_KEY_FAMILIES.join(","))
}

/// Every host key the server at `addr` holds among the families devbox can check (one
/// handshake each), strongest first: to pin the one whose fingerprint the user gave
/// (`--ssh-host-key`), which need not be the strongest. A connection that fails outright is
/// an error; a family the server lacks is skipped.
pub fn scan_host_keys(addr: SocketAddr, timeout: Duration) -> Result<Vec<String>, SshError> {
    let mut keys = Vec::new();
    let mut last = None;
    for family in HOST_KEY_FAMILIES {
        match scan_host_key_of(addr, timeout, family) {
            Ok(k) => keys.push(k),
            // No key of this family: no common host-key algorithm, the handshake fails.
            Err(e @ SshError::Handshake { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    match last {
        Some(e) if keys.is_empty() => Err(e),
        _ => Ok(keys),
    }
}

/// The host-key algorithms devbox asks for, one family per entry, strongest first.
const HOST_KEY_FAMILIES: [&str; 3] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521",
    "rsa-sha2-512,rsa-sha2-256,ssh-rsa",
];

fn scan_host_key_of(
    addr: SocketAddr,
    timeout: Duration,
    methods: &str,
) -> Result<String, SshError> {
    let connect_err = |source| SshError::Connect { addr, source };
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(connect_err)?;
    let handshake_err = |source| SshError::Handshake { addr, source };
    let mut session = Session::new().map_err(handshake_err)?;
    session.set_timeout(u32::try_from(timeout.as_millis().max(1)).unwrap_or(u32::MAX));
    session
        .method_pref(MethodType::HostKey, methods)
        .map_err(handshake_err)?;
    session.set_tcp_stream(tcp);
    session.handshake().map_err(handshake_err)?;
    let (blob, _) = session.host_key().ok_or(SshError::NoHostKey { addr })?;
    let key = ssh_key::PublicKey::from_bytes(blob).map_err(|source| SshError::KeyParse {
        key: format!("({} bytes presented by {addr})", blob.len()),
        source,
    })?;
    let _ = session.disconnect(None, "devbox: host key read", None);
    key.to_openssh().map_err(|source| SshError::KeyParse {
        key: format!("(presented by {addr})"),
        source,
    })
}

/// libssh2 host-key method names that can present a key of `algorithm`.
fn host_key_methods(algorithm: &Algorithm) -> &str {
    match algorithm {
        // An RSA key is offered under three signature algorithms.
        Algorithm::Rsa { .. } => "rsa-sha2-512,rsa-sha2-256,ssh-rsa",
        other => other.as_str(),
    }
}

/// Connects as soon as the machine answers, retrying refused connections, timeouts and
/// failed handshakes (sshd not started yet) until `deadline`. A host key mismatch, a
/// refused authentication or a bad key are returned at once: waiting cannot fix them.
pub fn wait_until_reachable(t: &Target, deadline: Instant) -> Result<Connection, SshError> {
    const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
    const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
    const PAUSE: Duration = Duration::from_millis(100);
    let start = Instant::now();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = left.clamp(Duration::from_millis(100), ATTEMPT_TIMEOUT);
        // A booting guest drops SYNs until its network is up, and a connect then waits for
        // its whole timeout: probe the port with a short one first, so the real attempt
        // starts within a fraction of a second of sshd listening.
        let probe = left.clamp(Duration::from_millis(100), PROBE_TIMEOUT);
        let err = match std::net::TcpStream::connect_timeout(&t.addr, probe) {
            Err(source) => SshError::Connect {
                addr: t.addr,
                source,
            },
            Ok(_) => match Connection::connect(t, attempt) {
                Ok(c) => return Ok(c),
                Err(e @ (SshError::Connect { .. } | SshError::Handshake { .. })) => e,
                Err(e) => return Err(e),
            },
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SshError::Unreachable {
                addr: t.addr,
                waited: start.elapsed(),
                source: Box::new(err),
            });
        }
        std::thread::sleep(PAUSE.min(left));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_can_move_between_threads() {
        // The supervisor hands connections and forwarders to its own threads.
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Connection>();
        send_sync::<crate::ssh::Forwarder>();
        send_sync::<SshError>();
    }

    #[test]
    fn rsa_pins_accept_every_rsa_signature_algorithm() {
        let rsa = Algorithm::Rsa { hash: None };
        assert_eq!(host_key_methods(&rsa), "rsa-sha2-512,rsa-sha2-256,ssh-rsa");
        assert_eq!(host_key_methods(&Algorithm::Ed25519), "ssh-ed25519");
    }
}
