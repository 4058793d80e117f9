//! Linux: one recvmmsg(2) takes up to [`BATCH`] queued queries, one sendmmsg(2) sends their
//! answers. Under load a system call was the larger part of a query's cost, and a batch
//! shares it (dnsmasq pays poll, recvmsg and sendmsg for each query).

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::net::UdpSocket;

use super::MAX_QUERY;

/// Datagrams taken per system call.
pub(crate) const BATCH: usize = 32;

/// The receive side: buffers for a batch, and what the last call put in them. The message
/// headers the calls need hold raw pointers into the buffers (not `Send`), so they are made
/// per call: one small allocation per batch, not per query.
pub(crate) struct Datagrams {
    bufs: Vec<u8>,
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl Datagrams {
    pub(crate) fn new() -> Self {
        Datagrams {
            bufs: vec![0; BATCH * MAX_QUERY],
            got: Vec::with_capacity(BATCH),
        }
    }

    /// Takes the datagrams queued on `socket` (at most [`BATCH`]) without blocking; a
    /// `WouldBlock` error when there are none (for tokio's readiness tracking).
    pub(crate) fn recv(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        self.got.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .chunks_mut(MAX_QUERY)
            .map(|c| [IoSliceMut::new(c)])
            .collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        for msg in results {
            let addr = msg.address.and_then(|a: SockaddrStorage| to_std(&a));
            self.got.push((msg.bytes.min(MAX_QUERY), addr));
        }
        Ok(self.got.len())
    }

    /// Datagram `i` of the last batch: its source (when it has one) and bytes.
    pub(crate) fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8]) {
        let (len, addr) = self.got[i];
        (addr, &self.bufs[i * MAX_QUERY..i * MAX_QUERY + len])
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// The send side: answers gathered for one batch, sent together.
pub(crate) struct Replies {
    bufs: Vec<Vec<u8>>,
    dests: Vec<Option<SockaddrStorage>>,
    /// Answers gathered, and how many of them are sent.
    len: usize,
    sent: usize,
}

impl Replies {
    pub(crate) fn new() -> Self {
        Replies {
            bufs: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            dests: vec![None; BATCH],
            len: 0,
            sent: 0,
        }
    }

    /// The buffer for the next answer (call [`Replies::push`] to keep what was written).
    pub(crate) fn slot(&mut self) -> &mut Vec<u8> {
        &mut self.bufs[self.len]
    }

    /// Keeps the answer written in [`Replies::slot`], for `dst`.
    pub(crate) fn push(&mut self, dst: SocketAddr) {
        self.dests[self.len] = Some(SockaddrStorage::from(dst));
        self.len += 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sent == self.len
    }

    /// Sends what is not sent yet; `WouldBlock` when the socket's buffer is full (what was
    /// sent stays sent). A datagram the kernel refuses outright is skipped: UDP gives no
    /// guarantee, and one bad destination must not hold the others back.
    pub(crate) fn send(&mut self, socket: &UdpSocket) -> std::io::Result<()> {
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        while self.sent < self.len {
            let slices: Vec<[IoSlice<'_>; 1]> = self.bufs[self.sent..self.len]
                .iter()
                .map(|b| [IoSlice::new(b)])
                .collect();
            let dests = &self.dests[self.sent..self.len];
            let result = sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                slices.iter(),
                dests,
                [],
                MsgFlags::MSG_DONTWAIT,
            );
            match result {
                Ok(results) => self.sent += results.count().max(1),
                Err(nix::errno::Errno::EAGAIN) => {
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Err(_) => self.sent += 1,
            }
        }
        self.clear();
        Ok(())
    }

    /// Forgets the batch (sent or not).
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.sent = 0;
    }

    /// Room for another answer in this batch.
    pub(crate) fn has_room(&self) -> bool {
        self.len < BATCH
    }
}
