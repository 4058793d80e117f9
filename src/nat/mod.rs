//! Outbound NAT for the machines' host-only networks on Linux hosts: while a machine runs, its
//! /24 is forwarded and masqueraded out of the host's other interfaces, so the guest and its
//! containers (which Docker NATs to the guest's address) reach whatever the host reaches.
//!
//! Everything here is pure; the host applier (`crate::host`, step kinds `AddNat`/`RemoveNat`)
//! runs it, serialised host-wide by a lock:
//! - `ruleset.rs`: devbox's own nftables table, `inet devbox`, as typed `nft -j` batches: what
//!   a machine's start adds and its stop removes, from what the table holds now (so a start
//!   after a crash replaces the crashed run's rules instead of adding a second set), and the
//!   record of the host's `ip_forward` (a rule that exists only while devbox is the one that
//!   turned forwarding on, and that also stops the host forwarding anything else meanwhile).
//! - `iptables.rs`: on a host that runs Docker (iptables `FORWARD` policy `DROP`), the tagged
//!   accept rules devbox adds to Docker's `DOCKER-USER` chain, as Docker documents for traffic
//!   it should let through, and how to find them again.
//! - `swarm.rs`: the swarm ports opened between two machines of one swarm (Docker swarm
//!   mode's 2377/tcp, 7946/tcp+udp, 4789/udp, nothing else), as rules tagged with the pair.
//! - `firewall.rs`: reading the host's other firewalls (firewalld, ufw, iptables, any other
//!   nftables table) for a drop that devbox's table cannot override, with the exact fix.
//!
//! macOS keeps vmnet's own NAT (the vz driver's link); nothing here runs there.

mod firewall;
mod iptables;
mod ruleset;
mod swarm;

pub use firewall::{Blocker, FirewallReport, find_blockers};
pub use iptables::{
    DOCKER_USER, docker_user_delete_argvs, docker_user_insert_argvs, docker_user_pair_delete_argvs,
    docker_user_pair_insert_argvs,
};
pub use ruleset::{
    DevboxTable, FORWARDING_MARK, NatChange, TABLE, add_change, remove_change, render_text,
};
pub use swarm::{PairRefusal, SWARM_TCP, SWARM_UDP, SwarmPair, add_pair, remove_pairs};

use crate::hint::Hint;
use crate::net::{Ipv4Net, devbox_link};

/// One machine's NAT: its TAP and the host-only /24 behind it. Both come from the link name
/// (`dbxN`), never from anything a user or a guest wrote.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NatLink {
    pub link: String,
    pub subnet: Ipv4Net,
}

impl NatLink {
    /// The NAT of the devbox link `link`; `None` for any other interface name.
    pub fn of(link: &str) -> Option<NatLink> {
        devbox_link(link).map(|net| NatLink {
            link: link.to_owned(),
            subnet: net.subnet,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("cannot read {what}: {why}")]
    Parse { what: &'static str, why: String },
    #[error("outbound NAT needs the `{tool}` command, which is not installed")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("the host's firewall drops everything the machine on {link} sends out: {blocker}")]
    Blocked { link: String, blocker: Blocker },
}

impl Hint for NatError {
    fn hint(&self) -> Option<String> {
        match self {
            NatError::MissingTool { package, .. } => Some(format!(
                "install it: `sudo apt-get install {package}` (Debian, Ubuntu) or \
                 `sudo dnf install {package}` (Fedora)"
            )),
            NatError::Blocked { blocker, .. } => Some(blocker.fix.clone()),
            NatError::Parse { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_devbox_links_have_a_nat() {
        let n = NatLink::of("dbx3").unwrap();
        assert_eq!(n.subnet.to_string(), "192.168.67.0/24");
        for bad in ["eth0", "dbx64", "dbx01", "dbx"] {
            assert!(NatLink::of(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let e = NatError::MissingTool {
            tool: "nft",
            package: "nftables",
        };
        assert!(e.to_string().contains("`nft`"));
        assert!(e.hint().unwrap().contains("apt-get install nftables"));
    }
}
