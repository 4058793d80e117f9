//! The NFS operations on one export, on top of the confined resolution of `fs.rs`.
//!
//! Every operation runs with the share owner's filesystem identity (`identity.rs`, taken by
//! `nfs3.rs` for the whole procedure), so the kernel decides what is allowed as it would for
//! the owner. Every mutation first checks [`ExportFs::writable`] (NFS3ERR_ROFS on read-only
//! exports). Objects are opened with `O_NOFOLLOW` and re-checked by `fstat` ([`Loc::open`]);
//! attributes are changed through an `O_PATH` descriptor of the object itself, so symlinks,
//! sockets and devices are never opened or followed. Created objects get the mode the guest
//! asked for (the supervisor's umask does not apply: the guest already applied its own) and
//! belong to the export's owner.
//!
//! Set-user-ID and set-group-ID bits are never set from the guest: CREATE and MKDIR drop them
//! from the mode asked for, and SETATTR keeps only those the object already has (so `chmod`
//! can clear them, or keep the host's, never add one). The guest's root is the share's owner,
//! and a set-ID file made through the share would run with that identity for whoever starts
//! it on the host.

use std::ffi::CString;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid};

use super::attr::{Attr, Sattr, SetTime};
use super::fs::{ExportFs, Loc, check_name, key_of, kind_of, mode_of};
use super::handle::{Kind, NfsResult, Status};
use super::rpc::MAX_IO;
use super::sys::{Change, Target};

/// `createhow3`.
pub(crate) enum CreateHow {
    Unchecked(Sattr),
    Guarded(Sattr),
    Exclusive([u8; 8]),
}

/// `stable_how` of WRITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stable {
    Unstable = 0,
    DataSync = 1,
    FileSync = 2,
}

fn ts(t: SetTime) -> Timespec {
    match t {
        SetTime::Keep => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        SetTime::ServerNow => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        SetTime::Client(sec, nsec) => Timespec {
            tv_sec: sec.into(),
            tv_nsec: (nsec % 1_000_000_000).into(),
        },
    }
}

/// The times an EXCLUSIVE create stores its verifier in (as Linux nfsd does), so that a
/// retransmitted CREATE can be recognised.
fn verf_times(verf: [u8; 8]) -> (u32, u32) {
    let sec = u32::from_be_bytes([verf[0], verf[1], verf[2], verf[3]]);
    let nsec = u32::from_be_bytes([verf[4], verf[5], verf[6], verf[7]]) % 1_000_000_000;
    (sec, nsec)
}

impl ExportFs {
    pub(crate) fn writable(&self) -> NfsResult<()> {
        if self.read_only {
            Err(Status::Rofs)
        } else {
            Ok(())
        }
    }

    /// Fresh attributes of a resolved object.
    pub(crate) fn restat(&self, loc: &Loc) -> NfsResult<Stat> {
        let st = match &loc.name {
            Some(name) => rustix::fs::statat(&loc.dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?,
            None => rustix::fs::fstat(&loc.dir)?,
        };
        if key_of(&st) != loc.key() {
            return Err(Status::Stale);
        }
        Ok(st)
    }

    pub(crate) fn attr_now(&self, loc: &Loc) -> Option<Attr> {
        self.restat(loc).ok().map(|st| self.attr(&st))
    }

    pub(crate) fn setattr(
        &self,
        loc: &Loc,
        s: &Sattr,
        guard: Option<(u32, u32)>,
    ) -> NfsResult<Attr> {
        self.writable()?;
        self.note_object(loc.key());
        if let Some(ctime) = guard
            && self.attr(&self.restat(loc)?).ctime != ctime
        {
            return Err(Status::NotSync);
        }
        self.apply(loc, s)?;
        Ok(self.attr(&self.restat(loc)?))
    }

    fn apply(&self, loc: &Loc, s: &Sattr) -> NfsResult<()> {
        if s.is_empty() {
            return Ok(());
        }
        let uid = s.uid.map(|u| self.host_uid(u)).transpose()?;
        let gid = s.gid.map(|g| self.host_gid(g)).transpose()?;
        // What cannot be done is refused before anything is changed.
        let plain = matches!(loc.kind(), Kind::Reg | Kind::Dir | Kind::Fifo);
        if s.mode.is_some() && !plain {
            // Modes of symlinks, sockets and devices: not set through the share.
            return Err(Status::NotSupp);
        }
        if s.size.is_some() && loc.kind() != Kind::Reg {
            return Err(if plain {
                Status::Inval
            } else {
                Status::NotSupp
            });
        }
        if let Some(size) = s.size {
            let fd = loc.open(OFlags::WRONLY)?;
            rustix::fs::ftruncate(&fd, size)?;
        }
        let times = Timestamps {
            last_access: ts(s.atime),
            last_modification: ts(s.mtime),
        };
        let set_times = s.atime != SetTime::Keep || s.mtime != SetTime::Keep;
        if uid.is_none() && gid.is_none() && s.mode.is_none() && !set_times {
            return Ok(());
        }
        let key = loc.key();
        self.path.set_attrs(
            &Target {
                dir: &loc.dir,
                name: loc.name.as_deref(),
            },
            &Change {
                uid,
                gid,
                // After the chown, which may have cleared set-ID bits.
                mode: s.mode.map(|mode| {
                    Box::new(move |now: u32| (mode & 0o1777) | (mode & now & 0o6000)) as _
                }),
                times: set_times.then_some(times),
            },
            #[cfg(target_os = "linux")]
            || loc.open_path(),
            #[cfg(not(target_os = "linux"))]
            || Err(Status::NotSupp),
            |st| {
                if key_of(st) == key {
                    Ok(())
                } else {
                    Err(Status::Stale)
                }
            },
        )
    }

    /// Gives a newly created object to the export's owner.
    fn own(&self, fd: &OwnedFd) -> NfsResult<()> {
        let st = rustix::fs::fstat(fd)?;
        if st.st_uid != self.owner.uid || st.st_gid != self.owner.gid {
            rustix::fs::fchown(
                fd,
                Some(Uid::from_raw(self.owner.uid)),
                Some(Gid::from_raw(self.owner.gid)),
            )?;
        }
        Ok(())
    }

    pub(crate) fn read(&self, loc: &Loc, offset: u64, count: u32) -> NfsResult<(Vec<u8>, bool)> {
        match loc.kind() {
            Kind::Reg => {}
            Kind::Dir => return Err(Status::IsDir),
            _ => return Err(Status::Inval),
        }
        let fd = loc.open(OFlags::RDONLY)?;
        let size = rustix::fs::fstat(&fd)?.st_size as u64;
        let want = u64::from(count.min(MAX_IO)).min(size.saturating_sub(offset));
        let mut buf = vec![0u8; want as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = rustix::io::pread(&fd, &mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok((buf, offset + done as u64 >= size))
    }

    pub(crate) fn write(
        &self,
        loc: &Loc,
        offset: u64,
        data: &[u8],
        stable: Stable,
    ) -> NfsResult<u32> {
        self.writable()?;
        self.note_object(loc.key());
        match loc.kind() {
            Kind::Reg => {}
            Kind::Dir => return Err(Status::IsDir),
            _ => return Err(Status::Inval),
        }
        offset.checked_add(data.len() as u64).ok_or(Status::FBig)?;
        let fd = loc.open(OFlags::WRONLY)?;
        let mut done = 0;
        while done < data.len() {
            done += rustix::io::pwrite(&fd, &data[done..], offset + done as u64)?;
        }
        match stable {
            Stable::Unstable => {}
            Stable::DataSync => self.path.data_sync(&fd)?,
            Stable::FileSync => rustix::fs::fsync(&fd)?,
        }
        Ok(done as u32)
    }

    pub(crate) fn commit(&self, loc: &Loc) -> NfsResult<()> {
        if loc.kind() != Kind::Reg {
            return Err(Status::Inval);
        }
        // A file its owner may write but not read (mode 0200) is committed all the same.
        let fd = match loc.open(OFlags::RDONLY) {
            Err(Status::Acces) => loc.open(OFlags::WRONLY)?,
            other => other?,
        };
        rustix::fs::fsync(&fd)?;
        Ok(())
    }

    /// Opens (creating or not) `name` in `dir`, registers it, and returns its location.
    fn child_loc(&self, dir: &Loc, dirfd: OwnedFd, name: CString) -> NfsResult<Loc> {
        let st = rustix::fs::statat(&dirfd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        if !self.visible(key_of(&st)) {
            // A hidden object under this name: not the guest's to create or open.
            return Err(Status::Exist);
        }
        self.remember(dir.key(), name.as_bytes(), &st);
        Ok(Loc {
            dir: dirfd,
            name: Some(name),
            st,
        })
    }

    pub(crate) fn create(&self, dir: &Loc, name: &[u8], how: &CreateHow) -> NfsResult<Loc> {
        self.writable()?;
        self.note_entry(dir.key(), name);
        let cname = check_name(name).map_err(dots_exist(name))?;
        let dirfd = dir.open_dir_path(self.path)?;
        let base = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let created = rustix::fs::openat(
            &dirfd,
            cname.as_c_str(),
            base | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(0o600),
        );
        match (created, how) {
            (Ok(fd), CreateHow::Unchecked(s) | CreateHow::Guarded(s)) => {
                self.finish_new(&dirfd, &cname, &fd, s.mode.unwrap_or(0o644) & 0o1777)?;
                let loc = self.child_loc(dir, dirfd, cname)?;
                self.apply(&loc, &creation_sattr(s))?;
                Ok(loc)
            }
            (Ok(fd), CreateHow::Exclusive(verf)) => {
                self.finish_new(&dirfd, &cname, &fd, 0o644)?;
                let (sec, nsec) = verf_times(*verf);
                let t = ts(SetTime::Client(sec, nsec));
                rustix::fs::futimens(
                    &fd,
                    &Timestamps {
                        last_access: t,
                        last_modification: t,
                    },
                )?;
                self.child_loc(dir, dirfd, cname)
            }
            (Err(rustix::io::Errno::EXIST), CreateHow::Unchecked(s)) => {
                let loc = self.child_loc(dir, dirfd, cname)?;
                if loc.kind() != Kind::Reg {
                    return Err(Status::Exist);
                }
                self.apply(&loc, &creation_sattr(s))?;
                Ok(loc)
            }
            (Err(rustix::io::Errno::EXIST), CreateHow::Exclusive(verf)) => {
                let loc = self.child_loc(dir, dirfd, cname)?;
                let a = self.attr(&loc.st);
                if loc.kind() == Kind::Reg && a.mtime == verf_times(*verf) {
                    Ok(loc) // our own earlier reply was lost
                } else {
                    Err(Status::Exist)
                }
            }
            (Err(e), _) => Err(e.into()),
        }
    }

    /// Mode and owner of a just-created object; on failure the object is removed again so
    /// nothing owned by the supervisor's user is left behind.
    fn finish_new(
        &self,
        dirfd: &OwnedFd,
        name: &CString,
        fd: &OwnedFd,
        mode: u32,
    ) -> NfsResult<()> {
        let result = self.own(fd).and_then(|()| {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode as _)).map_err(Status::from)
        });
        if result.is_err() {
            let is_dir = rustix::fs::fstat(fd).map(|st| kind_of(&st) == Kind::Dir);
            let flags = if is_dir == Ok(true) {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            let _ = rustix::fs::unlinkat(dirfd, name.as_c_str(), flags);
        }
        result
    }

    pub(crate) fn mkdir(&self, dir: &Loc, name: &[u8], s: &Sattr) -> NfsResult<Loc> {
        self.writable()?;
        self.note_entry(dir.key(), name);
        let cname = check_name(name).map_err(dots_exist(name))?;
        let dirfd = dir.open_dir_path(self.path)?;
        rustix::fs::mkdirat(&dirfd, cname.as_c_str(), Mode::from_raw_mode(0o700))?;
        let fd = rustix::fs::openat(
            &dirfd,
            cname.as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // A directory made in a set-group-ID one inherits that bit from the host, which is
        // the host's choice: kept. None is added from the guest's mode.
        let inherited = mode_of(&rustix::fs::fstat(&fd)?) & 0o2000;
        let mode = (s.mode.unwrap_or(0o755) & 0o1777) | inherited;
        self.finish_new(&dirfd, &cname, &fd, mode)?;
        let loc = self.child_loc(dir, dirfd, cname)?;
        self.apply(&loc, &creation_sattr(s))?;
        Ok(loc)
    }

    /// Creates a symlink. The target is stored as given: it is data for the guest, which
    /// resolves it; the server never follows it.
    pub(crate) fn symlink(&self, dir: &Loc, name: &[u8], target: &[u8]) -> NfsResult<Loc> {
        self.writable()?;
        self.note_entry(dir.key(), name);
        let cname = check_name(name).map_err(dots_exist(name))?;
        let target = CString::new(target).map_err(|_| Status::Inval)?;
        if target.as_bytes().is_empty() {
            return Err(Status::Inval);
        }
        let dirfd = dir.open_dir_path(self.path)?;
        rustix::fs::symlinkat(target.as_c_str(), &dirfd, cname.as_c_str())?;
        let owned = rustix::fs::chownat(
            &dirfd,
            cname.as_c_str(),
            Some(Uid::from_raw(self.owner.uid)),
            Some(Gid::from_raw(self.owner.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        );
        if let Err(e) = owned {
            let _ = rustix::fs::unlinkat(&dirfd, cname.as_c_str(), AtFlags::empty());
            return Err(e.into());
        }
        self.child_loc(dir, dirfd, cname)
    }

    pub(crate) fn readlink(&self, loc: &Loc) -> NfsResult<Vec<u8>> {
        let name = match (&loc.name, loc.kind()) {
            (Some(name), Kind::Lnk) => name,
            _ => return Err(Status::Inval),
        };
        let target = rustix::fs::readlinkat(&loc.dir, name.as_c_str(), Vec::new())?;
        Ok(target.into_bytes())
    }

    pub(crate) fn remove(&self, dir: &Loc, name: &[u8], rmdir: bool) -> NfsResult<()> {
        self.writable()?;
        self.note_entry(dir.key(), name);
        let cname = check_name(name)?;
        let dirfd = dir.open_dir_path(self.path)?;
        let st = rustix::fs::statat(&dirfd, cname.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        self.movable(&st)?;
        let is_dir = kind_of(&st) == Kind::Dir;
        match (rmdir, is_dir) {
            (false, true) => return Err(Status::IsDir),
            (true, false) => return Err(Status::NotDir),
            _ => {}
        }
        let flags = if rmdir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        rustix::fs::unlinkat(&dirfd, cname.as_c_str(), flags)?;
        if st.st_nlink <= 1 || is_dir {
            self.forget(key_of(&st));
        }
        Ok(())
    }

    pub(crate) fn rename(
        &self,
        from_dir: &Loc,
        from: &[u8],
        to_dir: &Loc,
        to: &[u8],
    ) -> NfsResult<()> {
        self.writable()?;
        self.note_entry(from_dir.key(), from);
        self.note_entry(to_dir.key(), to);
        let from = check_name(from)?;
        let to = check_name(to)?;
        let from_fd = from_dir.open_dir_path(self.path)?;
        let to_fd = to_dir.open_dir_path(self.path)?;
        let st = rustix::fs::statat(&from_fd, from.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        self.movable(&st)?;
        match rustix::fs::statat(&to_fd, to.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            // Replacing a hidden object, or a directory leading to one: refused alike.
            Ok(target) => self.movable(&target).map_err(|_| Status::Acces)?,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        rustix::fs::renameat(&from_fd, from.as_c_str(), &to_fd, to.as_c_str())?;
        self.remember(to_dir.key(), to.as_bytes(), &st);
        Ok(())
    }

    pub(crate) fn statvfs(&self, loc: &Loc) -> NfsResult<rustix::fs::StatVfs> {
        let fd = match loc.kind() {
            Kind::Dir => loc.open_dir_path(self.path)?,
            _ => loc.dir.try_clone().map_err(|_| Status::ServerFault)?,
        };
        Ok(rustix::fs::fstatvfs(&fd)?)
    }
}

/// What of a CREATE/MKDIR `sattr3` is applied after creation: the mode was set at creation,
/// and the owner is always the export's (a guest uid there is not a request to chown).
fn creation_sattr(s: &Sattr) -> Sattr {
    Sattr {
        mode: None,
        uid: None,
        gid: None,
        ..*s
    }
}

/// Creating `.` or `..` names an entry that exists; other invalid names keep their error.
fn dots_exist(name: &[u8]) -> impl Fn(Status) -> Status + '_ {
    move |e| {
        if name == b"." || name == b".." {
            Status::Exist
        } else {
            e
        }
    }
}
