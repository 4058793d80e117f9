//! A machine's DNS server against a real state directory (a temporary DEVBOX_HOME), on
//! loopback: the alias policy is read afresh while the server runs (security review,
//! finding 6). A machine created later takes its domain back, `dns allow`/`deny` reach a
//! running server, and two machines claiming the same domain: the first keeps it, the
//! second is refused, and gets it once the first lets go. No container event is needed for
//! any of these: the refresh task picks them up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use devbox::dns::zone::Container;
use devbox::dns::{DnsConfig, DnsServer, RecordsHandle, StoreNeighbours};
use devbox::machine::spec::NetworkSpec;
use devbox::machine::{Driver, MachineSpec, Store};
use devbox::routes::DockerSubnets;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;
use tokio::time::timeout;

fn spec(name: &str, index: u8, tld: &str, dns_domains: &[&str]) -> MachineSpec {
    MachineSpec {
        name: name.into(),
        driver: Driver::Qemu,
        cpus: 1,
        memory_mib: 512,
        disk_bytes: 2 << 30,
        image: "0123456789abcdef".into(),
        network: NetworkSpec {
            index,
            subnet: format!("192.168.{}.0/24", 64 + index).parse().unwrap(),
            host_ip: format!("192.168.{}.1", 64 + index).parse().unwrap(),
            guest_ip: format!("192.168.{}.2", 64 + index).parse().unwrap(),
            mac: "52:54:00:00:00:01".into(),
            ipv6: false,
        },
        docker: DockerSubnets {
            bridge: "172.18.0.1/16".parse().unwrap(),
            pool: "172.19.0.0/16".parse().unwrap(),
            pool_size: 24,
        },
        shares: vec![],
        tld: tld.into(),
        engine: Default::default(),
        dns_domains: dns_domains.iter().map(|d| d.to_string()).collect(),
        remote: None,
        created: "2026-11-21T00:00:00Z".into(),
    }
}

fn save(store: &Store, spec: &MachineSpec) {
    let dir = store.machine(&spec.name).unwrap();
    std::fs::create_dir_all(&dir.path).unwrap();
    dir.save_spec(spec).unwrap();
}

async fn server(store: &Store, spec: &MachineSpec) -> DnsServer {
    DnsServer::start(DnsConfig {
        machine: spec.name.clone(),
        tld: spec.tld.clone(),
        guest_ip: spec.network.guest_ip.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        upstreams: vec![],
        clients: vec!["127.0.0.0/8".parse().unwrap()],
        policy: Box::new(StoreNeighbours::new(store.clone(), &spec.name)),
    })
    .await
    .unwrap()
}

fn web(ip: &str, aliases: &[&str]) -> Container {
    Container {
        id: format!("id-{ip}"),
        name: "/web".into(),
        ips: vec![ip.parse().unwrap()],
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        web: Default::default(),
    }
}

/// The A records served for `name`, or `None` when the answer is not the server's own (not
/// authoritative: forwarded, here to no upstream at all).
async fn served(server: SocketAddr, name: &str) -> Option<Vec<String>> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let answer = Message::from_vec(&buf[..n]).unwrap();
    answer
        .metadata
        .authoritative
        .then(|| answer.answers.iter().map(|r| r.data.to_string()).collect())
}

/// Waits (at most a few refresh periods) until `name` is served as `want`.
async fn await_served(server: SocketAddr, name: &str, want: Option<Vec<String>>) -> Duration {
    let start = Instant::now();
    loop {
        if served(server, name).await == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} is not served as {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn refused(records: &RecordsHandle) -> Vec<(String, String)> {
    records
        .refused()
        .into_iter()
        .map(|r| (r.name, r.reason))
        .collect()
}

#[tokio::test]
async fn a_machine_created_later_takes_its_domain_back() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::new(Some(home.path().into()), None);
    let dev = spec("dev", 0, "dev", &["late.dev"]);
    save(&store, &dev);
    let server = server(&store, &dev).await;
    server
        .records()
        .set_containers(&[web("172.18.0.3", &["api.late.dev"])]);
    let addr = server.local_addr();
    assert_eq!(
        served(addr, "api.late.dev.").await,
        Some(vec!["172.18.0.3".into()])
    );
    assert_eq!(server.records().zone().routed_domains(), ["late.dev"]);

    // `devbox create late`, while dev runs and no container changes.
    save(&store, &spec("late", 1, "dev", &[]));
    let took = await_served(addr, "api.late.dev.", None).await;
    eprintln!("machine `late` took its domain back after {took:?}");
    assert_eq!(
        refused(&server.records()),
        [(
            "api.late.dev".to_string(),
            "it belongs to machine `late`".to_string()
        )]
    );
    assert!(server.records().zone().routed_domains().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn allow_and_deny_reach_a_running_machine() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::new(Some(home.path().into()), None);
    let mut dev = spec("dev", 0, "dev", &[]);
    save(&store, &dev);
    let server = server(&store, &dev).await;
    let addr = server.local_addr();
    let refusals = server
        .records()
        .set_containers(&[web("172.18.0.3", &["www.synbioz.dev", "pkg.go.dev"])]);
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert_eq!(served(addr, "www.synbioz.dev.").await, None);

    dev.dns_domains = vec!["synbioz.dev".into()];
    save(&store, &dev);
    await_served(addr, "www.synbioz.dev.", Some(vec!["172.18.0.3".into()])).await;
    assert_eq!(server.records().zone().routed_domains(), ["synbioz.dev"]);
    assert_eq!(
        served(addr, "pkg.go.dev.").await,
        None,
        "go.dev is not allowed"
    );

    dev.dns_domains.clear();
    save(&store, &dev);
    await_served(addr, "www.synbioz.dev.", None).await;
    server.shutdown().await;
}

/// Two machines whose containers claim the same name (under a private TLD, so neither needs
/// an allowance): the first to serve it keeps its domain; the second is refused and logged,
/// and takes over once the first stops serving it.
#[tokio::test]
async fn the_first_machine_to_route_a_domain_keeps_it() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::new(Some(home.path().into()), None);
    let (a_spec, b_spec) = (spec("a", 0, "test", &[]), spec("b", 1, "test", &[]));
    save(&store, &a_spec);
    save(&store, &b_spec);
    let (a, b) = (server(&store, &a_spec).await, server(&store, &b_spec).await);
    a.records()
        .set_containers(&[web("172.18.0.3", &["www.shop.test"])]);
    b.records()
        .set_containers(&[web("172.20.0.3", &["www.shop.test"])]);
    assert_eq!(
        served(a.local_addr(), "www.shop.test.").await,
        Some(vec!["172.18.0.3".into()])
    );
    assert_eq!(served(b.local_addr(), "www.shop.test.").await, None);
    assert_eq!(
        refused(&b.records()),
        [(
            "www.shop.test".to_string(),
            "machine `a` routes `shop.test` already".to_string()
        )]
    );
    assert_eq!(a.records().zone().routed_domains(), ["shop.test"]);
    assert!(b.records().zone().routed_domains().is_empty());

    // a's container stops: b's refresh takes the domain.
    a.records().set_containers(&[]);
    let took = await_served(
        b.local_addr(),
        "www.shop.test.",
        Some(vec!["172.20.0.3".into()]),
    )
    .await;
    eprintln!("b took shop.test over after {took:?}");
    assert!(refused(&b.records()).is_empty());
    // And now a is the second: its container comes back and is refused.
    let refusals = a
        .records()
        .set_containers(&[web("172.18.0.3", &["www.shop.test"])]);
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    // A machine that goes away (its supervisor dies) lets go of its claims too.
    b.shutdown().await;
    await_served(
        a.local_addr(),
        "www.shop.test.",
        Some(vec!["172.18.0.3".into()]),
    )
    .await;
    a.shutdown().await;
}
