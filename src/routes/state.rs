//! `$DEVBOX_HOME/routes.json`: the Docker routes every running machine needs. Supervisors
//! record a machine's routes when it starts and forget them when it stops; `devbox routes
//! apply` (by hand, or from the boot job watching this file) turns the file into a
//! [`RoutePlan`] for the host.
//!
//! Every change is a load, modify and save under an exclusive `flock` on
//! `$DEVBOX_HOME/routes.lock` ([`RoutesFile::update`]): two supervisors starting at once
//! otherwise both read the old file and the second save drops the first one's machine, after
//! which the boot job would take that running machine's routes away. Readers need no lock:
//! a save is an atomic rename, so a reader sees one whole file or the other.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{DockerSubnets, PlannedRoute, RouteError, RoutePlan, route_plan_for};
use crate::atomic_file::write_atomic;
use crate::hint::Hint;
use crate::net::{HostRoute, devbox_link};

pub const ROUTES_STATE_FILE: &str = "routes.json";
/// Held (exclusive `flock`) around every load, modify and save of [`ROUTES_STATE_FILE`].
pub const ROUTES_LOCK_FILE: &str = "routes.lock";

/// `<home>/routes.json`.
pub fn routes_state_path(home: &Path) -> PathBuf {
    home.join(ROUTES_STATE_FILE)
}

#[derive(Debug, thiserror::Error)]
pub enum RoutesStateError {
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid routes state file {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Hint for RoutesStateError {
    fn hint(&self) -> Option<String> {
        match self {
            RoutesStateError::Parse { path, .. } => Some(format!(
                "devbox rewrites {} whenever a machine starts or stops; remove it and \
                 restart the running machines",
                path.display()
            )),
            RoutesStateError::Io { .. } => None,
        }
    }
}

/// One running machine's routing facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineRoutes {
    pub guest_ip: Ipv4Addr,
    /// The machine's link: its TAP device `dbxN`, or a vz machine's vmnet bridge.
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
    pub fn load(path: &Path) -> Result<RoutesState, RoutesStateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RoutesState::default());
            }
            Err(source) => {
                return Err(RoutesStateError::Io {
                    what: "read",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        serde_json::from_str(&text).map_err(|source| RoutesStateError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the state file atomically, the user's alone (0600): the boot job runs as the
    /// user (systemd `User=`) or as root (the macOS LaunchDaemon), who read it either way.
    pub fn save(&self, path: &Path) -> Result<(), RoutesStateError> {
        let mut text = serde_json::to_string_pretty(self).expect("plain data serialises");
        text.push('\n');
        write_atomic(path, text.as_bytes(), 0o600).map_err(|source| RoutesStateError::Io {
            what: "write",
            path: path.to_owned(),
            source,
        })
    }

    /// The route changes that make the host's routes match this state, given its current
    /// table: routes for every machine whose TAP is up (it has its connected route), and
    /// removal of routes via a `dbxN` link's guest IP that no machine here needs. A machine
    /// whose TAP is absent is skipped: its routes follow when it starts and rewrites this
    /// file.
    ///
    /// `live_links` are the links of machines whose supervisor runs right now (its lock is
    /// held). Their routes are never removed, even when this file does not name them: the
    /// file may lag behind a machine that is starting, and taking a running machine's routes
    /// away would cut the host off from its containers.
    pub fn host_plan(
        &self,
        host_routes: &[HostRoute],
        live_links: &BTreeSet<String>,
    ) -> Result<RoutePlan, RouteError> {
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
        for r in host_routes
            .iter()
            .filter(|r| !known(&r.interface) && !live_links.contains(&r.interface))
        {
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
        routes.normalize();
        Ok(routes)
    }
}

/// `routes.json` in a devbox home, changed only under its lock.
#[derive(Debug, Clone)]
pub struct RoutesFile {
    home: PathBuf,
}

impl RoutesFile {
    pub fn new(home: &Path) -> RoutesFile {
        RoutesFile {
            home: home.to_owned(),
        }
    }

    pub fn path(&self) -> PathBuf {
        routes_state_path(&self.home)
    }

    /// The state as it is now (no lock: saves are atomic renames).
    pub fn load(&self) -> Result<RoutesState, RoutesStateError> {
        RoutesState::load(&self.path())
    }

    /// Loads, applies `f` and saves while holding `routes.lock`, so no other change can come
    /// between the load and the save. Nothing is written when `f` left the state as it was.
    pub fn update<T>(&self, f: impl FnOnce(&mut RoutesState) -> T) -> Result<T, RoutesStateError> {
        let _lock = self.lock()?;
        let path = self.path();
        let mut state = RoutesState::load(&path)?;
        let before = state.clone();
        let out = f(&mut state);
        if state != before {
            state.save(&path)?;
        }
        Ok(out)
    }

    /// Records `machine`'s routes (replacing what an earlier run of it left).
    pub fn record(&self, machine: &str, routes: MachineRoutes) -> Result<(), RoutesStateError> {
        self.update(|st| {
            st.machines.insert(machine.to_owned(), routes);
        })
    }

    /// Removes `machine`; returns what was recorded for it.
    pub fn forget(&self, machine: &str) -> Result<Option<MachineRoutes>, RoutesStateError> {
        self.update(|st| st.machines.remove(machine))
    }

    /// The exclusive lock, waited for: changes are quick, and a change must not be lost.
    fn lock(&self) -> Result<Flock<std::fs::File>, RoutesStateError> {
        let path = self.home.join(ROUTES_LOCK_FILE);
        let io = |what, source| RoutesStateError::Io {
            what,
            path: path.clone(),
            source,
        };
        fs_err::create_dir_all(&self.home).map_err(|e| io("create the directory of", e))?;
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io("open", e))?;
        Flock::lock(file.into_parts().0, FlockArg::LockExclusive)
            .map_err(|(_, e)| io("lock", std::io::Error::from(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::allocate_docker_subnets;

    fn route(dest: &str, gw: Option<&str>, dev: &str) -> HostRoute {
        HostRoute {
            dest: dest.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: dev.into(),
        }
    }

    fn dev() -> MachineRoutes {
        MachineRoutes {
            guest_ip: "192.168.64.2".parse().unwrap(),
            interface: "dbx0".into(),
            docker: allocate_docker_subnets(&[], &[], None).unwrap(),
        }
    }

    fn state() -> RoutesState {
        RoutesState {
            machines: [("dev".to_owned(), dev())].into(),
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
        assert!(matches!(err, RoutesStateError::Parse { .. }));
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
        let plan = state().host_plan(&table, &BTreeSet::new()).unwrap();
        assert!(plan.add.is_empty());
        let removed: Vec<String> = plan.remove.iter().map(|r| r.to_string()).collect();
        assert_eq!(removed, ["172.30.0.0/16 via 192.168.67.2 dev dbx3"]);

        let up = [route("192.168.64.0/24", None, "dbx0")];
        let plan = state().host_plan(&up, &BTreeSet::new()).unwrap();
        assert_eq!(plan.add.len(), 2);
    }

    #[test]
    fn a_live_machine_missing_from_the_file_keeps_its_routes() {
        let table = [
            route("192.168.67.0/24", None, "dbx3"),
            route("172.30.0.0/16", Some("192.168.67.2"), "dbx3"),
        ];
        let live = BTreeSet::from(["dbx3".to_owned()]);
        let plan = state().host_plan(&table, &live).unwrap();
        assert!(plan.remove.is_empty(), "{plan:?}");
    }

    #[test]
    fn record_and_forget_change_one_machine_under_the_lock() {
        let home = tempfile::tempdir().unwrap();
        let file = RoutesFile::new(home.path());
        file.record("dev", dev()).unwrap();
        let mut web = dev();
        web.interface = "dbx1".into();
        file.record("web", web.clone()).unwrap();
        assert_eq!(file.load().unwrap().machines.len(), 2);
        assert_eq!(file.forget("dev").unwrap(), Some(dev()));
        assert_eq!(file.forget("dev").unwrap(), None);
        assert_eq!(
            file.load().unwrap().machines,
            BTreeMap::from([("web".to_owned(), web)])
        );
        assert!(home.path().join(ROUTES_LOCK_FILE).exists());
    }
}
