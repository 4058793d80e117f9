//! The DNS server over real sockets on loopback: authoritative answers (hit, NXDOMAIN, NODATA,
//! AAAA, PTR, TTL), forwarding to a test upstream this file runs on another loopback port
//! (answers relayed unchanged), binding to one address only, and a fuzz run of malformed
//! packets. No traffic leaves 127.0.0.0/8.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use devbox::dns::policy::Policy;
use devbox::dns::zone::Container;
use devbox::dns::{DnsConfig, DnsServer};
use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;

fn cfg(bind: &str, upstreams: Vec<SocketAddr>) -> DnsConfig {
    DnsConfig {
        machine: "dev".into(),
        tld: "dev".into(),
        guest_ip: "192.168.64.2".parse().unwrap(),
        bind: bind.parse().unwrap(),
        upstreams,
        clients: vec!["127.0.0.0/8".parse().unwrap()],
        policy: Box::new(Policy {
            other_machines: vec!["work".into()],
            allowed: vec!["synbioz.dev".into()],
            ..Policy::default()
        }),
    }
}

fn containers() -> Vec<Container> {
    vec![
        Container {
            id: "1".into(),
            name: "/web".into(),
            ips: vec!["172.18.0.3".parse().unwrap(), "fd00::3".parse().unwrap()],
            aliases: vec!["www.synbioz.dev".into(), "evil.com".into()],
            web: Default::default(),
        },
        Container {
            id: "2".into(),
            name: "/db".into(),
            ips: vec!["172.18.0.4".parse().unwrap()],
            aliases: vec![],
            web: Default::default(),
        },
    ]
}

fn query_bytes(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

async fn udp(server: SocketAddr, name: &str, rtype: RecordType) -> Option<Message> {
    udp_raw(server, &query_bytes(name, rtype, true)).await
}

async fn udp_raw(server: SocketAddr, packet: &[u8]) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = timeout(Duration::from_millis(3000), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let msg = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(&buf[..2], &packet[..2], "answer id matches the query id");
    Some(msg)
}

async fn tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let mut s = TcpStream::connect(server).await.unwrap();
    let q = query_bytes(name, rtype, false);
    s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
    s.write_all(&q).await.unwrap();
    let len = timeout(Duration::from_secs(5), s.read_u16())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn data(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

async fn started(upstreams: Vec<SocketAddr>) -> DnsServer {
    let server = DnsServer::start(cfg("127.0.0.1:0", upstreams))
        .await
        .unwrap();
    server.records().set_containers(&containers());
    server
}

#[tokio::test]
async fn authoritative_answers_over_udp_and_tcp() {
    let server = started(vec![]).await;
    let addr = server.local_addr();

    let hit = udp(addr, "web.dev.dev.", RecordType::A).await.unwrap();
    assert_eq!(hit.metadata.response_code, ResponseCode::NoError);
    assert!(hit.metadata.authoritative);
    assert_eq!(data(&hit), ["172.18.0.3"]);
    assert!(hit.answers.iter().all(|r| r.ttl <= 5));
    assert!(hit.edns.is_some(), "EDNS query gets an EDNS answer");

    let machine = udp(addr, "DEV.dev.", RecordType::A).await.unwrap();
    assert_eq!(data(&machine), ["192.168.64.2"]);

    let aaaa = udp(addr, "web.dev.dev.", RecordType::AAAA).await.unwrap();
    assert_eq!(data(&aaaa), ["fd00::3"]);

    let nodata = udp(addr, "db.dev.dev.", RecordType::AAAA).await.unwrap();
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
    assert!(nodata.authorities[0].ttl <= 5);

    let nx = udp(addr, "nope.dev.dev.", RecordType::A).await.unwrap();
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);

    let ptr = udp(addr, "3.0.18.172.in-addr.arpa.", RecordType::PTR)
        .await
        .unwrap();
    assert_eq!(data(&ptr), ["web.dev.dev."]);
    let ptr6 = Name::from("fd00::3".parse::<IpAddr>().unwrap()).to_string();
    let ptr6 = udp(addr, &ptr6, RecordType::PTR).await.unwrap();
    assert_eq!(data(&ptr6), ["web.dev.dev."]);

    let alias = udp(addr, "www.synbioz.dev.", RecordType::A).await.unwrap();
    assert_eq!(data(&alias), ["172.18.0.3"]);

    let over_tcp = tcp(addr, "db.dev.dev.", RecordType::A).await;
    assert_eq!(data(&over_tcp), ["172.18.0.4"]);
    let nx_tcp = tcp(addr, "gone.dev.dev.", RecordType::A).await;
    assert_eq!(nx_tcp.metadata.response_code, ResponseCode::NXDomain);
    server.shutdown().await;
}

async fn tcp_raw(server: SocketAddr, q: &[u8]) -> Message {
    let mut s = TcpStream::connect(server).await.unwrap();
    s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
    s.write_all(q).await.unwrap();
    let len = timeout(Duration::from_secs(5), s.read_u16())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// UDP answers owned names from pre-encoded bytes (src/dns/wire.rs); TCP always takes the
/// general path through hickory. Both must give the same answer to every query.
#[tokio::test]
async fn udp_fast_path_answers_like_the_general_path() {
    let server = started(vec![]).await;
    let addr = server.local_addr();
    let names = [
        "web.dev.dev.",
        "WEB.Dev.dEV.",
        "dev.dev.",
        "db.dev.dev.",
        "nope.dev.dev.",
        "a.nope.dev.dev.",
        "www.synbioz.dev.",
        "3.0.18.172.in-addr.arpa.",
        "2.64.168.192.in-addr.arpa.",
        "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::PTR,
        RecordType::MX,
        RecordType::TXT,
        RecordType::SOA,
        RecordType::ANY,
    ];
    let mut checked = 0;
    for name in names {
        for rtype in types {
            for (edns, rd, cd) in [(true, true, false), (false, false, true)] {
                let mut m = Message::query();
                m.metadata.id = 4242;
                m.metadata.recursion_desired = rd;
                m.metadata.checking_disabled = cd;
                m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
                if edns {
                    let mut e = Edns::new();
                    e.set_max_payload(4096);
                    m.set_edns(e);
                }
                let q = m.to_vec().unwrap();
                let u = udp_raw(addr, &q).await.unwrap();
                let t = tcp_raw(addr, &q).await;
                let what = format!("{name} {rtype} edns={edns} rd={rd} cd={cd}");
                assert_eq!(u.metadata, t.metadata, "{what}");
                assert_eq!(u.queries, t.queries, "{what}");
                assert_eq!(u.answers, t.answers, "{what}");
                assert_eq!(u.authorities, t.authorities, "{what}");
                assert_eq!(u.additionals, t.additionals, "{what}");
                assert_eq!(
                    u.edns
                        .as_ref()
                        .map(|e| (e.max_payload(), e.version(), e.flags().dnssec_ok)),
                    t.edns
                        .as_ref()
                        .map(|e| (e.max_payload(), e.version(), e.flags().dnssec_ok)),
                    "{what}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, names.len() * types.len() * 2);
    server.shutdown().await;
}

/// An answer larger than the client takes is truncated (TC set), never cut mid-record.
#[tokio::test]
async fn large_udp_answers_are_truncated() {
    let server = started(vec![]).await;
    let many = Container {
        id: "9".into(),
        name: "/many".into(),
        ips: (0..60)
            .map(|i| IpAddr::from([172, 18, 1, i as u8 + 2]))
            .collect(),
        aliases: vec![],
        web: Default::default(),
    };
    server.records().set_containers(&[many]);
    let q = query_bytes("many.dev.dev.", RecordType::A, false);
    let small = udp_raw(server.local_addr(), &q).await.unwrap();
    assert!(
        small.metadata.truncation,
        "60 A records do not fit in 512 bytes"
    );
    let full = tcp_raw(server.local_addr(), &q).await;
    assert_eq!(full.answers.len(), 60);
    let big = udp(server.local_addr(), "many.dev.dev.", RecordType::A)
        .await
        .unwrap();
    assert!(
        !big.metadata.truncation,
        "they fit in the 1232 bytes EDNS allows"
    );
    assert_eq!(big.answers.len(), 60);
    server.shutdown().await;
}

#[tokio::test]
async fn record_changes_are_served_at_once() {
    let server = started(vec![]).await;
    let addr = server.local_addr();
    let mut renamed = containers();
    renamed[0].name = "front".into();
    server.records().set_containers(&renamed);
    let old = udp(addr, "web.dev.dev.", RecordType::A).await.unwrap();
    assert_eq!(old.metadata.response_code, ResponseCode::NXDomain);
    let new = udp(addr, "front.dev.dev.", RecordType::A).await.unwrap();
    assert_eq!(data(&new), ["172.18.0.3"]);
    server.records().set_containers(&[]);
    let gone = udp(addr, "front.dev.dev.", RecordType::A).await.unwrap();
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    server.shutdown().await;
}

/// A tiny upstream on loopback: `up.example.` A with unusual flags, `other.dev.` NXDOMAIN
/// with an SOA, `refused.example.` REFUSED, anything else NXDOMAIN. Counts the queries.
struct Upstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
}

fn upstream_answer(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(q.queries.clone());
    let name = q.queries.first()?.name().to_ascii();
    match name.as_str() {
        "up.example." => {
            m.metadata.authentic_data = true;
            let rec = Record::from_rdata(
                Name::from_ascii("up.example.").unwrap(),
                1234,
                RData::A(A("203.0.113.7".parse().unwrap())),
            );
            m.add_answer(rec);
        }
        "other.dev." => {
            m.metadata.response_code = ResponseCode::NXDomain;
            let soa = SOA::new(
                Name::from_ascii("ns.dev.").unwrap(),
                Name::from_ascii("admin.dev.").unwrap(),
                42,
                1,
                1,
                1,
                300,
            );
            m.add_authority(Record::from_rdata(
                Name::from_ascii("dev.").unwrap(),
                300,
                RData::SOA(soa),
            ));
        }
        "refused.example." => m.metadata.response_code = ResponseCode::Refused,
        _ => m.metadata.response_code = ResponseCode::NXDomain,
    }
    m.to_vec().ok()
}

async fn upstream() -> Upstream {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let count = queries.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, src)) = udp.recv_from(&mut buf).await {
            count.fetch_add(1, Ordering::Relaxed);
            if let Some(a) = upstream_answer(&buf[..n]) {
                let _ = udp.send_to(&a, src).await;
            }
        }
    });
    let count = queries.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let Ok(len) = s.read_u16().await else { return };
                let mut q = vec![0u8; len as usize];
                if s.read_exact(&mut q).await.is_err() {
                    return;
                }
                if let Some(a) = upstream_answer(&q) {
                    let _ = s.write_all(&(a.len() as u16).to_be_bytes()).await;
                    let _ = s.write_all(&a).await;
                }
            });
        }
    });
    Upstream { addr, queries }
}

#[tokio::test]
async fn forwards_names_it_does_not_own_and_relays_the_answer() {
    let up = upstream().await;
    let server = started(vec![up.addr]).await;
    let addr = server.local_addr();

    let a = udp(addr, "up.example.", RecordType::A).await.unwrap();
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert_eq!(data(&a), ["203.0.113.7"]);
    assert_eq!(a.answers[0].ttl, 1234, "TTL relayed unchanged");
    assert!(a.metadata.authentic_data && a.metadata.recursion_available);
    assert!(!a.metadata.authoritative, "a relayed answer is not ours");
    assert_eq!(a.metadata.message_type, MessageType::Response);

    // Another name under the TLD is not ours: the real NXDOMAIN and SOA come back.
    let other = udp(addr, "other.dev.", RecordType::A).await.unwrap();
    assert_eq!(other.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(other.authorities.len(), 1);
    assert_eq!(other.authorities[0].name.to_ascii(), "dev.");
    assert_eq!(other.authorities[0].ttl, 300);
    // A neighbour of an alias is not ours either.
    let neighbour = udp(addr, "blog.synbioz.dev.", RecordType::A).await.unwrap();
    assert_eq!(neighbour.metadata.response_code, ResponseCode::NXDomain);
    assert!(!neighbour.metadata.authoritative);
    // A refused alias is not served: forwarded like any other name.
    let evil = udp(addr, "refused.example.", RecordType::A).await.unwrap();
    assert_eq!(evil.metadata.response_code, ResponseCode::Refused);

    let over_tcp = tcp(addr, "up.example.", RecordType::A).await;
    assert_eq!(data(&over_tcp), ["203.0.113.7"]);
    assert!(up.queries.load(Ordering::Relaxed) >= 5);
    server.shutdown().await;
}

#[tokio::test]
async fn dead_upstream_gives_servfail_and_the_next_one_is_tried() {
    // A port nothing listens on, taken from a socket we close.
    let dead = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let server = started(vec![dead]).await;
    let fail = udp(server.local_addr(), "up.example.", RecordType::A)
        .await
        .unwrap();
    assert_eq!(fail.metadata.response_code, ResponseCode::ServFail);
    server.shutdown().await;

    let up = upstream().await;
    let server = started(vec![dead, up.addr]).await;
    let ok = udp(server.local_addr(), "up.example.", RecordType::A)
        .await
        .unwrap();
    assert_eq!(data(&ok), ["203.0.113.7"]);
    server.shutdown().await;
}

#[tokio::test]
async fn answers_only_on_the_bound_address() {
    let server = DnsServer::start(cfg("127.0.0.2:0", vec![])).await.unwrap();
    let bound = server.local_addr();
    assert_eq!(bound.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
    assert!(udp(bound, "dev.dev.", RecordType::A).await.is_some());

    let other: SocketAddr = SocketAddr::new("127.0.0.1".parse().unwrap(), bound.port());
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&query_bytes("dev.dev.", RecordType::A, false), other)
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let got = timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await;
    assert!(got.is_err(), "no answer from {other}");
    assert!(TcpStream::connect(other).await.is_err());
    server.shutdown().await;
}

/// Finding 7: only allowed sources get an answer; the rest get nothing at all, on UDP and
/// TCP (tests/privileged/dns_netns.rs checks the real allowlist of a machine in a namespace).
#[tokio::test]
async fn sources_outside_the_allowlist_get_nothing() {
    let server = DnsServer::start(DnsConfig {
        clients: vec!["127.0.0.1/32".parse().unwrap()],
        ..cfg("127.0.0.1:0", vec![])
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    assert!(udp(addr, "dev.dev.", RecordType::A).await.is_some());
    let stranger = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    for _ in 0..3 {
        stranger
            .send_to(&query_bytes("dev.dev.", RecordType::A, false), addr)
            .await
            .unwrap();
    }
    let mut buf = [0u8; 512];
    let got = timeout(Duration::from_millis(500), stranger.recv_from(&mut buf)).await;
    assert!(got.is_err(), "no answer to 127.0.0.3");
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut conn = sock.connect(addr).await.unwrap();
    let q = query_bytes("dev.dev.", RecordType::A, false);
    let _ = conn.write_all(&(q.len() as u16).to_be_bytes()).await;
    let _ = conn.write_all(&q).await;
    let mut one = [0u8; 1];
    let read = timeout(Duration::from_secs(2), conn.read(&mut one)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection is closed unanswered: {read:?}"
    );
    assert_eq!(server.dropped(), 4);
    server.shutdown().await;
}

#[tokio::test]
async fn bind_error_names_the_address() {
    let first = DnsServer::start(cfg("127.0.0.1:0", vec![])).await.unwrap();
    let err = DnsServer::start(cfg(&first.local_addr().to_string(), vec![]))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains(&first.local_addr().to_string()));
    assert!(err.hint().unwrap().contains("already listens"));
    let bad = DnsServer::start(DnsConfig {
        machine: "bad_name".into(),
        ..cfg("127.0.0.1:0", vec![])
    })
    .await
    .err()
    .unwrap();
    assert!(bad.to_string().contains("bad_name"));
    first.shutdown().await;
}

/// xorshift64*: a seeded PRNG, so a failing fuzz run can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn fuzz_packet(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let seed = &seeds[rng.below(seeds.len())];
    match rng.below(4) {
        // random bytes of random length
        0 => (0..rng.below(600)).map(|_| rng.next() as u8).collect(),
        // a valid query cut short
        1 => seed[..rng.below(seed.len())].to_vec(),
        // a valid query with a few bytes flipped (counts, label lengths, types)
        2 => {
            let mut p = seed.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(p.len());
                p[i] = rng.next() as u8;
            }
            p
        }
        // a valid header claiming many records, followed by garbage
        _ => {
            let mut p = seed[..12].to_vec();
            p[2] &= 0x7f; // a query, not a response
            for b in &mut p[4..12] {
                *b = rng.next() as u8;
            }
            p.extend((0..rng.below(200)).map(|_| rng.next() as u8));
            p
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_malformed_packets_with_flat_memory() {
    let up = upstream().await;
    let server = started(vec![up.addr]).await;
    let addr = server.local_addr();
    let seeds: Vec<Vec<u8>> = [
        ("web.dev.dev.", RecordType::A),
        ("nope.dev.dev.", RecordType::AAAA),
        ("3.0.18.172.in-addr.arpa.", RecordType::PTR),
        ("up.example.", RecordType::A),
    ]
    .iter()
    .map(|(n, t)| query_bytes(n, *t, true))
    .collect();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = Rng(0x5EED_D0D0_CAFE_F00D);
    let mut sink = vec![0u8; 65535];
    // Warm up allocator and caches, then measure across a much larger run.
    for _ in 0..2_000 {
        let p = fuzz_packet(&mut rng, &seeds);
        sock.send_to(&p, addr).await.unwrap();
        while sock.try_recv_from(&mut sink).is_ok() {}
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = vm_rss_kib();
    for i in 0..50_000 {
        let p = fuzz_packet(&mut rng, &seeds);
        sock.send_to(&p, addr).await.unwrap();
        if i % 64 == 0 {
            // Pace the sender a little so the kernel's socket buffer, not the server,
            // decides what is dropped.
            tokio::task::yield_now().await;
        }
        while sock.try_recv_from(&mut sink).is_ok() {}
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = vm_rss_kib();

    let good = udp(addr, "web.dev.dev.", RecordType::A).await.unwrap();
    assert_eq!(data(&good), ["172.18.0.3"]);
    let tcp_good = tcp(addr, "db.dev.dev.", RecordType::A).await;
    assert_eq!(data(&tcp_good), ["172.18.0.4"]);
    eprintln!("VmRSS before {before} KiB, after {after} KiB");
    assert!(
        after < before + 4 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    server.shutdown().await;
}
