//! macOS: routes through `route(8)` and `netstat(1)`, the vmnet host filter through
//! `ifconfig(8)`. All need root.

use crate::host::HostError;
use crate::host::apply::{output, run};
use crate::host::commands::{
    hostfilter_argv, parse_netstat_routes, route_add_argv, route_delete_argv,
};
use crate::host::plan::HostFilter;
use crate::net::HostRoute;
use crate::net::routes::PlannedRoute;

/// What changing routes needs here (named in the error when it is missing).
pub const ROUTE_PRIVILEGE: &str = "root";

pub fn can_change_routes() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn routes() -> Result<Vec<HostRoute>, HostError> {
    let argv = ["netstat", "-rn", "-f", "inet"].map(String::from);
    Ok(parse_netstat_routes(&output(&argv)?))
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
