//! HTTPS for the machine's names (issue #16), started when the guest is ready.
//!
//! - The TLS listener ([`crate::tls::proxy`]) on the host's link address, port
//!   [`LISTEN_BASE`] + the machine's host-only index, so machines never collide and nothing
//!   outside the host-only link reaches it. Its certificates come from the machine's
//!   intermediate ([`crate::tls::ca`]), issued here in memory; names are looked up in the
//!   DNS zone at every handshake.
//! - The keeper task: every second, compares the zone's container addresses with what the
//!   guest redirects and rewrites the guest's `DEVBOX-HTTPS` chain over SSH when they differ
//!   ([`crate::tls::guest_rules`]); every minute, re-issues the intermediate when the
//!   machine's allowed domains changed (`devbox dns allow`) or it has less than a day left.
//!   On its first pass it puts the root certificate in the guest at [`GUEST_CA_PATH`] and in
//!   the guest's system bundle.
//!
//! Why on the host and not in the guest: the CA key never leaves the user's account, the
//! same code serves Linux and macOS hosts, and the supervisor already holds the zone.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::log;
use crate::dns::RecordsHandle;
use crate::machine::spec::MachineSpec;
use crate::machine::store::Store;
use crate::ssh;
use crate::tls::ca::Ca;
use crate::tls::resolver::{Backends, SniResolver};
use crate::tls::{guest_rules, proxy};

/// The listener's port is this plus the machine's host-only index.
pub const LISTEN_BASE: u16 = 10443;

/// Where the guest (and containers that bind-mount it) find the devbox root certificate.
pub const GUEST_CA_PATH: &str = "/etc/devbox/ca.pem";

/// The guest's system bundle (Debian's), which dockerd and the guest's tools read.
const GUEST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Containers' names and aliases → their IP, port 80 or their `devbox.http.port` label; the
/// machine's own name → the guest's port 80 (what a container publishes there, `-p 80:80`).
/// Not terminated here: a container that exposes 443 itself (its port 443 is left alone, so
/// TLS reaches it as is); nor the guest's port 443 when a container publishes it, which the
/// guest's rules leave to Docker (`tls::guest_rules`).
struct ZoneBackends {
    records: RecordsHandle,
    guest_ip: Ipv4Addr,
}

impl Backends for ZoneBackends {
    fn backend(&self, name: &str) -> Option<SocketAddr> {
        let zone = self.records.zone();
        let ip = zone.ipv4_of(name)?;
        if ip == self.guest_ip {
            return Some(SocketAddr::new(ip.into(), 80));
        }
        let web = zone.web_of(ip.into());
        (!web.own_tls).then_some(SocketAddr::new(ip.into(), web.http))
    }
}

/// The running HTTPS service: its two tasks, stopped with the machine.
pub struct Https {
    tasks: Vec<tokio::task::AbortHandle>,
}

impl super::parts::Part for Https {
    fn name(&self) -> &str {
        "HTTPS listener"
    }
    fn stop(self: Box<Self>) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What [`start`] needs from the supervisor.
pub struct HttpsSetup<'a> {
    pub store: &'a Store,
    pub spec: &'a MachineSpec,
    pub records: RecordsHandle,
    pub guest_ip: Ipv4Addr,
    pub target: ssh::Target,
    pub io: &'a tokio::runtime::Handle,
}

/// Loads (or, on first use, creates) the CA, binds the listener and starts the tasks.
pub fn start(s: HttpsSetup<'_>) -> Result<Https> {
    let ca = crate::tls::load_or_create_ca(s.store)?;
    let issuer = ca.machine_issuer(&s.spec.name, &s.spec.tld, &s.spec.dns_domains)?;
    let host_ip = s.spec.network.host_ip;
    let port = LISTEN_BASE + u16::from(s.spec.network.index);
    let listener = std::net::TcpListener::bind((host_ip, port))
        .with_context(|| format!("listening for HTTPS on {host_ip}:{port}"))?;
    listener.set_nonblocking(true)?;
    let listener = {
        let _rt = s.io.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let backends: Arc<dyn Backends> = Arc::new(ZoneBackends {
        records: s.records.clone(),
        guest_ip: s.guest_ip,
    });
    let resolver = Arc::new(SniResolver::new(issuer, backends.clone()));
    let serve =
        s.io.spawn(proxy::serve(listener, resolver.clone(), backends));
    let keeper = Keeper {
        ca,
        resolver,
        store: s.store.clone(),
        spec: s.spec.clone(),
        records: s.records,
        guest_ip: s.guest_ip,
        target: s.target,
        listener: (host_ip, port),
    };
    let keep = s.io.spawn(keeper.run());
    log(format!("HTTPS: terminating TLS on {host_ip}:{port}"));
    Ok(Https {
        tasks: vec![serve.abort_handle(), keep.abort_handle()],
    })
}

struct Keeper {
    ca: Ca,
    resolver: Arc<SniResolver>,
    store: Store,
    spec: MachineSpec,
    records: RecordsHandle,
    guest_ip: Ipv4Addr,
    target: ssh::Target,
    listener: (Ipv4Addr, u16),
}

impl Keeper {
    async fn run(self) {
        let me = Arc::new(self);
        let mut applied: Option<BTreeSet<Ipv4Addr>> = None;
        let mut ca_in_guest = false;
        let mut tick: u64 = 0;
        let mut last_problem = String::new();
        loop {
            if !ca_in_guest {
                let k = me.clone();
                match tokio::task::spawn_blocking(move || k.install_ca_in_guest()).await {
                    Ok(Ok(())) => ca_in_guest = true,
                    Ok(Err(e)) => report(&mut last_problem, format!("{e:#}")),
                    Err(e) => report(&mut last_problem, e.to_string()),
                }
            }
            let zone = me.records.zone();
            let targets: BTreeSet<Ipv4Addr> = zone
                .ipv4_addresses()
                .into_iter()
                .filter(|ip| *ip != me.guest_ip && !zone.web_of((*ip).into()).own_tls)
                .collect();
            drop(zone);
            if applied.as_ref() != Some(&targets) {
                let k = me.clone();
                let t: Vec<Ipv4Addr> = targets.iter().copied().collect();
                match tokio::task::spawn_blocking(move || k.apply_rules(&t)).await {
                    Ok(Ok(())) => {
                        log(format!(
                            "HTTPS: the guest redirects port 443 of {} container address(es)",
                            targets.len()
                        ));
                        applied = Some(targets);
                        last_problem.clear();
                    }
                    Ok(Err(e)) => report(&mut last_problem, format!("{e:#}")),
                    Err(e) => report(&mut last_problem, e.to_string()),
                }
            }
            if tick % 60 == 59 {
                let k = me.clone();
                let _ = tokio::task::spawn_blocking(move || k.renew_intermediate()).await;
            }
            tick += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn exec(&self, cmd: &str, stdin: &[u8]) -> Result<()> {
        let conn = ssh::Connection::connect(&self.target, Duration::from_secs(10))?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut input = stdin;
        let status = conn.exec(cmd, Some(&mut input), &mut out, &mut err)?;
        anyhow::ensure!(
            status == 0,
            "`{cmd}` in the guest exited with {status}: {}",
            String::from_utf8_lossy(&err).trim()
        );
        Ok(())
    }

    fn apply_rules(&self, targets: &[Ipv4Addr]) -> Result<()> {
        let input = guest_rules::restore_input(self.listener, targets, self.guest_ip);
        self.exec(&guest_rules::apply_command(self.listener), input.as_bytes())
            .context("writing the guest's HTTPS redirection")
    }

    /// The root certificate at [`GUEST_CA_PATH`], and appended to the guest's bundle once.
    fn install_ca_in_guest(&self) -> Result<()> {
        let cmd = format!(
            "set -e; mkdir -p /etc/devbox; cat > {GUEST_CA_PATH}.tmp; \
             mv {GUEST_CA_PATH}.tmp {GUEST_CA_PATH}; \
             grep -qF \"$(sed -n 2p {GUEST_CA_PATH})\" {GUEST_BUNDLE} 2>/dev/null || \
             cat {GUEST_CA_PATH} >> {GUEST_BUNDLE}"
        );
        self.exec(&cmd, self.ca.cert_pem().as_bytes())
            .context("installing the devbox CA in the guest")
    }

    fn renew_intermediate(&self) {
        let allowed = match self
            .store
            .machine(&self.spec.name)
            .and_then(|d| d.load_spec())
        {
            Ok(spec) => spec.dns_domains,
            Err(_) => return,
        };
        let current = self.resolver.issuer();
        let mut wanted = allowed.clone();
        wanted.push(format!("{}.{}", self.spec.name, self.spec.tld));
        wanted.sort();
        wanted.dedup();
        let left = current.not_after() - time::OffsetDateTime::now_utc();
        if current.domains() == wanted.as_slice() && left > time::Duration::days(1) {
            return;
        }
        match self
            .ca
            .machine_issuer(&self.spec.name, &self.spec.tld, &allowed)
        {
            Ok(issuer) => {
                log(format!(
                    "HTTPS: new intermediate for {}",
                    issuer.domains().join(", ")
                ));
                self.resolver.set_issuer(issuer);
            }
            Err(e) => log(format!("HTTPS: re-issuing the intermediate: {e}")),
        }
    }
}

fn report(last: &mut String, msg: String) {
    if *last != msg {
        log(format!("HTTPS: {msg}; retrying"));
        *last = msg;
    }
}
