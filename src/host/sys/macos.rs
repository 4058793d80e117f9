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

/// macOS machines use vmnet's own NAT (the vz driver's link): devbox adds none.
pub fn add_nat(link: &str) -> Result<(crate::host::Outcome, Vec<crate::nat::Blocker>), HostError> {
    Err(HostError::Unsupported {
        what: format!("devbox's outbound NAT for {link} (vmnet NATs the machine)"),
        os: HostOs::Macos,
    })
}

/// See [`add_nat`].
pub fn remove_nat(link: &str) -> Result<crate::host::Outcome, HostError> {
    add_nat(link).map(|(o, _)| o)
}

/// The swarm ports between two machines: devbox's nftables table is Linux's.
pub fn add_swarm(pair: &crate::nat::SwarmPair) -> Result<crate::host::Outcome, HostError> {
    Err(HostError::Unsupported {
        what: format!("opening the swarm ports between {pair}"),
        os: HostOs::Macos,
    })
}

/// See [`add_swarm`]; there is nothing to close.
pub fn remove_swarm(_link: &str) -> Result<crate::host::Outcome, HostError> {
    Ok(crate::host::Outcome::AlreadyDone)
}

// ---- Privileges: macOS has no capabilities ----

use std::path::Path;

use crate::host::privileged::{Class, PrivilegeError, SudoUser};

/// What the Linux door raises; nothing to raise here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    NetAdmin,
    BindService,
}

/// Nothing to settle: a macOS process has no capability sets. Root's privileged steps (routes,
/// `/etc/resolver`) run in the root LaunchDaemon that `system install` sets up.
pub fn settle(_class: Class, _switched: bool) -> Result<(), PrivilegeError> {
    Ok(())
}

pub fn with_effective<T>(_p: Privilege, f: impl FnOnce() -> T) -> T {
    f()
}

pub fn with_ambient_net_admin<T>(spawn: impl FnOnce() -> T) -> T {
    spawn()
}

/// vz machines need no TAP and no capability.
pub fn supervisor_will_have_net_privileges(_exe: &Path) -> Result<(), String> {
    Ok(())
}

pub fn set_file_caps(path: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other(format!(
        "{}: macOS has no file capabilities",
        path.display()
    )))
}

pub fn has_file_caps(_path: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// Becomes the sudo user: their groups, gid and uid, then their `HOME`, `USER` and `LOGNAME`.
pub fn become_user(user: &SudoUser) -> Result<(), PrivilegeError> {
    let os = |what: &str, source: std::io::Error| PrivilegeError::Os {
        what: what.to_owned(),
        source,
    };
    let name = std::ffi::CString::new(user.name.as_str()).map_err(|_| PrivilegeError::Sudo {
        user: user.name.clone(),
        uid: user.uid.to_string(),
        why: "the name has a NUL byte".into(),
    })?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call; initgroups(3)
    // only reads it. nix has no initgroups for Apple targets.
    if unsafe { libc::initgroups(name.as_ptr(), user.gid as libc::c_int) } != 0 {
        return Err(os("set the user's groups", std::io::Error::last_os_error()));
    }
    nix::unistd::setgid(nix::unistd::Gid::from_raw(user.gid))
        .map_err(|e| os("set the user's gid", e.into()))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(user.uid))
        .map_err(|e| os("set the user's uid", e.into()))?;
    // SAFETY: called from `host::privileged::enter`, first thing in the process, before any
    // other thread exists, so nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("HOME", &user.home);
        std::env::set_var("USER", &user.name);
        std::env::set_var("LOGNAME", &user.name);
    }
    Ok(())
}

/// Only the primary group: the checks that use this (`/dev/kvm`) are Linux's.
pub fn groups_of(_user: &str, gid: u32) -> Vec<u32> {
    vec![gid]
}
