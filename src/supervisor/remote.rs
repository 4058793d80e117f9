//! A host adopted over SSH (driver `ssh`, issue #21): no virtual machine, no network device,
//! no shares. Bringing it up is connecting: the host key pinned at create is checked, the
//! engine must answer, and then the event loop forwards its docker socket and its published
//! ports as for any machine. A stop disconnects and never powers the host off.

use crate::output::guest_text::escape;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::SigSet;

use super::bring_up::Supervisor;
use super::event_loop::{Guest, Running};
use super::parts::Part;
use super::{Event, client, control, host_net, log, watchers};
use crate::host::{HostPlan, RemoteRoute};
use crate::hypervisor::{HypervisorError, RunningVm, VmExit};
use crate::ssh;

/// How long asking the engine for its version may take.
const ENGINE_CHECK: Duration = Duration::from_secs(20);

/// The adopted host, as the event loop's running machine: it "runs" until a stop.
struct RemoteHost {
    host: String,
    stopped: bool,
}

impl RunningVm for RemoteHost {
    fn pid(&self) -> Option<u32> {
        None
    }
    fn request_stop(&mut self) -> Result<(), HypervisorError> {
        self.stopped = true;
        Ok(())
    }
    fn kill(&mut self) -> Result<(), HypervisorError> {
        self.stopped = true;
        Ok(())
    }
    fn try_wait(&mut self) -> Result<Option<VmExit>, HypervisorError> {
        Ok(self.stopped.then(|| VmExit {
            description: format!("disconnected from {} (the host keeps running)", self.host),
        }))
    }
}

impl Supervisor<'_> {
    pub(super) fn bring_up_remote(&mut self, sigs: SigSet) -> Result<Running> {
        let r = self
            .spec
            .remote
            .as_ref()
            .context("machine.yaml of an ssh-driver machine has no `remote:`")?;
        let target = client::remote_target(self.dir, r)?;
        log(format!(
            "driver ssh: the host {} ({}:{}) as {}",
            r.host, r.address, r.port, r.user
        ));
        self.state.update(|s| {
            s.accel = Some("none".to_owned());
            s.accel_reason = Some("a host adopted over SSH runs no virtual machine".to_owned());
            s.guest_ip = Some(r.address);
        });
        let io = self.io_runtime()?;
        control::serve(
            &self.dir.control_socket_path(),
            self.tx.clone(),
            self.state.clone(),
        )?;
        watchers::spawn_signals(sigs, self.tx.clone());
        // The names of the host's containers (`<container>.<machine>.<tld>`, answered with
        // their addresses on that host), from a DNS server of the machine's own.
        let net = self.remote_dns_link()?;
        let dns_server = self.dns(&io, &net, r.address)?;
        let records = self.serve_names(dns_server, &net);
        if let Some(routes) = self.route_remote(r) {
            self.parts.add(routes);
        }
        spawn_engine_check(
            target.clone(),
            self.deadline,
            self.state.clone(),
            self.tx.clone(),
        );
        Ok(Running {
            vm: Guest::new(Box::new(RemoteHost {
                host: r.host.clone(),
                stopped: false,
            })),
            target: Some(target),
            guest_ip: r.address,
            records: Some(records),
            io: io.handle().clone(),
            booted: Instant::now(),
            reboot: None,
        })
    }
}

impl Supervisor<'_> {
    /// Where the machine's DNS server listens. On Linux, a link `dbxN` of its lease's (a TAP
    /// with carrier and no guest) carries it, port 53 on the index's host address, so that
    /// systemd-resolved can send the machine's domains to it as for any machine; where that
    /// link cannot be made (no privilege), and on macOS (whose `/etc/resolver` takes a port),
    /// a loopback port of its own.
    fn remote_dns_link(&mut self) -> Result<host_net::HostNet> {
        let fallback = host_net::host_net(self.spec, self.spec.driver.capabilities())?;
        #[cfg(target_os = "linux")]
        match crate::host::open_dns_link(self.spec.network.index) {
            Ok((link, hostonly)) => {
                log(format!(
                    "{} up with {}/{} for the DNS server (no guest on it)",
                    hostonly.tap_name(),
                    hostonly.host_ip,
                    hostonly.subnet.prefix_len()
                ));
                self.parts.hold("DNS link", link);
                return Ok(host_net::HostNet {
                    dns_bind: std::net::SocketAddr::new(hostonly.host_ip.into(), 53),
                    resolved_link: Some(hostonly.tap_name()),
                    ..fallback
                });
            }
            Err(e) => log(format!(
                "warning: no link for the DNS server ({e}); it listens on {} instead",
                fallback.dns_bind
            )),
        }
        Ok(fallback)
    }

    /// Routes the machine's Docker subnets via the host's address when this host reaches that
    /// address directly (a LAN, a machine of devbox's): the containers then answer by IP as
    /// a local machine's do. A host behind a router gets no routes, and a route that would
    /// conflict with the host's table is not made; either is logged and kept in `state.json`
    /// as a warning: the machine works without them.
    fn route_remote(&mut self, r: &crate::machine::RemoteSpec) -> Option<RemoteRoutes> {
        let warn = |state: &super::state::StateWriter, why: String| {
            log(format!("warning: {why}"));
            state.update(|s| s.warnings = vec![why]);
        };
        let table = match crate::net::host_routes() {
            Ok(t) => t,
            Err(e) => {
                warn(&self.state, format!("container subnets not routed: {e}"));
                return None;
            }
        };
        let Some(interface) = table
            .iter()
            .filter(|t| t.gateway.is_none() && t.dest.prefix_len() > 0 && t.interface != "lo")
            .filter(|t| t.dest.trunc().contains(&r.address))
            .max_by_key(|t| t.dest.prefix_len())
            .map(|t| t.interface.clone())
        else {
            warn(
                &self.state,
                format!(
                    "container subnets not routed: {} is not on a network this host is                      directly connected to, so its containers answer only through published                      ports",
                    r.address
                ),
            );
            return None;
        };
        let routes: Vec<RemoteRoute> = self
            .spec
            .docker
            .routed()
            .into_iter()
            .map(|dest| RemoteRoute {
                dest,
                gateway: r.address,
                interface: interface.clone(),
                lease: self.spec.network.index,
                machine: self.spec.name.clone(),
            })
            .collect();
        let plan = HostPlan {
            command: format!("start {}", self.spec.name),
            remote_routes_add: routes.clone(),
            ..HostPlan::default()
        };
        match crate::host::apply(&plan, false) {
            Ok(_) => {
                for route in &routes {
                    log(format!("route {route}"));
                }
                Some(RemoteRoutes {
                    name: self.spec.name.clone(),
                    routes,
                })
            }
            Err(e) => {
                let e = anyhow::Error::new(e);
                let fix = crate::output::diagnostics::hint(&e)
                    .map(|h| format!(" (fix: {h})"))
                    .unwrap_or_default();
                warn(
                    &self.state,
                    format!("container subnets not routed: {e}{fix}"),
                );
                None
            }
        }
    }
}

/// The adopted host's routes; stopping takes them away.
struct RemoteRoutes {
    name: String,
    routes: Vec<RemoteRoute>,
}

impl Part for RemoteRoutes {
    fn name(&self) -> &str {
        "routes"
    }
    fn stop(self: Box<Self>) {
        let plan = HostPlan {
            command: format!("stop {}", self.name),
            remote_routes_remove: self.routes,
            ..HostPlan::default()
        };
        if let Err(e) = crate::host::apply(&plan, false) {
            log(format!("removing the routes of {}: {e}", self.name));
        }
    }
}

/// Connects and asks the engine for its version: the machine is ready when it answers.
/// Unlike a guest booting, a host that does not answer will not start to: a refused or
/// unreachable connection is reported at once.
fn spawn_engine_check(
    target: ssh::Target,
    deadline: Instant,
    state: super::state::StateWriter,
    tx: Sender<Event>,
) {
    std::thread::Builder::new()
        .name("ready".into())
        .spawn(move || {
            state.step("connecting");
            let result = ssh::Connection::connect(&target, Duration::from_secs(10))
                .map_err(|e| format!("SSH: {e}{}", hint_of(&e)))
                .and_then(|conn| {
                    state.step("waiting for Docker");
                    let until = deadline.min(Instant::now() + ENGINE_CHECK);
                    let out = conn
                        .exec_capture_until("docker version --format '{{.Server.Version}}'", until)
                        .map_err(|e| format!("SSH: {e}"))?;
                    let version = escape(&out.stdout).trim().to_owned();
                    if out.status == 0 && !version.is_empty() {
                        Ok(version)
                    } else {
                        Err(format!(
                            "the Docker engine of {} does not answer {}: {}",
                            target.addr,
                            target.user,
                            escape(&out.stderr).trim()
                        ))
                    }
                });
            let event = match result {
                Ok(docker_version) => Event::Ready {
                    docker_version,
                    boot: 0,
                },
                Err(reason) => Event::NotReady {
                    reason,
                    boot: Some(0),
                },
            };
            let _ = tx.send(event);
        })
        .expect("spawning the readiness thread");
}

fn hint_of(e: &ssh::SshError) -> String {
    match e {
        ssh::SshError::HostKeyMismatch { .. } => " (the host's key changed since `devbox \
            create`: if it was reinstalled, remove the machine and create it again)"
            .to_owned(),
        _ => String::new(),
    }
}
