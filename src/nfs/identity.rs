//! The share owner's filesystem identity, taken by the thread doing an export's work.
//!
//! The server never has more power than the owner of the share it serves: every operation
//! on an export runs on a thread whose filesystem uid and gid are the owner's and which has
//! no supplementary groups, so the kernel's permission checks are the owner's (read and
//! write permissions, the sticky bit, who may chown or chmod what, set-ID bits cleared on
//! write), as with knfsd's `all_squash` to the owner.
//!
//! Linux keeps credentials per thread, and the threads doing the work are tokio's blocking
//! pool, which runs other tasks too: [`AsOwner`] switches the calling thread and switches it
//! back when dropped. `setfsuid`/`setfsgid` act on the calling thread only; glibc's
//! `setgroups` changes every thread of the process (its `setxid` broadcast), so the groups
//! are set with the raw per-thread system call (`rustix::thread::set_thread_groups`).
//!
//! When the server already runs as the owner (devbox without root), or when the owner is
//! root and the user allowed that share (`--allow-root-share`), there is nothing to switch:
//! [`Owner::mode`] is [`Mode::Same`] and no capability is needed.

#[cfg(target_os = "linux")]
use std::cell::OnceCell;

use nix::unistd::{Gid, Uid};

/// How an export's work takes its owner's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The server's own identity is the owner's (or root serving a root-owned share).
    Same,
    /// The server runs as root: each operation switches the thread to the owner.
    Switch,
}

/// The host user and group owning an export, and how to act as them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub mode: Mode,
}

/// Why a server cannot act as an export's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CannotSwitch {
    pub server_uid: u32,
}

impl Owner {
    /// The owner `uid:gid`, acted as by a server running with effective uid `euid`.
    pub(crate) fn new(uid: u32, gid: u32, euid: u32) -> Result<Owner, CannotSwitch> {
        let mode = if euid == uid {
            Mode::Same
        } else if euid == 0 && cfg!(target_os = "linux") {
            // Per-thread filesystem identities are Linux's (`setfsuid`); on macOS devbox
            // serves shares as the user it runs as, who owns them.
            Mode::Switch
        } else {
            return Err(CannotSwitch { server_uid: euid });
        };
        Ok(Owner { uid, gid, mode })
    }

    /// The owner as seen by this process.
    pub(crate) fn for_this_process(uid: u32, gid: u32) -> Result<Owner, CannotSwitch> {
        Owner::new(uid, gid, nix::unistd::geteuid().as_raw())
    }
}

#[cfg(target_os = "linux")]
thread_local! {
    /// This thread's supplementary groups when it is not acting as an owner (the process's).
    static OWN_GROUPS: OnceCell<Vec<rustix::thread::Gid>> = const { OnceCell::new() };
}

/// The calling thread acting as an export's owner, until dropped.
#[must_use = "the identity is switched back when the guard is dropped"]
pub(crate) struct AsOwner {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    saved: Option<(Uid, Gid)>,
}

impl AsOwner {
    /// Switches the calling thread to `owner` (nothing to do in [`Mode::Same`]).
    pub(crate) fn enter(owner: &Owner) -> std::io::Result<AsOwner> {
        if owner.mode == Mode::Same {
            return Ok(AsOwner { saved: None });
        }
        Self::switch(owner)
    }

    #[cfg(not(target_os = "linux"))]
    fn switch(owner: &Owner) -> std::io::Result<AsOwner> {
        // Never constructed off Linux (see `Owner::new`).
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("cannot act as {}:{} on this platform", owner.uid, owner.gid),
        ))
    }

    #[cfg(target_os = "linux")]
    fn switch(owner: &Owner) -> std::io::Result<AsOwner> {
        // Read once per thread: the process's groups do not change.
        OWN_GROUPS.with(|g| {
            if g.get().is_none() {
                let v: Vec<_> = nix::unistd::getgroups()
                    .map_err(std::io::Error::from)?
                    .into_iter()
                    .map(|g| rustix::thread::Gid::from_raw(g.as_raw()))
                    .collect();
                let _ = g.set(v);
            }
            Ok::<_, std::io::Error>(())
        })?;
        rustix::thread::set_thread_groups(&[])?;
        let gid = nix::unistd::setfsgid(Gid::from_raw(owner.gid));
        let uid = nix::unistd::setfsuid(Uid::from_raw(owner.uid));
        let guard = AsOwner {
            saved: Some((uid, gid)),
        };
        // Both calls return the previous value even when they fail: a second call tells
        // whether the first took effect.
        if nix::unistd::setfsgid(Gid::from_raw(owner.gid)).as_raw() != owner.gid
            || nix::unistd::setfsuid(Uid::from_raw(owner.uid)).as_raw() != owner.uid
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "cannot take the filesystem identity {}:{}",
                    owner.uid, owner.gid
                ),
            ));
        }
        Ok(guard)
    }
}

impl Drop for AsOwner {
    #[cfg(not(target_os = "linux"))]
    fn drop(&mut self) {}

    #[cfg(target_os = "linux")]
    fn drop(&mut self) {
        let Some((uid, gid)) = self.saved else {
            return;
        };
        // The uid first: going back to fsuid 0 restores the file capabilities that leaving
        // it dropped; CAP_SETGID, needed for the groups, was never dropped.
        nix::unistd::setfsuid(uid);
        nix::unistd::setfsgid(gid);
        let restored = OWN_GROUPS
            .with(|g| rustix::thread::set_thread_groups(g.get().map_or(&[][..], Vec::as_slice)))
            .is_ok()
            && nix::unistd::setfsuid(uid) == uid
            && nix::unistd::setfsgid(gid) == gid;
        if !restored {
            // A pool thread left with another identity would run unrelated work as the
            // share's owner (or the next owner's work with this one's groups).
            eprintln!("devbox: cannot restore a thread's filesystem identity; aborting");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Owner::new(1000, 1000, 1000).unwrap().mode, Mode::Same);
        assert_eq!(Owner::new(1000, 1000, 0).unwrap().mode, Mode::Switch);
        assert_eq!(Owner::new(0, 0, 0).unwrap().mode, Mode::Same);
        assert_eq!(
            Owner::new(1000, 1000, 1001),
            Err(CannotSwitch { server_uid: 1001 })
        );
    }

    fn fs_ids() -> (u32, u32, String) {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        // Uid: real effective saved fs
        let uid = field("Uid:")[4].parse().unwrap();
        let gid = field("Gid:")[4].parse().unwrap();
        (uid, gid, field("Groups:")[1..].join(" "))
    }

    /// Needs root (the switch needs CAP_SETUID/CAP_SETGID): skipped with a message otherwise.
    #[test]
    fn the_switch_is_per_thread_and_undone() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED the_switch_is_per_thread_and_undone: needs root");
            return;
        }
        let before = fs_ids();
        let owner = Owner::for_this_process(4321, 5432).unwrap();
        let switched = std::sync::Barrier::new(2);
        let checked = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            // A thread started before the switch (a thread inherits its creator's).
            let other = s.spawn(|| {
                switched.wait();
                let ids = fs_ids();
                checked.wait();
                ids
            });
            let g = AsOwner::enter(&owner).unwrap();
            assert_eq!(fs_ids(), (4321, 5432, String::new()));
            switched.wait();
            checked.wait();
            assert_eq!(
                other.join().unwrap(),
                before,
                "another thread keeps its identity"
            );
            drop(g);
            assert_eq!(fs_ids(), before);
        });
        // The kernel's checks are the owner's: a root-only file cannot be read.
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("root-only");
        std::fs::write(&f, b"secret").unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        {
            let _g = AsOwner::enter(&owner).unwrap();
            let err = std::fs::read(&f).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        }
        assert_eq!(std::fs::read(&f).unwrap(), b"secret");
    }
}
