//! [`DnsServer`]: the machine's DNS listener on one address (the machine's host-side IP, or
//! loopback), UDP and TCP on the same port. Bound to that exact address, so the kernel never
//! delivers a query sent to any other one; and a query from a source outside the machine's
//! allowlist ([`super::clients`]) is dropped before it is parsed, on both transports.
//!
//! Tasks, all ended by [`DnsServer::shutdown`] or drop:
//! - the UDP loop takes the queued datagrams in batches (recvmmsg/sendmmsg on Linux:
//!   `sys/`), answers owned names from pre-encoded bytes (`wire.rs`), anything else it owns
//!   inline through hickory, and spawns a task only for a forwarded query (at most
//!   [`MAX_FORWARDS`] at once; beyond that the query is dropped and the client retries).
//!   hickory's own UDP path spawns a task and crosses a channel for every datagram, which
//!   measured ~3x slower than dnsmasq (research/services.md §6.2);
//! - the TCP accept loop, and one task per connection (at most [`MAX_TCP`]; idle ones close
//!   after 5 s). Our own rather than hickory's `Server`, which accepts any peer and answers a
//!   refused one REFUSED: a dropped peer here gets its connection closed and nothing else;
//! - the refresh task: every [`REFRESH`], re-reads the alias policy (other machines, allowed
//!   domains, claims) on a blocking thread and rebuilds the zone if it changed.
//!
//! Both transports share one [`Handler`](super::handler::Handler).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::clients::ClientFilter;
use super::forward::Forwarder;
use super::handler::Handler;
use super::zone::ZoneConfig;
use super::{DnsConfig, DnsError, RecordsHandle};
use super::{sys, wire};

/// Forwarded queries in flight at once over UDP; bounds memory under a flood.
pub const MAX_FORWARDS: usize = 256;
/// TCP connections served at once; more wait in the kernel's backlog.
pub const MAX_TCP: usize = 64;
/// Idle time after which a TCP client is disconnected.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the alias policy is re-read (other machines, allowed domains, claims).
pub const REFRESH: Duration = Duration::from_secs(2);

/// A running DNS server. Dropping it stops it too; [`DnsServer::shutdown`] also waits.
pub struct DnsServer {
    records: RecordsHandle,
    local_addr: SocketAddr,
    filter: Arc<ClientFilter>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `cfg.bind` (port 0 picks a free port, the same for both) and
    /// starts serving `<machine>.<tld>` with no containers yet.
    pub async fn start(cfg: DnsConfig) -> Result<DnsServer, DnsError> {
        super::check_label(&cfg.machine)?;
        for label in cfg.tld.trim_end_matches('.').split('.') {
            super::check_label(label)?;
        }
        let bind_err = |protocol, addr, source| DnsError::Bind {
            addr,
            protocol,
            source,
        };
        let udp = UdpSocket::bind(cfg.bind)
            .await
            .map_err(|e| bind_err("UDP", cfg.bind, e))?;
        let local_addr = udp.local_addr().map_err(|e| bind_err("UDP", cfg.bind, e))?;
        let tcp = TcpListener::bind(local_addr)
            .await
            .map_err(|e| bind_err("TCP", local_addr, e))?;

        let zone_cfg = ZoneConfig {
            machine: cfg.machine,
            tld: cfg.tld,
            guest_ip: cfg.guest_ip,
        };
        let records = RecordsHandle::new(zone_cfg, cfg.policy);
        // Never forward to ourselves: that would loop until the timeout.
        let upstreams = cfg.upstreams.into_iter().filter(|u| *u != local_addr);
        let handler = Handler {
            records: records.clone(),
            forwarder: Arc::new(Forwarder::new(upstreams.collect())),
        };
        let filter = Arc::new(ClientFilter::new(cfg.clients));
        let cancel = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(udp_loop(
                Arc::new(udp),
                handler.clone(),
                filter.clone(),
                cancel.clone(),
            )),
            tokio::spawn(tcp_loop(tcp, handler, filter.clone(), cancel.clone())),
            tokio::spawn(refresh_loop(records.clone(), cancel.clone())),
        ];
        Ok(DnsServer {
            records,
            local_addr,
            filter,
            cancel,
            tasks,
        })
    }

    /// Queries dropped since the start because their source may not use the server.
    pub fn dropped(&self) -> u64 {
        self.filter.dropped()
    }

    /// The handle to replace the served containers.
    pub fn records(&self) -> RecordsHandle {
        self.records.clone()
    }

    /// The address actually bound (with the port chosen when `bind` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the listeners and the refresh task, and waits for them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn refresh_loop(records: RecordsHandle, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = cancel.cancelled() => return,
        }
        let records = records.clone();
        // It reads the state directory and takes file locks: not on the async workers.
        let _ = tokio::task::spawn_blocking(move || records.refresh()).await;
    }
}

async fn udp_loop(
    socket: Arc<UdpSocket>,
    handler: Handler,
    filter: Arc<ClientFilter>,
    cancel: CancellationToken,
) {
    let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
    let mut queries = sys::Datagrams::new();
    let mut replies = sys::Replies::new();
    loop {
        let received = tokio::select! {
            r = socket.async_io(Interest::READABLE, || queries.recv(&socket)) => r,
            _ = cancel.cancelled() => return,
        };
        // ICMP errors from earlier replies (ECONNREFUSED) and the like: keep serving.
        let Ok(count) = received else { continue };
        // One look at the records per batch: the `Arc` keeps this zone alive until the
        // batch is answered, even if the watcher swaps in a new one meanwhile.
        let zone = handler.records.zone();
        for i in 0..count {
            let (Some(src), packet) = queries.get(i) else {
                continue;
            };
            if !filter.allows(src.ip()) {
                filter.dropped_from(src);
                continue;
            }
            if replies.has_room() && wire::answer(zone.wire(), packet, replies.slot()) {
                replies.push(src);
                continue;
            }
            answer_datagram(&socket, &handler, &forwards, packet, src).await;
        }
        drop(zone);
        while !replies.is_empty() {
            match socket.try_io(Interest::WRITABLE, || replies.send(&socket)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        replies.clear();
                    }
                }
                Err(_) => replies.clear(),
            }
        }
    }
}

/// The general path for one datagram: hickory decodes it; owned names (and errors) are
/// answered inline, other names forwarded from a task of their own.
async fn answer_datagram(
    socket: &Arc<UdpSocket>,
    handler: &Handler,
    forwards: &Arc<Semaphore>,
    packet: &[u8],
    src: SocketAddr,
) {
    if let Some(rcode) = refuse_before_parsing(packet) {
        reply_error(socket, packet, src, rcode).await;
        return;
    }
    let request = match Request::from_bytes(packet.to_vec(), src, Protocol::Udp) {
        Ok(r) => r,
        Err(_) => {
            reply_error(socket, packet, src, ResponseCode::FormErr).await;
            return;
        }
    };
    if request.metadata.message_type == hickory_proto::op::MessageType::Response {
        return; // never answer an answer (reflection)
    }
    let reply = UdpReply::new(socket.clone(), src, &request);
    if handler.answers_locally(&request) {
        handler
            .handle_request::<_, TokioTime>(&request, reply)
            .await;
    } else if let Ok(permit) = forwards.clone().try_acquire_owned() {
        let handler = handler.clone();
        tokio::spawn(async move {
            handler
                .handle_request::<_, TokioTime>(&request, reply)
                .await;
            drop(permit);
        });
    }
}

/// Error for a query that is not worth decoding: anything but a standard query (NOTIMP), or
/// a header whose counts no query has (FORMERR): one question, no answer or authority
/// records, at most an OPT and a signature. Decoding hostile counts makes the decoder reserve
/// room for tens of thousands of records, which under a flood only inflates memory.
fn refuse_before_parsing(packet: &[u8]) -> Option<ResponseCode> {
    let header = Header::read(&mut BinDecoder::new(packet)).ok()?;
    let c = header.counts;
    if header.metadata.op_code != OpCode::Query {
        Some(ResponseCode::NotImp)
    } else if c.queries != 1 || c.answers != 0 || c.authorities != 0 || c.additionals > 2 {
        Some(ResponseCode::FormErr)
    } else {
        None
    }
}

/// An error reply carrying only the header; `None` for a packet shorter than a header, or
/// itself a response (never answered).
fn error_reply(packet: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(packet)).ok()?;
    if header.metadata.message_type == hickory_proto::op::MessageType::Response {
        return None;
    }
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = rcode;
    Header {
        metadata,
        counts: HeaderCounts::default(),
    }
    .to_bytes()
    .ok()
}

async fn reply_error(socket: &UdpSocket, packet: &[u8], dst: SocketAddr, rcode: ResponseCode) {
    if let Some(bytes) = error_reply(packet, rcode) {
        let _ = socket.send_to(&bytes, dst).await;
    }
}

async fn tcp_loop(
    listener: TcpListener,
    handler: Handler,
    filter: Arc<ClientFilter>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
            _ = cancel.cancelled() => return,
        };
        let (stream, src) = tokio::select! {
            r = listener.accept() => match r {
                Ok(r) => r,
                // Out of descriptors and the like: keep serving the connections we have.
                Err(_) => continue,
            },
            _ = cancel.cancelled() => return,
        };
        if !filter.allows(src.ip()) {
            filter.dropped_from(src);
            continue; // closes the connection
        }
        let (handler, cancel) = (handler.clone(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = serve_tcp(stream, src, handler) => {}
                _ = cancel.cancelled() => {}
            }
            drop(slot);
        });
    }
}

/// Answers the queries of one TCP connection in turn (RFC 7766 framing: a two-byte length,
/// then the message) until it closes, errs, or idles for [`TCP_TIMEOUT`].
async fn serve_tcp(mut stream: TcpStream, src: SocketAddr, handler: Handler) {
    loop {
        let Ok(Ok(len)) = timeout(TCP_TIMEOUT, stream.read_u16()).await else {
            return;
        };
        let mut packet = vec![0u8; usize::from(len)];
        if !matches!(
            timeout(TCP_TIMEOUT, stream.read_exact(&mut packet)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let answer = match refuse_before_parsing(&packet) {
            Some(rcode) => error_reply(&packet, rcode),
            None => match Request::from_bytes(packet.clone(), src, Protocol::Tcp) {
                Err(_) => error_reply(&packet, ResponseCode::FormErr),
                Ok(request)
                    if request.metadata.message_type
                        == hickory_proto::op::MessageType::Response =>
                {
                    None
                }
                Ok(request) => {
                    let reply = TcpReply::default();
                    handler
                        .handle_request::<_, TokioTime>(&request, reply.clone())
                        .await;
                    reply.take()
                }
            },
        };
        let Some(answer) = answer else { continue };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&answer);
        if !matches!(
            timeout(TCP_TIMEOUT, stream.write_all(&framed)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

/// Collects the one response to a TCP query, for [`serve_tcp`] to frame and send.
#[derive(Clone, Default)]
struct TcpReply {
    bytes: Arc<Mutex<Option<Vec<u8>>>>,
}

impl TcpReply {
    fn take(&self) -> Option<Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for TcpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(u16::MAX);
        let info = response.destructive_emit(&mut encoder)?;
        *self.bytes.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(info)
    }
}

/// Sends one response datagram, truncated (TC set) to what the client can take: its EDNS
/// payload size, or 512 bytes without EDNS (RFC 1035 §4.2.1).
#[derive(Clone)]
struct UdpReply {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
    max_size: u16,
}

impl UdpReply {
    fn new(socket: Arc<UdpSocket>, dst: SocketAddr, request: &Request) -> Self {
        let max_size = request
            .edns
            .as_ref()
            .map_or(512, |e| e.max_payload().max(512));
        UdpReply {
            socket,
            dst,
            max_size,
        }
    }
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(self.max_size);
        let info = response.destructive_emit(&mut encoder)?;
        self.socket.send_to(&bytes, self.dst).await?;
        Ok(info)
    }
}
