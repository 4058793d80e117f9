//! `devbox dns install|uninstall NAME [--dry-run]`: the host resolver side of machine names.
//! The domains come from the running supervisor (`dns.json`), which follows the aliases its
//! containers ask for; `crate::resolver` turns them into a plan for the host applier (files
//! in `/etc/resolver/` on macOS, systemd-resolved's per-link settings on Linux), or, on a Linux
//! host without resolved, into the exact configuration to add by hand.

use anyhow::Result;

use crate::cli::DnsCommand;
use crate::host::{self, HostOs};
use crate::machine::Store;
use crate::output;
use crate::resolver::{self, HostResolverChange};
use crate::supervisor::client;

pub fn run(store: &Store, c: DnsCommand) -> Result<i32> {
    let (a, install) = match c {
        DnsCommand::Install(a) => (a, true),
        DnsCommand::Uninstall(a) => (a, false),
        DnsCommand::Allow(a) => return super::dns_allow::allow(store, &a),
        DnsCommand::Deny(a) => return super::dns_allow::deny(store, &a),
        DnsCommand::Allowed(a) => return super::dns_allow::allowed(store, &a),
    };
    let dir = store.existing(&a.name)?;
    let st = client::dns_state(&dir)?;
    let change = resolver::host_change(
        &a.name,
        &st,
        install,
        HostOs::current(),
        resolver::resolved_active(),
    );
    match change {
        HostResolverChange::Manual {
            install: true,
            text,
        } => {
            output::data(text);
            return Ok(0);
        }
        HostResolverChange::Manual {
            install: false,
            text,
        } => {
            output::info(text);
            return Ok(0);
        }
        HostResolverChange::Plan(plan) if a.dry_run => {
            output::data(plan.to_string());
            return Ok(0);
        }
        HostResolverChange::Plan(plan) => {
            host::apply(&plan, false)?;
        }
    }
    output::info(format!(
        "{} {} for {}",
        if install { "Routed" } else { "Unrouted" },
        st.domains.join(", "),
        a.name
    ));
    Ok(0)
}
