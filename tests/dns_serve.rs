//! A test-mode entry that serves a fixed zone until killed, for `tests/bench/dns.sh`:
//! `DEVBOX_DNS_BENCH_ADDR=127.0.0.1:5391 cargo test --release --test dns_serve -- --ignored`.
//! Machine `bench`, TLD `dev`, containers `c0`…`cN-1` (N from `DEVBOX_DNS_BENCH_CONTAINERS`,
//! default 1000) with one IPv4 and one IPv6 address each: `172.18.<i/250>.<i%250+2>` and
//! `fd00::<i+2>` (hex), the same records the script gives dnsmasq.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use devbox::dns::policy::Policy;
use devbox::dns::zone::Container;
use devbox::dns::{DnsConfig, DnsServer};

fn bench_containers(n: usize) -> Vec<Container> {
    (0..n)
        .map(|i| {
            let v4 = Ipv4Addr::new(172, 18, (i / 250) as u8, (i % 250 + 2) as u8);
            let v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, (i + 2) as u16);
            Container {
                id: format!("id{i}"),
                name: format!("c{i}"),
                ips: vec![IpAddr::V4(v4), IpAddr::V6(v6)],
                aliases: vec![],
                web: Default::default(),
            }
        })
        .collect()
}

#[test]
#[ignore = "serves until killed; run by tests/bench/dns.sh"]
fn serve_for_benchmark() {
    let addr = std::env::var("DEVBOX_DNS_BENCH_ADDR").unwrap_or("127.0.0.1:5391".into());
    let n: usize = std::env::var("DEVBOX_DNS_BENCH_CONTAINERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // One worker, as dnsmasq has one thread: the comparison is thread for thread (the
    // supervisor's runtime has two, but the UDP loop is one task and runs on one at a time).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = DnsServer::start(DnsConfig {
            machine: "bench".into(),
            tld: "dev".into(),
            guest_ip: "192.168.64.2".parse().unwrap(),
            bind: addr.parse().unwrap(),
            upstreams: vec![],
            // What a machine's server answers; the benchmark's client is the host itself.
            clients: devbox::dns::machine_clients(
                "192.168.64.1".parse().unwrap(),
                "192.168.64.2".parse().unwrap(),
                &[
                    "172.18.0.0/16".parse().unwrap(),
                    "172.19.0.0/16".parse().unwrap(),
                ],
            ),
            policy: Box::new(Policy::default()),
        })
        .await
        .unwrap();
        server.records().set_containers(&bench_containers(n));
        eprintln!("serving {n} containers on {}", server.local_addr());
        std::future::pending::<()>().await;
    });
}
