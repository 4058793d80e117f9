//! Linux: routes through `net`'s rtnetlink calls, in the caller's network namespace, each
//! with CAP_NET_ADMIN raised for that call only; and the capability sets themselves (capctl),
//! for `host::privileged`.

use crate::host::HostError;
use crate::host::plan::{HostFilter, HostOs};
use crate::net::{self, HostRoute};
use crate::routes::PlannedRoute;

/// This host's OS.
pub const HOST_OS: HostOs = HostOs::Linux;

/// What changing routes needs here (named in the error when it is missing).
pub const ROUTE_PRIVILEGE: &str = "CAP_NET_ADMIN";

/// Root, or CAP_NET_ADMIN in the permitted set (raised for each change).
pub fn can_change_routes() -> bool {
    is_root() || CapState::get_current().is_ok_and(|c| c.permitted.has(Cap::NET_ADMIN))
}

pub fn routes() -> Result<Vec<HostRoute>, HostError> {
    Ok(net::host_routes()?)
}

pub fn add_route(r: &PlannedRoute) -> Result<(), HostError> {
    let add = || net::add_route(r.dest, r.gateway, &r.interface);
    Ok(with_effective(Privilege::NetAdmin, add)?)
}

pub fn delete_route(r: &PlannedRoute) -> Result<(), HostError> {
    let delete = || net::delete_route(r.dest, r.gateway, &r.interface);
    Ok(with_effective(Privilege::NetAdmin, delete)?)
}

/// vmnet's host filter has no Linux counterpart: a TAP passes any source address.
pub fn hostfilter(h: &HostFilter) -> Result<(), HostError> {
    Err(HostError::Unsupported {
        what: format!("the vmnet host filter of {} on {}", h.member, h.bridge),
        os: HostOs::Linux,
    })
}

// ---- Capabilities (the door of `host::privileged`) ----

use std::path::Path;

use capctl::{Cap, CapSet, CapState, FileCaps, ambient};

use crate::host::privileged::{Class, PrivilegeError, SudoUser};

/// A capability the door raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    NetAdmin,
    BindService,
}

impl Privilege {
    fn cap(self) -> Cap {
        match self {
            Privilege::NetAdmin => Cap::NET_ADMIN,
            Privilege::BindService => Cap::NET_BIND_SERVICE,
        }
    }
}

/// The only two capabilities devbox ever keeps.
fn net_caps() -> CapSet {
    capctl::capset!(Cap::NET_ADMIN, Cap::NET_BIND_SERVICE)
}

fn os_error(what: &str) -> impl FnOnce(capctl::Error) -> PrivilegeError + '_ {
    move |e| PrivilegeError::Os {
        what: what.to_owned(),
        source: e.into(),
    }
}

fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

/// The capability sets a process of `class` keeps (see `host::privileged`). `switched`: the
/// process became the sudo user; otherwise a real uid of 0 is a genuine root user, who keeps
/// root's powers for every verb: clearing them would only make root fail where root works
/// without devbox (a share or a `DEVBOX_HOME` in a directory of another user's, mode 0700),
/// and protect nothing, since root may run anything.
pub fn settle(class: Class, switched: bool) -> Result<(), PrivilegeError> {
    let genuine_root = !switched && is_root();
    match class {
        Class::Root => Ok(()),
        _ if genuine_root => Ok(()),
        Class::Net => keep_net(false),
        Class::Spawner if switched => keep_net(true),
        Class::Plain | Class::Spawner => {
            ambient::clear().map_err(os_error("clear the ambient capability set"))?;
            CapState::empty()
                .set_current()
                .map_err(os_error("clear the capability sets"))
        }
    }
}

/// Keeps the two capabilities (those of them the process has) in the permitted set only;
/// with `ambient`, also in the inheritable and ambient sets, for a child to inherit.
fn keep_net(ambient_too: bool) -> Result<(), PrivilegeError> {
    let current = CapState::get_current().map_err(os_error("read the capability sets"))?;
    let keep = current.permitted & net_caps();
    ambient::clear().map_err(os_error("clear the ambient capability set"))?;
    CapState {
        effective: CapSet::empty(),
        permitted: keep,
        inheritable: if ambient_too { keep } else { CapSet::empty() },
    }
    .set_current()
    .map_err(os_error("lower the capability sets"))?;
    if ambient_too {
        for cap in keep {
            ambient::raise(cap).map_err(os_error("raise an ambient capability"))?;
        }
    }
    Ok(())
}

/// Puts back the calling thread's capability sets as they were, when dropped.
struct Restore(CapState);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = self.0.set_current();
    }
}

/// Runs `f` with `p` raised in the calling thread's effective set, if it is in the permitted
/// set and not effective already (root); lowered again afterwards, even if `f` panics.
pub fn with_effective<T>(p: Privilege, f: impl FnOnce() -> T) -> T {
    let cap = p.cap();
    let Ok(before) = CapState::get_current() else {
        return f();
    };
    if before.effective.has(cap) || !before.permitted.has(cap) {
        return f();
    }
    let mut raised = before;
    raised.effective.add(cap);
    if raised.set_current().is_err() {
        return f();
    }
    let _restore = Restore(before);
    f()
}

/// Runs `spawn` with CAP_NET_ADMIN in the calling thread's inheritable and ambient sets, so
/// the child it starts keeps it across `exec`; both are cleared again afterwards. Root's
/// children are root already.
pub fn with_ambient_net_admin<T>(spawn: impl FnOnce() -> T) -> T {
    let Ok(before) = CapState::get_current() else {
        return spawn();
    };
    if is_root() || !before.permitted.has(Cap::NET_ADMIN) {
        return spawn();
    }
    let mut st = before;
    st.inheritable.add(Cap::NET_ADMIN);
    if st.set_current().is_err() {
        return spawn();
    }
    let _restore = Restore(before);
    let raised = ambient::raise(Cap::NET_ADMIN).is_ok();
    let out = spawn();
    if raised {
        let _ = ambient::lower(Cap::NET_ADMIN);
    }
    out
}

/// See `host::privileged::supervisor_will_have_net_privileges`.
pub fn supervisor_will_have_net_privileges(exe: &Path) -> Result<(), String> {
    let in_ambient = |c| ambient::is_set(c) == Some(true);
    if in_ambient(Cap::NET_ADMIN) && in_ambient(Cap::NET_BIND_SERVICE) {
        return Ok(());
    }
    for cap in net_caps() {
        if capctl::bounding::read(cap) == Some(false) {
            return Err(format!(
                "this process's capability bounding set lacks {cap:?} (a container without \
                 it?), so neither root nor a file capability can grant it"
            ));
        }
    }
    if is_root() {
        return Ok(());
    }
    if capctl::prctl::get_no_new_privs().unwrap_or(false) {
        return Err("this process runs with no_new_privs, which ignores file capabilities".into());
    }
    match FileCaps::get_for_file(exe) {
        Ok(Some(fc)) if (fc.permitted & net_caps()) == net_caps() => {}
        Ok(_) => return Err(format!("{} has no capabilities", exe.display())),
        Err(e) => {
            return Err(format!(
                "cannot read the capabilities of {}: {e}",
                exe.display()
            ));
        }
    }
    match nix::sys::statvfs::statvfs(exe) {
        Ok(fs) if fs.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID) => Err(format!(
            "{} is on a filesystem mounted nosuid, which ignores file capabilities",
            exe.display()
        )),
        _ => Ok(()),
    }
}

/// `setcap cap_net_admin,cap_net_bind_service+ep PATH`.
pub fn set_file_caps(path: &Path) -> std::io::Result<()> {
    let mut caps = FileCaps::empty();
    caps.effective = true;
    caps.permitted = net_caps();
    caps.set_for_file(path)
}

/// Whether `path` carries exactly the two capabilities, permitted and effective.
pub fn has_file_caps(path: &Path) -> std::io::Result<bool> {
    Ok(FileCaps::get_for_file(path)?
        .is_some_and(|fc| fc.effective && fc.permitted == net_caps() && fc.inheritable.is_empty()))
}

/// Becomes the sudo user: their groups, gid and uid (all of real, effective and saved), with
/// only the two capabilities left, in the permitted set; then their `HOME`, `USER` and
/// `LOGNAME`.
pub fn become_user(user: &SudoUser) -> Result<(), PrivilegeError> {
    let os = |what: &str| {
        let what = what.to_owned();
        move |e: nix::errno::Errno| PrivilegeError::Os {
            what,
            source: e.into(),
        }
    };
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(user.uid),
        nix::unistd::Gid::from_raw(user.gid),
    );
    let name = std::ffi::CString::new(user.name.as_str()).map_err(|_| PrivilegeError::Sudo {
        user: user.name.clone(),
        uid: user.uid.to_string(),
        why: "the name has a NUL byte".into(),
    })?;
    capctl::prctl::set_keepcaps(true).map_err(os_error("keep capabilities across setuid"))?;
    nix::unistd::initgroups(&name, gid).map_err(os("set the user's groups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(os("set the user's gid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(os("set the user's uid"))?;
    capctl::prctl::set_keepcaps(false).map_err(os_error("reset keepcaps"))?;
    keep_net(false)?;
    // SAFETY: called from `host::privileged::enter`, first thing in the process, before any
    // other thread exists, so nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("HOME", &user.home);
        std::env::set_var("USER", &user.name);
        std::env::set_var("LOGNAME", &user.name);
    }
    Ok(())
}

/// The groups `user` gets at login (getgrouplist(3)); just `gid` when unknown.
pub fn groups_of(user: &str, gid: u32) -> Vec<u32> {
    std::ffi::CString::new(user)
        .ok()
        .and_then(|c| nix::unistd::getgrouplist(&c, nix::unistd::Gid::from_raw(gid)).ok())
        .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|| vec![gid])
}
