//! Published ports on the host's localhost: for every port a container publishes in the
//! machine (`-p 8080:80`, `-p 127.0.0.1:5432:5432`, `-p 53:53/udp`, ranges), the host's
//! `127.0.0.1` and `::1` answer at the same port and carry each connection to the guest.
//!
//! - `plan.rs` (pure): Docker's port bindings → [`Published`] ports and their targets, the
//!   merge of all containers (the first keeps a contested port) and the diff that turns the
//!   listeners into the wanted ones.
//! - `forward.rs`: the listeners and the relays, one task per TCP connection (with
//!   `copy_bidirectional`) and per UDP client, so one stalled peer holds up no other.
//! - this file, [`run`]: the task that follows Docker's events through the machine's
//!   forwarded `docker.sock` (as the DNS server's container watcher does, with a connection of
//!   its own), re-inspects the container each event names, and opens and closes listeners
//!   within that event's round trip. A host port that is taken or privileged is a warning
//!   (logged, in `state.json` for `status` and `inspect`) and retried every few seconds; a
//!   guest that does not answer for a port closes that port until its container starts again.
//!
//! Runs on the supervisor's I/O runtime until aborted; its listeners close with it.

mod forward;
mod plan;

pub use plan::{Proto, Published, Unforwarded, diff, merge, published_by};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::dns::event_container_id;
use crate::machine::state::PortState;

/// How often ports that could not be opened (taken, privileged) are tried again.
const RETRY: Duration = Duration::from_secs(5);
/// Longest wait between two connection attempts to Docker.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const API_TIMEOUT_SECS: u64 = 10;

/// Where the forwarder reports: the ports and their state after every change.
pub type Report = Box<dyn FnMut(Vec<PortState>) + Send>;

fn log(msg: &str) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    eprintln!("{now} ports: {msg}");
}

/// Follows the Docker behind `docker_socket` and forwards the host's localhost ports to the
/// machine at `guest_ip`, reporting every change to `report`. Runs until dropped.
pub async fn run(docker_socket: PathBuf, guest_ip: Ipv4Addr, report: Report) {
    let mut ports = Ports::new(guest_ip, report);
    let mut backoff = Duration::from_millis(100);
    let mut last_error = String::new();
    loop {
        match follow(&docker_socket, &mut ports).await {
            Ok(()) => last_error.clear(),
            Err(e) => {
                let msg = format!("Docker at {}: {e}", docker_socket.display());
                if msg != last_error {
                    log(&format!("{msg}; retrying"));
                    last_error = msg;
                }
            }
        }
        if ports.listed {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The forwarder's state: what each container publishes, and what is open.
struct Ports {
    guest_ip: Ipv4Addr,
    report: Report,
    per_container: BTreeMap<String, Vec<Published>>,
    unforwardable: BTreeMap<String, Vec<Unforwarded>>,
    open: BTreeMap<(Proto, u16), (Published, forward::Listening)>,
    /// Wanted but not open, with why (taken, privileged, unreachable).
    problems: BTreeMap<(Proto, u16), (Published, String)>,
    /// Closed because the guest did not answer; not retried until their container changes.
    unreachable: HashSet<(Proto, u16)>,
    down_tx: mpsc::UnboundedSender<forward::Unreachable>,
    down_rx: mpsc::UnboundedReceiver<forward::Unreachable>,
    listed: bool,
}

impl Ports {
    fn new(guest_ip: Ipv4Addr, report: Report) -> Ports {
        let (down_tx, down_rx) = mpsc::unbounded_channel();
        Ports {
            guest_ip,
            report,
            per_container: BTreeMap::new(),
            unforwardable: BTreeMap::new(),
            open: BTreeMap::new(),
            problems: BTreeMap::new(),
            unreachable: HashSet::new(),
            down_tx,
            down_rx,
            listed: false,
        }
    }

    fn set(&mut self, id: &str, inspect: Option<&bollard::models::ContainerInspectResponse>) {
        let (published, skipped) = match inspect {
            Some(i) => published_by(i, self.guest_ip),
            None => Default::default(),
        };
        // Any event of the container (it started again, stopped, went) gives its ports
        // another chance.
        for p in self
            .per_container
            .get(id)
            .iter()
            .copied()
            .flatten()
            .chain(&published)
        {
            self.unreachable.remove(&(p.proto, p.port));
        }
        if published.is_empty() {
            self.per_container.remove(id);
        } else {
            self.per_container.insert(id.to_owned(), published);
        }
        if skipped.is_empty() {
            self.unforwardable.remove(id);
        } else {
            self.unforwardable.insert(id.to_owned(), skipped);
        }
    }

    /// Opens and closes listeners until they match what the containers publish.
    async fn reconcile(&mut self) {
        let (wanted, clashes) = merge(&self.per_container);
        let mut desired = wanted.clone();
        desired.retain(|k, _| !self.unreachable.contains(k));
        let current: BTreeMap<(Proto, u16), Published> = self
            .open
            .iter()
            .map(|(k, (p, _))| (*k, p.clone()))
            .collect();
        let (close, open) = diff(&current, &desired);
        for k in close {
            if let Some((p, _)) = self.open.remove(&k) {
                log(&format!("closed {}/{} ({})", p.port, p.proto, p.container));
            }
        }
        self.problems.retain(|k, _| wanted.contains_key(k));
        self.unreachable.retain(|k| wanted.contains_key(k));
        for p in open {
            let key = (p.proto, p.port);
            match forward::open(&p, self.down_tx.clone()).await {
                Ok(l) => {
                    log(&format!(
                        "127.0.0.1:{}/{} -> {} ({}){}",
                        p.port,
                        p.proto,
                        p.target,
                        p.container,
                        l.partial
                            .as_deref()
                            .map(|w| format!("; {w}"))
                            .unwrap_or_default()
                    ));
                    self.problems.remove(&key);
                    self.open.insert(key, (p, l));
                }
                Err(e) => {
                    let why = forward::describe(&e, p.port);
                    if self.problems.get(&key).map(|(_, w)| w) != Some(&why) {
                        log(&format!(
                            "warning: {}/{} ({}): {why}",
                            p.port, p.proto, p.container
                        ));
                    }
                    self.problems.insert(key, (p, why));
                }
            }
        }
        self.publish(&clashes);
    }

    /// Closes a port whose guest side does not answer.
    fn close_unreachable(&mut self, u: forward::Unreachable) {
        let key = (u.proto, u.port);
        if let Some((p, _)) = self.open.remove(&key) {
            let why = format!(
                "the guest did not answer ({}); closed until the container starts again",
                u.why
            );
            log(&format!(
                "warning: {}/{} ({}): {why}",
                p.port, p.proto, p.container
            ));
            self.unreachable.insert(key);
            self.problems.insert(key, (p, why));
            self.publish(&[]);
        }
    }

    fn publish(&mut self, clashes: &[Unforwarded]) {
        let mut states: Vec<PortState> = self
            .open
            .values()
            .map(|(p, l)| state(p, l.partial.clone()))
            .chain(
                self.problems
                    .values()
                    .map(|(p, why)| state(p, Some(why.clone()))),
            )
            .collect();
        for u in clashes.iter().chain(self.unforwardable.values().flatten()) {
            states.push(PortState {
                proto: u.proto.to_string(),
                port: u.port,
                target: String::new(),
                container: u.container.clone(),
                problem: Some(u.why.clone()),
            });
        }
        states.sort_by(|a, b| {
            (a.port, &a.proto, &a.container).cmp(&(b.port, &b.proto, &b.container))
        });
        (self.report)(states);
    }
}

fn state(p: &Published, problem: Option<String>) -> PortState {
    PortState {
        proto: p.proto.to_string(),
        port: p.port,
        target: p.target.to_string(),
        container: p.container.clone(),
        problem,
    }
}

/// One connection to Docker: list, then follow events until the stream ends or fails.
async fn follow(socket: &std::path::Path, ports: &mut Ports) -> Result<(), DockerError> {
    let path = socket.to_string_lossy();
    let docker = Docker::connect_with_unix(&path, API_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)?;
    let filters = HashMap::from([("type".to_string(), vec!["container".to_string()])]);
    // Subscribed before listing, so nothing that happens in between is missed (an event
    // only makes the container be inspected again).
    let mut events = docker.events(Some(EventsOptions {
        since: None,
        until: None,
        filters: Some(filters),
    }));
    let list = docker
        .list_containers(Some(ListContainersOptions::default()))
        .await?;
    let running: HashSet<String> = list.iter().filter_map(|c| c.id.clone()).collect();
    let known: Vec<String> = ports.per_container.keys().cloned().collect();
    for id in known.iter().filter(|id| !running.contains(*id)) {
        ports.set(id, None);
    }
    for id in &running {
        let inspect = inspect(&docker, id).await?;
        ports.set(id, inspect.as_ref());
    }
    ports.listed = true;
    ports.reconcile().await;

    let mut retry = tokio::time::interval(RETRY);
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                let event = event?;
                let Some(id) = event_container_id(&event) else { continue };
                let id = id.to_owned();
                let inspect = inspect(&docker, &id).await?;
                ports.set(&id, inspect.as_ref());
                ports.reconcile().await;
            }
            Some(u) = ports.down_rx.recv() => ports.close_unreachable(u),
            _ = retry.tick() => {
                if ports.problems.keys().any(|k| !ports.unreachable.contains(k)) {
                    ports.reconcile().await;
                }
            }
        }
    }
}

async fn inspect(
    docker: &Docker,
    id: &str,
) -> Result<Option<bollard::models::ContainerInspectResponse>, DockerError> {
    match docker
        .inspect_container(id, Some(InspectContainerOptions::default()))
        .await
    {
        Ok(resp) => Ok(Some(resp)),
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}
