//! Packs the staged root as the initramfs: a newc cpio (the only format the kernel unpacks),
//! owned by root, compressed with multithreaded zstd.
//!
//! Entries come from a sorted pre-order walk, so parents precede children and the archive is
//! stable for a given tree. Hard links are stored as separate files (the few in Debian's
//! packages are small). Two device nodes are added that an unprivileged build cannot create
//! on disk: the kernel opens `/dev/console` for init before anything mounts devtmpfs.
//! The level and its trade-off are documented at `ZSTD_LEVEL` in `build.rs`.

use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::BuildError;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Device nodes in every image: (path, mode, major, minor).
const DEVICES: &[(&str, u32, u32, u32)] =
    &[("dev/console", 0o600, 5, 1), ("dev/null", 0o666, 1, 3)];

/// Writes `root` as a zstd-compressed newc cpio to `dest`.
pub fn initramfs(root: &Path, dest: &Path, level: i32) -> Result<(), BuildError> {
    let file = fs_err::File::create(dest)?;
    let mut enc =
        zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 20, file), level)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    enc.multithread(u32::try_from(threads).unwrap_or(1))?;
    enc.include_checksum(true)?;
    let mut archive = Archive {
        out: &mut enc,
        ino: 0,
    };
    archive.walk(root, root)?;
    for &(path, mode, major, minor) in DEVICES {
        let b = archive
            .builder(path, S_IFCHR | mode, 0)
            .rdev_major(major)
            .rdev_minor(minor);
        b.write(&mut *archive.out, 0).finish()?;
    }
    archive.trailer()?;
    let mut inner = enc.finish()?;
    inner.flush()?;
    inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

struct Archive<'a, W: Write> {
    out: &'a mut W,
    ino: u32,
}

impl<W: Write> Archive<'_, W> {
    fn builder(&mut self, name: &str, mode: u32, mtime: u32) -> cpio::newc::Builder {
        self.ino += 1;
        cpio::newc::Builder::new(name)
            .ino(self.ino)
            .mode(mode)
            .uid(0)
            .gid(0)
            .nlink(1)
            .mtime(mtime)
    }

    fn walk(&mut self, root: &Path, dir: &Path) -> Result<(), BuildError> {
        let mut entries: Vec<_> = fs_err::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = path
                .strip_prefix(root)
                .expect("walk stays below root")
                .to_string_lossy()
                .into_owned();
            let meta = fs_err::symlink_metadata(&path)?;
            let perm = meta.permissions().mode() & 0o7777;
            let mtime = u32::try_from(meta.mtime()).unwrap_or(0);
            let ft = meta.file_type();
            if ft.is_dir() {
                let b = self.builder(&name, S_IFDIR | perm, mtime);
                b.write(&mut *self.out, 0).finish()?;
                self.walk(root, &path)?;
            } else if ft.is_symlink() {
                let target = fs_err::read_link(&path)?;
                let target = target.as_os_str().as_encoded_bytes();
                let b = self.builder(&name, S_IFLNK | 0o777, mtime);
                let mut w = b.write(&mut *self.out, target.len() as u32);
                w.write_all(target)?;
                w.finish()?;
            } else if ft.is_file() {
                let size = u32::try_from(meta.len())
                    .map_err(|_| BuildError::TooLarge { path: path.clone() })?;
                let b = self.builder(&name, S_IFREG | perm, mtime);
                let mut w = b.write(&mut *self.out, size);
                std::io::copy(&mut fs_err::File::open(&path)?, &mut w)?;
                w.finish()?;
            } else {
                return Err(BuildError::UnsupportedFile { path });
            }
        }
        Ok(())
    }

    fn trailer(&mut self) -> Result<(), BuildError> {
        cpio::newc::trailer(&mut *self.out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    /// One entry read back: (name, mode, uid, gid, rdev, contents).
    type ReadEntry = (String, u32, u32, u32, (u32, u32), Vec<u8>);

    fn entries(path: &Path) -> Vec<ReadEntry> {
        let mut input =
            zstd::stream::read::Decoder::new(fs_err::File::open(path).unwrap()).unwrap();
        let mut out = Vec::new();
        loop {
            let mut r = cpio::newc::Reader::new(input).unwrap();
            let e = r.entry();
            if e.is_trailer() {
                break;
            }
            let (name, mode, uid, gid) = (e.name().to_owned(), e.mode(), e.uid(), e.gid());
            let rdev = (e.rdev_major(), e.rdev_minor());
            let mut data = Vec::new();
            r.read_to_end(&mut data).unwrap();
            out.push((name, mode, uid, gid, rdev, data));
            input = r.finish().unwrap();
        }
        out
    }

    #[test]
    fn packs_tree_as_root_owned_newc_with_console() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs_err::create_dir_all(root.join("usr/bin")).unwrap();
        fs_err::write(root.join("usr/bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        fs_err::set_permissions(
            root.join("usr/bin/hello"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        let dest = tmp.path().join("initrd.img");
        initramfs(&root, &dest, 1).unwrap();

        let got = entries(&dest);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        // Parents before children, sorted; device nodes last.
        assert_eq!(
            names,
            [
                "bin",
                "usr",
                "usr/bin",
                "usr/bin/hello",
                "dev/console",
                "dev/null"
            ]
        );
        assert!(
            got.iter().all(|e| e.2 == 0 && e.3 == 0),
            "all owned by root"
        );
        let hello = &got[3];
        assert_eq!(hello.1, S_IFREG | 0o755);
        assert_eq!(hello.5, b"#!/bin/sh\necho hi\n");
        assert_eq!(got[0].1 & 0o170_000, S_IFLNK);
        assert_eq!(got[0].5, b"usr/bin");
        assert_eq!(got[1].1 & 0o170_000, S_IFDIR);
        assert_eq!((got[4].1, got[4].4), (S_IFCHR | 0o600, (5, 1)));
    }
}
