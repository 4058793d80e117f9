//! The machine's outbound NAT, as a supervisor part: at start its host-only /24 is forwarded
//! and masqueraded out of the host's other interfaces through the host applier (any rules a
//! crashed run of the same machine left are replaced, not doubled); when the machine ends
//! they go again. What may still drop the traffic in the host's own firewall is logged and
//! kept in `state.json` with its fix. A machine in a swarm then gets the swarm ports to the
//! members that run (`crate::swarm::open_peers`); its NAT's removal closes them. The rules
//! themselves are `crate::nat`'s.

use anyhow::Result;

use super::log;
use super::parts::Part;
use super::state::StateWriter;
use crate::host::{self, HostPlan};
use crate::machine::Store;

/// The NAT of machine `name` on its TAP `link`; stopping the part removes it.
pub struct Nat {
    name: String,
    link: String,
}

impl Nat {
    /// Adds the NAT. Fails when the host cannot do it (no `nft`, no privilege) or its
    /// firewall certainly drops everything the machine would send out.
    pub fn add(store: &Store, name: &str, link: &str, state: &StateWriter) -> Result<Nat> {
        let plan = HostPlan {
            command: format!("start {name}"),
            nat_add: vec![link.to_owned()],
            ..HostPlan::default()
        };
        let report = host::apply(&plan, false)?;
        let mut warnings = Vec::new();
        for b in &report.warnings {
            log(format!("warning: {b}; fix: {}", b.fix));
            warnings.push(format!(
                "{b}: the machine may not reach the network; fix: {}",
                b.fix
            ));
        }
        state.update(|s| s.warnings = warnings);
        log(format!("outbound NAT for {link}"));
        for opened in crate::swarm::open_peers(store, name, link) {
            match opened {
                Ok(what) => log(what),
                // The peer's own start opens the pair when it gets there.
                Err(why) => log(format!("not yet: {why}")),
            }
        }
        Ok(Nat {
            name: name.to_owned(),
            link: link.to_owned(),
        })
    }
}

impl Part for Nat {
    fn name(&self) -> &str {
        "outbound NAT"
    }
    fn stop(self: Box<Self>) {
        let plan = HostPlan {
            command: format!("stop {}", self.name),
            nat_remove: vec![self.link.clone()],
            ..HostPlan::default()
        };
        if let Err(e) = host::apply(&plan, false) {
            log(format!("removing the outbound NAT of {}: {e}", self.link));
        }
    }
}
