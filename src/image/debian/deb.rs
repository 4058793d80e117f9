//! Unpacking a `.deb` into a directory, as `dpkg-deb --fsys-tarfile | tar -x
//! --keep-directory-symlink --no-same-owner` did for the image build: the `data.tar.{xz,zst,gz}`
//! member of the `ar` archive (deb(5)) is extracted with modes (setuid and sticky bits
//! included), symlinks, hard links and mtimes; ownership is not kept (the initramfs makes
//! everything root's); a directory entry whose path is already a symlink to a directory
//! (the merged-/usr links `bin` → `usr/bin`) keeps the link.
//!
//! Stricter than tar was: no entry may climb out of the destination, through `..` or through
//! a symlink (the `tar` crate canonicalises each parent). Directory modes are applied after
//! the package's files, so a read-only directory does not stop its own contents when the
//! build runs without root.
//!
//! The `.deb`'s SHA256 is computed while it is read and compared at the end; a cached file
//! that no longer matches is deleted.

use std::io::{BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("{deb} is not a Debian package: {what}")]
    Format { deb: PathBuf, what: String },
    #[error("cannot unpack {deb} into {dest}")]
    Unpack {
        deb: PathBuf,
        dest: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{deb} has sha256 {actual}, expected {expected}; the damaged file was removed")]
    Damaged {
        deb: PathBuf,
        expected: String,
        actual: String,
    },
}

/// Extracts the files of `deb`, whose SHA256 must be `sha256`, into `dest`.
pub fn unpack(deb: &Path, dest: &Path, sha256: &str) -> Result<(), DebError> {
    let unpack_err = |source: std::io::Error| DebError::Unpack {
        deb: deb.to_owned(),
        dest: dest.to_owned(),
        source,
    };
    let file = fs_err::File::open(deb).map_err(unpack_err)?;
    let mut reader = Hashing {
        inner: BufReader::with_capacity(1 << 20, file),
        hash: Sha256::new(),
    };
    let result = members(&mut reader, deb, dest);
    // The rest of the file (nothing, in Debian's packages) still counts for the hash, which
    // is checked even when unpacking failed: a damaged file explains the failure best.
    let drained = std::io::copy(&mut reader, &mut std::io::sink());
    let actual = hex::encode(reader.hash.finalize());
    if actual != sha256 {
        let _ = fs_err::remove_file(deb);
        return Err(DebError::Damaged {
            deb: deb.to_owned(),
            expected: sha256.to_owned(),
            actual,
        });
    }
    result?;
    drained.map_err(unpack_err)?;
    Ok(())
}

/// Reads the `ar` members up to `data.tar*` and extracts that one.
fn members(reader: &mut impl Read, deb: &Path, dest: &Path) -> Result<(), DebError> {
    let format = |what: String| DebError::Format {
        deb: deb.to_owned(),
        what,
    };
    let unpack_err = |source: std::io::Error| DebError::Unpack {
        deb: deb.to_owned(),
        dest: dest.to_owned(),
        source,
    };
    let mut ar = ar::Archive::new(reader);
    let mut first = true;
    while let Some(entry) = ar.next_entry() {
        let mut entry = entry.map_err(|e| format(e.to_string()))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if first {
            let mut version = String::new();
            entry
                .by_ref()
                .take(16)
                .read_to_string(&mut version)
                .map_err(|e| format(e.to_string()))?;
            if name != "debian-binary" || !version.starts_with("2.") {
                return Err(format(format!(
                    "it starts with {name:?}, not debian-binary 2.x"
                )));
            }
            first = false;
            continue;
        }
        let Some(compression) = name.strip_prefix("data.tar") else {
            continue;
        };
        let data: Box<dyn Read> = match compression {
            ".xz" => Box::new(liblzma::read::XzDecoder::new(entry)),
            ".zst" => Box::new(zstd::stream::read::Decoder::new(entry).map_err(unpack_err)?),
            ".gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "" => Box::new(entry),
            other => {
                return Err(format(format!(
                    "data.tar{other} is not a format devbox reads"
                )));
            }
        };
        return extract(data, dest).map_err(unpack_err);
    }
    Err(format("it has no data.tar member".into()))
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn extract(data: impl Read, dest: &Path) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(data);
    let root = dest.canonicalize().map_err(|e| io_at(e, dest))?;
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let rel = relative(&entry.path()?)?;
        if rel.as_os_str().is_empty() {
            continue; // `./`: the destination itself
        }
        if entry.header().entry_type().is_dir() {
            let path = dest.join(&rel);
            let mode = entry.header().mode()? & 0o7777;
            match fs_err::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => dirs.push((path, mode)),
                // tar --keep-directory-symlink: a link to a directory stays.
                Ok(m) if m.file_type().is_symlink() && inside(&root, &path)?.is_dir() => {}
                Ok(_) => {
                    fs_err::remove_file(&path)?;
                    make_dir(&root, &path)?;
                    dirs.push((path, mode));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    make_dir(&root, &path)?;
                    dirs.push((path, mode));
                }
                Err(e) => return Err(e),
            }
            continue;
        }
        // What an earlier package left at this path is replaced, as tar does (a hard link,
        // unlike a file or symlink, is not replaced by the tar crate itself). The parent is
        // checked first: nothing outside the destination is ever removed.
        let path = dest.join(&rel);
        if let Ok(m) = fs_err::symlink_metadata(&path)
            && !m.is_dir()
        {
            inside(&root, path.parent().unwrap_or(dest))?;
            fs_err::remove_file(&path)?;
        }
        entry.set_preserve_permissions(true);
        entry.set_preserve_mtime(true);
        entry.set_unpack_xattrs(false);
        if !entry.unpack_in(dest)? {
            return Err(std::io::Error::other(format!(
                "entry {} lies outside the package",
                rel.display()
            )));
        }
    }
    for (path, mode) in dirs {
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// An entry's path without `.` and leading `/`; `..` is refused.
fn relative(path: &Path) -> std::io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            _ => {
                return Err(std::io::Error::other(format!(
                    "entry {} lies outside the package",
                    path.display()
                )));
            }
        }
    }
    Ok(out)
}

/// `path` resolved, refused unless it stays below `root` (already canonical).
fn inside(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let real = path.canonicalize().map_err(|e| io_at(e, path))?;
    if !real.starts_with(root) {
        return Err(std::io::Error::other(format!(
            "{} leads outside {}",
            path.display(),
            root.display()
        )));
    }
    Ok(real)
}

/// Creates a directory (and missing parents) whose parent resolves below `root`.
fn make_dir(root: &Path, path: &Path) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(root);
    fs_err::create_dir_all(parent)?;
    inside(root, parent)?;
    fs_err::create_dir(path)
}

fn io_at(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    /// One tar entry: (path, kind, mode, contents or link target).
    type Item<'a> = (&'a str, tar::EntryType, u32, &'a [u8]);

    fn data_tar(items: &[Item]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, mode, data) in items {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_mtime(1_700_000_000);
            h.set_uid(1000);
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_size(0);
                b.append_link(&mut h, path, std::str::from_utf8(data).unwrap())
                    .unwrap();
            } else {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    /// A `.deb` holding `data` as `data.tar<suffix>`.
    fn deb(suffix: &str, data: &[u8]) -> Vec<u8> {
        let data = match suffix {
            ".xz" => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ".zst" => zstd::encode_all(data, 1).unwrap(),
            ".gz" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            _ => data.to_vec(),
        };
        let mut ar = ar::Builder::new(Vec::new());
        for (name, body) in [
            ("debian-binary".to_owned(), b"2.0\n".to_vec()),
            ("control.tar.xz".to_owned(), b"not read".to_vec()),
            (format!("data.tar{suffix}"), data),
        ] {
            let h = ar::Header::new(name.into_bytes(), body.len() as u64);
            ar.append(&h, body.as_slice()).unwrap();
        }
        ar.into_inner().unwrap()
    }

    fn write_deb(dir: &Path, bytes: &[u8]) -> (PathBuf, String) {
        let path = dir.join("p.deb");
        fs_err::write(&path, bytes).unwrap();
        (path, hex::encode(Sha256::digest(bytes)))
    }

    #[test]
    fn unpacks_like_dpkg_deb_and_tar_did() {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("root");
        fs_err::create_dir_all(dest.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", dest.join("bin")).unwrap();
        let tar = data_tar(&[
            ("./", Directory, 0o755, b""),
            ("./bin/", Directory, 0o755, b""),
            ("./bin/sh", Regular, 0o755, b"#!shell"),
            ("./usr/bin/passwd", Regular, 0o4755, b"suid"),
            ("./usr/bin/sh2", Link, 0o755, b"./bin/sh"),
            ("./usr/sbin/", Directory, 0o500, b""),
            ("./usr/sbin/tool", Regular, 0o700, b"x"),
            ("./etc/alternatives/awk", Symlink, 0o777, b"/usr/bin/mawk"),
        ]);
        for suffix in [".xz", ".zst", ".gz", ""] {
            let (path, sum) = write_deb(tmp.path(), &deb(suffix, &tar));
            unpack(&path, &dest, &sum).unwrap();
        }
        // The merged-/usr link stays a link; the file went through it.
        assert!(
            fs_err::symlink_metadata(dest.join("bin"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs_err::read(dest.join("usr/bin/sh")).unwrap(), b"#!shell");
        let suid = fs_err::metadata(dest.join("usr/bin/passwd")).unwrap();
        assert_eq!(suid.mode() & 0o7777, 0o4755);
        assert_eq!(suid.mtime(), 1_700_000_000);
        assert_eq!(
            fs_err::metadata(dest.join("usr/bin/sh2")).unwrap().nlink(),
            2
        );
        assert_eq!(
            fs_err::metadata(dest.join("usr/sbin")).unwrap().mode() & 0o7777,
            0o500
        );
        assert_eq!(
            fs_err::read_link(dest.join("etc/alternatives/awk")).unwrap(),
            Path::new("/usr/bin/mawk")
        );
        fs_err::set_permissions(
            dest.join("usr/sbin"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }

    #[test]
    fn entries_outside_the_destination_are_refused() {
        use tar::EntryType::{Directory, Regular, Symlink};
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("root");
        fs_err::create_dir_all(&dest).unwrap();
        let escape = tmp.path().join("outside");
        fs_err::create_dir_all(&escape).unwrap();
        // A symlink to a directory outside, then a file through it.
        let tar = data_tar(&[
            ("./lib", Symlink, 0o777, escape.to_str().unwrap().as_bytes()),
            ("./lib/evil", Regular, 0o644, b"x"),
        ]);
        let (path, sum) = write_deb(tmp.path(), &deb(".gz", &tar));
        assert!(matches!(
            unpack(&path, &dest, &sum),
            Err(DebError::Unpack { .. })
        ));
        assert!(!escape.join("evil").exists());
        let tar = data_tar(&[
            ("./lib/", Directory, 0o755, b""),
            ("./lib/x", Regular, 0o644, b"x"),
        ]);
        let (path, sum) = write_deb(tmp.path(), &deb(".gz", &tar));
        assert!(
            unpack(&path, &dest, &sum).is_err(),
            "lib is a link leading outside"
        );
    }

    #[test]
    fn a_damaged_deb_is_refused_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("root");
        fs_err::create_dir_all(&dest).unwrap();
        let tar = data_tar(&[("./f", tar::EntryType::Regular, 0o644, b"x")]);
        let (path, _) = write_deb(tmp.path(), &deb(".gz", &tar));
        let e = unpack(&path, &dest, &"0".repeat(64)).unwrap_err();
        assert!(matches!(e, DebError::Damaged { .. }), "{e}");
        assert!(!path.exists());
        let junk = b"!<arch>\nnot really";
        fs_err::write(&path, junk).unwrap();
        assert!(matches!(
            unpack(&path, &dest, &hex::encode(Sha256::digest(junk))),
            Err(DebError::Format { .. })
        ));
    }
}
