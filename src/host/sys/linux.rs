//! Linux: routes through `net`'s rtnetlink calls, in the caller's network namespace.

use crate::host::HostError;
use crate::host::plan::{HostFilter, HostOs};
use crate::net::{self, HostRoute};
use crate::routes::PlannedRoute;

/// This host's OS.
pub const HOST_OS: HostOs = HostOs::Linux;

/// What changing routes needs here (named in the error when it is missing).
pub const ROUTE_PRIVILEGE: &str = "CAP_NET_ADMIN";

pub fn can_change_routes() -> bool {
    net::have_net_admin()
}

pub fn routes() -> Result<Vec<HostRoute>, HostError> {
    Ok(net::host_routes()?)
}

pub fn add_route(r: &PlannedRoute) -> Result<(), HostError> {
    Ok(net::add_route(r.dest, r.gateway, &r.interface)?)
}

pub fn delete_route(r: &PlannedRoute) -> Result<(), HostError> {
    Ok(net::delete_route(r.dest, r.gateway, &r.interface)?)
}

/// vmnet's host filter has no Linux counterpart: a TAP passes any source address.
pub fn hostfilter(h: &HostFilter) -> Result<(), HostError> {
    Err(HostError::Unsupported {
        what: format!("the vmnet host filter of {} on {}", h.member, h.bridge),
        os: HostOs::Linux,
    })
}
