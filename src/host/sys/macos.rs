//! macOS: routes through `route(8)` and `netstat(1)`, the vmnet host filter through
//! `ifconfig(8)`. All need root.

use crate::host::HostError;
use crate::host::apply::run;
use crate::host::argv::{hostfilter_argv, route_add_argv, route_delete_argv};
use crate::host::plan::{HostFilter, HostOs};
use crate::net::{self, HostRoute};
use crate::routes::PlannedRoute;

/// This host's OS.
pub const HOST_OS: HostOs = HostOs::Macos;

/// What changing routes needs here (named in the error when it is missing).
pub const ROUTE_PRIVILEGE: &str = "root";

pub fn can_change_routes() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn routes() -> Result<Vec<HostRoute>, HostError> {
    Ok(net::host_routes()?)
}

pub fn add_route(r: &PlannedRoute) -> Result<(), HostError> {
    run(&route_add_argv(r))
}

pub fn delete_route(r: &PlannedRoute) -> Result<(), HostError> {
    run(&route_delete_argv(r))
}

pub fn hostfilter(h: &HostFilter) -> Result<(), HostError> {
    run(&hostfilter_argv(h))
}
