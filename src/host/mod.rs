//! The one privileged door: everything devbox changes on the host outside `$DEVBOX_HOME`
//! (routes to the machines' Docker subnets, the machines' outbound NAT and `ip_forward`, vmnet
//! host filters, systemd-resolved's settings for a machine's link, the `/etc/resolver/*`
//! files, the service units that restore routes at boot, and `system install`'s binary and
//! registry) is first computed as a [`HostPlan`] by pure code, then carried out by [`apply`],
//! which refuses anything outside devbox's own subnets, links and files (see
//! [`HostPlan::check_allowed`]) and anything on a `dbxN` link whose lease is not the caller's
//! (`leases.rs`). No other code changes the host.
//!
//! - `plan.rs`: the plan and its allowlist.
//! - `privileged.rs`: who holds the two capabilities of the installed binary and when (the
//!   sets each verb keeps, `sudo` becoming the invoking user, raising one capability around
//!   one call); `sys/linux.rs` does it with capctl, macOS has no capabilities.
//! - `leases.rs`: the plan's items on `dbxN` links checked against the lease registry
//!   (`crate::net::lease`), and [`open_tap`] and [`open_share_tap`], the door's TAPs.
//! - `install.rs`: `system install|uninstall` as plans, the record of what install added,
//!   the checks it prints, and the executors of its steps.
//! - `argv.rs`: every external command as an argv list (`ip route`, `route`, `ifconfig`,
//!   `resolvectl`, `systemctl`, `launchctl`), and the plan's `--dry-run` text made of them
//!   (Linux and macOS).
//! - `apply.rs`: the applier; `sys/linux.rs` (rtnetlink, CAP_NET_ADMIN raised per call) and
//!   `sys/macos.rs` (`route`, `ifconfig`) change the routes, `sys/nat_linux.rs` the NAT (`nft`,
//!   `iptables` with CAP_NET_ADMIN handed to them through the ambient set, under the lease
//!   registry's host-wide lock; what to change comes from `crate::nat`), `resolvectl` the
//!   resolver links (CAP_NET_ADMIN through the ambient set), `systemctl`/`launchctl` load the
//!   units.
//! - `units.rs`: the launchd plist and systemd units that rerun `devbox routes apply` at boot
//!   and whenever the routes state file changes, and the plans that install and remove them.
//!
//! What to route lives in `crate::routes`, what to resolve in `crate::resolver`; both only
//! compute plans. Threads: none are kept; route changes use `net`'s short-lived netlink
//! threads.

mod apply;
mod argv;
pub mod install;
mod leases;
mod plan;
pub mod privileged;
mod sys;
mod units;

use std::path::PathBuf;

pub use apply::{AppliedReport, AppliedStep, ApplyTarget, Outcome, apply, apply_to};
pub use argv::{
    hostfilter_argv, ip_route_argv, launchctl_bootout_argv, launchctl_bootstrap_argv,
    resolved_commands, resolved_revert, route_add_argv, route_delete_argv, systemctl_argv,
};
#[cfg(target_os = "linux")]
pub use leases::open_dns_link;
pub use leases::{check_plan as check_leases, open_share_tap, open_tap, require_lease};
pub use plan::{
    BinaryInstall, DirSpec, FileSpec, HostFilter, HostOs, HostPlan, INSTALLED_BINARY,
    REGISTRY_DIRS, RemoteRoute, ResolvedLink, ServiceUnit,
};
pub use units::{
    LAUNCHD_LABEL, LAUNCHD_PLIST_PATH, SYSTEMD_PATH_UNIT, SYSTEMD_SERVICE_UNIT, install_plan,
    install_plan_as, render_launchd_plist, render_systemd_units, uninstall_plan,
};

use crate::hint::Hint;
use crate::nat::NatError;
use crate::net::NetError;
use crate::net::lease::LeaseError;
use crate::routes::RouteError;
use privileged::PrivilegeError;

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
    #[error(transparent)]
    Nat(#[from] NatError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
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
    #[error("{what} is not supported on {os}")]
    Unsupported { what: String, os: HostOs },
    #[error("invalid path {}: {why}", path.display())]
    BadPath { path: PathBuf, why: &'static str },
}

impl Hint for HostError {
    fn hint(&self) -> Option<String> {
        match self {
            HostError::NoPrivilege {
                privilege: "CAP_NET_ADMIN",
                command,
                ..
            } => Some(format!(
                "set devbox up once with `sudo devbox system install`, then run \
                 `/usr/local/bin/devbox {command}` as yourself"
            )),
            HostError::NoPrivilege { command, .. } => Some(format!("run `sudo devbox {command}`")),
            HostError::Route(e) => e.hint(),
            HostError::Net(e) => e.hint(),
            HostError::Nat(e) => e.hint(),
            HostError::Lease(e) => e.hint(),
            HostError::Privilege(e) => e.hint(),
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
        assert!(hint.contains("`sudo devbox system install`"), "{hint}");
        assert!(
            hint.contains("`/usr/local/bin/devbox routes apply`"),
            "{hint}"
        );
        let e = HostError::NoPrivilege {
            what: "changing /etc/systemd/system/devbox-routes.path".into(),
            privilege: "root",
            command: "routes install".into(),
        };
        assert_eq!(e.hint().unwrap(), "run `sudo devbox routes install`");
    }
}
