//! `$DEVBOX_HOME/routes.json`: the Docker routes every running machine needs. Supervisors
//! rewrite it when a machine starts or stops; `devbox routes apply` (by hand, or from the
//! boot job watching this file) turns it into a [`HostPlan`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::HostError;
use super::plan::HostPlan;
use crate::machine::store::write_atomic;
use crate::net::HostRoute;
use crate::net::routes::{
    DockerSubnets, PlannedRoute, RouteError, RoutePlan, devbox_link, route_plan_for,
};

pub const ROUTES_STATE_FILE: &str = "routes.json";

/// `<home>/routes.json`.
pub fn routes_state_path(home: &Path) -> PathBuf {
    home.join(ROUTES_STATE_FILE)
}

/// One running machine's routing facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineRoutes {
    pub guest_ip: Ipv4Addr,
    /// The machine's TAP device, `dbxN`.
    pub interface: String,
    pub docker: DockerSubnets,
}

/// The routes state file: running machines by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesState {
    pub machines: BTreeMap<String, MachineRoutes>,
}

impl RoutesState {
    /// Reads the state file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<RoutesState, HostError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RoutesState::default());
            }
            Err(source) => {
                return Err(HostError::Io {
                    what: "read",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        serde_json::from_str(&text).map_err(|source| HostError::State {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the state file atomically (0644: the root job reads it).
    pub fn save(&self, path: &Path) -> Result<(), HostError> {
        let mut text = serde_json::to_string_pretty(self).expect("plain data serialises");
        text.push('\n');
        write_atomic(path, text.as_bytes(), 0o644).map_err(|source| HostError::Io {
            what: "write",
            path: path.to_owned(),
            source,
        })
    }

    /// The plan that makes the host's routes match this state, given its current table:
    /// routes for every machine whose TAP is up (it has its connected route), and removal of
    /// routes via a `dbxN` link's guest IP that no machine here needs. A machine whose TAP
    /// is absent is skipped: its routes will follow when it starts and rewrites this file.
    pub fn host_plan(&self, host_routes: &[HostRoute]) -> Result<HostPlan, RouteError> {
        let up = |tap: &str| {
            host_routes
                .iter()
                .any(|r| r.interface == tap && r.gateway.is_none())
        };
        let mut routes = RoutePlan::default();
        for (name, m) in &self.machines {
            if up(&m.interface) {
                routes.extend(route_plan_for(
                    name,
                    &m.docker,
                    m.guest_ip,
                    &m.interface,
                    host_routes,
                )?);
            }
        }
        let known = |tap: &str| self.machines.values().any(|m| m.interface == tap);
        for r in host_routes.iter().filter(|r| !known(&r.interface)) {
            let Some(link) = devbox_link(&r.interface) else {
                continue;
            };
            if r.dest.prefix_len() > 0 && r.gateway == Some(IpAddr::V4(link.guest_ip)) {
                routes.remove.push(PlannedRoute {
                    dest: r.dest,
                    gateway: link.guest_ip,
                    interface: r.interface.clone(),
                    machine: format!("(gone, on {})", r.interface),
                });
            }
        }
        let mut plan = HostPlan {
            command: "routes apply".into(),
            routes,
            ..HostPlan::default()
        };
        plan.normalize();
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::routes::allocate_docker_subnets;

    fn route(dest: &str, gw: Option<&str>, dev: &str) -> HostRoute {
        HostRoute {
            dest: dest.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: dev.into(),
        }
    }

    fn state() -> RoutesState {
        let docker = allocate_docker_subnets(&[], &[], None).unwrap();
        RoutesState {
            machines: [(
                "dev".to_owned(),
                MachineRoutes {
                    guest_ip: "192.168.64.2".parse().unwrap(),
                    interface: "dbx0".into(),
                    docker,
                },
            )]
            .into(),
        }
    }

    #[test]
    fn missing_file_is_empty_and_saves_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = routes_state_path(dir.path());
        assert_eq!(RoutesState::load(&path).unwrap(), RoutesState::default());
        state().save(&path).unwrap();
        assert_eq!(RoutesState::load(&path).unwrap(), state());
        std::fs::write(&path, "{\"machines\": 3}").unwrap();
        let err = RoutesState::load(&path).unwrap_err();
        assert!(matches!(err, HostError::State { .. }));
        assert!(err.hint().unwrap().contains("routes.json"));
    }

    #[test]
    fn plan_covers_running_machines_and_clears_gone_ones() {
        // dbx0 is down: nothing to add. A stale route on dbx3 (no machine) goes.
        let table = [
            route("192.168.67.0/24", None, "dbx3"),
            route("172.30.0.0/16", Some("192.168.67.2"), "dbx3"),
            route("172.29.0.0/16", Some("10.0.0.1"), "dbx3"),
        ];
        let plan = state().host_plan(&table).unwrap();
        assert!(plan.routes.add.is_empty());
        let removed: Vec<String> = plan.routes.remove.iter().map(|r| r.to_string()).collect();
        assert_eq!(removed, ["172.30.0.0/16 via 192.168.67.2 dev dbx3"]);
        plan.check_allowed().unwrap();

        let up = [route("192.168.64.0/24", None, "dbx0")];
        let plan = state().host_plan(&up).unwrap();
        assert_eq!(plan.routes.add.len(), 2);
        assert_eq!(plan.command, "routes apply");
    }
}
