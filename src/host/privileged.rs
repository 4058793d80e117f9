//! The one narrow door for privileges. After `sudo devbox system install`, the installed
//! binary carries two file capabilities, `cap_net_admin,cap_net_bind_service+ep` (Linux), and
//! nothing else: neither can read or write a file, so no devbox process ever holds the power
//! to act as another user. This file decides who holds them and when:
//!
//! - At start, [`enter`] settles the process for its verb ([`Class`]): for a user (or root
//!   become the sudo user), every verb that needs no privilege clears all its capability
//!   sets (a `start` under sudo keeps the two in the ambient set, to hand them to the
//!   supervisor it spawns); `__supervise`, `routes apply` and `dns install|uninstall` keep
//!   the two in their *permitted* set only, never effective; `system *` needs root.
//! - Inside the door, [`with_net_admin`] and [`with_bind_service`] raise one capability in the
//!   calling thread's effective set around one call (TAP creation, netlink routes, a bind
//!   below 1024) and lower it right after; [`output_with_net_admin`] hands CAP_NET_ADMIN to
//!   one child (`resolvectl`, `nft`) through the ambient set, and takes it back. Capability
//!   sets are per thread: threads started outside the door (the NFS, DNS, SSH and watcher
//!   threads) never have an effective capability, and nothing long-lived may be started
//!   inside it.
//! - `sudo devbox VERB` by mistake ([`Invoker::Sudo`]): the process becomes the invoking user
//!   (their uid, gid, groups and home), keeping only the two capabilities, so state stays
//!   under the user's `~/.devbox` and every file is theirs. Root without `SUDO_USER` is a
//!   genuine root user and keeps root's powers, for every verb.
//!
//! What the door may act on is decided elsewhere: the lease registry (`crate::net::lease`)
//! and the applier's checks (`super::leases`, `HostPlan::check_allowed`). Platform code:
//! `sys/linux.rs` (capctl); macOS has no capabilities (`sys/macos.rs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use super::sys;
use crate::hint::Hint;

/// What a verb needs from the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// No privilege at all: every capability set is cleared at start (a genuine root user
    /// keeps root's, see `sys::settle`).
    Plain,
    /// `start`/`restart`: no privilege itself; under sudo it keeps the two capabilities in
    /// its ambient set only, so that the supervisor it spawns has them.
    Spawner,
    /// `__supervise`, `routes apply`, `dns install|uninstall`: the two capabilities stay in
    /// the permitted set, raised only inside the door.
    Net,
    /// `system install|uninstall`: root.
    Root,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("`devbox {command}` changes the host's system files and needs root")]
    NeedsRoot { command: String },
    #[error("cannot act as the user who ran sudo (SUDO_USER={user:?}, SUDO_UID={uid:?}): {why}")]
    Sudo {
        user: String,
        uid: String,
        why: String,
    },
    #[error("cannot {what}")]
    Os {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Hint for PrivilegeError {
    fn hint(&self) -> Option<String> {
        match self {
            PrivilegeError::NeedsRoot { command } => Some(format!("run `sudo devbox {command}`")),
            PrivilegeError::Sudo { .. } => Some(
                "run devbox as yourself, without sudo: after `sudo devbox system install` \
                 every command works as your user"
                    .into(),
            ),
            PrivilegeError::Os { .. } => None,
        }
    }
}

/// The user who ran `sudo devbox …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SudoUser {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
}

/// Who runs this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invoker {
    /// An ordinary user (real uid not 0).
    User,
    /// Root, as itself (no `SUDO_USER`, or sudo from root).
    Root,
    /// Root through sudo, from this user.
    Sudo(SudoUser),
}

/// One passwd entry, as [`Invoker::from_parts`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub name: String,
    pub home: PathBuf,
}

impl Invoker {
    /// This process's invoker, from its real uid and `SUDO_USER`/`SUDO_UID`/`SUDO_GID`.
    pub fn detect() -> Result<Invoker, PrivilegeError> {
        let var = |k: &str| std::env::var(k).ok();
        Invoker::from_parts(
            nix::unistd::getuid().as_raw(),
            var("SUDO_USER"),
            var("SUDO_UID"),
            var("SUDO_GID"),
            |uid| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| Passwd {
                        name: u.name,
                        home: u.dir,
                    })
            },
        )
    }

    /// Pure: the invoker for real uid `uid` and sudo's variables, with `lookup` reading the
    /// passwd database. Under sudo the name must be that of the uid, and its home a directory
    /// path; anything else is refused rather than guessed.
    pub fn from_parts(
        uid: u32,
        sudo_user: Option<String>,
        sudo_uid: Option<String>,
        sudo_gid: Option<String>,
        lookup: impl Fn(u32) -> Option<Passwd>,
    ) -> Result<Invoker, PrivilegeError> {
        if uid != 0 {
            return Ok(Invoker::User);
        }
        let (Some(user), Some(suid)) = (sudo_user, sudo_uid) else {
            return Ok(Invoker::Root);
        };
        let refuse = |why: String| PrivilegeError::Sudo {
            user: user.clone(),
            uid: suid.clone(),
            why,
        };
        let parsed_uid: u32 = suid
            .parse()
            .map_err(|_| refuse("SUDO_UID is not a number".into()))?;
        if parsed_uid == 0 {
            // sudo from root: root as itself.
            return Ok(Invoker::Root);
        }
        let gid: u32 = sudo_gid
            .as_deref()
            .ok_or_else(|| refuse("SUDO_GID is not set".into()))?
            .parse()
            .map_err(|_| refuse("SUDO_GID is not a number".into()))?;
        let pw = lookup(parsed_uid).ok_or_else(|| refuse("no such user".into()))?;
        if pw.name != user {
            return Err(refuse(format!("uid {parsed_uid} is {:?}", pw.name)));
        }
        if !pw.home.is_absolute() {
            return Err(refuse(format!(
                "the home directory {:?} is not an absolute path",
                pw.home
            )));
        }
        Ok(Invoker::Sudo(SudoUser {
            uid: parsed_uid,
            gid,
            name: user,
            home: pw.home,
        }))
    }
}

/// What [`enter`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    pub invoker: Invoker,
    /// The process now runs as the sudo user.
    pub switched: bool,
}

/// Settles this process for a verb of `class` (`command` names it in errors): the sudo
/// switch where it applies, then the capability sets the class allows. Call it first, while
/// the process has one thread.
pub fn enter(class: Class, command: &str) -> Result<Entered, PrivilegeError> {
    let invoker = Invoker::detect()?;
    if class == Class::Root {
        if !nix::unistd::geteuid().is_root() {
            return Err(PrivilegeError::NeedsRoot {
                command: command.to_owned(),
            });
        }
        return Ok(Entered {
            invoker,
            switched: false,
        });
    }
    let switched = match &invoker {
        Invoker::Sudo(user) => {
            if !user.home.is_dir() {
                return Err(PrivilegeError::Sudo {
                    user: user.name.clone(),
                    uid: user.uid.to_string(),
                    why: format!("the home directory {} does not exist", user.home.display()),
                });
            }
            sys::become_user(user)?;
            true
        }
        Invoker::User | Invoker::Root => false,
    };
    sys::settle(class, switched)?;
    Ok(Entered { invoker, switched })
}

/// Runs `f` with CAP_NET_ADMIN in the calling thread's effective set (when the process holds
/// it at all), lowered again when `f` returns. A thread `f` starts inherits it: start only
/// short-lived ones (the netlink requests' own threads).
pub fn with_net_admin<T>(f: impl FnOnce() -> T) -> T {
    sys::with_effective(sys::Privilege::NetAdmin, f)
}

/// Runs `f` with CAP_NET_BIND_SERVICE effective in the calling thread (a bind below 1024).
pub fn with_bind_service<T>(f: impl FnOnce() -> T) -> T {
    sys::with_effective(sys::Privilege::BindService, f)
}

/// Runs `cmd` to completion with CAP_NET_ADMIN handed to it through the ambient set (for
/// `resolvectl` and `nft`, which have no file capabilities of their own); the calling thread
/// takes it back from its own sets right after the spawn.
pub fn output_with_net_admin(cmd: &mut Command) -> std::io::Result<Output> {
    spawn_with_net_admin(cmd)?.wait_with_output()
}

/// Starts `cmd` with CAP_NET_ADMIN handed to it as [`output_with_net_admin`] does, for a
/// caller that writes to its stdin (`nft -f -`).
pub fn spawn_with_net_admin(cmd: &mut Command) -> std::io::Result<Child> {
    sys::with_ambient_net_admin(|| cmd.spawn())
}

/// Whether a supervisor spawned from `exe` by this process will hold the capabilities a TAP
/// machine needs: root, the two in this process's ambient set (a `start` under sudo), or the
/// two as file capabilities on `exe`. `Err` says what is missing.
pub fn supervisor_will_have_net_privileges(exe: &Path) -> Result<(), String> {
    sys::supervisor_will_have_net_privileges(exe)
}

/// The groups `user` (primary group `gid`) gets at login, from the group database.
pub fn groups_of(user: &str, gid: u32) -> Vec<u32> {
    sys::groups_of(user, gid)
}

/// The file capabilities `system install` puts on the installed binary, as setcap(8) writes
/// them.
pub const INSTALLED_CAPS: &str = "cap_net_admin,cap_net_bind_service+ep";

/// Puts [`INSTALLED_CAPS`] on `path` (replacing any it had). Root.
pub fn set_installed_caps(path: &Path) -> std::io::Result<()> {
    sys::set_file_caps(path)
}

/// Whether `path` carries exactly [`INSTALLED_CAPS`].
pub fn has_installed_caps(path: &Path) -> std::io::Result<bool> {
    sys::has_file_caps(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(uid: u32) -> Option<Passwd> {
        (uid == 1000).then(|| Passwd {
            name: "alice".into(),
            home: "/home/alice".into(),
        })
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn who_runs_devbox() {
        let from = |uid, u: Option<String>, id: Option<String>, g: Option<String>| {
            Invoker::from_parts(uid, u, id, g, lookup)
        };
        assert_eq!(from(1000, s("x"), s("1"), s("1")).unwrap(), Invoker::User);
        assert_eq!(from(0, None, None, None).unwrap(), Invoker::Root);
        assert_eq!(
            from(0, s("root"), s("0"), s("0")).unwrap(),
            Invoker::Root,
            "sudo from root is root"
        );
        assert_eq!(
            from(0, s("alice"), s("1000"), s("1000")).unwrap(),
            Invoker::Sudo(SudoUser {
                uid: 1000,
                gid: 1000,
                name: "alice".into(),
                home: "/home/alice".into(),
            })
        );
    }

    #[test]
    fn sudo_variables_that_do_not_agree_are_refused() {
        for (user, uid, gid, why) in [
            ("bob", "1000", "1000", "uid 1000 is \"alice\""),
            ("alice", "x", "1000", "SUDO_UID is not a number"),
            ("alice", "1000", "", "SUDO_GID is not a number"),
            ("carol", "1001", "1001", "no such user"),
        ] {
            let e = Invoker::from_parts(0, s(user), s(uid), s(gid), lookup).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
            assert!(e.hint().unwrap().contains("without sudo"));
        }
        let e = Invoker::from_parts(0, s("alice"), s("1000"), None, lookup).unwrap_err();
        assert!(e.to_string().contains("SUDO_GID is not set"), "{e}");
    }

    #[test]
    fn root_verbs_name_the_sudo_command() {
        let e = PrivilegeError::NeedsRoot {
            command: "system install".into(),
        };
        assert_eq!(
            e.to_string(),
            "`devbox system install` changes the host's system files and needs root"
        );
        assert_eq!(e.hint().unwrap(), "run `sudo devbox system install`");
    }
}
