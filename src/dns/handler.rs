//! The `RequestHandler` both transports share: authoritative answers for the names the
//! machine owns (straight from the [`Zone`](super::zone::Zone) map: hit, NODATA, NXDOMAIN),
//! and for every other name the upstream's answer relayed with its rcode, flags and sections
//! unchanged. Owns no tasks; the server decides where each request runs.

use std::sync::Arc;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageRequest, MessageResponseBuilder};

use super::RecordsHandle;
use super::forward::Forwarder;
use super::wire::EDNS_PAYLOAD;
use super::zone::Lookup;

/// Answers queries from the records, forwarding names it does not own.
#[derive(Clone)]
pub(crate) struct Handler {
    pub(crate) records: RecordsHandle,
    pub(crate) forwarder: Arc<Forwarder>,
}

impl Handler {
    /// Whether `request` is answered without I/O (owned name, or an error reply), so the UDP
    /// loop can answer it inline instead of spawning a task.
    pub(crate) fn answers_locally(&self, request: &MessageRequest) -> bool {
        match request.queries.queries() {
            [q] if request.metadata.op_code == OpCode::Query => self.records.zone().owns(q.name()),
            _ => true,
        }
    }

    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: &mut R,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let our_edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(EDNS_PAYLOAD);
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &our_edns {
            builder.edns(e);
        }
        if request.metadata.op_code != OpCode::Query {
            let msg = builder.error_msg(&request.metadata, ResponseCode::NotImp);
            return handle.send_response(msg).await;
        }
        let [query] = request.queries.queries() else {
            let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return handle.send_response(msg).await;
        };

        let zone = self.records.zone();
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        meta.recursion_available = true;
        let none: [&Record; 0] = [];
        let lookup = zone.lookup(query.name(), query.query_type());
        if !matches!(lookup, Lookup::NotOwned) && query.query_class() != DNSClass::IN {
            let msg = builder.error_msg(&request.metadata, ResponseCode::Refused);
            return handle.send_response(msg).await;
        }
        match lookup {
            Lookup::Answer(records) => {
                let msg = builder.build(meta, records, none, none, none);
                handle.send_response(msg).await
            }
            Lookup::NoData(soa) => {
                let msg = builder.build(meta, none, none, [soa], none);
                handle.send_response(msg).await
            }
            Lookup::NxDomain(soa) => {
                meta.response_code = ResponseCode::NXDomain;
                let msg = builder.build(meta, none, none, [soa], none);
                handle.send_response(msg).await
            }
            Lookup::NotOwned => {
                drop(zone);
                let tcp = request.protocol() != Protocol::Udp;
                match self.forwarder.forward(request.as_slice(), tcp).await {
                    Ok(answer) => {
                        // The upstream's header (rcode, aa/tc/ra/ad/cd) and sections as they
                        // came; its EDNS too, so extended rcodes survive.
                        let mut builder =
                            MessageResponseBuilder::new(&request.queries, answer.edns.as_ref());
                        if answer.edns.is_none()
                            && let Some(e) = &our_edns
                        {
                            builder.edns(e);
                        }
                        let msg = builder.build(
                            answer.metadata,
                            &answer.answers,
                            &answer.authorities,
                            none,
                            &answer.additionals,
                        );
                        handle.send_response(msg).await
                    }
                    Err(_) => {
                        let msg = builder.error_msg(&request.metadata, ResponseCode::ServFail);
                        handle.send_response(msg).await
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        match self.respond(request, &mut response_handle).await {
            Ok(info) => info,
            Err(_) => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
