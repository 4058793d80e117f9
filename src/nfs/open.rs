//! Opening an export at server start: the directory recorded at create, reached without
//! following any symlink, its owner (whose identity the server takes), and the objects of
//! devbox's own that must stay hidden inside it.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::Export;
use super::error::NfsError;
use super::fs::{ExportFs, key_of};
use super::handle::Key;
use super::identity::Owner;
use super::sys::FsPath;

/// Opens `e`, hiding every directory of `hidden` (devbox's state and cache directories)
/// that lies in it.
pub(crate) fn open_export(
    e: &Export,
    hidden: &[PathBuf],
    path: FsPath,
    echo: Option<std::sync::Arc<super::echo::EchoLog>>,
) -> Result<ExportFs, NfsError> {
    let dir_err = |source: io::Error| NfsError::ExportDir {
        name: e.name.clone(),
        path: e.host_path.clone(),
        source,
    };
    for h in hidden {
        if e.host_path.starts_with(h) {
            return Err(NfsError::ExportInStateDir {
                name: e.name.clone(),
                path: e.host_path.clone(),
                state: h.clone(),
            });
        }
    }
    let root = open_nofollow(&e.host_path, true, path).map_err(dir_err)?;
    let st = rustix::fs::fstat(&root).map_err(|err| dir_err(err.into()))?;
    if key_of(&st) != e.dir_id {
        return Err(NfsError::ExportChanged {
            name: e.name.clone(),
            path: e.host_path.clone(),
        });
    }
    if st.st_uid == 0 && !e.allow_root {
        return Err(NfsError::ExportRootOwned {
            name: e.name.clone(),
            path: e.host_path.clone(),
        });
    }
    let owner =
        Owner::for_this_process(st.st_uid, st.st_gid).map_err(|c| NfsError::ExportOwner {
            name: e.name.clone(),
            path: e.host_path.clone(),
            owner: st.st_uid,
            server_uid: c.server_uid,
        })?;
    let mut hidden_keys = HashSet::new();
    let mut pinned = HashSet::new();
    for h in hidden {
        let hide_err = |source: io::Error| NfsError::Hidden {
            name: e.name.clone(),
            path: h.clone(),
            source,
        };
        // By identity: wherever it shows up in the export (a bind mount, another path).
        match open_nofollow(h, false, path) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd).map_err(|err| hide_err(err.into()))?;
                hidden_keys.insert(key_of(&st));
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(hide_err(err)),
        }
        if let Ok(rel) = h.strip_prefix(&e.host_path) {
            pinned.extend(ancestors_in(&root, rel, path).map_err(hide_err)?);
        }
    }
    let mut fs = ExportFs::new(&e.name, e.read_only, owner, root, hidden_keys, pinned, path)
        .map_err(dir_err)?;
    fs.echo = echo;
    Ok(fs)
}

/// Opens the absolute path `path` one component at a time, refusing any symlink on the way
/// (intermediate directories as `path` walks them: on the native path `O_PATH`, needing only
/// search permission); the last component is opened for listing when `list`.
pub(crate) fn open_nofollow(path: &Path, list: bool, walk: FsPath) -> io::Result<OwnedFd> {
    let mut comps = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => comps.push(n),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a plain absolute path",
                ));
            }
        }
    }
    if !path.is_absolute() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an absolute path",
        ));
    }
    let last_flags = if list {
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
    } else {
        walk.dir_flags()
    };
    let mut fd = rustix::fs::open(
        "/",
        if comps.is_empty() {
            last_flags
        } else {
            walk.dir_flags()
        },
        Mode::empty(),
    )?;
    for (i, comp) in comps.iter().enumerate() {
        let name = CString::new(comp.as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        let flags = if i + 1 == comps.len() {
            last_flags
        } else {
            walk.dir_flags()
        };
        // A symlink fails here: O_NOFOLLOW with O_DIRECTORY gives ELOOP or ENOTDIR.
        fd = rustix::fs::openat(&fd, name.as_c_str(), flags, Mode::empty()).map_err(
            |err| match err {
                rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!(
                        "{} is a symlink or not a directory (shares are opened without \
                         following symlinks)",
                        Path::new(comp).display()
                    ),
                ),
                other => other.into(),
            },
        )?;
    }
    Ok(fd)
}

/// The keys of the directories from `root` (excluded) down to the parent of `rel`.
fn ancestors_in(root: &OwnedFd, rel: &Path, path: FsPath) -> io::Result<Vec<Key>> {
    let comps: Vec<_> = rel.components().collect();
    let mut keys = Vec::new();
    let Some((_, parents)) = comps.split_last() else {
        return Ok(keys);
    };
    let mut fd = root.try_clone()?;
    for comp in parents {
        let Component::Normal(n) = comp else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a plain path",
            ));
        };
        let name = CString::new(n.as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        fd = rustix::fs::openat(&fd, name.as_c_str(), path.dir_flags(), Mode::empty())?;
        keys.push(key_of(&rustix::fs::fstat(&fd)?));
    }
    Ok(keys)
}
