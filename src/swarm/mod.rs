//! Docker swarm mode across a user's machines: what devbox records of a machine's membership,
//! the checks before `swarm init`, `join` and `leave` (pure, from what the engines report),
//! and the host plans that open and close the swarm ports between machines.
//!
//! devbox schedules nothing itself: the engines form the swarm (`commands/swarm.rs` drives
//! them through their forwarded sockets). What devbox adds is the network between them: on a
//! Linux host machines are kept apart by devbox's firewall table, and a swarm opens Docker's
//! swarm ports between two of its machines, both ways, and nothing else
//! (`crate::nat::add_pair`). Those rules live while both machines run: a machine's stop closes
//! its pairs with its NAT, and its next start opens them again with every member of its swarm
//! that is running ([`open_peers`]).
//!
//! A machine's membership is `swarm.json` in its directory: the swarm's cluster id (the key
//! that groups machines), the role it joined with, and the machine it joined through.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::hint::Hint;
use crate::host::HostPlan;
use crate::machine::state::observe;
use crate::machine::{Driver, MachineDir, MachineState, Store};
use crate::nat::SwarmPair;
use crate::net::tap_name;

/// The file of a machine's membership.
pub const MEMBERSHIP_FILE: &str = "swarm.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

/// A machine's membership of a swarm, as devbox recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// The swarm's cluster id (Docker's), which every member shares.
    pub cluster: String,
    pub role: Role,
    /// The machine it joined through (itself for the machine that ran `init`).
    pub via: String,
    /// Its node id in the swarm.
    pub node: String,
}

fn path(dir: &MachineDir) -> PathBuf {
    dir.path.join(MEMBERSHIP_FILE)
}

/// The machine's membership, `None` when it is in no swarm devbox knows of. A file that does
/// not parse counts as none (and is replaced by the next `init` or `join`).
pub fn membership(dir: &MachineDir) -> std::io::Result<Option<Membership>> {
    match std::fs::read_to_string(path(dir)) {
        Ok(text) => Ok(serde_json::from_str(&text).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn record(dir: &MachineDir, m: &Membership) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(m).expect("a membership serialises");
    crate::atomic_file::write_atomic(&path(dir), &text, 0o600)
}

pub fn forget(dir: &MachineDir) -> std::io::Result<()> {
    match std::fs::remove_file(path(dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A machine's engine as swarm mode sees it (Docker's `/info`, `Swarm`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineSwarm {
    /// `inactive`, `pending`, `active`, `error` or `locked`.
    pub state: String,
    /// Whether the node is a manager (it can hand out join tokens).
    pub manager: bool,
    pub cluster: Option<String>,
    pub node: Option<String>,
    pub nodes: u32,
    pub managers: u32,
}

impl EngineSwarm {
    pub fn from_info(info: &bollard::models::SwarmInfo) -> EngineSwarm {
        EngineSwarm {
            state: info
                .local_node_state
                .map(|s| s.to_string())
                .unwrap_or_default(),
            manager: info.control_available == Some(true),
            cluster: info.cluster.as_ref().and_then(|c| c.id.clone()),
            node: info.node_id.clone().filter(|n| !n.is_empty()),
            nodes: info.nodes.unwrap_or(0).try_into().unwrap_or(0),
            managers: info.managers.unwrap_or(0).try_into().unwrap_or(0),
        }
    }

    pub fn in_swarm(&self) -> bool {
        !matches!(self.state.as_str(), "inactive" | "")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SwarmError {
    #[error("machine {name} is not running (it is {state})")]
    NotRunning { name: String, state: String },
    #[error(
        "machine {name} is a host adopted over SSH: devbox opens the swarm ports between the \
         machines it runs on this host only"
    )]
    Adopted { name: String },
    #[error("a machine cannot join a swarm through itself ({name})")]
    Itself { name: String },
    #[error(
        "machine {name} is already in a swarm{}",
        cluster.as_deref().map(|c| format!(" (cluster {c})")).unwrap_or_default()
    )]
    AlreadyIn {
        name: String,
        /// Only a manager knows its cluster's id.
        cluster: Option<String>,
    },
    #[error("machine {name} is not a swarm manager: {why}")]
    NotAManager { name: String, why: String },
    #[error("machine {name} is not in a swarm")]
    NotIn { name: String },
    #[error(
        "machine {name} is the last manager of a swarm that still has {others} other node(s): \
         leaving would leave them without a manager"
    )]
    LastManager { name: String, others: u32 },
    #[error("Docker in machine {name} refused to {action}: {message}")]
    Engine {
        name: String,
        action: &'static str,
        message: String,
    },
}

impl Hint for SwarmError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            SwarmError::NotRunning { name, .. } => format!("start it: `devbox start {name}`"),
            SwarmError::Adopted { .. } => {
                "make a swarm of local machines, or run `docker swarm` on the host yourself".into()
            }
            SwarmError::Itself { .. } => {
                "name another machine with --manager (`devbox swarm ls` lists the managers)".into()
            }
            SwarmError::AlreadyIn { name, .. } => {
                format!("take it out first: `devbox swarm leave {name}`")
            }
            SwarmError::NotAManager { name, .. } => format!(
                "make it one with `devbox swarm init {name}`, or join through a manager of the \
                 swarm (`devbox swarm ls` shows the roles)"
            ),
            SwarmError::NotIn { .. } => "`devbox swarm ls` lists the machines in swarms".into(),
            SwarmError::LastManager { name, .. } => format!(
                "take the other machines out first (`devbox swarm ls`, then `devbox swarm \
                 leave OTHER`), or leave anyway with `devbox swarm leave {name} --force`"
            ),
            SwarmError::Engine { .. } => return None,
        })
    }
}

/// The checks before `init`: the machine's engine is in no swarm.
pub fn check_init(name: &str, engine: &EngineSwarm) -> Result<(), SwarmError> {
    if engine.in_swarm() {
        return Err(SwarmError::AlreadyIn {
            name: name.to_owned(),
            cluster: engine.cluster.clone(),
        });
    }
    Ok(())
}

/// The checks before `join`: `manager` is a manager of an active swarm, `name` is in none.
pub fn check_join(
    name: &str,
    engine: &EngineSwarm,
    manager_name: &str,
    manager: &EngineSwarm,
) -> Result<String, SwarmError> {
    if name == manager_name {
        return Err(SwarmError::Itself {
            name: name.to_owned(),
        });
    }
    let cluster = match (&manager.cluster, manager.state.as_str(), manager.manager) {
        (Some(c), "active", true) => c.clone(),
        (_, "active", false) => {
            return Err(SwarmError::NotAManager {
                name: manager_name.to_owned(),
                why: "it is a worker; workers cannot admit nodes".into(),
            });
        }
        (_, "inactive" | "", _) => {
            return Err(SwarmError::NotAManager {
                name: manager_name.to_owned(),
                why: "it is in no swarm".into(),
            });
        }
        (_, state, _) => {
            return Err(SwarmError::NotAManager {
                name: manager_name.to_owned(),
                why: format!("its swarm state is {state}"),
            });
        }
    };
    check_init(name, engine)?;
    Ok(cluster)
}

/// How a machine leaves its swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaveHow {
    /// Demote it to a worker first (through its own engine): a manager beside other managers,
    /// whose forced departure would cost the swarm its quorum (two managers, one gone, leave
    /// no majority).
    pub demote: bool,
    /// Docker's `force`: the only manager of a swarm (alone, or `--force` over its workers),
    /// or what the user asked.
    pub force: bool,
}

/// How `name` leaves: a refusal when it would leave other nodes without any manager and
/// `force` was not asked.
pub fn check_leave(name: &str, engine: &EngineSwarm, force: bool) -> Result<LeaveHow, SwarmError> {
    if !engine.in_swarm() {
        return Err(SwarmError::NotIn {
            name: name.to_owned(),
        });
    }
    if !engine.manager {
        return Ok(LeaveHow {
            demote: false,
            force,
        });
    }
    if engine.managers > 1 {
        return Ok(LeaveHow {
            demote: true,
            force,
        });
    }
    if engine.nodes > 1 && !force {
        return Err(SwarmError::LastManager {
            name: name.to_owned(),
            others: engine.nodes - 1,
        });
    }
    Ok(LeaveHow {
        demote: false,
        force: true,
    })
}

/// A machine's link and whether it runs, for the swarm's checks.
pub struct Member {
    pub name: String,
    pub dir: MachineDir,
    pub membership: Membership,
    pub link: Option<String>,
    pub state: MachineState,
}

/// Every machine of `store` in swarm `cluster`, with its link (`dbxN`, local drivers only).
pub fn members(store: &Store, cluster: &str) -> anyhow::Result<Vec<Member>> {
    let mut out = Vec::new();
    for name in store.names()? {
        let Ok(dir) = store.existing(&name) else {
            continue;
        };
        let Ok(Some(m)) = membership(&dir) else {
            continue;
        };
        if m.cluster != cluster {
            continue;
        }
        let link = dir
            .load_spec()
            .ok()
            .filter(|s| matches!(s.driver, Driver::Qemu | Driver::Kvm | Driver::Fake))
            .map(|s| tap_name(s.network.index));
        let state = observe(&dir)
            .map(|o| o.state)
            .unwrap_or(MachineState::Crashed);
        out.push(Member {
            name,
            dir,
            membership: m,
            link,
            state,
        });
    }
    Ok(out)
}

/// The plan that opens the swarm ports between `link` and each of `peers`.
pub fn open_plan(command: String, link: &str, peers: &[&str]) -> HostPlan {
    HostPlan {
        command,
        swarm_add: peers
            .iter()
            .filter_map(|p| SwarmPair::new(link, p))
            .collect(),
        ..HostPlan::default()
    }
}

/// The plan that closes every swarm pair of `link`.
pub fn close_plan(command: String, link: &str) -> HostPlan {
    HostPlan {
        command,
        swarm_remove: vec![link.to_owned()],
        ..HostPlan::default()
    }
}

/// At a machine's start (its NAT in place): opens the swarm ports to every member of its
/// swarm that is starting or running. A peer whose own NAT is not there yet is skipped: its
/// start opens the pair when it gets there. Returns what was opened, and what failed, for the
/// supervisor's log.
pub fn open_peers(store: &Store, name: &str, link: &str) -> Vec<Result<String, String>> {
    let Ok(dir) = store.existing(name) else {
        return Vec::new();
    };
    let Ok(Some(me)) = membership(&dir) else {
        return Vec::new();
    };
    let Ok(members) = members(store, &me.cluster) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for peer in members.iter().filter(|m| m.name != name) {
        let Some(peer_link) = &peer.link else {
            continue;
        };
        if !matches!(peer.state, MachineState::Running | MachineState::Starting) {
            continue;
        }
        let plan = open_plan(format!("start {name}"), link, &[peer_link]);
        out.push(
            crate::host::apply(&plan, false)
                .map(|_| format!("swarm ports open with {} ({peer_link})", peer.name))
                .map_err(|e| format!("swarm ports with {} ({peer_link}): {e}", peer.name)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(state: &str, manager: bool, nodes: u32, managers: u32) -> EngineSwarm {
        EngineSwarm {
            state: state.into(),
            manager,
            cluster: (state == "active").then(|| "c1".into()),
            node: (state == "active").then(|| "n1".into()),
            nodes,
            managers,
        }
    }

    #[test]
    fn join_needs_an_active_manager_and_a_machine_in_no_swarm() {
        let free = engine("inactive", false, 0, 0);
        let mgr = engine("active", true, 1, 1);
        assert_eq!(check_join("b", &free, "a", &mgr), Ok("c1".into()));
        let worker = engine("active", false, 2, 1);
        let e = check_join("b", &free, "a", &worker).unwrap_err();
        assert_eq!(
            e.to_string(),
            "machine a is not a swarm manager: it is a worker; workers cannot admit nodes"
        );
        assert!(e.hint().unwrap().contains("devbox swarm init a"));
        let e = check_join("b", &free, "a", &free).unwrap_err();
        assert!(e.to_string().ends_with("it is in no swarm"), "{e}");
        let e = check_join("b", &mgr, "a", &mgr).unwrap_err();
        assert_eq!(
            e.to_string(),
            "machine b is already in a swarm (cluster c1)"
        );
        assert_eq!(
            e.hint().unwrap(),
            "take it out first: `devbox swarm leave b`"
        );
        let worker_state = EngineSwarm {
            cluster: None,
            ..engine("active", false, 0, 0)
        };
        let e = check_join("b", &worker_state, "a", &mgr).unwrap_err();
        assert_eq!(
            e.to_string(),
            "machine b is already in a swarm",
            "a worker knows no id"
        );
        assert!(matches!(
            check_join("a", &free, "a", &mgr),
            Err(SwarmError::Itself { .. })
        ));
        let locked = engine("locked", true, 1, 1);
        assert!(check_join("b", &free, "a", &locked).is_err());
    }

    #[test]
    fn the_last_manager_of_other_nodes_leaves_only_when_forced() {
        let how = |demote, force| Ok(LeaveHow { demote, force });
        assert_eq!(
            check_leave("w", &engine("active", false, 2, 1), false),
            how(false, false)
        );
        assert_eq!(
            check_leave("w", &engine("active", false, 2, 1), true),
            how(false, true)
        );
        assert_eq!(
            check_leave("m", &engine("active", true, 1, 1), false),
            how(false, true)
        );
        let e = check_leave("m", &engine("active", true, 3, 1), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "machine m is the last manager of a swarm that still has 2 other node(s): leaving \
             would leave them without a manager"
        );
        assert_eq!(
            check_leave("m", &engine("active", true, 3, 1), true),
            how(false, true)
        );
        // Beside another manager: demoted first, never forced out (two managers, one forced
        // away, is a swarm without a leader).
        assert_eq!(
            check_leave("m", &engine("active", true, 2, 2), false),
            how(true, false)
        );
        assert!(matches!(
            check_leave("x", &engine("inactive", false, 0, 0), false),
            Err(SwarmError::NotIn { .. })
        ));
    }

    #[test]
    fn a_membership_is_written_read_and_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let dir = MachineDir {
            name: "m".into(),
            path: d.path().to_owned(),
        };
        assert_eq!(membership(&dir).unwrap(), None);
        let m = Membership {
            cluster: "c1".into(),
            role: Role::Worker,
            via: "a".into(),
            node: "n2".into(),
        };
        record(&dir, &m).unwrap();
        assert_eq!(membership(&dir).unwrap(), Some(m));
        forget(&dir).unwrap();
        forget(&dir).unwrap();
        assert_eq!(membership(&dir).unwrap(), None);
        std::fs::write(path(&dir), "{").unwrap();
        assert_eq!(membership(&dir).unwrap(), None);
    }

    #[test]
    fn the_plans_name_the_pairs_and_the_link() {
        let p = open_plan("swarm join b".into(), "dbx1", &["dbx0", "dbx2", "dbx1"]);
        assert_eq!(p.swarm_add.len(), 2, "not with itself");
        p.check_allowed().unwrap();
        assert_eq!(close_plan("x".into(), "dbx1").swarm_remove, ["dbx1"]);
    }
}
