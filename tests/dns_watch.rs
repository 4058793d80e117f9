//! The container watcher's mapping from Docker's JSON (inspect responses and the event
//! stream, as fixtures in `tests/golden/dns/`) to the zone's containers and records. The live
//! loop needs a Docker daemon, which this host does not have; the end-to-end check runs it
//! against a real guest.

use std::path::Path;

use bollard::models::{ContainerInspectResponse, EventMessage};
use devbox::dns::policy::Policy;
use devbox::dns::zone::{Container, Lookup, WebPorts, Zone, ZoneConfig};
use devbox::dns::{container_from_inspect, event_container_id};
use hickory_proto::rr::{LowerName, Name, RecordType};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/dns")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn inspect(name: &str) -> ContainerInspectResponse {
    serde_json::from_str(&fixture(name)).unwrap()
}

#[test]
fn running_container_on_two_networks() {
    let c = container_from_inspect(&inspect("inspect-web.json")).unwrap();
    assert_eq!(
        c,
        Container {
            id: "4f1c2a9e7b3d".into(),
            name: "web".into(),
            // networks in name order: backend, then bridge
            ips: vec![
                "172.19.0.2".parse().unwrap(),
                "fd00:19::2".parse().unwrap(),
                "172.18.0.3".parse().unwrap()
            ],
            aliases: vec![
                "www.synbioz.dev".into(),
                "api.synbioz.dev".into(),
                "evil.com".into(),
                "admin.synbioz.dev".into()
            ],
            web: Default::default(),
        }
    );
}

/// `devbox.http.port` picks the port TLS is terminated to; a container exposing 443 keeps its
/// own TLS; a label that is not a port is ignored (80).
#[test]
fn https_ports_come_from_the_label_and_the_exposed_ports() {
    let mut json: serde_json::Value = serde_json::from_str(&fixture("inspect-web.json")).unwrap();
    let web = |json: &serde_json::Value| {
        let i: ContainerInspectResponse = serde_json::from_value(json.clone()).unwrap();
        container_from_inspect(&i).unwrap().web
    };
    json["Config"]["Labels"]["devbox.http.port"] = "8080".into();
    assert_eq!(
        web(&json),
        WebPorts {
            http: 8080,
            own_tls: false
        }
    );
    json["Config"]["Labels"]["devbox.http.port"] = "eighty".into();
    json["Config"]["ExposedPorts"] = serde_json::json!({"443/tcp": {}, "80/tcp": {}});
    assert_eq!(
        web(&json),
        WebPorts {
            http: 80,
            own_tls: true
        }
    );
}

#[test]
fn stopped_container_is_not_served() {
    assert_eq!(
        container_from_inspect(&inspect("inspect-stopped.json")),
        None
    );
}

#[test]
fn host_network_container_has_no_ip() {
    let c = container_from_inspect(&inspect("inspect-hostnet.json")).unwrap();
    assert_eq!(c.name, "agent");
    assert!(c.ips.is_empty() && c.aliases.is_empty());
}

#[test]
fn events_that_trigger_a_refresh() {
    let ids: Vec<Option<String>> = fixture("events.jsonl")
        .lines()
        .map(|l| {
            let e: EventMessage = serde_json::from_str(l).unwrap();
            event_container_id(&e).map(str::to_string)
        })
        .collect();
    let web = Some("4f1c2a9e7b3d".to_string());
    assert_eq!(
        ids,
        [
            web.clone(),            // start
            web.clone(),            // rename
            web.clone(),            // die
            web.clone(),            // destroy
            web.clone(),            // network connect
            web.clone(),            // network disconnect
            None,                   // exec_start
            None,                   // health_status
            None,                   // network create
            None,                   // image pull
            Some("77".to_string()), // unpause
        ]
    );
}

#[test]
fn inspected_container_becomes_records_and_refusals() {
    let cfg = ZoneConfig {
        machine: "dev".into(),
        tld: "dev".into(),
        guest_ip: "192.168.64.2".parse().unwrap(),
    };
    let policy = Policy {
        allowed: vec!["synbioz.dev".into()],
        ..Policy::default()
    };
    let c = container_from_inspect(&inspect("inspect-web.json")).unwrap();
    let (zone, refused) = Zone::build(&cfg, &policy, &[c]);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].name, "evil.com");
    let name = |s: &str| LowerName::new(&Name::from_ascii(s).unwrap());
    for n in ["web.dev.dev.", "www.synbioz.dev.", "admin.synbioz.dev."] {
        assert!(matches!(zone.lookup(&name(n), RecordType::A), Lookup::Answer(r) if r.len() == 2));
        assert!(
            matches!(zone.lookup(&name(n), RecordType::AAAA), Lookup::Answer(r) if r.len() == 1)
        );
    }
    assert_eq!(
        zone.lookup(&name("evil.com."), RecordType::A),
        Lookup::NotOwned
    );
}

/// A manager's zone names each published swarm service after the nodes that answer for it,
/// from Docker's own `/services` and `/nodes` (fixtures taken from a two-machine swarm: a
/// stack `s` with `web`, published on 8080, and `probe`, published on none).
#[test]
fn published_swarm_services_answer_with_every_ready_node() {
    let services: Vec<bollard::models::Service> =
        serde_json::from_str(&fixture("swarm-services.json")).unwrap();
    let mut nodes: Vec<bollard::models::Node> =
        serde_json::from_str(&fixture("swarm-nodes.json")).unwrap();
    let entries = devbox::dns::services_from(&services, &nodes, "a.dev");
    assert_eq!(
        entries.len(),
        1,
        "the unpublished service is not named: {entries:?}"
    );
    let web = &entries[0];
    assert_eq!(web.name, "s_web");
    assert_eq!(web.aliases, ["web.s.a.dev"]);
    let ips: Vec<String> = web.ips.iter().map(|ip| ip.to_string()).collect();
    assert_eq!(ips, ["192.168.64.2", "192.168.65.2"]);
    assert!(web.is_service());

    let cfg = ZoneConfig {
        machine: "a".into(),
        tld: "dev".into(),
        guest_ip: "192.168.64.2".parse().unwrap(),
    };
    let (zone, refused) = Zone::build(&cfg, &Policy::default(), &entries);
    assert!(refused.is_empty(), "{refused:?}");
    for name in ["s_web.a.dev.", "web.s.a.dev."] {
        let name = LowerName::new(&Name::from_ascii(name).unwrap());
        match zone.lookup(&name, RecordType::A) {
            Lookup::Answer(records) => assert_eq!(records.len(), 2, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    // The other node's address keeps its own machine's reverse name: none here.
    let rev = LowerName::new(&Name::from(
        "192.168.65.2".parse::<std::net::IpAddr>().unwrap(),
    ));
    assert!(!matches!(
        zone.lookup(&rev, RecordType::PTR),
        Lookup::Answer(_)
    ));

    // A node that is down is not an answer; with no node left, no name.
    nodes[0].status.as_mut().unwrap().state = Some(bollard::models::NodeState::DOWN);
    let entries = devbox::dns::services_from(&services, &nodes, "a.dev");
    assert_eq!(entries[0].ips.len(), 1);
    for n in &mut nodes {
        n.status.as_mut().unwrap().state = Some(bollard::models::NodeState::DOWN);
    }
    assert!(devbox::dns::services_from(&services, &nodes, "a.dev").is_empty());
}
