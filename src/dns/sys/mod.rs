//! Datagram I/O of the UDP loop, per platform: [`Datagrams`] receives what is queued on the
//! socket, [`Replies`] sends the answers gathered meanwhile. Linux moves a batch per system
//! call (recvmmsg/sendmmsg); elsewhere one datagram per call.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{Datagrams, Replies};

#[cfg(not(target_os = "linux"))]
mod macos;
#[cfg(not(target_os = "linux"))]
pub(crate) use macos::{Datagrams, Replies};

/// Largest query taken: a query is one question and an OPT record, far below this; a larger
/// datagram is cut here and fails to parse (FORMERR), as it would on the general path.
pub(crate) const MAX_QUERY: usize = 4096;
