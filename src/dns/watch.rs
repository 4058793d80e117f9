//! The container watcher: keeps the records in step with the guest's Docker through the
//! forwarded docker socket. On each (re)connection it lists the running containers, then
//! follows the event stream (container start/die/destroy/rename/pause/unpause, network
//! connect/disconnect), re-inspecting the container each event names. On a swarm manager it
//! also names the swarm's published services ([`services_from`]), listed again at each
//! service or node event. When the socket goes
//! away (machine restarting, forwarder reconnecting) it retries with backoff, keeping the last
//! known records meanwhile. Runs in the caller's task until its future is dropped.
//!
//! The mapping from Docker's JSON to [`Container`] is pure ([`container_from_inspect`],
//! [`event_container_id`]) and tested on fixtures; the I/O around it needs a live Docker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use futures::StreamExt;

use super::zone::{Container, HTTP_PORT_LABEL, SERVICE_ID_PREFIX, WebPorts, aliases_from};
use super::{DnsError, RecordsHandle, log_warning};

/// Container event actions after which the container is re-inspected.
const CONTAINER_ACTIONS: [&str; 8] = [
    "start", "restart", "die", "stop", "destroy", "rename", "pause", "unpause",
];
/// Network event actions (the container id is in the `container` attribute).
const NETWORK_ACTIONS: [&str; 2] = ["connect", "disconnect"];
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Timeout of Docker API calls, in seconds (the events stream is exempt: bollard applies it
/// per request, and a quiet stream is not an error).
const API_TIMEOUT_SECS: u64 = 10;

/// The container an event is about, if the event can change its names or addresses.
pub fn event_container_id(event: &EventMessage) -> Option<&str> {
    let action = event.action.as_deref()?;
    // Docker ≥ 23 sends `exec_start: sh -c …`, `health_status: healthy` and the like; only
    // the word before the colon is the action.
    let action = action.split(':').next().unwrap_or(action).trim();
    let actor = event.actor.as_ref()?;
    match event.typ? {
        EventMessageTypeEnum::CONTAINER if CONTAINER_ACTIONS.contains(&action) => {
            actor.id.as_deref()
        }
        EventMessageTypeEnum::NETWORK if NETWORK_ACTIONS.contains(&action) => actor
            .attributes
            .as_ref()?
            .get("container")
            .map(String::as_str),
        _ => None,
    }
}

/// The zone's view of an inspected container: `None` unless it is running.
pub fn container_from_inspect(inspect: &ContainerInspectResponse) -> Option<Container> {
    let running = inspect.state.as_ref().and_then(|s| s.running) == Some(true);
    if !running {
        return None;
    }
    let id = inspect.id.clone()?;
    let name = inspect.name.as_deref()?.trim_start_matches('/').to_string();
    let mut ips: Vec<IpAddr> = Vec::new();
    let networks = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref());
    let mut network_names: Vec<&String> = networks.map(|n| n.keys().collect()).unwrap_or_default();
    network_names.sort();
    for net in network_names {
        let endpoint = &networks.expect("keys came from it")[net];
        for addr in [&endpoint.ip_address, &endpoint.global_ipv6_address] {
            if let Some(ip) = addr.as_deref().and_then(|a| a.parse::<IpAddr>().ok())
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    }
    let config = inspect.config.as_ref();
    let env = config.and_then(|c| c.env.as_ref());
    let labels = config.and_then(|c| c.labels.as_ref());
    let mut labels: Vec<(&str, &str)> = labels
        .map(|l| l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .unwrap_or_default();
    labels.sort();
    let http = labels
        .iter()
        .find(|(k, _)| *k == HTTP_PORT_LABEL)
        .and_then(|(_, v)| v.trim().parse::<u16>().ok())
        .filter(|p| *p != 0)
        .unwrap_or(80);
    let own_tls = config
        .and_then(|c| c.exposed_ports.as_ref())
        .is_some_and(|ports| ports.iter().any(|p| p == "443/tcp" || p == "443"));
    let aliases = aliases_from(env.into_iter().flatten().map(String::as_str), labels);
    Some(Container {
        id,
        name,
        ips,
        aliases,
        web: WebPorts { http, own_tls },
    })
}

/// The swarm services a manager's zone names, from Docker's service and node lists: each
/// service that publishes a port, as `<service>.<machine>.<tld>` (and `<name>.<stack>.…` for
/// a stack's service, `web.shop` for `shop_web`), answering with the address of every ready
/// node, since the routing mesh answers on each. No reverse records: those addresses are the
/// machines' own. `apex` is `<machine>.<tld>`.
pub fn services_from(
    services: &[bollard::models::Service],
    nodes: &[bollard::models::Node],
    apex: &str,
) -> Vec<Container> {
    let mut addrs: Vec<IpAddr> = nodes
        .iter()
        .filter_map(|n| n.status.as_ref())
        .filter(|s| s.state == Some(bollard::models::NodeState::READY))
        .filter_map(|s| s.addr.as_deref()?.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    addrs.sort();
    addrs.dedup();
    let mut out = Vec::new();
    for svc in services {
        let published = svc
            .endpoint
            .as_ref()
            .and_then(|e| e.ports.as_ref())
            .is_some_and(|p| p.iter().any(|p| p.published_port.is_some()));
        let (Some(id), Some(spec)) = (&svc.id, &svc.spec) else {
            continue;
        };
        let Some(name) = spec.name.clone() else {
            continue;
        };
        if !published || addrs.is_empty() {
            continue;
        }
        let stack = spec
            .labels
            .as_ref()
            .and_then(|l| l.get("com.docker.stack.namespace"));
        let aliases = stack
            .and_then(|ns| {
                let short = name.strip_prefix(ns.as_str())?.strip_prefix('_')?;
                Some(format!("{short}.{ns}.{apex}"))
            })
            .into_iter()
            .collect();
        out.push(Container {
            id: format!("{SERVICE_ID_PREFIX}{id}"),
            name,
            ips: addrs.clone(),
            aliases,
            web: WebPorts::default(),
        });
    }
    out
}

/// Follows the Docker daemon behind `docker_socket` and keeps `records` up to date. Runs
/// until the future is dropped; returns an error only if the socket path itself is unusable.
pub async fn watch_containers(
    docker_socket: PathBuf,
    records: RecordsHandle,
) -> Result<(), DnsError> {
    let path = docker_socket
        .to_str()
        .ok_or_else(|| DnsError::DockerSocket {
            socket: docker_socket.clone(),
            reason: "the path is not valid UTF-8".to_string(),
        })?
        .to_string();
    let mut backoff = Duration::from_millis(100);
    let mut last_error = String::new();
    loop {
        let mut listed = false;
        match follow(&path, &records, &mut listed).await {
            Ok(()) => last_error.clear(),
            Err(e) => {
                let msg = format!("Docker at {}: {e}", docker_socket.display());
                // A machine that is booting fails every attempt the same way: log it once.
                if msg != last_error {
                    log_warning(&format!("{msg}; retrying"));
                    last_error = msg;
                }
            }
        }
        if listed {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: list, then follow events until the stream ends or fails.
async fn follow(path: &str, records: &RecordsHandle, listed: &mut bool) -> Result<(), DockerError> {
    let docker = Docker::connect_with_unix(path, API_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)?;
    // Events are asked from one second before the list, by the daemon's clock, so nothing
    // that happens between the list and the subscription is missed; replays are harmless
    // (each event only triggers a re-inspect).
    let since = daemon_since(&docker).await?;
    let mut containers: HashMap<String, Container> = HashMap::new();
    let list = docker
        .list_containers(Some(ListContainersOptions::default()))
        .await?;
    for summary in list {
        if let Some(id) = summary.id
            && let Some(c) = inspect(&docker, &id).await?
        {
            containers.insert(id, c);
        }
    }
    let apex = {
        let cfg = records.config();
        format!("{}.{}", cfg.machine, cfg.tld)
    };
    let mut services = swarm_services(&docker, &apex).await?;
    publish(records, &containers, &services).await;
    *listed = true;

    let filters = HashMap::from([(
        "type".to_string(),
        ["container", "network", "service", "node"]
            .map(String::from)
            .to_vec(),
    )]);
    let options = EventsOptions {
        since: since.map(|s| s.to_string()),
        until: None,
        filters: Some(filters),
    };
    let mut events = docker.events(Some(options));
    while let Some(event) = events.next().await {
        let event = event?;
        if matches!(
            event.typ,
            Some(EventMessageTypeEnum::SERVICE | EventMessageTypeEnum::NODE)
        ) {
            let now = swarm_services(&docker, &apex).await?;
            if now != services {
                services = now;
                publish(records, &containers, &services).await;
            }
            continue;
        }
        let Some(id) = event_container_id(&event) else {
            continue;
        };
        let id = id.to_string();
        let changed = match inspect(&docker, &id).await? {
            Some(c) => containers.insert(id, c.clone()).as_ref() != Some(&c),
            None => containers.remove(&id).is_some(),
        };
        if changed {
            publish(records, &containers, &services).await;
        }
    }
    Ok(())
}

/// The services of the swarm this engine manages (none when it manages none).
async fn swarm_services(docker: &Docker, apex: &str) -> Result<Vec<Container>, DockerError> {
    let services = match docker.list_services(None).await {
        Ok(s) => s,
        // "This node is not a swarm manager": not in a swarm, or a worker.
        Err(DockerError::DockerResponseServerError {
            status_code: 503, ..
        }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if services.is_empty() {
        return Ok(Vec::new());
    }
    let nodes = docker.list_nodes(None).await?;
    Ok(services_from(&services, &nodes, apex))
}

/// The container if it exists and runs; `None` once it is gone (404) or stopped.
async fn inspect(docker: &Docker, id: &str) -> Result<Option<Container>, DockerError> {
    match docker
        .inspect_container(id, Some(InspectContainerOptions::default()))
        .await
    {
        Ok(resp) => Ok(container_from_inspect(&resp)),
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Rebuilds the records on a blocking thread: a build reads the state directory and takes
/// file locks ([`RecordsHandle::set_containers`]).
async fn publish(
    records: &RecordsHandle,
    containers: &HashMap<String, Container>,
    services: &[Container],
) {
    let mut list: Vec<Container> = containers.values().cloned().collect();
    list.extend(services.iter().cloned());
    let records = records.clone();
    let _ = tokio::task::spawn_blocking(move || records.set_containers(&list)).await;
}

/// One second before the daemon's clock, in Unix seconds (the guest's clock may differ from
/// the host's). `None` when the daemon reports a time that is not UTC: a wrong `since` in the
/// future would drop events, a missing one only opens a tiny window before the stream starts.
async fn daemon_since(docker: &Docker) -> Result<Option<u64>, DockerError> {
    let info = docker.info().await?;
    let since = info
        .system_time
        .as_deref()
        .filter(|t| t.ends_with('Z'))
        .and_then(|t| humantime::parse_rfc3339_weak(t.get(..19)?).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs().saturating_sub(1));
    Ok(since)
}
