//! Which host ports forward where, from Docker's view of the containers (pure).
//!
//! Each port binding Docker reports for a running container (`NetworkSettings.Ports`:
//! `"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]`, one per port of a range) becomes
//! one [`Published`] port: the host's `127.0.0.1` and `::1` answer at the same port number.
//! Where connections go depends on where Docker listens in the guest:
//! - on all its addresses (`0.0.0.0`, `::`, empty) or on the guest's own address: the guest's
//!   address and the published port, as if the host were on the guest's network (the guest's
//!   Docker forwards it to the container, as it would for any client);
//! - on the guest's loopback (`-p 127.0.0.1:5432:5432`): that port answers only inside the
//!   guest, so the host goes to the container itself, its IP and the container port, over
//!   the route devbox keeps to the machine's Docker subnets (D2 named SSH `direct-tcpip` here;
//!   the route needs no SSH session per connection and carries UDP too, which SSH cannot, and
//!   opens nothing the route did not already open to the host);
//! - on another guest address (a Docker network's gateway): that address and the port.
//!
//! Two bindings of the same protocol and host port (Docker's IPv4 and IPv6 listeners, or two
//! containers on different guest addresses) forward once; the first container by name keeps
//! the port and the other is reported.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bollard::models::ContainerInspectResponse;

/// A transport protocol Docker publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One host port of `127.0.0.1`/`::1` and where its connections go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Published {
    pub proto: Proto,
    pub port: u16,
    pub target: SocketAddr,
    /// The container's name, for messages.
    pub container: String,
}

/// A binding that cannot be forwarded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unforwarded {
    pub proto: Proto,
    pub port: u16,
    pub container: String,
    pub why: String,
}

/// The ports a running container publishes (nothing for a stopped one). `guest_ip` is the
/// machine's address as the host reaches it.
pub fn published_by(
    inspect: &ContainerInspectResponse,
    guest_ip: Ipv4Addr,
) -> (Vec<Published>, Vec<Unforwarded>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let running = inspect.state.as_ref().and_then(|s| s.running) == Some(true);
    let settings = inspect.network_settings.as_ref();
    let (Some(ports), true) = (settings.and_then(|n| n.ports.as_ref()), running) else {
        return (out, skipped);
    };
    let container = inspect
        .name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    // The container's first IPv4 address, by network name (stable).
    let container_ip: Option<Ipv4Addr> =
        settings.and_then(|n| n.networks.as_ref()).and_then(|nets| {
            let mut names: Vec<&String> = nets.keys().collect();
            names.sort();
            names.into_iter().find_map(|n| {
                nets[n]
                    .ip_address
                    .as_deref()
                    .and_then(|a| a.parse::<Ipv4Addr>().ok())
            })
        });
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort();
    for key in keys {
        let Some((inner, proto)) = parse_key(key) else {
            continue;
        };
        for binding in ports[key].iter().flatten() {
            let Some(port) = binding
                .host_port
                .as_deref()
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            let host_ip = binding.host_ip.as_deref().unwrap_or_default();
            let target = match host_ip.parse::<IpAddr>() {
                Err(_) if host_ip.is_empty() => Some(SocketAddr::from((guest_ip, port))),
                Ok(ip) if ip.is_unspecified() || ip == IpAddr::V4(guest_ip) => {
                    Some(SocketAddr::from((guest_ip, port)))
                }
                Ok(ip) if ip.is_loopback() => container_ip.map(|c| SocketAddr::from((c, inner))),
                Ok(IpAddr::V4(ip)) => Some(SocketAddr::from((ip, port))),
                Ok(IpAddr::V6(_)) | Err(_) => None,
            };
            match target {
                Some(target) => out.push(Published {
                    proto,
                    port,
                    target,
                    container: container.clone(),
                }),
                None => skipped.push(Unforwarded {
                    proto,
                    port,
                    container: container.clone(),
                    why: format!("published on the guest's {host_ip}, which the host cannot reach"),
                }),
            }
        }
    }
    (out, skipped)
}

/// `"80/tcp"` → (80, Tcp). Other protocols (sctp) are not forwarded.
fn parse_key(key: &str) -> Option<(u16, Proto)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    Some((port.parse().ok()?, proto))
}

/// Every container's ports merged into one map by (protocol, host port): the first binding of
/// each keeps it (containers are taken by name); bindings of another container that want the
/// same host port are returned as not forwarded. Duplicates of the same target (Docker's
/// IPv4 and IPv6 listeners) merge silently.
pub fn merge(
    per_container: &BTreeMap<String, Vec<Published>>,
) -> (BTreeMap<(Proto, u16), Published>, Vec<Unforwarded>) {
    let mut by_name: Vec<&Vec<Published>> = per_container.values().collect();
    by_name.sort_by(|a, b| {
        let name = |v: &Vec<Published>| v.first().map(|p| p.container.clone());
        name(a).cmp(&name(b))
    });
    let mut map: BTreeMap<(Proto, u16), Published> = BTreeMap::new();
    let mut clashes = Vec::new();
    for p in by_name.into_iter().flatten() {
        match map.get(&(p.proto, p.port)) {
            None => {
                map.insert((p.proto, p.port), p.clone());
            }
            Some(first) if first.container == p.container => {}
            Some(first) => clashes.push(Unforwarded {
                proto: p.proto,
                port: p.port,
                container: p.container.clone(),
                why: format!("container {} already has this host port", first.container),
            }),
        }
    }
    (map, clashes)
}

/// What to change to go from `current` to `desired`: ports to close (gone, or their target
/// changed) and ports to open.
pub fn diff(
    current: &BTreeMap<(Proto, u16), Published>,
    desired: &BTreeMap<(Proto, u16), Published>,
) -> (Vec<(Proto, u16)>, Vec<Published>) {
    let close = current
        .iter()
        .filter(|(k, v)| desired.get(k) != Some(v))
        .map(|(k, _)| *k)
        .collect();
    let open = desired
        .iter()
        .filter(|(k, v)| current.get(k) != Some(v))
        .map(|(_, v)| v.clone())
        .collect();
    (close, open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GUEST: Ipv4Addr = Ipv4Addr::new(192, 168, 64, 2);

    fn inspect(name: &str, running: bool, ports: serde_json::Value) -> ContainerInspectResponse {
        serde_json::from_value(json!({
            "Id": format!("id-{name}"),
            "Name": format!("/{name}"),
            "State": {"Running": running},
            "NetworkSettings": {
                "Ports": ports,
                "Networks": {"bridge": {"IPAddress": "172.18.0.5"}}
            }
        }))
        .unwrap()
    }

    fn lines(ps: &[Published]) -> Vec<String> {
        ps.iter()
            .map(|p| format!("{}/{} -> {} ({})", p.port, p.proto, p.target, p.container))
            .collect()
    }

    #[test]
    fn each_kind_of_binding_gets_its_target() {
        // `-p 8080:80 -p 127.0.0.1:5432:5432 -p 53:53/udp -p 9000-9001:7000-7001`, and Docker's
        // IPv6 twin of each all-address binding.
        let c = inspect(
            "web",
            true,
            json!({
                "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
                "5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5432"}],
                "53/udp": [{"HostIp": "", "HostPort": "53"}],
                "7000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9000"}],
                "7001/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9001"}],
                "8000/tcp": null,
                "9/sctp": [{"HostIp": "0.0.0.0", "HostPort": "9"}],
                "6000/tcp": [{"HostIp": "172.18.0.1", "HostPort": "6000"}],
                "6001/tcp": [{"HostIp": "fd00::1", "HostPort": "6001"}]
            }),
        );
        let (ps, skipped) = published_by(&c, GUEST);
        assert_eq!(
            lines(&ps),
            [
                "53/udp -> 192.168.64.2:53 (web)",
                "5432/tcp -> 172.18.0.5:5432 (web)",
                "6000/tcp -> 172.18.0.1:6000 (web)",
                "9000/tcp -> 192.168.64.2:9000 (web)",
                "9001/tcp -> 192.168.64.2:9001 (web)",
                "8080/tcp -> 192.168.64.2:8080 (web)",
                "8080/tcp -> 192.168.64.2:8080 (web)",
            ]
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].port, 6001);
        let stopped = inspect("web", false, json!({"80/tcp": [{"HostPort": "8080"}]}));
        assert_eq!(published_by(&stopped, GUEST).0, []);
    }

    #[test]
    fn the_first_container_keeps_a_port_and_twins_merge() {
        let a = inspect(
            "a",
            true,
            json!({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}]}),
        );
        let b = inspect(
            "b",
            true,
            json!({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
            "81/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8081"}]}),
        );
        let all = BTreeMap::from([
            ("id-b".to_owned(), published_by(&b, GUEST).0),
            ("id-a".to_owned(), published_by(&a, GUEST).0),
        ]);
        let (map, clashes) = merge(&all);
        assert_eq!(map.len(), 2);
        assert_eq!(map[&(Proto::Tcp, 8080)].container, "a");
        assert_eq!(clashes.len(), 1);
        assert_eq!(clashes[0].container, "b");
        assert_eq!(clashes[0].why, "container a already has this host port");
    }

    #[test]
    fn diff_closes_what_left_or_moved_and_opens_what_came() {
        let p = |port, ip: &str, c: &str| Published {
            proto: Proto::Tcp,
            port,
            target: format!("{ip}:{port}").parse().unwrap(),
            container: c.into(),
        };
        let cur = BTreeMap::from([
            ((Proto::Tcp, 1), p(1, "192.168.64.2", "a")),
            ((Proto::Tcp, 2), p(2, "192.168.64.2", "a")),
            ((Proto::Tcp, 3), p(3, "192.168.64.2", "a")),
        ]);
        let want = BTreeMap::from([
            ((Proto::Tcp, 2), p(2, "192.168.64.2", "a")),
            ((Proto::Tcp, 3), p(3, "172.18.0.9", "b")),
            ((Proto::Tcp, 4), p(4, "192.168.64.2", "b")),
        ]);
        let (close, open) = diff(&cur, &want);
        assert_eq!(close, [(Proto::Tcp, 1), (Proto::Tcp, 3)]);
        assert_eq!(open.iter().map(|p| p.port).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(diff(&want, &want), (vec![], vec![]));
    }
}
