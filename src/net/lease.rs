//! The host-wide lease registry: which user holds which host-only index (and so which `dbxN`
//! link, which /24 and which Docker subnets). Machines of every user on the host allocate from
//! it, so two users never both get `dbx0` or `192.168.64.0/24`, and the privileged side
//! (`crate::host`) acts only on the indexes whose lease the caller's real uid owns.
//!
//! Layout, created by `sudo devbox system install` (or on demand when devbox runs as root):
//! - `/var/lib/devbox/` (root, 0755);
//! - `/var/lib/devbox/leases/` (root, 1777 with the sticky bit, like `/tmp`): one file per
//!   index, `<index>`, created with `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0644, owned by the user
//!   who took it; the sticky bit means only that user (or root) can remove it;
//! - `/var/lib/devbox/host.lock` (root, 0644): an exclusive `flock` on it (a read-only
//!   descriptor is enough) serialises allocation across users.
//!
//! **The owner is the root of trust.** It is read with `fstat` on the opened file, never from
//! the contents. The contents ([`LeaseInfo`]: uid, user, machine, its directory, its Docker
//! subnets) are the owner's to write, so they are only ever used to *exclude* (another lease's
//! subnets are not handed out again, a lease whose machine directory is gone can be reclaimed
//! by its owner), never to grant anything.
//!
//! Threads: none.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{Ipv4Net, POOL_SIZE};
use crate::hint::Hint;

/// Where the registry lives on every host.
pub const REGISTRY_DIR: &str = "/var/lib/devbox";
/// For root only (tests): another registry directory. Ignored when the real uid is not 0, so
/// a user's environment can never point the privileged side elsewhere.
pub const REGISTRY_ENV: &str = "DEVBOX_REGISTRY";
const LEASES: &str = "leases";
const HOST_LOCK: &str = "host.lock";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("devbox is not set up on this host: {} does not exist", path.display())]
    NotInstalled { path: PathBuf },
    #[error("refused to use {} as devbox's lease registry: {why}", path.display())]
    Unsafe { path: PathBuf, why: String },
    #[error(
        "the network of host-only index {index} (dbx{index}) is not leased to you (uid {uid}): {why}"
    )]
    NotYours { index: u8, uid: u32, why: String },
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Hint for LeaseError {
    fn hint(&self) -> Option<String> {
        match self {
            LeaseError::NotInstalled { .. } => Some(
                "set devbox up once with `sudo devbox system install`: it creates the \
                 registry and installs devbox with the privileges machines need"
                    .into(),
            ),
            LeaseError::NotYours { .. } => Some(
                "a machine's network is leased to the user who created it; recreate the \
                 machine (`devbox rm NAME`, then `devbox create NAME`)"
                    .into(),
            ),
            LeaseError::Unsafe { .. } => Some(
                "`sudo devbox system install` creates the registry with the right owner and modes"
                    .into(),
            ),
            LeaseError::Io { .. } => None,
        }
    }
}

/// What a lease says about its machine: written by its owner, used only to exclude.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub uid: u32,
    pub user: String,
    pub machine: String,
    /// The machine's directory, `$DEVBOX_HOME/machines/<name>`, absolute.
    pub dir: PathBuf,
    /// The Docker subnets routed to the machine (bridge and pool).
    pub docker: Vec<Ipv4Net>,
}

/// One lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub index: u8,
    /// Its owner, from `fstat`.
    pub owner: u32,
    /// Its contents; `None` when they are not a valid [`LeaseInfo`] (the index stays taken).
    pub info: Option<LeaseInfo>,
}

impl Lease {
    /// The Docker subnets this lease claims (none when its contents are unreadable).
    pub fn docker(&self) -> &[Ipv4Net] {
        self.info.as_ref().map_or(&[], |i| i.docker.as_slice())
    }
}

/// The exclusive host-wide allocation lock, held until dropped.
pub struct HostLock {
    _lock: Flock<std::fs::File>,
}

/// The registry directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    dir: PathBuf,
}

/// The real uid of this process (who the privileged side acts for).
pub fn real_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

impl Registry {
    /// This host's registry: [`REGISTRY_DIR`], or `$DEVBOX_REGISTRY` when the real uid is 0.
    pub fn system() -> Registry {
        match std::env::var_os(REGISTRY_ENV) {
            Some(d) if real_uid() == 0 && !d.is_empty() => Registry::at(d),
            _ => Registry::at(REGISTRY_DIR),
        }
    }

    pub fn at(dir: impl Into<PathBuf>) -> Registry {
        Registry { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn leases_dir(&self) -> PathBuf {
        self.dir.join(LEASES)
    }

    pub fn host_lock_path(&self) -> PathBuf {
        self.dir.join(HOST_LOCK)
    }

    fn lease_path(&self, index: u8) -> PathBuf {
        self.leases_dir().join(index.to_string())
    }

    /// Checks that the registry exists and that only root can change its directories (the
    /// leases directory is sticky and open to all, like `/tmp`). A symlink anywhere here is
    /// refused.
    pub fn check(&self) -> Result<(), LeaseError> {
        let unsafe_ = |path: &Path, why: String| LeaseError::Unsafe {
            path: path.to_owned(),
            why,
        };
        let meta = |path: &Path| match std::fs::symlink_metadata(path) {
            Ok(m) => Ok(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LeaseError::NotInstalled {
                path: path.to_owned(),
            }),
            Err(source) => Err(LeaseError::Io {
                what: "inspect",
                path: path.to_owned(),
                source,
            }),
        };
        let dir = meta(&self.dir)?;
        if !dir.is_dir() || dir.uid() != 0 || dir.mode() & 0o022 != 0 {
            return Err(unsafe_(
                &self.dir,
                "it must be a directory owned by root and writable by root only".into(),
            ));
        }
        let leases = self.leases_dir();
        let l = meta(&leases)?;
        if !l.is_dir() || l.uid() != 0 || l.mode() & 0o1000 == 0 {
            return Err(unsafe_(
                &leases,
                "it must be a directory owned by root with the sticky bit (mode 1777)".into(),
            ));
        }
        let lock = self.host_lock_path();
        let k = meta(&lock)?;
        if !k.is_file() || k.uid() != 0 {
            return Err(unsafe_(&lock, "it must be a file owned by root".into()));
        }
        Ok(())
    }

    /// [`Registry::check`]; when the registry is missing and the real uid is 0 (devbox run as
    /// root, without `system install`), creates it first.
    pub fn ensure(&self) -> Result<(), LeaseError> {
        match self.check() {
            Err(LeaseError::NotInstalled { .. }) if real_uid() == 0 => {
                self.create()?;
                self.check()
            }
            other => other,
        }
    }

    /// Creates the directories and the lock file with their modes (root). Idempotent.
    pub fn create(&self) -> Result<(), LeaseError> {
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| LeaseError::Io { what, path, source }
        };
        for (dir, mode) in [(self.dir.clone(), 0o755), (self.leases_dir(), 0o1777)] {
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("create", &dir)(e)),
            }
            // chmod, not the mkdir mode: the umask would take the sticky and world bits away.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                .map_err(io("set the mode of", &dir))?;
        }
        let lock = self.host_lock_path();
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&lock)
            .map_err(io("create", &lock))?;
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644))
            .map_err(io("set the mode of", &lock))
    }

    /// Takes the host-wide allocation lock (waits for it).
    pub fn lock(&self) -> Result<HostLock, LeaseError> {
        let path = self.host_lock_path();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| LeaseError::Io {
                what: "open",
                path: path.clone(),
                source,
            })?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| LeaseError::Io {
            what: "lock",
            path,
            source: e.into(),
        })?;
        Ok(HostLock { _lock: lock })
    }

    /// Every lease, by index. Entries that are not an index of the pool are ignored; one that
    /// cannot be opened as a regular file (a symlink, a directory) still takes its index.
    pub fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let dir = self.leases_dir();
        let entries = std::fs::read_dir(&dir).map_err(|source| LeaseError::Io {
            what: "list",
            path: dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(index) = entry.file_name().to_str().and_then(parse_index) else {
                continue;
            };
            match self.open(index)? {
                Some(lease) => out.push(lease),
                None => continue,
            }
        }
        out.sort_by_key(|l| l.index);
        Ok(out)
    }

    /// Opens lease `index` without following a symlink, owner from `fstat`. `None` when there
    /// is no such file. Anything but a regular file counts as a lease of its owner with no
    /// contents.
    fn open(&self, index: u8) -> Result<Option<Lease>, LeaseError> {
        let path = self.lease_path(index);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path);
        let file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(_) => {
                // A symlink (ELOOP) or something else we cannot open: the index is taken by
                // whoever made it.
                return match std::fs::symlink_metadata(&path) {
                    Ok(m) => Ok(Some(Lease {
                        index,
                        owner: m.uid(),
                        info: None,
                    })),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(LeaseError::Io {
                        what: "inspect",
                        path,
                        source,
                    }),
                };
            }
        };
        let meta = file.metadata().map_err(|source| LeaseError::Io {
            what: "inspect",
            path: path.clone(),
            source,
        })?;
        let info = if meta.is_file() && meta.len() <= 64 * 1024 {
            std::io::read_to_string(&file)
                .ok()
                .and_then(|t| serde_json::from_str::<LeaseInfo>(&t).ok())
        } else {
            None
        };
        Ok(Some(Lease {
            index,
            owner: meta.uid(),
            info,
        }))
    }

    /// Creates lease `index` for the caller (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0644). `false`
    /// when the index is taken already.
    pub fn take(&self, index: u8, info: &LeaseInfo) -> Result<bool, LeaseError> {
        let path = self.lease_path(index);
        let io = |what, source| LeaseError::Io {
            what,
            path: path.clone(),
            source,
        };
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io("create", e)),
        };
        let mut text = serde_json::to_string_pretty(info).expect("plain data serialises");
        text.push('\n');
        // 0644 whatever the umask: other users' allocations read it to exclude its subnets.
        let written = file
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(io("write", e));
        }
        Ok(true)
    }

    /// Removes lease `index` if the caller's real uid owns it (absent is fine).
    pub fn release(&self, index: u8) -> Result<(), LeaseError> {
        match self.open(index)? {
            Some(l) if l.owner == real_uid() => {
                let path = self.lease_path(index);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(LeaseError::Io {
                        what: "remove",
                        path,
                        source,
                    }),
                }
            }
            _ => Ok(()),
        }
    }

    /// The privileged side's check: lease `index` exists as a regular file owned by the
    /// caller's real uid. Returns it (its contents may be `None`).
    pub fn owned(&self, index: u8) -> Result<Lease, LeaseError> {
        self.check()?;
        let uid = real_uid();
        let not_yours = |why: String| LeaseError::NotYours { index, uid, why };
        if index >= POOL_SIZE {
            return Err(not_yours(format!(
                "it is outside the pool (0 to {})",
                POOL_SIZE - 1
            )));
        }
        match self.open(index)? {
            None => Err(not_yours("nobody holds its lease".into())),
            Some(l) if l.owner != uid => {
                Err(not_yours(format!("its lease belongs to uid {}", l.owner)))
            }
            Some(l) => Ok(l),
        }
    }
}

/// `"12"` → 12; anything but the canonical decimal form of a pool index is `None`.
fn parse_index(name: &str) -> Option<u8> {
    if name.is_empty() || (name.len() > 1 && name.starts_with('0')) {
        return None;
    }
    if !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse::<u8>().ok().filter(|i| *i < POOL_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(machine: &str, docker: &[&str]) -> LeaseInfo {
        LeaseInfo {
            uid: real_uid(),
            user: "me".into(),
            machine: machine.into(),
            dir: PathBuf::from("/nonexistent/machines").join(machine),
            docker: docker.iter().map(|d| d.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn index_names_are_canonical() {
        assert_eq!(parse_index("0"), Some(0));
        assert_eq!(parse_index("63"), Some(63));
        for bad in ["", "00", "01", "64", "-1", "1a", " 1", "300"] {
            assert_eq!(parse_index(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn take_is_exclusive_and_release_removes_only_ones_own() {
        let d = tempfile::tempdir().unwrap();
        let reg = Registry::at(d.path().join("reg"));
        assert!(matches!(reg.check(), Err(LeaseError::NotInstalled { .. })));
        reg.create().unwrap();
        reg.create().unwrap();
        let mode = std::fs::metadata(reg.leases_dir()).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o1777);
        if real_uid() == 0 {
            reg.check().unwrap();
        }
        assert!(reg.take(3, &info("a", &["172.18.0.0/16"])).unwrap());
        assert!(!reg.take(3, &info("b", &[])).unwrap(), "O_EXCL");
        let mode = std::fs::metadata(reg.lease_path(3)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // Junk in the directory is ignored, a symlink takes its index.
        std::fs::write(reg.leases_dir().join("junk"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", reg.leases_dir().join("5")).unwrap();
        std::fs::write(reg.leases_dir().join("7"), "not json").unwrap();
        let all = reg.list().unwrap();
        assert_eq!(all.iter().map(|l| l.index).collect::<Vec<_>>(), [3, 5, 7]);
        assert_eq!(all[0].info.as_ref().unwrap().machine, "a");
        assert_eq!(all[0].docker().len(), 1);
        assert_eq!(all[1].info, None, "a symlink is never followed");
        assert_eq!(all[2].info, None);
        if real_uid() == 0 {
            reg.owned(3).unwrap();
            let err = reg.owned(4).unwrap_err();
            assert!(err.to_string().contains("nobody holds"), "{err}");
        }
        reg.release(3).unwrap();
        reg.release(3).unwrap();
        assert!(!reg.lease_path(3).exists());
    }

    #[test]
    fn a_registry_writable_by_others_is_refused() {
        if real_uid() != 0 {
            eprintln!("not run: needs root to create a root-owned registry");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let reg = Registry::at(d.path().join("reg"));
        reg.create().unwrap();
        reg.check().unwrap();
        std::fs::set_permissions(reg.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(reg.check(), Err(LeaseError::Unsafe { .. })));
        std::fs::set_permissions(reg.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(reg.leases_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(reg.check(), Err(LeaseError::Unsafe { .. })));
    }

    #[test]
    fn a_lease_of_another_uid_is_not_yours() {
        if real_uid() != 0 {
            eprintln!("not run: needs root to chown a lease to another uid");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let reg = Registry::at(d.path().join("reg"));
        reg.create().unwrap();
        assert!(reg.take(9, &info("theirs", &[])).unwrap());
        nix::unistd::chown(
            &reg.lease_path(9),
            Some(nix::unistd::Uid::from_raw(4242)),
            None,
        )
        .unwrap();
        let err = reg.owned(9).unwrap_err();
        assert!(err.to_string().contains("belongs to uid 4242"), "{err}");
        assert!(err.hint().unwrap().contains("recreate"));
        // Not ours: release leaves it.
        reg.release(9).unwrap();
        assert!(reg.lease_path(9).exists());
    }
}
