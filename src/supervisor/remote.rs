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
use super::watchers::ResolverWatch;
use super::{Event, client, control, host_net, log, watchers};
use crate::hypervisor::{HypervisorError, RunningVm, VmExit};
use crate::resolver::ResolverSync;
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
        // The names of the host's containers, on a loopback port of this machine's own
        // (`<container>.<machine>.<tld>`, answered with their addresses on that host).
        let net = host_net::host_net(self.spec, self.spec.driver.capabilities())?;
        let dns_server = self.dns(&io, &net, r.address)?;
        let records = dns_server.records();
        let resolver = ResolverSync::new(self.dir, self.spec, dns_server.local_addr(), None);
        self.parts.hold("DNS server", dns_server);
        self.parts
            .add(ResolverWatch::spawn(resolver, records.clone()));
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
