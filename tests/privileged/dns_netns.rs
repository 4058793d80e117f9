//! Tier 3: who may query a machine's DNS server (security review, finding 7), inside a
//! network namespace of this test's own (`unshare(CLONE_NEWNET)` on one thread), so no packet
//! leaves it. The server binds the host-side address 192.168.64.1 on a `dbx0` link with the
//! allowlist a machine gets ([`machine_clients`]); the peers are addresses of the namespace
//! used as sources: the guest (192.168.64.2, also what every masqueraded container looks
//! like), a container reached without NAT (172.18.0.5), the host itself (192.168.64.1 and
//! loopback), and a LAN neighbour (10.77.0.2), which the weak host model would let in.
//!
//! Needs root. Without it the test is reported as not run, except under `CI=true`, where it
//! fails.
#![cfg(target_os = "linux")]

use crate::support::in_new_netns;
use crate::support::trials::{Trial, check, root};

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use devbox::dns::policy::Policy;
use devbox::dns::{DnsConfig, DnsServer, machine_clients};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::time::timeout;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run `ip`");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn query() -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii("dev.dev.").unwrap(),
        RecordType::A,
    ));
    m.to_vec().unwrap()
}

/// The answer's A records, or `None` when nothing came back within a second.
async fn ask_udp(from: IpAddr, server: SocketAddr) -> Option<Vec<String>> {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0)).await.unwrap();
    sock.send_to(&query(), server).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = timeout(Duration::from_secs(1), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let m = Message::from_vec(&buf[..n]).unwrap();
    Some(m.answers.iter().map(|r| r.data.to_string()).collect())
}

async fn ask_tcp(from: IpAddr, server: SocketAddr) -> Option<Vec<String>> {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = sock.connect(server).await.ok()?;
    let q = query();
    s.write_all(&(q.len() as u16).to_be_bytes()).await.ok()?;
    s.write_all(&q).await.ok()?;
    let len = timeout(Duration::from_secs(1), s.read_u16())
        .await
        .ok()?
        .ok()?;
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await.ok()?;
    let m = Message::from_vec(&buf).unwrap();
    Some(m.answers.iter().map(|r| r.data.to_string()).collect())
}

pub fn trials() -> Vec<Trial> {
    vec![check(
        "dns_answers_the_guest_its_containers_and_the_host_only",
        root,
        answers_the_guest_its_containers_and_the_host_only,
    )]
}

fn answers_the_guest_its_containers_and_the_host_only() {
    in_new_netns(|| {
        ip(&["link", "set", "lo", "up"]);
        // The machine's link, as a machine has it; the peers' addresses live on loopback.
        ip(&["tuntap", "add", "dev", "dbx0", "mode", "tap"]);
        ip(&["addr", "add", "192.168.64.1/24", "dev", "dbx0"]);
        ip(&["link", "set", "dbx0", "up"]);
        for addr in ["192.168.64.2/32", "172.18.0.5/32", "10.77.0.2/32"] {
            ip(&["addr", "add", addr, "dev", "lo"]);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let host: IpAddr = "192.168.64.1".parse().unwrap();
            let guest: IpAddr = "192.168.64.2".parse().unwrap();
            let subnets = [
                "172.18.0.0/16".parse().unwrap(),
                "172.19.0.0/16".parse().unwrap(),
            ];
            let server = DnsServer::start(DnsConfig {
                machine: "dev".into(),
                tld: "dev".into(),
                guest_ip: guest,
                bind: SocketAddr::new(host, 0),
                upstreams: vec![],
                clients: machine_clients(host, guest, &subnets),
                policy: Box::new(Policy::default()),
            })
            .await
            .unwrap();
            let addr = server.local_addr();
            let want = Some(vec!["192.168.64.2".to_string()]);
            for from in ["192.168.64.2", "172.18.0.5", "192.168.64.1", "127.0.0.1"] {
                let from: IpAddr = from.parse().unwrap();
                assert_eq!(ask_udp(from, addr).await, want, "UDP from {from}");
                assert_eq!(ask_tcp(from, addr).await, want, "TCP from {from}");
            }
            let lan: IpAddr = "10.77.0.2".parse().unwrap();
            assert_eq!(ask_udp(lan, addr).await, None, "UDP from the LAN");
            assert_eq!(ask_tcp(lan, addr).await, None, "TCP from the LAN");
            assert_eq!(server.dropped(), 2, "both dropped queries are counted");
            server.shutdown().await;
        });
    });
}
