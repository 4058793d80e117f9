//! `devbox routes apply [--dry-run]`: the host side of direct container IPs, for the caller's
//! machines (the boot-time job that `system install` sets up runs it). Every change goes
//! through the host plan applier (`host::apply`), which refuses anything outside devbox's own
//! subnets, links and files, and anything on a link whose lease is not the caller's.

use std::collections::BTreeSet;

use anyhow::Result;

use crate::cli::RoutesCommand;
use crate::host::{self, HostPlan};
use crate::machine::Store;
use crate::machine::lock::supervisor_alive;
use crate::net::lease::{Registry, real_uid};
use crate::routes::RoutesFile;
use crate::{net, output};

pub fn run(store: &Store, c: RoutesCommand) -> Result<i32> {
    let (plan, dry_run) = match c {
        RoutesCommand::Apply(a) => {
            let state = RoutesFile::new(&store.home).load()?;
            let mut routes = state.host_plan(&net::host_routes()?, &live_links(store)?)?;
            // Stale routes on other users' links are theirs to clear: only the links whose
            // lease is the caller's are considered (the applier would refuse the others).
            let mine = own_links();
            routes.remove.retain(|r| {
                net::devbox_link(&r.interface).is_none() || mine.contains(&r.interface)
            });
            (HostPlan::routes("routes apply", routes), a.dry_run)
        }
    };
    if plan.is_empty() {
        output::info("Nothing to change.");
        return Ok(0);
    }
    if dry_run {
        output::data(plan.to_string());
        return Ok(0);
    }
    let report = host::apply(&plan, false)?;
    for step in &report.steps {
        output::info(format!("{:?}: {}", step.outcome, step.action));
    }
    Ok(0)
}

/// The `dbxN` links whose lease the caller owns (none when there is no registry).
fn own_links() -> BTreeSet<String> {
    let uid = real_uid();
    Registry::system()
        .list()
        .map(|ls| {
            ls.iter()
                .filter(|l| l.owner == uid)
                .map(|l| net::tap_name(l.index))
                .collect()
        })
        .unwrap_or_default()
}

/// The TAP links of the machines whose supervisor runs now (its lock is held): their routes
/// stay, whatever `routes.json` says.
fn live_links(store: &Store) -> Result<BTreeSet<String>> {
    let mut links = BTreeSet::new();
    for name in store.names()? {
        let dir = store.machine(&name)?;
        if supervisor_alive(&dir)?
            && let Ok(spec) = dir.load_spec()
        {
            links.insert(net::tap_name(spec.network.index));
        }
    }
    Ok(links)
}
