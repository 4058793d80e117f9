//! A local unix socket whose connections are carried to a unix socket in the machine, over
//! SSH `direct-streamlocal@openssh.com` channels: how the host's docker CLI reaches the
//! guest's `/var/run/docker.sock`.
//!
//! Threads: one accept thread, plus one thread per forwarded connection. Each forwarded
//! connection has an SSH session to itself while it lives; sessions are pooled and reused
//! by later connections once their channel is cleanly closed.
//!
//! Why a session per connection rather than all channels on one non-blocking session:
//! libssh2 lets a half-sent packet block every other send of its session until that same
//! call is repeated (see `pump.rs`). With many channels on one session, a channel whose local
//! client stops reading (a paused `docker attach`) can hold such a packet, or its pending
//! window adjustment, and stall every other docker command. With one channel per session,
//! back-pressure stays with the connection that causes it. The cost, an SSH handshake per
//! concurrent connection, is paid only when the pool is empty: the docker CLI's short
//! sequential requests reuse idle sessions, and the first client uses the session opened
//! (and host-key checked) by [`forward_unix_socket`] itself.
//!
//! A session that died while idle (machine restarted) fails when reused; the connection then
//! falls back to a new session, so new clients reconnect by themselves.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use ssh2::Channel;

use super::SshError;
use super::pump::{self, CHUNK, Failure, would_block};
use super::session::{Connection, Target};

/// Bound on connecting a new session for a client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on opening a channel on a pooled session before giving up on that session.
const REUSE_OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on closing a channel before its session is dropped instead of pooled.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle sessions kept for reuse, and for how long.
const POOL_MAX: usize = 4;
const POOL_IDLE_MAX: Duration = Duration::from_secs(60);

/// A running forward. [`Forwarder::stop`] (or dropping it) closes the listener, ends every
/// forwarded connection and removes the socket file.
pub struct Forwarder {
    local: PathBuf,
    shared: Arc<Shared>,
    /// Closing this write end makes the shared read end report POLLHUP to every thread.
    stop_tx: Option<OwnedFd>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    target: Target,
    remote: String,
    stop_rx: OwnedFd,
    idle: Mutex<Vec<(Connection, Instant)>>,
    last_error: Mutex<Option<String>>,
}

/// Listens on `local` (a stale socket file is replaced; mode 0600) and forwards each
/// connection to the unix socket `remote` in the machine. Connects once before returning,
/// so an unreachable machine or a wrong host key is reported here.
pub fn forward_unix_socket(t: &Target, local: &Path, remote: &str) -> Result<Forwarder, SshError> {
    let first = Connection::connect(t, CONNECT_TIMEOUT)?;
    let listen_err = |source| SshError::Listen {
        path: local.to_path_buf(),
        source,
    };
    match std::fs::remove_file(local) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(listen_err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(local).map_err(listen_err)?;
    // The socket gives root-equivalent docker access: owner only. There is a short window
    // between bind and chmod; the parent directory (the machine's state dir) is private.
    std::fs::set_permissions(local, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    let (stop_rx, stop_tx) = nix::unistd::pipe().map_err(|e| listen_err(e.into()))?;

    let shared = Arc::new(Shared {
        target: t.clone(),
        remote: remote.to_string(),
        stop_rx,
        idle: Mutex::new(vec![(first, Instant::now())]),
        last_error: Mutex::new(None),
    });
    let accept = std::thread::Builder::new()
        .name("devbox-forward".into())
        .spawn({
            let shared = Arc::clone(&shared);
            move || accept_loop(&shared, &listener)
        })
        .map_err(listen_err)?;
    Ok(Forwarder {
        local: local.to_path_buf(),
        shared,
        stop_tx: Some(stop_tx),
        accept: Some(accept),
    })
}

impl Forwarder {
    /// The local socket path.
    pub fn local_path(&self) -> &Path {
        &self.local
    }

    /// The last failure to carry a connection (machine unreachable, remote socket missing),
    /// for status output; clients themselves just see their connection closed.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }

    /// Stops forwarding: closes the listener, ends open connections, removes the socket
    /// file. Idempotent.
    pub fn stop(&mut self) {
        let Some(stop_tx) = self.stop_tx.take() else {
            return;
        };
        drop(stop_tx);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        lock(&self.shared.idle).clear();
        let _ = std::fs::remove_file(&self.local);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn stopping(fd: &PollFd<'_>) -> bool {
    fd.any().unwrap_or(true)
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(shared.stop_rx.as_fd(), PollFlags::POLLIN),
        ];
        if pump::poll_fds(&mut fds, None).is_err() || stopping(&fds[1]) {
            break;
        }
        workers.retain(|w| !w.is_finished());
        loop {
            match listener.accept() {
                Ok((client, _)) => {
                    let for_worker = Arc::clone(shared);
                    let spawned = std::thread::Builder::new()
                        .name("devbox-forward-conn".into())
                        .spawn(move || serve(&for_worker, client));
                    match spawned {
                        Ok(w) => workers.push(w),
                        Err(e) => record(&shared.last_error, e),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EMFILE and the like: back off instead of spinning on a ready listener.
                Err(e) => {
                    record(&shared.last_error, e);
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

fn record(slot: &Mutex<Option<String>>, error: impl std::fmt::Display) {
    *lock(slot) = Some(error.to_string());
}

/// Carries one client connection, then pools its session if the channel closed cleanly.
fn serve(shared: &Shared, client: UnixStream) {
    let (conn, mut channel) = match open(shared) {
        Ok(pair) => pair,
        Err(e) => {
            // Dropping `client` closes it: the docker CLI reports the connection as reset.
            record(&shared.last_error, error_chain(&e));
            return;
        }
    };
    let outcome = pump_stream(shared, &conn, &mut channel, &client);
    drop(client);
    let closed = pump::abandon(
        &conn.session,
        conn.socket_fd(),
        &mut channel,
        Instant::now() + CLOSE_TIMEOUT,
    );
    drop(channel);
    match outcome {
        Ok(Ended::Done) if closed => {
            let mut idle = lock(&shared.idle);
            if idle.len() < POOL_MAX {
                idle.push((conn, Instant::now()));
            }
        }
        Ok(_) => {}
        Err(f) => record(
            &shared.last_error,
            error_chain(&conn.error(&shared.remote, f)),
        ),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `LIBSSH2_ERROR_CHANNEL_FAILURE`: the server refused the channel (e.g. no such socket in
/// the machine); the session itself is fine.
const LIBSSH2_ERROR_CHANNEL_FAILURE: i32 = -21;

/// A session with an open channel to the remote socket: a pooled session if one still
/// works, a new one otherwise.
fn open(shared: &Shared) -> Result<(Connection, Channel), SshError> {
    loop {
        let pooled = lock(&shared.idle).pop();
        let Some((conn, since)) = pooled else { break };
        if since.elapsed() > POOL_IDLE_MAX {
            continue;
        }
        let deadline = Some(Instant::now() + REUSE_OPEN_TIMEOUT);
        match open_channel(&conn, &shared.remote, deadline) {
            Ok(channel) => return Ok((conn, channel)),
            Err(Failure::Ssh(e)) if refused(&e) => {
                let err = forward_error(&conn, &shared.remote, e);
                lock(&shared.idle).push((conn, Instant::now()));
                return Err(err);
            }
            // Dead session (machine restarted, connection reset): drop it, try the next.
            Err(_) => {}
        }
    }
    let conn = Connection::connect(&shared.target, CONNECT_TIMEOUT)?;
    let deadline = Some(Instant::now() + CONNECT_TIMEOUT);
    match open_channel(&conn, &shared.remote, deadline) {
        Ok(channel) => Ok((conn, channel)),
        Err(Failure::Ssh(e)) => {
            let refused = refused(&e);
            let err = forward_error(&conn, &shared.remote, e);
            if refused {
                lock(&shared.idle).push((conn, Instant::now()));
            }
            Err(err)
        }
        Err(other) => Err(conn.error(&shared.remote, other)),
    }
}

fn refused(e: &ssh2::Error) -> bool {
    e.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_CHANNEL_FAILURE)
}

fn forward_error(conn: &Connection, remote: &str, source: ssh2::Error) -> SshError {
    SshError::Forward {
        addr: conn.addr(),
        remote: remote.to_string(),
        source,
    }
}

fn open_channel(
    conn: &Connection,
    remote: &str,
    deadline: Option<Instant>,
) -> Result<Channel, Failure> {
    conn.retry(deadline, || {
        conn.session.channel_direct_streamlocal(remote, None)
    })
}

/// How a forwarded connection ended.
enum Ended {
    /// Both directions reached EOF (or one side went away) and were passed on.
    Done,
    /// The local client vanished with data still in flight.
    ClientGone,
    /// The forwarder is stopping.
    Stopped,
}

/// One direction's bytes read but not yet written.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    at: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.at == self.buf.len()
    }
    fn fill(&mut self, data: &[u8]) {
        self.buf.clear();
        self.buf.extend_from_slice(data);
        self.at = 0;
    }
    fn rest(&self) -> &[u8] {
        &self.buf[self.at..]
    }
}

/// Moves bytes between the local client and the channel until both directions are closed.
/// Half-close is passed on both ways: EOF from the client becomes an SSH EOF, EOF from the
/// channel becomes `shutdown(SHUT_WR)` on the client socket.
fn pump_stream(
    shared: &Shared,
    conn: &Connection,
    channel: &mut Channel,
    client: &UnixStream,
) -> Result<Ended, Failure> {
    client.set_nonblocking(true).map_err(Failure::Local)?;
    let mut buf = vec![0u8; CHUNK];
    let (mut to_client, mut to_remote) = (Pending::default(), Pending::default());
    let (mut remote_eof, mut client_eof) = (false, false);
    let (mut client_shut, mut eof_sent) = (false, false);
    let mut writer = client;
    let mut reader = client;

    loop {
        let mut progress = false;
        // What libssh2 held for the channel when this turn's read found nothing to read.
        let mut blocked_at: Option<u32> = None;

        // Machine -> client.
        if to_client.is_empty() && !remote_eof {
            match channel.read(&mut buf) {
                Ok(0) => remote_eof = true,
                Ok(n) => to_client.fill(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked_at = Some(channel.read_window().available)
                }
                Err(e) => return Err(Failure::Local(e)),
            }
            progress |= remote_eof || !to_client.is_empty();
        }
        if !to_client.is_empty() {
            match writer.write(to_client.rest()) {
                Ok(n) => {
                    to_client.at += n;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EPIPE / ECONNRESET: the client closed its socket.
                Err(_) => return Ok(Ended::ClientGone),
            }
        }
        if remote_eof && to_client.is_empty() && !client_shut {
            // ENOTCONN if the client already closed: nothing to tell it then.
            let _ = client.shutdown(Shutdown::Write);
            client_shut = true;
            progress = true;
        }

        // Client -> machine.
        if to_remote.is_empty() && !client_eof {
            match reader.read(&mut buf) {
                Ok(0) => client_eof = true,
                Ok(n) => to_remote.fill(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => client_eof = true,
                Err(e) => return Err(Failure::Local(e)),
            }
            progress |= client_eof || !to_remote.is_empty();
        }
        if !to_remote.is_empty() {
            match channel.write(to_remote.rest()) {
                Ok(n) => {
                    to_remote.at += n;
                    progress |= n > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The machine side closed the channel: what the client still sends has
                // nowhere to go.
                Err(_) if remote_eof => {
                    to_remote.at = to_remote.buf.len();
                    client_eof = true;
                    eof_sent = true;
                }
                Err(e) => return Err(Failure::Local(e)),
            }
        }
        if client_eof && to_remote.is_empty() && !eof_sent {
            match channel.send_eof() {
                Ok(()) => eof_sent = true,
                Err(e) if would_block(&e) => {}
                Err(_) if remote_eof => eof_sent = true,
                Err(e) => return Err(Failure::Ssh(e)),
            }
            progress |= eof_sent;
        }

        if client_shut && eof_sent {
            return Ok(Ended::Done);
        }
        // Bytes libssh2 already took off the socket wake no poll: read them first (the writes
        // above may have taken some in). Not after EOF, nor when nothing came in since this
        // turn's read found nothing (what libssh2 holds is then not the channel's data
        // stream): going round again would spin at full CPU, as the forwarder once did
        // with two `docker run`s in flight.
        let available = channel.read_window().available;
        let buffered = to_client.is_empty()
            && !remote_eof
            && available > 0
            && blocked_at.is_none_or(|before| available > before);
        if progress || buffered {
            continue;
        }

        let mut client_events = PollFlags::empty();
        if to_remote.is_empty() && !client_eof {
            client_events |= PollFlags::POLLIN;
        }
        if !to_client.is_empty() {
            client_events |= PollFlags::POLLOUT;
        }
        let mut fds = [
            PollFd::new(conn.socket_fd(), pump::session_events(&conn.session)),
            PollFd::new(client.as_fd(), client_events),
            PollFd::new(shared.stop_rx.as_fd(), PollFlags::POLLIN),
        ];
        pump::poll_fds(&mut fds, None)?;
        if stopping(&fds[2]) {
            return Ok(Ended::Stopped);
        }
    }
}
