//! The TCP side: accept loop with the peer allowlist, connection limits, and per-connection
//! tasks.
//!
//! Tasks: one accept task per server; per connection one reader task (this module's
//! `connection`), one writer task, and each request handled on tokio's blocking pool, which
//! passes the reply to the writer. A connection has at most [`IN_FLIGHT`] requests being
//! handled (the reader waits for a slot before reading the next record), so its memory is
//! bounded by `IN_FLIGHT × MAX_RECORD` plus replies.
//!
//! Who may connect: the guest's address, from a reserved port (below 1024: knfsd's
//! `secure` export option, which the Linux client meets by default); anything else is closed
//! before a byte is read. A connection with no request in flight that sends no complete
//! record for the configured idle timeout ([`IDLE_TIMEOUT`] in devbox) is closed, as knfsd closes idle connections (the client
//! reconnects on its next request). At most [`MAX_CONNECTIONS`] are open; a new one beyond
//! that evicts the connection idle for longest, so connections left open and silent can
//! never lock the guest's kernel out of its shares.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::Instant;

use super::proto::{Shared, handle_record};
use super::rpc::{read_record, write_record};

/// Requests of one connection handled concurrently (the Linux client pipelines).
const IN_FLIGHT: usize = 8;
/// Bytes of replies gathered before a write (a READDIRPLUS reply of the default 32 KiB fits).
const REPLY_BUFFER: usize = 64 * 1024;
/// Concurrent connections (the guest kernel uses one per server).
const MAX_CONNECTIONS: usize = 16;
/// Silence after which a connection with nothing in flight is closed (knfsd: 6 minutes;
/// the Linux client closes its own idle connection after 5).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(6 * 60);
/// Source ports below this are reserved (only a privileged process may bind them).
const RESERVED_PORTS: u16 = 1024;

/// What the accept loop knows of one open connection.
struct Conn {
    last_active: Mutex<Instant>,
    /// Free request slots: all of them free means nothing is in flight.
    slots: Arc<Semaphore>,
    evict: Notify,
}

impl Conn {
    fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last_active(&self) -> Instant {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Nothing in flight: every slot is free but the one its reader holds while it waits
    /// for the next record.
    fn idle(&self) -> bool {
        self.slots.available_permits() >= IN_FLIGHT - 1
    }
}

/// The open connections, for the cap and its eviction.
#[derive(Default)]
struct Conns {
    next_id: u64,
    open: HashMap<u64, Arc<Conn>>,
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    allowed: IpAddr,
    idle_timeout: Duration,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let conns = Arc::new(Mutex::new(Conns::default()));
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (sock, peer) = match accepted {
            Ok(conn) => conn,
            // Out of fds or similar: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Anyone but the guest, or the guest from an unprivileged port: closed unread.
        if peer.ip().to_canonical() != allowed.to_canonical() || peer.port() >= RESERVED_PORTS {
            drop(sock);
            continue;
        }
        let conn = Arc::new(Conn {
            last_active: Mutex::new(Instant::now()),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            evict: Notify::new(),
        });
        let id = {
            let mut c = conns.lock().unwrap_or_else(|e| e.into_inner());
            if c.open.len() >= MAX_CONNECTIONS {
                let oldest_idle = c
                    .open
                    .iter()
                    .filter(|(_, conn)| conn.idle())
                    .min_by_key(|(_, conn)| conn.last_active())
                    .map(|(id, _)| *id);
                match oldest_idle {
                    Some(victim) => {
                        if let Some(v) = c.open.remove(&victim) {
                            v.evict.notify_one();
                        }
                    }
                    // Every connection is busy: the newcomer waits for a later try.
                    None => {
                        drop(sock);
                        continue;
                    }
                }
            }
            c.next_id += 1;
            let id = c.next_id;
            c.open.insert(id, conn.clone());
            id
        };
        let shared = shared.clone();
        let stop = stop.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            connection(sock, shared, &conn, idle_timeout, stop).await;
            conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .open
                .remove(&id);
        });
    }
}

async fn connection(
    sock: TcpStream,
    shared: Arc<Shared>,
    conn: &Arc<Conn>,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let _ = sock.set_nodelay(true);
    let (mut rd, wr) = sock.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let writer_conn = conn.clone();
    let writer = tokio::spawn(async move {
        // Record mark and reply leave in one TCP segment (two writes with TCP_NODELAY are two
        // segments, each an interrupt and an ACK in the guest: under TCG that doubled the
        // cost of every small RPC), and replies that are ready together share segments.
        // A reply larger than the buffer is written straight through.
        let mut wr = BufWriter::with_capacity(REPLY_BUFFER, wr);
        while let Some(reply) = rx.recv().await {
            if write_record(&mut wr, &reply).await.is_err() {
                break;
            }
            if rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
            writer_conn.touch();
        }
    });
    let mut evicted = false;
    'records: loop {
        let Ok(slot) = conn.slots.clone().acquire_owned().await else {
            break;
        };
        let mut record = Vec::new();
        // The read survives the idle checks (it is polled again, not restarted), so a record
        // arriving slowly is never cut in two.
        let read = {
            let read = read_record(&mut rd, &mut record);
            tokio::pin!(read);
            loop {
                let idle_deadline = conn.last_active() + idle_timeout;
                tokio::select! {
                    _ = stop.changed() => break 'records,
                    _ = conn.evict.notified() => {
                        evicted = true;
                        break 'records;
                    }
                    read = &mut read => break read,
                    _ = tokio::time::sleep_until(idle_deadline) => {
                        // This task holds one slot: idle when all the others are free.
                        let in_flight = IN_FLIGHT - 1 - conn.slots.available_permits();
                        if in_flight == 0 && conn.last_active() + idle_timeout <= Instant::now() {
                            break 'records;
                        }
                        // Requests are in flight, or a reply went out since: look again later.
                        if in_flight > 0 {
                            conn.touch();
                        }
                    }
                }
            }
        };
        // End of stream, I/O error, or an oversized record: the connection is closed.
        if !matches!(read, Ok(true)) {
            break;
        }
        conn.touch();
        let shared = shared.clone();
        let tx = tx.clone();
        // The blocking thread hands its reply straight to the writer: no async task between
        // them, whose wake-up would be one more thread switch on every RPC.
        tokio::task::spawn_blocking(move || {
            if let Some(reply) = handle_record(&shared, &record) {
                let _ = tx.blocking_send(reply);
            }
            drop(slot);
        });
    }
    drop(tx);
    if *stop.borrow() || evicted {
        writer.abort();
    } else {
        let _ = writer.await;
    }
}
