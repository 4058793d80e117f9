//! Forwarding of names devbox does not own to the host's upstream resolvers. The client's
//! query bytes go upstream as they are (flags, EDNS, DO/CD bits), only with a fresh random id;
//! the upstream's answer comes back parsed so the handler can relay its rcode, flags and
//! sections unchanged. One short-lived socket per query, connected to the upstream, so only
//! that upstream's datagrams are read. No tasks of its own: runs inside the handler's future.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use hickory_proto::serialize::binary::BinDecodable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// How long one upstream gets before the next one is tried.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Why no upstream gave an answer (the client gets SERVFAIL).
#[derive(Debug)]
pub(crate) enum ForwardError {
    NoUpstream,
    /// Every upstream failed; the last failure is kept for the log.
    Failed {
        upstream: SocketAddr,
        reason: String,
    },
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardError::NoUpstream => write!(f, "no upstream resolver configured"),
            ForwardError::Failed { upstream, reason } => {
                write!(f, "upstream {upstream}: {reason}")
            }
        }
    }
}

/// The upstream resolvers, tried in order.
#[derive(Clone, Debug)]
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    pub(crate) fn new(upstreams: Vec<SocketAddr>) -> Self {
        Forwarder {
            upstreams,
            timeout: UPSTREAM_TIMEOUT,
        }
    }

    /// Sends `query` (a client's raw query) to each upstream in turn, over TCP when `tcp`,
    /// and returns the first valid answer, its id set back to the client's.
    pub(crate) async fn forward(&self, query: &[u8], tcp: bool) -> Result<Message, ForwardError> {
        let mut last = ForwardError::NoUpstream;
        if query.len() < 12 {
            return Err(last);
        }
        let client_id = u16::from_be_bytes([query[0], query[1]]);
        for &upstream in &self.upstreams {
            let id = getrandom::u32().map_or(client_id, |r| r as u16);
            let mut out = query.to_vec();
            out[..2].copy_from_slice(&id.to_be_bytes());
            let attempt = if tcp {
                timeout(self.timeout, exchange_tcp(upstream, &out)).await
            } else {
                timeout(self.timeout, exchange_udp(upstream, &out, id)).await
            };
            let reason = match attempt {
                Ok(Ok(bytes)) => match Message::from_bytes(&bytes) {
                    Ok(mut msg) if msg.metadata.id == id && same_question(query, &bytes) => {
                        msg.metadata.id = client_id;
                        return Ok(msg);
                    }
                    Ok(_) => "answer does not match the query".to_string(),
                    Err(e) => format!("malformed answer: {e}"),
                },
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {:?}", self.timeout),
            };
            last = ForwardError::Failed { upstream, reason };
        }
        Err(last)
    }
}

/// Whether the answer is a response to the same question (compared case-insensitively).
fn same_question(query: &[u8], answer: &[u8]) -> bool {
    let (Ok(q), Ok(a)) = (Message::from_bytes(query), Message::from_bytes(answer)) else {
        return false;
    };
    a.metadata.message_type == MessageType::Response
        && q.queries.len() == a.queries.len()
        && q.queries.iter().zip(&a.queries).all(|(q, a)| {
            q.query_type() == a.query_type()
                && q.query_class() == a.query_class()
                && q.name().to_lowercase() == a.name().to_lowercase()
        })
}

fn unspecified_for(upstream: SocketAddr) -> SocketAddr {
    match upstream.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

async fn exchange_udp(upstream: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let socket = UdpSocket::bind(unspecified_for(upstream)).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    // Room for what the client said it can take (EDNS payload, at least 512 bytes): an
    // upstream sends no more than that, and a flood of forwards stays small in memory.
    let mut buf = vec![0u8; advertised_payload(query)];
    loop {
        let n = socket.recv(&mut buf).await?;
        // A stray or spoofed datagram with another id is skipped, not taken as the answer.
        if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// The UDP payload size a query advertises in its OPT record, or 512 without one.
fn advertised_payload(query: &[u8]) -> usize {
    Message::from_bytes(query)
        .ok()
        .and_then(|m| m.edns.map(|e| usize::from(e.max_payload())))
        .unwrap_or(512)
        .max(512)
}

async fn exchange_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    stream.write_all(&out).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}
