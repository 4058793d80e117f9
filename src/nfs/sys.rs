//! The two ways the server reaches host objects, behind one interface.
//!
//! - [`FsPath::Native`] (Linux): directories are walked and acted in through `O_PATH`
//!   descriptors (search permission is enough, as for the kernel's own lookups), attributes
//!   are changed through an `O_PATH` descriptor of the object itself (so the change lands on
//!   exactly the object whose identity was checked), READDIR cookies are the directory's own
//!   `d_off`, and DATA_SYNC writes use `fdatasync`.
//! - [`FsPath::Portable`] (every Unix; macOS's only one): directories are opened with
//!   `O_RDONLY | O_DIRECTORY | O_NOFOLLOW` one component at a time, attributes are changed by
//!   name in the parent directory with `AT_SYMLINK_NOFOLLOW` after the name was checked to
//!   still hold the object (`fchownat`, `fchmodat`, `utimensat`), READDIR cookies are
//!   positions in the listing, and DATA_SYNC is a full `fsync`.
//!
//! Confinement is the same in both: a symlink is never followed on the host and no path
//! string is built. What differs, and why it is acceptable:
//! - a directory its owner may search but not list (mode 0311) cannot be walked through on
//!   the portable path (opening it needs read permission);
//! - between the name check and a by-name attribute change, the name may be made to hold
//!   another object of the same export (never one outside it: nothing is followed): the
//!   guest could change that object's attributes anyway;
//! - a position cookie shifts when entries are added or removed between two READDIR calls
//!   of one listing: an entry may be listed twice or missed in that listing (the Linux
//!   client lists again on the next lookup miss); `d_off` cookies do not shift on
//!   ext4/xfs/btrfs/tmpfs, which is why Linux keeps them.
//!
//! On Linux the portable path is used only when a test asks for it (`NfsConfig::fs_path`),
//! so every CI run proves the confinement of the path macOS hosts run.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::fs::{AtFlags, Dir, Gid, Mode, OFlags, Timestamps, Uid};

use super::handle::{NfsResult, Status};

/// How the server reaches host objects (see the module docs); the default is the
/// platform's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsPath {
    #[cfg(target_os = "linux")]
    #[default]
    Native,
    #[cfg_attr(not(target_os = "linux"), default)]
    Portable,
}

impl FsPath {
    /// How directories are opened to walk through them or to act in them with `*at` calls.
    pub(crate) fn dir_flags(self) -> OFlags {
        let base = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match self {
            #[cfg(target_os = "linux")]
            FsPath::Native => base | OFlags::PATH,
            FsPath::Portable => base | OFlags::RDONLY,
        }
    }

    /// `fdatasync` where the platform has it, else `fsync`.
    pub(crate) fn data_sync(self, fd: &OwnedFd) -> NfsResult<()> {
        match self {
            #[cfg(target_os = "linux")]
            FsPath::Native => rustix::fs::fdatasync(fd)?,
            FsPath::Portable => rustix::fs::fsync(fd)?,
        }
        Ok(())
    }
}

/// An object whose attributes are to change: the directory it is in (`None` name: the
/// object is that directory, the export's root) and its name there.
pub(crate) struct Target<'a> {
    pub dir: &'a OwnedFd,
    pub name: Option<&'a CStr>,
}

/// Attribute changes, applied in this order: owner, mode, times.
pub(crate) struct Change {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// A function of the mode after the owner change (which may clear set-ID bits).
    pub mode: Option<Box<dyn Fn(u32) -> u32>>,
    pub times: Option<Timestamps>,
}

impl FsPath {
    /// Applies `c` to the object `t` names. `check` is called with the object's current
    /// `stat` just before the change and fails it when the name no longer holds the object
    /// the handle named.
    pub(crate) fn set_attrs(
        self,
        t: &Target<'_>,
        c: &Change,
        open_path: impl FnOnce() -> NfsResult<OwnedFd>,
        check: impl Fn(&rustix::fs::Stat) -> NfsResult<()>,
    ) -> NfsResult<()> {
        match self {
            #[cfg(target_os = "linux")]
            FsPath::Native => {
                // The object itself, not opened for reading or writing: its owner may
                // change its attributes whatever its permission bits.
                let fd = open_path()?;
                if c.uid.is_some() || c.gid.is_some() {
                    rustix::fs::chownat(
                        &fd,
                        c"",
                        c.uid.map(Uid::from_raw),
                        c.gid.map(Gid::from_raw),
                        AtFlags::EMPTY_PATH,
                    )?;
                }
                if let Some(mode) = &c.mode {
                    let now = rustix::fs::fstat(&fd)?.st_mode as u32;
                    chmod_path_fd(&fd, mode(now))?;
                }
                if let Some(times) = &c.times {
                    rustix::fs::utimensat(&fd, c"", times, AtFlags::EMPTY_PATH)?;
                }
                Ok(())
            }
            FsPath::Portable => {
                let _ = open_path;
                let Some(name) = t.name else {
                    // The export's root: its directory descriptor is the object.
                    let dir = t.dir;
                    if c.uid.is_some() || c.gid.is_some() {
                        rustix::fs::fchown(
                            dir,
                            c.uid.map(Uid::from_raw),
                            c.gid.map(Gid::from_raw),
                        )?;
                    }
                    if let Some(mode) = &c.mode {
                        #[allow(clippy::unnecessary_cast)]
                        let now = rustix::fs::fstat(dir)?.st_mode as u32;
                        rustix::fs::fchmod(dir, Mode::from_raw_mode(mode(now) as _))?;
                    }
                    if let Some(times) = &c.times {
                        rustix::fs::futimens(dir, times)?;
                    }
                    return Ok(());
                };
                let stat = || rustix::fs::statat(t.dir, name, AtFlags::SYMLINK_NOFOLLOW);
                check(&stat()?)?;
                if c.uid.is_some() || c.gid.is_some() {
                    rustix::fs::chownat(
                        t.dir,
                        name,
                        c.uid.map(Uid::from_raw),
                        c.gid.map(Gid::from_raw),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )?;
                }
                if let Some(mode) = &c.mode {
                    let st = stat()?;
                    check(&st)?;
                    #[allow(clippy::unnecessary_cast)]
                    chmod_nofollow(t.dir, name, mode(st.st_mode as u32))?;
                }
                if let Some(times) = &c.times {
                    rustix::fs::utimensat(t.dir, name, times, AtFlags::SYMLINK_NOFOLLOW)?;
                }
                Ok(())
            }
        }
    }
}

/// `chmod` of the object an `O_PATH` descriptor stands for: through its `/proc/self/fd`
/// link, which names that very object (`fchmod` refuses `O_PATH` descriptors, and
/// `fchmodat` with `AT_EMPTY_PATH` needs Linux 6.6).
#[cfg(target_os = "linux")]
fn chmod_path_fd(fd: &OwnedFd, mode: u32) -> NfsResult<()> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::chmod(link.as_str(), Mode::from_raw_mode(mode as _))?;
    Ok(())
}

/// `fchmodat(dir, name, mode, AT_SYMLINK_NOFOLLOW)`, through libc: rustix's Linux backend
/// refuses the flag outright, while glibc implements it (refusing symlinks, following
/// nothing) and macOS's libSystem has it natively.
fn chmod_nofollow(dir: &OwnedFd, name: &CStr, mode: u32) -> NfsResult<()> {
    // SAFETY: a valid descriptor and a NUL-terminated name that outlive the call.
    let r = unsafe {
        libc::fchmodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(
            rustix::io::Errno::from_io_error(&std::io::Error::last_os_error())
                .map(Status::from)
                .unwrap_or(Status::Io),
        )
    }
}

/// A directory listing resumed after a READDIR cookie; each entry comes with the cookie
/// that resumes after it.
pub(crate) struct Cursor {
    dir: Dir,
    path: FsPath,
    /// Portable path: entries read so far (the cookie of the last one).
    pos: u64,
}

impl Cursor {
    /// Opens `dir` for listing entries after `cookie` (0: from the start).
    pub(crate) fn open(dir: &impl AsFd, cookie: u64, path: FsPath) -> NfsResult<Cursor> {
        let mut entries = Dir::read_from(dir)?;
        match path {
            #[cfg(target_os = "linux")]
            FsPath::Native => {
                if cookie != 0 {
                    let offset = i64::try_from(cookie).map_err(|_| Status::BadCookie)?;
                    entries.seek(offset).map_err(|_| Status::BadCookie)?;
                }
                Ok(Cursor {
                    dir: entries,
                    path,
                    pos: 0,
                })
            }
            FsPath::Portable => {
                let mut pos = 0;
                while pos < cookie {
                    match entries.read() {
                        Some(Ok(_)) => pos += 1,
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err(Status::BadCookie),
                    }
                }
                Ok(Cursor {
                    dir: entries,
                    path,
                    pos,
                })
            }
        }
    }

    /// The next entry and its cookie.
    pub(crate) fn next_entry(&mut self) -> Option<NfsResult<(rustix::fs::DirEntry, u64)>> {
        let entry = match self.dir.read()? {
            Ok(e) => e,
            Err(e) => return Some(Err(e.into())),
        };
        let cookie = match self.path {
            #[cfg(target_os = "linux")]
            FsPath::Native => entry.offset() as u64,
            FsPath::Portable => {
                self.pos += 1;
                self.pos
            }
        };
        Some(Ok((entry, cookie)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_cookies_resume_where_they_left_off() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..50 {
            std::fs::write(dir.path().join(format!("f{i}")), b"").unwrap();
        }
        let fd = rustix::fs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let all: Vec<(Vec<u8>, u64)> = {
            let mut c = Cursor::open(&fd, 0, FsPath::Portable).unwrap();
            std::iter::from_fn(|| c.next_entry())
                .map(|r| r.unwrap())
                .map(|(e, k)| (e.file_name().to_bytes().to_vec(), k))
                .collect()
        };
        assert_eq!(all.len(), 52); // with . and ..
        let (_, cookie) = &all[20];
        let mut c = Cursor::open(&fd, *cookie, FsPath::Portable).unwrap();
        let (next, _) = c.next_entry().unwrap().unwrap();
        assert_eq!(next.file_name().to_bytes(), &all[21].0[..]);
        assert!(matches!(
            Cursor::open(&fd, 53, FsPath::Portable),
            Err(Status::BadCookie)
        ));
    }

    #[test]
    fn portable_chmod_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::set_permissions(
            outside.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("l")).unwrap();
        let fd = rustix::fs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        // Linux refuses a symlink's mode; macOS changes the link's own: either way the
        // file it points to keeps its mode.
        let _ = chmod_nofollow(&fd, c"l", 0o666);
        let mode = std::fs::metadata(outside.path()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
