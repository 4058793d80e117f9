//! One export's view of the host filesystem: confined resolution, hidden objects.
//!
//! Confinement: the export root is opened once; every object is reached from that fd by
//! `openat`/`statat` one component at a time with `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`, using
//! names taken from real directory listings or validated by [`check_name`] (no `/`, no NUL,
//! not `.`/`..`). A path string is never built, and a symlink is never followed on the host,
//! so neither `..`, absolute names, nor a symlink (guest-made or host-side swapped in) can lead
//! outside the export. Objects opened for I/O are re-checked with `fstat` against the
//! `(st_dev, st_ino)` of their handle before use. Directories are walked through with
//! `O_PATH`, which needs only the search permission the share's owner would need.
//!
//! Handles carry only `(st_dev, st_ino)` (see `handle.rs`); turning one back into an object
//! is the index's and its scanner's job (`index.rs`). devbox's own state and cache
//! directories are hidden wherever they appear in an export (`open.rs` finds them).

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, Stat};

use super::handle::{HANDLE_LEN, Handle, Key, Kind, NfsResult, Status, export_id};
use super::identity::Owner;
use super::index::{Finder, Miss, ScanTarget};
use super::sys::{Cursor, FsPath};

/// Longest name accepted in a directory operation (`NAME_MAX`).
pub(crate) const NAME_MAX: usize = 255;

// `stat` field types differ between platforms (and libc/linux_raw backends); these casts
// are no-ops on some of them.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn key_of(st: &Stat) -> Key {
    (st.st_dev as u64, st.st_ino as u64)
}

#[allow(clippy::unnecessary_cast)]
pub(crate) fn mode_of(st: &Stat) -> u32 {
    st.st_mode as u32
}

pub(crate) fn kind_of(st: &Stat) -> Kind {
    Kind::from_mode(mode_of(st))
}

/// A resolved object: its parent directory (an `O_PATH` fd) and its name in it, or the
/// export root itself (`name == None`, `dir` = the root). `st` is what `statat` saw when
/// resolving.
pub(crate) struct Loc {
    pub dir: OwnedFd,
    pub name: Option<CString>,
    pub st: Stat,
}

impl Loc {
    pub(crate) fn key(&self) -> Key {
        key_of(&self.st)
    }

    pub(crate) fn kind(&self) -> Kind {
        kind_of(&self.st)
    }

    /// Opens the object itself, never following a symlink, and checks that it is still the
    /// object the handle names.
    pub(crate) fn open(&self, flags: OFlags) -> NfsResult<OwnedFd> {
        let fd = match &self.name {
            Some(name) => rustix::fs::openat(
                &self.dir,
                name.as_c_str(),
                flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            )?,
            None => rustix::fs::openat(&self.dir, c".", flags | OFlags::CLOEXEC, Mode::empty())?,
        };
        let st = rustix::fs::fstat(&fd)?;
        if key_of(&st) != self.key() {
            return Err(Status::Stale);
        }
        Ok(fd)
    }

    /// The object itself as an `O_PATH` descriptor (a symlink is the link, a device is not
    /// opened): for changing its attributes, whatever its permissions (Linux only; the
    /// portable path changes attributes by name, see `sys.rs`).
    #[cfg(target_os = "linux")]
    pub(crate) fn open_path(&self) -> NfsResult<OwnedFd> {
        self.open(OFlags::PATH)
    }

    /// A directory, opened to list it.
    pub(crate) fn open_dir(&self) -> NfsResult<OwnedFd> {
        if self.kind() != Kind::Dir {
            return Err(Status::NotDir);
        }
        self.open(OFlags::RDONLY | OFlags::DIRECTORY)
    }

    /// A directory, opened to look names up or change entries in it (on the native path
    /// search permission is enough).
    pub(crate) fn open_dir_path(&self, path: FsPath) -> NfsResult<OwnedFd> {
        if self.kind() != Kind::Dir {
            return Err(Status::NotDir);
        }
        self.open(path.dir_flags())
    }
}

/// Validates a name received from the client for use in its directory.
pub(crate) fn check_name(name: &[u8]) -> NfsResult<CString> {
    if name.len() > NAME_MAX {
        return Err(Status::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Status::Acces);
    }
    CString::new(name).map_err(|_| Status::Acces)
}

/// One export: its identity, its settings, and its tree (root, index, scanner).
pub(crate) struct ExportFs {
    pub name: String,
    pub id: [u8; 4],
    pub read_only: bool,
    pub owner: Owner,
    pub fsid: u64,
    /// How host objects are reached (see `sys.rs`).
    pub path: FsPath,
    /// Where changes made through the server are recorded (see `echo.rs`).
    pub echo: Option<Arc<super::echo::EchoLog>>,
    /// Objects never shown to the guest (devbox's state and cache directories, wherever
    /// they appear in the export): LOOKUP says NOENT, listings skip them, handles are STALE.
    hidden: HashSet<Key>,
    /// Directories on the way from the root to a hidden one: the guest may not rename or
    /// remove them (it could otherwise move the hidden directory's parent away and put one
    /// of its own where devbox looks for its state).
    pinned: HashSet<Key>,
    finder: Arc<Finder>,
}

impl ExportFs {
    pub(crate) fn new(
        name: &str,
        read_only: bool,
        owner: Owner,
        root: OwnedFd,
        hidden: HashSet<Key>,
        pinned: HashSet<Key>,
        path: FsPath,
    ) -> std::io::Result<ExportFs> {
        let root_key = key_of(&rustix::fs::fstat(&root)?);
        let id = export_id(name);
        Ok(ExportFs {
            name: name.to_string(),
            id,
            read_only,
            owner,
            fsid: u64::from_be_bytes([id[0], id[1], id[2], id[3], 0, 0, 0, 1]),
            path,
            echo: None,
            finder: Arc::new(Finder::new(ScanTarget {
                root,
                root_key,
                owner,
                hidden: hidden.clone(),
                path,
            })),
            hidden,
            pinned,
        })
    }

    fn root(&self) -> &OwnedFd {
        &self.finder.target.root
    }

    fn root_key(&self) -> Key {
        self.finder.target.root_key
    }

    /// The NFS `fileid3` of a host object: its inode number on the export's own device,
    /// otherwise the inode mixed with the device so ids stay unique across mount points.
    pub(crate) fn fileid(&self, key: Key) -> u64 {
        if key.0 == self.root_key().0 {
            key.1
        } else {
            key.1 ^ key.0.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(40)
        }
    }

    pub(crate) fn handle(&self, st: &Stat) -> [u8; HANDLE_LEN] {
        Handle {
            export: self.id,
            kind: kind_of(st),
            key: key_of(st),
        }
        .encode()
    }

    pub(crate) fn root_handle(&self) -> NfsResult<[u8; HANDLE_LEN]> {
        Ok(self.handle(&rustix::fs::fstat(self.root())?))
    }

    fn root_loc(&self) -> NfsResult<Loc> {
        let dir = self.root().try_clone().map_err(|_| Status::ServerFault)?;
        let st = rustix::fs::fstat(&dir)?;
        Ok(Loc {
            dir,
            name: None,
            st,
        })
    }

    /// Records that the server changes the object `key` (see `echo.rs`).
    pub(crate) fn note_object(&self, key: Key) {
        if let Some(e) = &self.echo {
            e.object(key);
        }
    }

    /// Records that the server changes the entry `name` of the directory `dir`.
    pub(crate) fn note_entry(&self, dir: Key, name: &[u8]) {
        if let Some(e) = &self.echo {
            e.entry(dir, name);
        }
    }

    /// Whether the guest may see the object `key` (see [`ExportFs::hidden`]).
    pub(crate) fn visible(&self, key: Key) -> bool {
        !self.hidden.contains(&key)
    }

    /// Refuses renaming or removing `st`: a hidden object (NOENT: it is not there for the
    /// guest) or a directory leading to one (ACCES).
    pub(crate) fn movable(&self, st: &Stat) -> NfsResult<()> {
        let key = key_of(st);
        if self.hidden.contains(&key) {
            Err(Status::NoEnt)
        } else if self.pinned.contains(&key) {
            Err(Status::Acces)
        } else {
            Ok(())
        }
    }

    /// Records where `st` is, so that its handle resolves.
    pub(crate) fn remember(&self, parent: Key, name: &[u8], st: &Stat) {
        let key = key_of(st);
        if key == self.root_key() || !self.visible(key) {
            return;
        }
        self.finder
            .index()
            .insert(key, parent, name, kind_of(st) == Kind::Dir);
    }

    pub(crate) fn forget(&self, key: Key) {
        self.finder.index().remove(key);
    }

    /// Resolves a decoded handle of this export to the object it names: through the index,
    /// or, when the index does not know it or its recorded place no longer holds it, through
    /// the export's scanner (`index.rs`).
    pub(crate) fn resolve(&self, handle: &Handle) -> NfsResult<Loc> {
        if handle.key == self.root_key() {
            return if handle.kind == Kind::Dir {
                self.root_loc()
            } else {
                Err(Status::Stale)
            };
        }
        if !self.visible(handle.key) {
            return Err(Status::Stale);
        }
        // `None`: not where the index says (or not indexed); the object found, but of
        // another type than the handle's (its inode number reused): STALE.
        let indexed = || {
            let path = self.finder.index().path(handle.key, self.root_key())?;
            match self.walk(&path, handle.key) {
                Ok(loc) if loc.kind() == handle.kind => Some(Ok(loc)),
                Ok(_) => Some(Err(Status::Stale)),
                Err(_) => None,
            }
        };
        if let Some(found) = indexed() {
            return found;
        }
        Finder::find(&self.finder, handle.key, indexed).unwrap_or_else(|miss| {
            Err(match miss {
                Miss::Gone => Status::Stale,
                Miss::Later => Status::Jukebox,
            })
        })
    }

    /// Follows `path` from the root without following symlinks; the last component must be
    /// the object `key`.
    fn walk(&self, path: &[Box<[u8]>], key: Key) -> NfsResult<Loc> {
        let (last, parents) = path.split_last().ok_or(Status::Stale)?;
        let mut dir = self.root().try_clone().map_err(|_| Status::ServerFault)?;
        for comp in parents {
            let comp = CString::new(&comp[..]).map_err(|_| Status::Stale)?;
            dir = rustix::fs::openat(&dir, comp.as_c_str(), self.path.dir_flags(), Mode::empty())?;
        }
        let name = CString::new(&last[..]).map_err(|_| Status::Stale)?;
        let st = rustix::fs::statat(&dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        if key_of(&st) != key {
            return Err(Status::Stale);
        }
        Ok(Loc {
            dir,
            name: Some(name),
            st,
        })
    }

    /// Looks `name` up in directory `dir`; `.` and `..` are answered from the index (`..` of
    /// the root is the root: the export is the client's whole world).
    pub(crate) fn lookup(&self, dir: &Loc, name: &[u8]) -> NfsResult<Loc> {
        if dir.kind() != Kind::Dir {
            return Err(Status::NotDir);
        }
        match name {
            b"." => return self.reopen(dir),
            b".." => return self.parent_of(dir),
            _ => {}
        }
        let cname = check_name(name).map_err(|e| match e {
            Status::Acces => Status::NoEnt,
            other => other,
        })?;
        let fd = dir.open_dir_path(self.path)?;
        let st = rustix::fs::statat(&fd, cname.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        if !self.visible(key_of(&st)) {
            return Err(Status::NoEnt);
        }
        self.remember(dir.key(), name, &st);
        Ok(Loc {
            dir: fd,
            name: Some(cname),
            st,
        })
    }

    fn reopen(&self, loc: &Loc) -> NfsResult<Loc> {
        let handle = Handle {
            export: self.id,
            kind: loc.kind(),
            key: loc.key(),
        };
        self.resolve(&handle)
    }

    fn parent_of(&self, dir: &Loc) -> NfsResult<Loc> {
        if dir.name.is_none() {
            return self.root_loc();
        }
        let st = rustix::fs::fstat(&dir.dir)?;
        self.resolve(&Handle {
            export: self.id,
            kind: Kind::Dir,
            key: key_of(&st),
        })
    }
}

pub(crate) fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

/// Opens `dir` for listing entries starting after `cookie` (0: from the start); see
/// [`Cursor`] for what a cookie is on each path.
pub(crate) fn read_dir_from(dir: &impl AsFd, cookie: u64, path: FsPath) -> NfsResult<Cursor> {
    Cursor::open(dir, cookie, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_are_refused() {
        assert_eq!(check_name(b"../x"), Err(Status::Acces));
        assert_eq!(check_name(b"/abs"), Err(Status::Acces));
        assert_eq!(check_name(b"a/b"), Err(Status::Acces));
        assert_eq!(check_name(b".."), Err(Status::Acces));
        assert_eq!(check_name(b"."), Err(Status::Acces));
        assert_eq!(check_name(b""), Err(Status::Acces));
        assert_eq!(check_name(b"a\0b"), Err(Status::Acces));
        assert_eq!(check_name(&[b'a'; 256]), Err(Status::NameTooLong));
        assert!(check_name(b"..hidden").is_ok());
        assert!(check_name(&[b'a'; 255]).is_ok());
    }

    /// The export of `dir` by this process, as its owner would be served.
    fn open_dir(dir: &std::path::Path) -> ExportFs {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir).unwrap();
        let e = super::super::Export {
            name: "/x".into(),
            host_path: dir.canonicalize().unwrap(),
            dir_id: (m.dev(), m.ino()),
            read_only: false,
            allow_root: true,
        };
        super::super::open::open_export(&e, &[], FsPath::default(), None).unwrap()
    }

    #[test]
    fn handles_resolve_after_a_fresh_index_through_the_scan() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b/c")).unwrap();
        std::fs::write(tmp.path().join("a/b/c/f.txt"), b"hi").unwrap();
        let fs = open_dir(tmp.path());
        let st = rustix::fs::stat(tmp.path().join("a/b/c/f.txt")).unwrap();
        let h = Handle::decode(&fs.handle(&st)).unwrap();
        let loc = fs.resolve(&h).unwrap();
        assert_eq!(loc.name.as_deref(), Some(c"f.txt"));
        // Gone on the host: STALE once a scan did not find it, then at once.
        std::fs::remove_file(tmp.path().join("a/b/c/f.txt")).unwrap();
        assert_eq!(fs.resolve(&h).err(), Some(Status::Stale));
        let t = std::time::Instant::now();
        assert_eq!(fs.resolve(&h).err(), Some(Status::Stale));
        assert!(
            t.elapsed() < super::super::index::MIN_COOLDOWN,
            "no second scan"
        );
        // Same key, other type: STALE.
        let dir = rustix::fs::stat(tmp.path().join("a")).unwrap();
        let wrong = Handle {
            kind: Kind::Reg,
            ..Handle::decode(&fs.handle(&dir)).unwrap()
        };
        assert_eq!(fs.resolve(&wrong).err(), Some(Status::Stale));
    }
}
