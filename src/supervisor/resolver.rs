//! Keeps the host's resolver pointed at the machine's DNS server for exactly the domains the
//! machine owns: `<machine>.<tld>` and the routed domain of every alias it serves.
//! The set changes as containers start and stop; on each change the supervisor records it in
//! `machines/<name>/dns.json` (read by `devbox dns install`) and, where systemd-resolved runs
//! and the supervisor has the privilege, updates resolved's per-link routing domains.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::dns::resolver_plan;
use crate::host::resolved;
use crate::machine::store::write_atomic;
use crate::machine::{MachineDir, MachineSpec};

/// `dns.json`: the machine's DNS server and the domains routed to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsState {
    pub server: SocketAddr,
    pub link: String,
    pub tld: String,
    pub domains: Vec<String>,
    /// Names the machine's containers asked for and did not get, and why.
    #[serde(default)]
    pub refused: Vec<crate::dns::RefusedName>,
}

pub struct ResolverSync {
    dir: MachineDir,
    machine: String,
    state: DnsState,
    written: bool,
}

impl ResolverSync {
    pub fn new(dir: &MachineDir, spec: &MachineSpec, server: SocketAddr) -> ResolverSync {
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
            written: false,
        }
    }

    /// Brings the records and resolved up to date with the routed domains of the served
    /// aliases, and records the refused names (cheap when nothing changed).
    pub fn sync(&mut self, routed: &[String], refused: Vec<crate::dns::RefusedName>) {
        let domains = resolver_plan::owned_domains(&self.machine, &self.state.tld, routed);
        if self.written && domains == self.state.domains && refused == self.state.refused {
            return;
        }
        let routes_changed = !self.written || domains != self.state.domains;
        self.state.domains = domains;
        self.state.refused = refused;
        self.written = true;
        let text = serde_json::to_vec_pretty(&self.state).expect("plain data");
        if let Err(e) = write_atomic(&self.dir.path.join("dns.json"), &text, 0o644) {
            super::log(format!("writing dns.json: {e}"));
        }
        if routes_changed && resolved::resolved_active() {
            match resolved::apply(
                &self.state.link,
                &self.state.domains,
                &self.state.tld,
                self.state.server,
            ) {
                Ok(()) => super::log(format!(
                    "resolved: {} -> {}",
                    self.state.domains.join(" "),
                    self.state.server
                )),
                Err(e) => super::log(format!("resolved: {e}")),
            }
        }
    }
}

impl Drop for ResolverSync {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.path.join("dns.json"));
    }
}
