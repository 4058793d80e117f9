//! The fast path for the queries a machine gets most: one question, class IN, for a name the
//! zone owns. Each owned name's answers are encoded once, when the zone is built; a query is
//! then answered by copying its header and question and appending those bytes, without
//! decoding it into hickory's message types or encoding records one by one. Pure functions
//! on byte slices; no I/O, no tasks.
//!
//! Written by hand because that general decode/encode (owned `Name`s, per-record emission with
//! compression bookkeeping) was most of the server's time per answered query, and no crate
//! serves pre-encoded answers from a map. The general path (`handler.rs`) stays the reference:
//! everything this path is not sure of goes there (compression in the question, class other
//! than IN, `ANY`, EDNS versions above 0, other additional records, an answer larger than the
//! client takes, names not owned), and `tests/dns_server.rs` checks both paths give the same
//! answers.

use std::collections::HashMap;

use hickory_proto::rr::{Name, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// The UDP payload size devbox advertises in its answers (the DNS flag day 2020 value); the
/// general path advertises the same.
pub(crate) const EDNS_PAYLOAD: u16 = 1232;

const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u8 = 3;

/// Records of one type at one name, as wire bytes whose owner is a pointer to the question.
#[derive(Debug)]
struct RrSet {
    count: u16,
    bytes: Box<[u8]>,
}

#[derive(Debug)]
struct WireNode {
    a: RrSet,
    aaaa: RrSet,
    ptr: RrSet,
    /// The SOA for a negative answer at this name (`None`: the apex's).
    soa: Option<Box<[u8]>>,
}

/// The zone's names keyed by their lower-case wire form, with pre-encoded answers.
#[derive(Debug)]
pub(crate) struct WireIndex {
    names: HashMap<Box<[u8]>, WireNode>,
    apex: Box<[u8]>,
    apex_soa: Box<[u8]>,
}

impl WireIndex {
    pub(crate) fn new(apex: &Name, apex_soa: &Record) -> Self {
        WireIndex {
            names: HashMap::new(),
            apex: wire_name(apex),
            apex_soa: encode(apex_soa, false),
        }
    }

    /// Adds `name` with its records (and its own SOA for negative answers, if any).
    pub(crate) fn insert(
        &mut self,
        name: &Name,
        a: &[Record],
        aaaa: &[Record],
        ptr: &[Record],
        soa: Option<&Record>,
    ) {
        let set = |records: &[Record]| RrSet {
            count: u16::try_from(records.len()).unwrap_or(u16::MAX),
            bytes: records
                .iter()
                .take(usize::from(u16::MAX))
                .flat_map(|r| encode(r, true).into_vec())
                .collect(),
        };
        let node = WireNode {
            a: set(a),
            aaaa: set(aaaa),
            ptr: set(ptr),
            soa: soa.map(|s| encode(s, false)),
        };
        self.names.insert(wire_name(name), node);
    }

    /// Whether lower-case wire name `name` is under the apex (not the apex itself).
    fn under_apex(&self, name: &[u8]) -> bool {
        let Some(start) = name.len().checked_sub(self.apex.len()) else {
            return false;
        };
        if start == 0 || name[start..] != *self.apex {
            return false;
        }
        // The apex must start at a label boundary.
        let mut at = 0;
        while at < start {
            at += 1 + usize::from(name[at]);
        }
        at == start
    }
}

/// `name`'s wire form in lower case, uncompressed.
fn wire_name(name: &Name) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.to_lowercase().iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out.into()
}

/// `record` in wire form, names uncompressed; with `owner_is_question`, the owner is replaced
/// by a pointer to the question's name (offset 12), which every answer here shares.
fn encode(record: &Record, owner_is_question: bool) -> Box<[u8]> {
    let mut bytes = Vec::with_capacity(64);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_canonical_form(true);
    if record.emit(&mut encoder).is_err() {
        return Box::default();
    }
    if owner_is_question {
        let owner = wire_name(&record.name).len();
        let mut out = vec![0xC0, 0x0C];
        out.extend_from_slice(&bytes[owner..]);
        return out.into();
    }
    bytes.into()
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Writes the answer to `query` into `out` (cleared first) and returns true, or returns false
/// when the general path must answer it (see the module header).
pub(crate) fn answer(index: &WireIndex, query: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    if query.len() < 12
        // QR clear and opcode QUERY
        || query[2] & 0xF8 != 0
        || be16(query, 4) != Some(1)
        || be16(query, 6) != Some(0)
        || be16(query, 8) != Some(0)
    {
        return false;
    }
    let additional = be16(query, 10).unwrap_or(u16::MAX);
    // The name, lower-cased into a stack buffer (at most 255 bytes on the wire).
    let mut name = [0u8; 255];
    let (mut len, mut at) = (0usize, 12usize);
    loop {
        let Some(&label) = query.get(at) else {
            return false;
        };
        let label = usize::from(label);
        if label == 0 {
            name[len] = 0;
            len += 1;
            at += 1;
            break;
        }
        // A compression pointer or an extended label type: the general path.
        if label > 63 || len + label + 2 > name.len() {
            return false;
        }
        let Some(bytes) = query.get(at + 1..at + 1 + label) else {
            return false;
        };
        name[len] = label as u8;
        for (dst, src) in name[len + 1..len + 1 + label].iter_mut().zip(bytes) {
            *dst = src.to_ascii_lowercase();
        }
        len += 1 + label;
        at += 1 + label;
    }
    let (Some(qtype), Some(qclass)) = (be16(query, at), be16(query, at + 2)) else {
        return false;
    };
    let question_end = at + 4;
    if qclass != CLASS_IN || qtype == TYPE_ANY {
        return false;
    }
    let max_size = match additional {
        0 if question_end == query.len() => None,
        1 => match opt_payload(query, question_end) {
            Some(payload) => Some(payload),
            None => return false,
        },
        _ => return false,
    };
    let name = &name[..len];

    let none: (u16, &[u8]) = (0, &[]);
    let (rcode, answers, authority) = match index.names.get(name) {
        Some(node) => {
            let set = match qtype {
                TYPE_A => Some(&node.a),
                TYPE_AAAA => Some(&node.aaaa),
                TYPE_PTR => Some(&node.ptr),
                _ => None,
            };
            match set {
                Some(set) if set.count > 0 => (0, (set.count, &*set.bytes), None),
                _ => (
                    0,
                    none,
                    Some(node.soa.as_deref().unwrap_or(&index.apex_soa)),
                ),
            }
        }
        None if index.under_apex(name) => (RCODE_NXDOMAIN, none, Some(&*index.apex_soa)),
        None => return false,
    };

    // Header: the query's id; QR, AA, RD copied; RA; CD copied; the rcode.
    out.extend_from_slice(&query[..2]);
    out.push(0x80 | 0x04 | (query[2] & 0x01));
    out.push(0x80 | (query[3] & 0x10) | rcode);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&answers.0.to_be_bytes());
    out.extend_from_slice(&u16::from(authority.is_some()).to_be_bytes());
    out.extend_from_slice(&u16::from(max_size.is_some()).to_be_bytes());
    out.extend_from_slice(&query[12..question_end]);
    out.extend_from_slice(answers.1);
    if let Some(soa) = authority {
        out.extend_from_slice(soa);
    }
    if max_size.is_some() {
        // OPT: root owner, our payload size, extended rcode 0, version 0, no flags/options.
        out.extend_from_slice(&[0, 0, TYPE_OPT as u8]);
        out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    // Too big for the client: the general path truncates properly.
    out.len() <= usize::from(max_size.unwrap_or(512))
}

/// The client's UDP payload size from the OPT record at `at`, which must end the query;
/// `None` for anything but a well-formed EDNS version 0 OPT.
fn opt_payload(query: &[u8], at: usize) -> Option<u16> {
    if *query.get(at)? != 0 || be16(query, at + 1)? != TYPE_OPT {
        return None;
    }
    let payload = be16(query, at + 3)?;
    let version = *query.get(at + 6)?;
    let rdlen = usize::from(be16(query, at + 9)?);
    (version == 0 && at + 11 + rdlen == query.len()).then_some(payload.max(512))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::policy::Policy;
    use crate::dns::zone::{Container, Zone, ZoneConfig};
    use hickory_proto::op::{Edns, Message, Query, ResponseCode};
    use hickory_proto::rr::{DNSClass, RecordType};

    fn zone() -> Zone {
        let cfg = ZoneConfig {
            machine: "dev".into(),
            tld: "dev".into(),
            guest_ip: "192.168.64.2".parse().unwrap(),
        };
        let web = Container {
            id: "1".into(),
            name: "/web".into(),
            ips: vec!["172.18.0.3".parse().unwrap(), "fd00::3".parse().unwrap()],
            aliases: vec![],
            web: Default::default(),
        };
        Zone::build(&cfg, &Policy::default(), &[web]).0
    }

    fn query(name: &str, rtype: RecordType, edns: Option<u8>) -> Message {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if let Some(version) = edns {
            let mut e = Edns::new();
            e.set_version(version);
            m.set_edns(e);
        }
        m
    }

    fn fast(zone: &Zone, q: &[u8]) -> Option<Message> {
        let mut out = Vec::new();
        answer(zone.wire(), q, &mut out).then(|| Message::from_vec(&out).unwrap())
    }

    #[test]
    fn owned_names_are_answered_from_bytes() {
        let zone = zone();
        let hit = fast(
            &zone,
            &query("Web.DEV.dev.", RecordType::A, None).to_vec().unwrap(),
        );
        let hit = hit.expect("a hit takes the fast path");
        assert_eq!(hit.metadata.id, 7);
        assert!(hit.metadata.authoritative && hit.metadata.recursion_available);
        assert_eq!(hit.answers.len(), 1);
        assert_eq!(hit.answers[0].data.to_string(), "172.18.0.3");
        // The owner points at the question, so it keeps the client's case.
        assert_eq!(hit.answers[0].name.to_ascii(), "Web.DEV.dev.");
        assert!(hit.edns.is_none());

        let q = query("nope.dev.dev.", RecordType::AAAA, Some(0))
            .to_vec()
            .unwrap();
        let nx = fast(&zone, &q).expect("a miss under the apex takes the fast path");
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(nx.edns.unwrap().max_payload(), EDNS_PAYLOAD);

        let q = query("web.dev.dev.", RecordType::MX, None)
            .to_vec()
            .unwrap();
        let nodata = fast(&zone, &q).unwrap();
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty() && nodata.authorities.len() == 1);
    }

    #[test]
    fn anything_unusual_takes_the_general_path() {
        let zone = zone();
        let general = |q: &[u8]| fast(&zone, q).is_none();
        // Not owned: forwarded.
        assert!(general(
            &query("pkg.go.dev.", RecordType::A, None).to_vec().unwrap()
        ));
        assert!(general(
            &query("web.dev.dev.", RecordType::ANY, None)
                .to_vec()
                .unwrap()
        ));
        assert!(general(
            &query("web.dev.dev.", RecordType::A, Some(1))
                .to_vec()
                .unwrap()
        ));
        let mut chaos = query("web.dev.dev.", RecordType::A, None);
        chaos.queries[0].set_query_class(DNSClass::CH);
        assert!(general(&chaos.to_vec().unwrap()));
        let ok = query("web.dev.dev.", RecordType::A, None).to_vec().unwrap();
        // A response, trailing bytes, a second question, a cut question.
        let mut response = ok.clone();
        response[2] |= 0x80;
        assert!(general(&response));
        let mut trailing = ok.clone();
        trailing.push(0);
        assert!(general(&trailing));
        let mut two = ok.clone();
        two[5] = 2;
        assert!(general(&two));
        assert!(general(&ok[..ok.len() - 3]));
        assert!(general(&ok[..11]));
        // A compression pointer in the question.
        let mut pointer = ok[..12].to_vec();
        pointer.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert!(general(&pointer));
        assert!(!general(&ok));
    }
}
