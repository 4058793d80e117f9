//! Tier 1: golden tests of what the DNS module renders: the macOS resolver files, the
//! systemd-resolved commands, the text shown when resolved is absent, and the zone itself.
//! `UPDATE_GOLDEN=1 cargo test --test dns_golden` rewrites them; review the diff.

mod support;
use support::golden;

use std::net::SocketAddr;

use devbox::dns::policy::Policy;
use devbox::dns::zone::{Container, Zone, ZoneConfig};
use devbox::host::{resolved_commands, resolved_revert};
use devbox::resolver::plan::{macos_files, manual_instructions, owned_domains};

fn server() -> SocketAddr {
    "192.168.64.1:53".parse().unwrap()
}

fn zone() -> Zone {
    let cfg = ZoneConfig {
        machine: "dev".into(),
        tld: "dev".into(),
        guest_ip: "192.168.64.2".parse().unwrap(),
    };
    let policy = Policy {
        other_machines: vec!["work".into()],
        allowed: vec!["synbioz.dev".into(), "example.dev".into()],
        ..Policy::default()
    };
    let containers = [
        Container {
            id: "1".into(),
            name: "/web".into(),
            ips: vec!["172.18.0.3".parse().unwrap(), "fd00::3".parse().unwrap()],
            aliases: vec![
                "www.synbioz.dev".into(),
                "api.synbioz.dev".into(),
                "x.work.dev".into(),
            ],
            web: Default::default(),
        },
        Container {
            id: "2".into(),
            name: "/db".into(),
            ips: vec!["172.18.0.4".parse().unwrap()],
            aliases: vec!["db.example.dev".into()],
            web: Default::default(),
        },
    ];
    Zone::build(&cfg, &policy, &containers).0
}

fn domains() -> Vec<String> {
    owned_domains("dev", "dev", &zone().routed_domains())
}

#[test]
fn zone_text() {
    golden("dns", "zone.txt", &zone().to_text());
}

#[test]
fn macos_resolver_files() {
    let files = macos_files("dev", &domains(), server());
    let paths: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
    assert_eq!(
        paths,
        [
            "/etc/resolver/dev.dev",
            "/etc/resolver/example.dev",
            "/etc/resolver/synbioz.dev"
        ]
    );
    for (path, text) in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        golden("dns", &format!("resolver-{name}"), text);
    }
}

#[test]
fn macos_resolver_file_with_port() {
    let files = macos_files(
        "dev",
        &["dev.dev".to_string()],
        "127.0.0.1:5353".parse().unwrap(),
    );
    golden("dns", "resolver-port-5353", &files[0].1);
}

#[test]
fn resolved_commands_text() {
    let mut text = String::new();
    for argv in resolved_commands("devbox0", &domains(), server()) {
        text.push_str(&argv.join(" "));
        text.push('\n');
    }
    text.push_str(&resolved_revert("devbox0").join(" "));
    text.push('\n');
    golden("dns", "resolvectl.txt", &text);
}

#[test]
fn no_resolved_text() {
    golden(
        "dns",
        "no-resolved.txt",
        &manual_instructions(&domains(), server(), false),
    );
}
