//! Routes to the machines' Docker subnets: everything devbox knows about them, in one place.
//! The host reaches every container by IP through one route per Docker subnet, via the
//! machine's guest address on its link (its TAP `dbxN`, or a vz machine's vmnet bridge).
//!
//! - `subnets.rs`: each machine's two Docker subnets (bridge and pool), their allocation at
//!   `create` and the rules a subnet must follow (size, private, clear of the host-only pool
//!   and of other machines).
//! - `plan.rs`: the route changes for one machine ([`RoutePlan`]), checked against the host's
//!   routing table; what a start adds and a stop takes away.
//! - `state.rs`: `$DEVBOX_HOME/routes.json`, the routes of every running machine, changed only
//!   under `routes.lock`, and the plan that brings the host in line with it (the boot job's
//!   `devbox routes apply`), which never takes a live machine's routes away.
//!
//! Nothing here changes the host: the plans go through the one privileged door,
//! [`crate::host::apply`], called by the supervisor (a machine's start and stop) and by
//! `devbox routes`. Threads: none.

mod plan;
mod state;
mod subnets;

pub use plan::{PlannedRoute, RoutePlan, removal_plan_for, route_plan_for};
pub use state::{
    MachineRoutes, ROUTES_LOCK_FILE, ROUTES_STATE_FILE, RoutesFile, RoutesState, RoutesStateError,
    routes_state_path,
};
pub use subnets::{
    ALLOW_DIRECT_ROUTING_SINCE, Claim, DOCKER_SUBNET_FLAG, DockerSubnets, MAX_SUBNET_PREFIX,
    MIN_SUBNET_PREFIX, POOL_NETWORK_PREFIX, allocate_docker_subnets, host_only_pool, is_private,
    validate_docker_subnet,
};

use crate::hint::Hint;
use crate::net::{HostRoute, Ipv4Net};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "Docker subnet {subnet} overlaps the host route {route} on {interface}; \
         pick another subnet with {flag}"
    )]
    Conflict {
        subnet: Ipv4Net,
        route: Ipv4Net,
        interface: String,
        flag: &'static str,
    },
    #[error("invalid Docker subnet {text:?}: {why}")]
    Invalid { text: String, why: String },
    #[error(
        "Docker subnet {subnet} is too small: the longest prefix devbox routes is \
         /{MIN_SUBNET_PREFIX} (253 containers)"
    )]
    TooSmall { subnet: Ipv4Net },
    #[error(
        "Docker subnet {subnet} is too large: the shortest prefix devbox routes is \
         /{MAX_SUBNET_PREFIX}"
    )]
    TooLarge { subnet: Ipv4Net },
    #[error(
        "Docker subnet {subnet} is not private: devbox only routes RFC 1918 addresses \
         (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16) to a machine"
    )]
    NotPrivate { subnet: Ipv4Net },
    #[error("Docker subnet {subnet} overlaps devbox's host-only networks {host_only}")]
    OverlapsHostOnly { subnet: Ipv4Net, host_only: Ipv4Net },
    #[error("Docker subnet {subnet} overlaps {other}, which machine {machine} already uses")]
    Duplicate {
        subnet: Ipv4Net,
        other: Ipv4Net,
        machine: String,
    },
    #[error(
        "no free Docker subnet: 172.18.0.0/16 … 172.31.0.0/16 are all used by machines or \
         overlap host routes"
    )]
    Exhausted,
    #[error(
        "machine {machine}: {interface} is neither a devbox TAP device (dbxN) nor a vmnet \
         bridge (bridgeN)"
    )]
    NotDevboxLink { machine: String, interface: String },
}

impl Hint for RouteError {
    fn hint(&self) -> Option<String> {
        match self {
            RouteError::Conflict {
                interface, flag, ..
            } => Some(format!(
                "another network on {interface} (a VPN, the LAN, a container engine or \
                 another machine) uses these addresses: pick a free private subnet with \
                 `{flag} 10.200.0.1/16`, or disconnect that network"
            )),
            RouteError::Duplicate { machine, .. } => Some(format!(
                "each machine needs its own Docker subnets: pick another with \
                 `{DOCKER_SUBNET_FLAG}`, or remove machine {machine}"
            )),
            RouteError::Exhausted => Some(format!(
                "pass `{DOCKER_SUBNET_FLAG}` with a free private subnet, e.g. 10.200.0.1/16"
            )),
            _ => None,
        }
    }
}

impl RouteError {
    /// `subnet` collides with the host route `r`.
    pub fn conflict(subnet: Ipv4Net, r: &HostRoute) -> RouteError {
        RouteError::Conflict {
            subnet,
            route: r.dest,
            interface: if r.interface.is_empty() {
                "no interface".into()
            } else {
                r.interface.clone()
            },
            flag: DOCKER_SUBNET_FLAG,
        }
    }
}
