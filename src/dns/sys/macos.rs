//! macOS (and any host without recvmmsg): one datagram per system call, through tokio.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::MAX_QUERY;

/// The receive side: one datagram at a time.
pub(crate) struct Datagrams {
    buf: Vec<u8>,
    got: Option<(usize, SocketAddr)>,
}

impl Datagrams {
    pub(crate) fn new() -> Self {
        Datagrams {
            buf: vec![0; MAX_QUERY],
            got: None,
        }
    }

    /// Takes one queued datagram without blocking; `WouldBlock` when there is none.
    pub(crate) fn recv(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        let (len, src) = socket.try_recv_from(&mut self.buf)?;
        self.got = Some((len, src));
        Ok(1)
    }

    pub(crate) fn get(&self, _i: usize) -> (Option<SocketAddr>, &[u8]) {
        match self.got {
            Some((len, src)) => (Some(src), &self.buf[..len]),
            None => (None, &[]),
        }
    }
}

/// The send side: the answer to the one datagram.
pub(crate) struct Replies {
    buf: Vec<u8>,
    dst: Option<SocketAddr>,
}

impl Replies {
    pub(crate) fn new() -> Self {
        Replies {
            buf: Vec::with_capacity(512),
            dst: None,
        }
    }

    pub(crate) fn slot(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub(crate) fn push(&mut self, dst: SocketAddr) {
        self.dst = Some(dst);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.dst.is_none()
    }

    pub(crate) fn send(&mut self, socket: &UdpSocket) -> std::io::Result<()> {
        if let Some(dst) = self.dst {
            match socket.try_send_to(&self.buf, dst) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(e),
                // Dropped like any other lost datagram.
                _ => self.dst = None,
            }
        }
        Ok(())
    }

    pub(crate) fn clear(&mut self) {
        self.dst = None;
    }

    pub(crate) fn has_room(&self) -> bool {
        self.dst.is_none()
    }
}
