//! One export's view of the host filesystem: confined resolution and the handle index.
//!
//! Confinement: the export root is opened once; every object is reached from that fd by
//! `openat`/`statat` one component at a time with `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`, using
//! names taken from real directory listings or validated by [`check_name`] (no `/`, no NUL,
//! not `.`/`..`). A path string is never built, and a symlink is never followed on the host,
//! so neither `..`, absolute names, nor a symlink (guest-made or host-side swapped in) can lead
//! outside the export. Objects opened for I/O are re-checked with `fstat` against the
//! `(st_dev, st_ino)` of their handle before use.
//!
//! Handles carry only `(st_dev, st_ino)` (see `handle.rs`). To turn one back into an object,
//! the [`Index`] maps each key seen (through LOOKUP, READDIRPLUS, CREATE…) to its parent and
//! name. After a supervisor restart the index is empty; an unknown key then drives an
//! incremental breadth-first scan of the export, which records every entry it passes, until
//! the key is found or the whole tree was scanned (then: STALE, without rescanning).

use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};

use super::handle::{HANDLE_LEN, Handle, Key, Kind, NfsResult, Status, export_id};

/// Longest name accepted in a directory operation (`NAME_MAX`).
pub(crate) const NAME_MAX: usize = 255;

/// Deepest chain of parents followed when rebuilding a path from the index.
const MAX_DEPTH: usize = 4096;

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

/// A resolved object: its parent directory (an open fd) and its name in it, or the export
/// root itself (`name == None`, `dir` = the root). `st` is what `statat` saw when resolving.
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

    pub(crate) fn open_dir(&self) -> NfsResult<OwnedFd> {
        if self.kind() != Kind::Dir {
            return Err(Status::NotDir);
        }
        self.open(OFlags::RDONLY | OFlags::DIRECTORY)
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

struct Node {
    parent: Key,
    name: Box<[u8]>,
}

/// Key → (parent, name) for every object the server has seen, plus the state of the
/// breadth-first scan used to find keys it has not.
struct Index {
    nodes: HashMap<Key, Node>,
    queue: VecDeque<Key>,
    complete: bool,
}

impl Index {
    fn path(&self, key: Key, root: Key) -> Option<Vec<&[u8]>> {
        let mut comps = Vec::new();
        let mut at = key;
        while at != root {
            let node = self.nodes.get(&at)?;
            comps.push(&node.name[..]);
            if comps.len() > MAX_DEPTH {
                return None;
            }
            at = node.parent;
        }
        comps.reverse();
        Some(comps)
    }
}

/// One export: its root fd, identity, and settings.
pub(crate) struct ExportFs {
    pub name: String,
    pub id: [u8; 4],
    pub read_only: bool,
    pub uid: u32,
    pub gid: u32,
    pub fsid: u64,
    root: OwnedFd,
    root_key: Key,
    index: Mutex<Index>,
}

impl ExportFs {
    pub(crate) fn open(
        name: &str,
        host_path: &Path,
        read_only: bool,
        uid: u32,
        gid: u32,
    ) -> std::io::Result<ExportFs> {
        let root = rustix::fs::open(
            host_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let root_key = key_of(&rustix::fs::fstat(&root)?);
        let id = export_id(name);
        Ok(ExportFs {
            name: name.to_string(),
            id,
            read_only,
            uid,
            gid,
            fsid: u64::from_be_bytes([id[0], id[1], id[2], id[3], 0, 0, 0, 1]),
            root,
            root_key,
            index: Mutex::new(Index {
                nodes: HashMap::new(),
                queue: VecDeque::from([root_key]),
                complete: false,
            }),
        })
    }

    /// The NFS `fileid3` of a host object: its inode number on the export's own device,
    /// otherwise the inode mixed with the device so ids stay unique across mount points.
    pub(crate) fn fileid(&self, key: Key) -> u64 {
        if key.0 == self.root_key.0 {
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
        Ok(self.handle(&rustix::fs::fstat(&self.root)?))
    }

    fn root_loc(&self) -> NfsResult<Loc> {
        let dir = self.root.try_clone().map_err(|_| Status::ServerFault)?;
        let st = rustix::fs::fstat(&dir)?;
        Ok(Loc {
            dir,
            name: None,
            st,
        })
    }

    pub(crate) fn remember(&self, parent: Key, name: &[u8], key: Key) {
        if key == self.root_key {
            return;
        }
        let mut index = self.lock();
        index.nodes.insert(
            key,
            Node {
                parent,
                name: name.into(),
            },
        );
    }

    pub(crate) fn forget(&self, key: Key) {
        let mut index = self.lock();
        index.nodes.remove(&key);
    }

    /// Resolves a decoded handle of this export to the object it names.
    pub(crate) fn resolve(&self, handle: &Handle) -> NfsResult<Loc> {
        if handle.key == self.root_key {
            return if handle.kind == Kind::Dir {
                self.root_loc()
            } else {
                Err(Status::Stale)
            };
        }
        // Fast path: the key is indexed; walk without holding the lock.
        let path = self.lock().path(handle.key, self.root_key).map(to_owned);
        if let Some(Ok(loc)) = path.map(|path| self.walk(&path, handle)) {
            return Ok(loc);
        }
        let mut index = self.lock();
        loop {
            if let Some(path) = index.path(handle.key, self.root_key).map(to_owned) {
                match self.walk(&path, handle) {
                    Ok(loc) => return Ok(loc),
                    // Moved or deleted on the host since it was indexed: forget it; a new
                    // LOOKUP of its new name yields the same handle again.
                    Err(_) => {
                        index.nodes.remove(&handle.key);
                    }
                }
            }
            if index.complete {
                return Err(Status::Stale);
            }
            self.scan_step(&mut index);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `path` from the root without following symlinks; the last component must be
    /// the object of `handle` (same key and type).
    fn walk(&self, path: &[Box<[u8]>], handle: &Handle) -> NfsResult<Loc> {
        let (last, parents) = path.split_last().ok_or(Status::Stale)?;
        let mut dir = self.root.try_clone().map_err(|_| Status::ServerFault)?;
        for comp in parents {
            let comp = CString::new(&comp[..]).map_err(|_| Status::Stale)?;
            dir = rustix::fs::openat(
                &dir,
                comp.as_c_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
        }
        let name = CString::new(&last[..]).map_err(|_| Status::Stale)?;
        let st = rustix::fs::statat(&dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        if key_of(&st) != handle.key || kind_of(&st) != handle.kind {
            return Err(Status::Stale);
        }
        Ok(Loc {
            dir,
            name: Some(name),
            st,
        })
    }

    /// Lists the next directory of the breadth-first scan into the index.
    fn scan_step(&self, index: &mut Index) {
        let Some(dir_key) = index.queue.pop_front() else {
            index.complete = true;
            return;
        };
        let dir_handle = Handle {
            export: self.id,
            kind: Kind::Dir,
            key: dir_key,
        };
        let dir = if dir_key == self.root_key {
            self.root.try_clone().ok()
        } else {
            index
                .path(dir_key, self.root_key)
                .and_then(|path| self.walk(&to_owned(path), &dir_handle).ok())
                .and_then(|loc| loc.open_dir().ok())
        };
        let Some(dir) = dir else { return };
        let Ok(mut entries) = Dir::read_from(&dir) else {
            return;
        };
        while let Some(Ok(entry)) = entries.read() {
            let name = entry.file_name();
            if is_dot(name) {
                continue;
            }
            let key = match entry.file_type() {
                FileType::Directory | FileType::Unknown => {
                    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => {
                            if kind_of(&st) == Kind::Dir {
                                index.queue.push_back(key_of(&st));
                            }
                            key_of(&st)
                        }
                        Err(_) => continue,
                    }
                }
                _ => (dir_key.0, entry.ino()),
            };
            if key != self.root_key {
                index.nodes.insert(
                    key,
                    Node {
                        parent: dir_key,
                        name: name.to_bytes().into(),
                    },
                );
            }
        }
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
        let fd = dir.open_dir()?;
        let st = rustix::fs::statat(&fd, cname.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        self.remember(dir.key(), name, key_of(&st));
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

fn to_owned(path: Vec<&[u8]>) -> Vec<Box<[u8]>> {
    path.into_iter().map(Box::from).collect()
}

pub(crate) fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

/// Opens `dir` for listing entries starting after `cookie` (0: from the start). Cookies are
/// the directory's own seek offsets (`d_off`), which on ext4/xfs/tmpfs/btrfs stay valid while
/// other entries are added or removed, unlike an index into a sorted listing.
pub(crate) fn read_dir_from(dir: &impl AsFd, cookie: u64) -> NfsResult<Dir> {
    let mut entries = Dir::read_from(dir)?;
    if cookie != 0 {
        let offset = i64::try_from(cookie).map_err(|_| Status::BadCookie)?;
        entries.seek(offset).map_err(|_| Status::BadCookie)?;
    }
    Ok(entries)
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

    #[test]
    fn handles_resolve_after_a_fresh_index_through_the_scan() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b/c")).unwrap();
        std::fs::write(tmp.path().join("a/b/c/f.txt"), b"hi").unwrap();
        let fs = ExportFs::open("/x", tmp.path(), false, 0, 0).unwrap();
        let st = rustix::fs::stat(tmp.path().join("a/b/c/f.txt")).unwrap();
        let h = Handle::decode(&fs.handle(&st)).unwrap();
        let loc = fs.resolve(&h).unwrap();
        assert_eq!(loc.name.as_deref(), Some(c"f.txt"));
        // Gone on the host: STALE, and no second scan.
        std::fs::remove_file(tmp.path().join("a/b/c/f.txt")).unwrap();
        assert_eq!(fs.resolve(&h).err(), Some(Status::Stale));
        assert_eq!(fs.resolve(&h).err(), Some(Status::Stale));
        // Same key, other type: STALE.
        let dir = rustix::fs::stat(tmp.path().join("a")).unwrap();
        let wrong = Handle {
            kind: Kind::Reg,
            ..Handle::decode(&fs.handle(&dir)).unwrap()
        };
        assert_eq!(fs.resolve(&wrong).err(), Some(Status::Stale));
    }
}
