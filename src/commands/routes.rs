//! `devbox routes apply|install|uninstall [--dry-run]`: the host side of direct container IPs.
//! Every change goes through the host plan applier (`host::apply`), which refuses anything
//! outside devbox's own subnets, links and files.

use std::collections::BTreeSet;

use anyhow::{Context, Result};

use crate::cli::RoutesCommand;
use crate::host::{self, HostOs, HostPlan};
use crate::machine::Store;
use crate::machine::lock::supervisor_alive;
use crate::routes::RoutesFile;
use crate::{net, output};

pub fn run(store: &Store, c: RoutesCommand) -> Result<i32> {
    let (plan, dry_run) = match c {
        RoutesCommand::Apply(a) => {
            let state = RoutesFile::new(&store.home).load()?;
            let routes = state.host_plan(&net::host_routes()?, &live_links(store)?)?;
            (HostPlan::routes("routes apply", routes), a.dry_run)
        }
        RoutesCommand::Install(a) => {
            let exe = std::env::current_exe().context("finding the devbox executable")?;
            let mut plan = host::install_plan(HostOs::current(), &exe, &store.home)?;
            plan.command = "routes install".into();
            (plan, a.dry_run)
        }
        RoutesCommand::Uninstall(a) => {
            let mut plan: HostPlan = host::uninstall_plan(HostOs::current());
            plan.command = "routes uninstall".into();
            (plan, a.dry_run)
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
