//! Shares: host directories exported into a machine over NFS, as recorded in `machine.yaml`.
//!
//! What a share may be is decided here, at `create` and again at every read of the spec and
//! every start (the file is the user's to edit, and a guest with a share may have moved
//! things on the host): an absolute, canonical directory that is not devbox's state or
//! cache directory nor inside one, that no other share of the machine contains or lies in,
//! owned by a user other than root unless the user allowed it (`--allow-root-share`), and
//! recorded with its `(st_dev, st_ino)` so that the NFS server can check, when it opens the
//! directory without following symlinks, that it is still the one chosen at create.
//!
//! Why nested shares are refused: through the outer share the guest can replace the inner
//! share's directory (rename it, put a symlink or another directory in its place), and the
//! inner export would serve that at the next start.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hint::Hint;

/// A host directory exported into the machine over NFS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareSpec {
    /// Absolute, canonical host directory.
    pub host_path: PathBuf,
    /// Absolute path where the guest mounts it.
    pub guest_path: String,
    #[serde(default)]
    pub read_only: bool,
    /// The directory's identity at create. `None` in specs written before devbox recorded
    /// it: such a share is refused at start (see [`ShareError::NoIdentity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<DirId>,
    /// The directory is owned by root and the user allowed sharing it anyway
    /// (`--allow-root-share`): the NFS server then acts as root on it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_root: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `(st_dev, st_ino)` of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirId {
    pub dev: u64,
    pub ino: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShareError {
    #[error("invalid --share {text:?}: {why}")]
    Syntax { text: String, why: String },
    #[error("{} is owned by root: the file server would act as root on it", path.display())]
    RootOwned { path: PathBuf },
    #[error("{} is devbox's own {what} directory, or inside it: it is never shared", path.display())]
    InStateDir { path: PathBuf, what: &'static str },
    #[error("the shares {} and {} overlap: one lies inside the other", outer.display(), inner.display())]
    Nested { outer: PathBuf, inner: PathBuf },
    #[error("two shares use the guest path {guest_path}")]
    DuplicateGuestPath { guest_path: String },
    #[error("share {}: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
    #[error(
        "share {} has no recorded directory identity (the machine was created by an older devbox)",
        path.display()
    )]
    NoIdentity { path: PathBuf },
}

impl Hint for ShareError {
    fn hint(&self) -> Option<String> {
        match self {
            ShareError::Syntax { .. } => {
                Some("example: --share /home/me/src:/src (add :ro for read-only)".into())
            }
            ShareError::RootOwned { .. } => Some(
                "share a directory owned by your user, or pass --allow-root-share to `devbox \
                 create` if the guest may act as root on it"
                    .into(),
            ),
            ShareError::InStateDir { .. } => Some(
                "share your project directories; devbox's state (machine keys, disks, specs) and \
                 image cache stay on the host"
                    .into(),
            ),
            ShareError::Nested { .. } => Some(
                "share only the outer directory (the inner one is visible through it), or give \
                 directories that do not contain each other"
                    .into(),
            ),
            ShareError::DuplicateGuestPath { .. } => {
                Some("give every share its own guest path: --share HOST:GUEST".into())
            }
            ShareError::Invalid { .. } | ShareError::NoIdentity { .. } => {
                Some("remove the machine and create it again with its --share options".into())
            }
        }
    }
}

/// Guest paths a share may not cover: the guest's own system and Docker's data.
const RESERVED_GUEST_PATHS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/mnt/data",
    "/proc",
    "/root/.ssh",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/var/lib",
    "/var/lib/docker",
    "/var/log",
    "/var/run",
];

/// devbox's own directories, which no share may be or lie in: `$DEVBOX_HOME` (every
/// machine's keys, disks and spec) and the image cache (kernels and initramfs images every
/// machine boots). Canonical paths, as far as they exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDirs {
    pub home: PathBuf,
    pub cache: PathBuf,
}

impl StateDirs {
    /// Canonicalises both (the part of a path that does not exist yet is kept as given).
    pub fn new(home: &Path, cache: &Path) -> StateDirs {
        StateDirs {
            home: canonical_prefix(home),
            cache: canonical_prefix(cache),
        }
    }

    fn all(&self) -> [(&Path, &'static str); 2] {
        [(&self.home, "state"), (&self.cache, "image cache")]
    }

    /// Every directory a share must hide, for the NFS server.
    pub fn paths(&self) -> Vec<PathBuf> {
        vec![self.home.clone(), self.cache.clone()]
    }

    /// Refuses `path` if it is one of the state directories or inside one.
    pub fn check(&self, path: &Path) -> Result<(), ShareError> {
        for (dir, what) in self.all() {
            if path.starts_with(dir) {
                return Err(ShareError::InStateDir {
                    path: path.to_owned(),
                    what,
                });
            }
        }
        Ok(())
    }
}

/// `path` canonicalised up to its longest existing ancestor, the rest appended.
fn canonical_prefix(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(c) = std::fs::canonicalize(at) {
            let mut out = c;
            out.extend(rest.iter().rev());
            return out;
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return path.to_owned(),
        }
    }
}

/// Parses `HOST_PATH[:GUEST_PATH][:ro]`. The host path must be an existing directory, not
/// devbox's own, owned by someone other than root unless `allow_root`; the guest path
/// defaults to the same path and must not cover the guest's system directories.
pub fn parse_share(
    text: &str,
    allow_root: bool,
    state: &StateDirs,
) -> Result<ShareSpec, ShareError> {
    let err = |why: String| ShareError::Syntax {
        text: text.to_owned(),
        why,
    };
    let mut parts: Vec<&str> = text.split(':').collect();
    let mut read_only = false;
    if parts.len() > 1 && matches!(*parts.last().expect("non-empty"), "ro" | "rw") {
        read_only = parts.pop() == Some("ro");
    }
    let (host, guest) = match parts.as_slice() {
        [h] => (*h, None),
        [h, g] => (*h, Some(*g)),
        _ => return Err(err("expected HOST_PATH[:GUEST_PATH][:ro]".into())),
    };
    share_at(Path::new(host), guest, read_only, allow_root, state).map_err(|e| match e {
        ShareError::Syntax { why, .. } => err(why),
        other => other,
    })
}

/// A share of `host` (resolved to its canonical path) at `guest` (default: the same path),
/// with the directory's identity as it is now (`create --share`, and `devbox edit` for a
/// share added or changed in `machine.yaml`).
pub fn share_at(
    host: &Path,
    guest: Option<&str>,
    read_only: bool,
    allow_root: bool,
    state: &StateDirs,
) -> Result<ShareSpec, ShareError> {
    use std::os::unix::fs::MetadataExt;
    let err = |why: String| ShareError::Syntax {
        text: host.display().to_string(),
        why,
    };
    if !host.is_absolute() {
        return Err(err("the host path must be absolute".into()));
    }
    let host_path = std::fs::canonicalize(host)
        .map_err(|e| err(format!("cannot use host path {}: {e}", host.display())))?;
    // Canonical: no symlink is left, so this is the directory itself.
    let meta = std::fs::symlink_metadata(&host_path)
        .map_err(|e| err(format!("cannot use host path {}: {e}", host.display())))?;
    if !meta.is_dir() {
        return Err(err(format!("{} is not a directory", host_path.display())));
    }
    let guest_path = match guest {
        Some(g) => g.to_owned(),
        None => host_path.to_string_lossy().into_owned(),
    };
    validate_guest_path(&guest_path).map_err(err)?;
    state.check(&host_path)?;
    let root_owned = meta.uid() == 0;
    if root_owned && !allow_root {
        return Err(ShareError::RootOwned { path: host_path });
    }
    Ok(ShareSpec {
        host_path,
        guest_path,
        read_only,
        id: Some(DirId {
            dev: meta.dev(),
            ino: meta.ino(),
        }),
        allow_root: root_owned,
    })
}

fn validate_guest_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err("the guest path must be absolute".into());
    }
    if p.contains("/../")
        || p.ends_with("/..")
        || p.contains("//")
        || p.contains('\t')
        || p.contains('\n')
    {
        return Err("the guest path must be a plain absolute path".into());
    }
    let norm = p.trim_end_matches('/');
    let norm = if norm.is_empty() { "/" } else { norm };
    if RESERVED_GUEST_PATHS.contains(&norm) {
        return Err(format!(
            "{norm} is a system directory of the guest; mount the share elsewhere"
        ));
    }
    Ok(())
}

/// The form a recorded host path must have: absolute, and nothing a symlink-free open could
/// read differently from the string (`.`, `..`, empty components, a trailing `/`).
pub(crate) fn validate_host_path(p: &Path) -> Result<(), ShareError> {
    check_host_path(p).map_err(|why| ShareError::Invalid {
        path: p.to_owned(),
        why,
    })
}

/// A recorded share's guest path (see [`parse_share`]).
pub(crate) fn check_guest_path(share: &ShareSpec) -> Result<(), ShareError> {
    validate_guest_path(&share.guest_path).map_err(|why| ShareError::Invalid {
        path: share.host_path.clone(),
        why,
    })
}

fn check_host_path(p: &Path) -> Result<(), String> {
    let text = p.to_string_lossy();
    if !text.starts_with('/') {
        return Err("the host path must be absolute".into());
    }
    let plain = text == "/"
        || text[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !plain {
        return Err(
            "the host path must be a plain absolute path (no `.`, `..`, empty components or \
             trailing `/`)"
                .into(),
        );
    }
    Ok(())
}

/// Checks a machine's shares as a whole, at create and at every read of the spec: each is
/// well-formed, none is or lies in a state directory (when `state` is given), no two use the
/// same guest path, and no host directory lies in another (or is the same).
pub fn check_shares(shares: &[ShareSpec], state: Option<&StateDirs>) -> Result<(), ShareError> {
    for (i, a) in shares.iter().enumerate() {
        validate_host_path(&a.host_path)?;
        check_guest_path(a)?;
        if let Some(state) = state {
            state.check(&a.host_path)?;
        }
        for b in &shares[..i] {
            if b.guest_path == a.guest_path {
                return Err(ShareError::DuplicateGuestPath {
                    guest_path: a.guest_path.clone(),
                });
            }
            let (outer, inner) = if a.host_path.starts_with(&b.host_path) {
                (b, a)
            } else if b.host_path.starts_with(&a.host_path) {
                (a, b)
            } else {
                continue;
            };
            return Err(ShareError::Nested {
                outer: outer.host_path.clone(),
                inner: inner.host_path.clone(),
            });
        }
    }
    Ok(())
}

/// The MAC address of the guest's NIC on the machine's share link (`net::ShareLink`), by
/// which the guest tells it from its main NIC.
pub fn share_link_mac(machine: &str) -> String {
    super::spec::mac_for(&format!("{machine}/shares"))
}

/// The default share, and why there is none when there is none.
pub struct DefaultShares {
    pub shares: Vec<ShareSpec>,
    pub why_none: Option<String>,
}

/// The default share: the user's home directory at the same path, as docker-machine-nfs did
/// with /Users. Under sudo that is the invoking user's home, not root's.
///
/// No default share as root without `SUDO_USER`: root's home holds devbox's own state when
/// run that way, root's SSH keys and shell startup files, and the file server would act as
/// root there; a share must then be named with `--share`. Never the home of uid 0 (also
/// when `SUDO_USER` is root), and none on hosts where devbox cannot serve shares yet (its
/// NFS server is Linux-only), so that a default machine starts there.
pub fn default_shares(state: &StateDirs) -> DefaultShares {
    let none = |why: String| DefaultShares {
        shares: Vec::new(),
        why_none: Some(why),
    };
    if !cfg!(target_os = "linux") {
        return DefaultShares {
            shares: Vec::new(),
            why_none: None,
        };
    }
    let home = match std::env::var("SUDO_USER") {
        Ok(user) if !user.is_empty() => match passwd_home(&user) {
            Some(h) => h,
            None => return none(format!("no home directory found for SUDO_USER={user}")),
        },
        _ if nix::unistd::geteuid().is_root() => {
            return none(
                "devbox runs as root without SUDO_USER, so there is no user's home to share \
                 (root's own home holds root's keys and startup files); name directories with \
                 --share, or run devbox through sudo from your user"
                    .into(),
            );
        }
        _ => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h),
            None => return none("HOME is not set".into()),
        },
    };
    match share_at(&home, None, false, false, state) {
        Ok(share) => DefaultShares {
            shares: vec![share],
            why_none: None,
        },
        Err(e) => none(format!(
            "the home directory {} cannot be shared: {e}",
            home.display()
        )),
    }
}

/// The home directory of `user` in /etc/passwd.
fn passwd_home(user: &str) -> Option<PathBuf> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[0] == user)
        .map(|f| PathBuf::from(f[5]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_state() -> StateDirs {
        StateDirs::new(
            Path::new("/nonexistent/devbox"),
            Path::new("/nonexistent/cache"),
        )
    }

    fn owned_tempdir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        // A directory owned by root is refused without the flag; give it to a user.
        std::os::unix::fs::chown(d.path(), Some(1000), Some(1000)).unwrap();
        d
    }

    #[test]
    fn shares_parse_and_refuse_system_paths() {
        let d = owned_tempdir();
        let host = d.path().canonicalize().unwrap();
        let h = host.to_str().unwrap();
        let state = no_state();
        let s = parse_share(h, false, &state).unwrap();
        assert_eq!(s.guest_path, h);
        assert!(!s.read_only && !s.allow_root);
        let id = s.id.unwrap();
        assert_eq!(
            (id.dev, id.ino),
            {
                use std::os::unix::fs::MetadataExt;
                let m = std::fs::metadata(&host).unwrap();
                (m.dev(), m.ino())
            },
            "the directory's identity is recorded"
        );
        let s = parse_share(&format!("{h}:/src:ro"), false, &state).unwrap();
        assert_eq!((s.guest_path.as_str(), s.read_only), ("/src", true));
        let s = parse_share(&format!("{h}:ro"), false, &state).unwrap();
        assert!(s.read_only && s.guest_path == h);
        for bad in [
            "relative/dir".to_owned(),
            format!("{h}/missing"),
            format!("{h}:/var/lib/docker"),
            format!("{h}:/"),
            format!("{h}:relative"),
            format!("{h}:/a:/b:ro"),
        ] {
            assert!(parse_share(&bad, false, &state).is_err(), "{bad} accepted");
        }
        let a = parse_share(&format!("{h}:/x"), false, &state).unwrap();
        assert!(check_shares(&[a.clone(), a], None).is_err());
    }

    #[test]
    fn root_owned_directories_need_the_flag() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(d.path(), Some(0), Some(0)).unwrap();
        let h = d.path().to_str().unwrap();
        let err = parse_share(h, false, &no_state()).unwrap_err();
        assert!(matches!(err, ShareError::RootOwned { .. }), "{err}");
        assert!(err.hint().unwrap().contains("--allow-root-share"));
        let s = parse_share(h, true, &no_state()).unwrap();
        assert!(s.allow_root, "the opt-in is recorded");
        // The flag records nothing for a directory that is not root's.
        let d = owned_tempdir();
        let s = parse_share(d.path().to_str().unwrap(), true, &no_state()).unwrap();
        assert!(!s.allow_root);
    }

    #[test]
    fn state_directories_and_what_is_inside_them_are_refused() {
        let d = owned_tempdir();
        let home = d.path().join("home/.devbox");
        let cache = d.path().join("home/.cache/devbox");
        std::fs::create_dir_all(home.join("machines/dev")).unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        for p in [&home, &cache] {
            std::os::unix::fs::chown(p, Some(1000), Some(1000)).unwrap();
        }
        let state = StateDirs::new(&home, &cache);
        for bad in [&home, &home.join("machines/dev"), &cache] {
            let err = parse_share(bad.to_str().unwrap(), true, &state).unwrap_err();
            assert!(matches!(err, ShareError::InStateDir { .. }), "{err}");
        }
        // A share that contains them is allowed: the NFS server hides them.
        assert!(parse_share(d.path().to_str().unwrap(), false, &state).is_ok());
        // Through a symlink: the same directory, refused.
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&home, &link).unwrap();
        assert!(parse_share(link.to_str().unwrap(), true, &state).is_err());
        // Checked again on a spec read with the state directories known.
        let mut s = parse_share(d.path().to_str().unwrap(), false, &state).unwrap();
        s.host_path = home.canonicalize().unwrap();
        assert!(check_shares(&[s], Some(&state)).is_err());
    }

    #[test]
    fn nested_and_malformed_shares_are_refused() {
        let d = owned_tempdir();
        let outer = d.path().canonicalize().unwrap();
        let inner = outer.join("work/data");
        std::fs::create_dir_all(&inner).unwrap();
        std::os::unix::fs::chown(&inner, Some(1000), Some(1000)).unwrap();
        let state = no_state();
        let a = parse_share(&format!("{}:/home", outer.display()), false, &state).unwrap();
        let b = parse_share(&format!("{}:/data", inner.display()), false, &state).unwrap();
        for pair in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
            let err = check_shares(&pair, None).unwrap_err();
            assert_eq!(
                err,
                ShareError::Nested {
                    outer: outer.clone(),
                    inner: inner.clone()
                }
            );
        }
        let same = ShareSpec {
            guest_path: "/other".into(),
            ..a.clone()
        };
        assert!(check_shares(&[a.clone(), same], None).is_err());
        // A sibling whose name extends the other's is not inside it.
        let sibling = outer.join("work/data2");
        std::fs::create_dir_all(&sibling).unwrap();
        std::os::unix::fs::chown(&sibling, Some(1000), Some(1000)).unwrap();
        let c = parse_share(&format!("{}:/data2", sibling.display()), false, &state).unwrap();
        assert!(check_shares(&[b.clone(), c], None).is_ok());
        for bad in ["rel/x", "/a/../b", "/a/./b", "/a//b", "/a/"] {
            let s = ShareSpec {
                host_path: bad.into(),
                ..b.clone()
            };
            assert!(check_shares(&[s], None).is_err(), "{bad} accepted");
        }
        let s = ShareSpec {
            guest_path: "/etc".into(),
            ..b
        };
        assert!(check_shares(&[s], None).is_err());
    }
}
