//! [`DnsServer`]: the machine's DNS listener on one address (the machine's host-side IP, or
//! loopback), UDP and TCP on the same port. Bound to that exact address, so the kernel never
//! delivers a query sent to any other one.
//!
//! Tasks: hickory-server's `Server` owns the TCP accept loop and one task per connection; a
//! UDP loop of our own answers owned names inline from the record map and spawns a task only
//! for a forwarded query (at most [`MAX_FORWARDS`] at once; beyond that the query is dropped
//! and the client retries). hickory's own UDP path spawns a task and crosses a channel for
//! every datagram, which measured ~3x slower than dnsmasq (research/services.md §6.2); the
//! inline path is what keeps owned names at dnsmasq speed. Both paths share one
//! [`Handler`](super::handler::Handler).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::Server;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::forward::Forwarder;
use super::handler::Handler;
use super::zone::ZoneConfig;
use super::{DnsConfig, DnsError, RecordsHandle};

/// Forwarded queries in flight at once over UDP; bounds memory under a flood.
pub const MAX_FORWARDS: usize = 256;
/// Idle time after which a TCP client is disconnected.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running DNS server. Dropping it stops it too; [`DnsServer::shutdown`] also waits.
pub struct DnsServer {
    records: RecordsHandle,
    local_addr: SocketAddr,
    cancel: CancellationToken,
    udp: Option<JoinHandle<()>>,
    tcp: Option<Server<Handler>>,
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

        let records = RecordsHandle::new(ZoneConfig {
            machine: cfg.machine,
            tld: cfg.tld,
            guest_ip: cfg.guest_ip,
            other_machines: cfg.other_machines,
        });
        // Never forward to ourselves: that would loop until the timeout.
        let upstreams = cfg.upstreams.into_iter().filter(|u| *u != local_addr);
        let handler = Handler {
            records: records.clone(),
            forwarder: Arc::new(Forwarder::new(upstreams.collect())),
        };
        let mut server = Server::new(handler.clone());
        server.register_listener(tcp, TCP_TIMEOUT, usize::from(u16::MAX));
        let cancel = CancellationToken::new();
        let udp = tokio::spawn(udp_loop(Arc::new(udp), handler, cancel.clone()));
        Ok(DnsServer {
            records,
            local_addr,
            cancel,
            udp: Some(udp),
            tcp: Some(server),
        })
    }

    /// The handle to replace the served containers.
    pub fn records(&self) -> RecordsHandle {
        self.records.clone()
    }

    /// The address actually bound (with the port chosen when `bind` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops both listeners and waits for them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(udp) = self.udp.take() {
            let _ = udp.await;
        }
        if let Some(mut tcp) = self.tcp.take() {
            let _ = tcp.shutdown_gracefully().await;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(tcp) = &self.tcp {
            tcp.shutdown_token().cancel();
        }
    }
}

async fn udp_loop(socket: Arc<UdpSocket>, handler: Handler, cancel: CancellationToken) {
    let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, src) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP errors from earlier replies (ECONNREFUSED) and the like: keep serving.
                Err(_) => continue,
            },
            _ = cancel.cancelled() => return,
        };
        let packet = &buf[..len];
        if let Some(rcode) = refuse_before_parsing(packet) {
            reply_error(&socket, packet, src, rcode).await;
            continue;
        }
        let request = match Request::from_bytes(packet.to_vec(), src, Protocol::Udp) {
            Ok(r) => r,
            Err(_) => {
                reply_error(&socket, packet, src, ResponseCode::FormErr).await;
                continue;
            }
        };
        if request.metadata.message_type == hickory_proto::op::MessageType::Response {
            continue; // never answer an answer (reflection)
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

/// An error reply carrying only the header; a datagram shorter than a header, or itself a
/// response, is dropped.
async fn reply_error(socket: &UdpSocket, packet: &[u8], dst: SocketAddr, rcode: ResponseCode) {
    let mut decoder = BinDecoder::new(packet);
    let Ok(header) = Header::read(&mut decoder) else {
        return;
    };
    if header.metadata.message_type == hickory_proto::op::MessageType::Response {
        return;
    }
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = rcode;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    if let Ok(bytes) = header.to_bytes() {
        let _ = socket.send_to(&bytes, dst).await;
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
