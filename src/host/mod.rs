//! The one privileged door: everything devbox changes on the host outside `$DEVBOX_HOME`
//! (routes to the machines' Docker subnets, service units that restore them at boot, and
//! later the DNS resolver files) is first computed as a [`HostPlan`] by pure code, then
//! carried out by [`apply`], which refuses anything outside devbox's own subnets, links and
//! files (see [`HostPlan::check_allowed`]).
//!
//! - `plan.rs`: the plan, its allowlist and its `--dry-run` text (Linux and macOS).
//! - `apply.rs`: the applier; `sys/linux.rs` (rtnetlink) and `sys/macos.rs` (`route`,
//!   `ifconfig`) change the routes, `systemctl`/`launchctl` load the units.
//! - `commands.rs`: every external command as an argv list, plus the macOS `netstat` parse.
//! - `units.rs`: the launchd plist and systemd units that rerun `devbox routes apply` at boot
//!   and whenever the routes state file changes, and the plans that install and remove them.
//! - `state.rs`: `$DEVBOX_HOME/routes.json`, every machine's Docker routes, and the plan
//!   that brings the host in line with it.
//!
//! Threads: none are kept; route changes use `net`'s short-lived netlink threads.

mod apply;
mod commands;
mod plan;
pub mod resolved;
mod state;
mod sys;
mod units;

use std::path::PathBuf;

pub use apply::{AppliedReport, AppliedStep, ApplyTarget, Outcome, apply, apply_to};
pub use commands::{
    hostfilter_argv, ip_route_argv, launchctl_bootout_argv, launchctl_bootstrap_argv,
    parse_netstat_routes, route_add_argv, route_delete_argv, systemctl_argv,
};
pub use plan::{FileSpec, HostFilter, HostOs, HostPlan, ServiceUnit};
pub use state::{MachineRoutes, ROUTES_STATE_FILE, RoutesState, routes_state_path};
pub use units::{
    LAUNCHD_LABEL, LAUNCHD_PLIST_PATH, SYSTEMD_PATH_UNIT, SYSTEMD_SERVICE_UNIT, install_plan,
    render_launchd_plist, render_systemd_units, uninstall_plan,
};

use crate::net::NetError;
use crate::net::routes::RouteError;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("refused to {item}: {why}")]
    Refused { item: String, why: String },
    #[error("{what} needs {privilege}")]
    NoPrivilege {
        what: String,
        /// `CAP_NET_ADMIN` for routes, `root` for files and service units.
        privilege: &'static str,
        /// The devbox verb to rerun with sudo, e.g. `routes apply`.
        command: String,
    },
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Command {
        argv: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{argv}`")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid routes state file {}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} is not supported on {os}")]
    Unsupported { what: String, os: HostOs },
    #[error("invalid path {}: {why}", path.display())]
    BadPath { path: PathBuf, why: &'static str },
}

impl HostError {
    pub fn hint(&self) -> Option<String> {
        match self {
            HostError::NoPrivilege {
                privilege: "CAP_NET_ADMIN",
                command,
                ..
            } => Some(format!(
                "run `sudo devbox {command}`, or grant the capability to the binary once: \
                 `sudo setcap cap_net_admin+ep \"$(command -v devbox)\"`"
            )),
            HostError::NoPrivilege { command, .. } => Some(format!("run `sudo devbox {command}`")),
            HostError::Route(e) => e.hint(),
            HostError::Net(e) => e.hint(),
            HostError::State { path, .. } => Some(format!(
                "devbox rewrites {} whenever a machine starts or stops; remove it and \
                 restart the running machines",
                path.display()
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_privilege_names_it_and_the_commands_that_grant_it() {
        let e = HostError::NoPrivilege {
            what: "changing the host's routes".into(),
            privilege: "CAP_NET_ADMIN",
            command: "routes apply".into(),
        };
        assert_eq!(
            e.to_string(),
            "changing the host's routes needs CAP_NET_ADMIN"
        );
        let hint = e.hint().unwrap();
        assert!(hint.contains("`sudo devbox routes apply`"), "{hint}");
        assert!(hint.contains("sudo setcap cap_net_admin+ep \"$(command -v devbox)\""));
        let e = HostError::NoPrivilege {
            what: "changing /etc/systemd/system/devbox-routes.path".into(),
            privilege: "root",
            command: "routes install".into(),
        };
        assert_eq!(e.hint().unwrap(), "run `sudo devbox routes install`");
    }
}
