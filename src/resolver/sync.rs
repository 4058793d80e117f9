//! Keeps the host's resolver pointed at the machine's DNS server for exactly the domains the
//! machine owns: `<machine>.<tld>` and the routed domain of every alias it serves.
//! The set changes as containers start and stop; on each change [`ResolverSync::sync`] records
//! it in `machines/<name>/dns.json` (read by `devbox dns install`) and, on a machine whose
//! link is a TAP where systemd-resolved runs, has the host applier update resolved's per-link
//! routing domains.

use std::net::SocketAddr;

use super::{DnsState, plan, resolved_active};
use crate::atomic_file::write_atomic;
use crate::host::{self, HostPlan};
use crate::machine::{MachineDir, MachineSpec};

pub struct ResolverSync {
    dir: MachineDir,
    machine: String,
    state: DnsState,
    /// Where resolved's settings go: the machine's TAP; `None` when the machine has none (its
    /// host resolver is configured by files, or not at all).
    resolved_link: Option<String>,
    written: bool,
}

impl ResolverSync {
    pub fn new(
        dir: &MachineDir,
        spec: &MachineSpec,
        server: SocketAddr,
        resolved_link: Option<String>,
    ) -> ResolverSync {
        ResolverSync {
            dir: dir.clone(),
            machine: spec.name.clone(),
            state: DnsState {
                server,
                link: crate::net::tap_name(spec.network.index),
                tld: spec.tld.clone(),
                domains: Vec::new(),
                refused: Vec::new(),
            },
            resolved_link,
            written: false,
        }
    }

    /// Brings `dns.json` and resolved up to date with the routed domains of the served aliases
    /// and the refused names (cheap when nothing changed). Returns what it did, for the
    /// supervisor's log.
    pub fn sync(
        &mut self,
        routed: &[String],
        refused: Vec<crate::dns::RefusedName>,
    ) -> Vec<String> {
        let domains = plan::owned_domains(&self.machine, &self.state.tld, routed);
        if self.written && domains == self.state.domains && refused == self.state.refused {
            return Vec::new();
        }
        let routes_changed = !self.written || domains != self.state.domains;
        self.state.domains = domains;
        self.state.refused = refused;
        self.written = true;
        let mut log = Vec::new();
        let text = serde_json::to_vec_pretty(&self.state).expect("plain data");
        if let Err(e) = write_atomic(&self.dir.dns_state_path(), &text, 0o600) {
            log.push(format!("writing dns.json: {e}"));
        }
        if let Some(link) = &self.resolved_link
            && routes_changed
            && resolved_active()
        {
            let plan = HostPlan {
                command: format!("start {}", self.machine),
                resolved: vec![host::ResolvedLink {
                    link: link.clone(),
                    ..self.state.resolved_link()
                }],
                ..HostPlan::default()
            };
            match host::apply(&plan, false) {
                Ok(_) => log.push(format!(
                    "resolved: {} -> {}",
                    self.state.domains.join(" "),
                    self.state.server
                )),
                Err(e) => log.push(format!("resolved: {e}")),
            }
        }
        log
    }
}

impl Drop for ResolverSync {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.dns_state_path());
    }
}
