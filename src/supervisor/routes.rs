//! The machine's routes to its Docker subnets, as a supervisor part: at start the plan from
//! `crate::routes` goes through the host applier and is recorded in `routes.json` (for the
//! boot job); when the machine ends the part takes them away and forgets them. All the route
//! logic is in `crate::routes`; this is the glue between it, the applier and the machine.

use std::net::Ipv4Addr;

use anyhow::Result;

use super::log;
use super::parts::Part;
use crate::host::{self, HostFilter, HostPlan};
use crate::machine::{Capabilities, Link, MachineSpec, Store};
use crate::net::{self, HostOnlyNet};
use crate::routes::{MachineRoutes, RoutesFile, removal_plan_for, route_plan_for};

/// Routes the machine's Docker subnets via its guest IP on `link` (its TAP, or the vmnet
/// bridge of a vz machine, whose host filter is lifted with `hostfilters`) through the host
/// applier, and records them for the boot-time job (`devbox routes install`).
pub fn add_routes(
    store: &Store,
    spec: &MachineSpec,
    guest_ip: Ipv4Addr,
    link: &str,
    hostfilters: Vec<HostFilter>,
) -> Result<()> {
    let table = net::host_routes()?;
    let plan = HostPlan {
        hostfilters,
        ..HostPlan::routes(
            format!("start {}", spec.name),
            route_plan_for(&spec.name, &spec.docker, guest_ip, link, &table)?,
        )
    };
    host::apply(&plan, false)?;
    RoutesFile::new(&store.home).record(
        &spec.name,
        MachineRoutes {
            guest_ip,
            interface: link.to_owned(),
            docker: spec.docker,
        },
    )?;
    log(format!(
        "routes: {} via {guest_ip} on {link}",
        spec.docker.routed().map(|n| n.to_string()).join(", "),
    ));
    Ok(())
}

/// Takes the machine's routes away (for a TAP the kernel already dropped them with the
/// device; this also covers a TAP that outlived us) and removes the machine from the routes
/// state. A machine on its driver's NAT is routed where its start recorded (its address and
/// bridge), if it got that far; `hostonly` is the TAP machine's network.
pub fn forget_routes(store: &Store, spec: &MachineSpec, hostonly: Option<HostOnlyNet>) {
    let file = RoutesFile::new(&store.home);
    let (guest_ip, link) = match hostonly {
        Some(h) => (h.guest_ip, h.tap_name()),
        None => match file.load() {
            Ok(st) => match st.machines.get(&spec.name) {
                Some(m) => (m.guest_ip, m.interface.clone()),
                None => return,
            },
            Err(e) => {
                log(format!("reading {}: {e}", file.path().display()));
                return;
            }
        },
    };
    match removal_plan_for(&spec.name, &spec.docker, guest_ip, &link) {
        Ok(r) => {
            if let Err(e) = host::apply(&HostPlan::routes(format!("stop {}", spec.name), r), false)
            {
                log(format!("removing routes: {e}"));
            }
        }
        Err(e) => log(format!("removing routes: {e}")),
    }
    if let Err(e) = file.forget(&spec.name) {
        log(format!("updating {}: {e}", file.path().display()));
    }
}

/// The machine's routes, as a part: stopping it forgets them.
pub struct Routes {
    store: Store,
    spec: MachineSpec,
    /// The TAP machine's network; `None` on the driver's NAT (routes as recorded).
    hostonly: Option<HostOnlyNet>,
}

impl Routes {
    pub fn new(
        store: &Store,
        spec: &MachineSpec,
        caps: Capabilities,
        hostonly: HostOnlyNet,
    ) -> Self {
        Routes {
            store: store.clone(),
            spec: spec.clone(),
            hostonly: (caps.link == Link::Tap).then_some(hostonly),
        }
    }
}

impl Part for Routes {
    fn name(&self) -> &str {
        "routes"
    }
    fn stop(self: Box<Self>) {
        forget_routes(&self.store, &self.spec, self.hostonly);
    }
}
