//! The TCP side: accept loop with the peer allowlist, and per-connection tasks.
//!
//! Tasks: one accept task per server; per connection one reader task (this module's
//! `connection`), one writer task, and each request handled on tokio's blocking pool, which
//! passes the reply to the writer. A connection has at most [`IN_FLIGHT`] requests being
//! handled (the reader waits for a slot before reading the next record), so its memory is
//! bounded by `IN_FLIGHT × MAX_RECORD` plus replies; the server takes at most
//! [`MAX_CONNECTIONS`] connections.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::proto::{Shared, handle_record};
use super::rpc::{read_record, write_record};

/// Requests of one connection handled concurrently (the Linux client pipelines).
const IN_FLIGHT: usize = 8;
/// Bytes of replies gathered before a write (a READDIRPLUS reply of the default 32 KiB fits).
const REPLY_BUFFER: usize = 64 * 1024;
/// Concurrent connections (the guest kernel uses one per server).
const MAX_CONNECTIONS: usize = 16;

pub(crate) async fn accept_loop(
    listener: TcpListener,
    allowed: IpAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        // Anyone but the guest: closed before a byte is read.
        if peer.ip().to_canonical() != allowed.to_canonical() {
            drop(sock);
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(sock);
            continue;
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            connection(sock, shared, stop).await;
            drop(slot);
        });
    }
}

async fn connection(sock: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let _ = sock.set_nodelay(true);
    let (mut rd, wr) = sock.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
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
        }
    });
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut record = Vec::new();
        let read = tokio::select! {
            _ = stop.changed() => break,
            read = read_record(&mut rd, &mut record) => read,
        };
        // End of stream, I/O error, or an oversized record: the connection is closed.
        if !matches!(read, Ok(true)) {
            break;
        }
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
    if *stop.borrow() {
        writer.abort();
    } else {
        let _ = writer.await;
    }
}
