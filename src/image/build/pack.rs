//! Packs the staged trees: the guest's system as the root image (a squashfs, read-only, lz4),
//! and the early userspace as the initramfs: a newc cpio (the only format the kernel
//! unpacks), owned by root, compressed with multithreaded zstd.
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

/// Writes `root` as a squashfs to `dest`: every entry owned by root, modes and mtimes as
/// staged, the [`DEVICES`] added (devbox-boot writes its first line to `/dev/console` before
/// it mounts devtmpfs). lz4: the kernel reads it back fastest of the compressors Debian's
/// kernels take (`CONFIG_SQUASHFS_LZ4`), which matters most under emulation, where every
/// page the guest reads from its root is decompressed by emulated instructions.
pub fn root_image(root: &Path, dest: &Path) -> Result<(), BuildError> {
    use backhand::compression::{CompressionOptions, Compressor, Lz4};
    use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

    let squash = |e: backhand::BackhandError| BuildError::RootImage {
        path: dest.to_owned(),
        problem: e.to_string(),
    };
    let mut fs = FilesystemWriter::default();
    // Version 1 is LZ4_LEGACY, the only one the kernel reads; no flags: the fast codec.
    let lz4 = CompressionOptions::Lz4(Lz4 {
        version: 1,
        flags: 0,
    });
    fs.set_compressor(FilesystemCompressor::new(Compressor::Lz4, Some(lz4)).map_err(squash)?);
    fs.set_only_root_id();
    fs.set_root_mode(0o755);
    let mtime = |meta: &std::fs::Metadata| u32::try_from(meta.mtime()).unwrap_or(0);
    fs.set_time(mtime(&fs_err::metadata(root)?));
    let header = |perm: u32, mtime: u32| NodeHeader::new(perm as u16, 0, 0, mtime);

    // Parents before children, as the writer wants them; sorted for a stable image.
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let mut entries: Vec<_> = fs_err::read_dir(&dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for entry in entries {
            let path = entry.path();
            let name = Path::new("/").join(path.strip_prefix(root).expect("below root"));
            let meta = fs_err::symlink_metadata(&path)?;
            let perm = meta.permissions().mode() & 0o7777;
            let ft = meta.file_type();
            if ft.is_dir() {
                fs.push_dir(&name, header(perm, mtime(&meta)))
                    .map_err(squash)?;
                dirs.push(path);
            } else if ft.is_symlink() {
                let target = fs_err::read_link(&path)?;
                fs.push_symlink(target, &name, header(0o777, mtime(&meta)))
                    .map_err(squash)?;
            } else if ft.is_file() {
                fs.push_file_from_path(path.clone(), &name, header(perm, mtime(&meta)))
                    .map_err(squash)?;
            } else {
                return Err(BuildError::UnsupportedFile { path });
            }
        }
    }
    for &(path, mode, major, minor) in DEVICES {
        // The kernel's old encoding, which squashfs stores: major in bits 8-15.
        let device = (major << 8) | minor;
        fs.push_char_device(device, Path::new("/").join(path), header(mode, 0))
            .map_err(squash)?;
    }
    let file = fs_err::File::create(dest)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    fs.write(&mut out).map_err(squash)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
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

#[cfg(test)]
mod root_image_tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    #[test]
    fn packs_tree_as_root_owned_squashfs_with_console() {
        use backhand::{FilesystemReader, InnerNode};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs_err::create_dir_all(root.join("usr/bin")).unwrap();
        fs_err::create_dir_all(root.join("dev")).unwrap();
        fs_err::write(root.join("usr/bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fs_err::write(root.join("usr/bin/big"), &big).unwrap();
        fs_err::set_permissions(
            root.join("usr/bin/hello"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        let dest = tmp.path().join("root.img");
        root_image(&root, &dest).unwrap();

        let file = std::io::BufReader::new(std::fs::File::open(&dest).unwrap());
        let fs = FilesystemReader::from_reader(file).unwrap();
        let mut seen = Vec::new();
        for node in fs.files() {
            let name = node.fullpath.display().to_string();
            assert_eq!((node.header.uid, node.header.gid), (0, 0), "{name}");
            match &node.inner {
                InnerNode::File(f) => {
                    let mut data = Vec::new();
                    fs.file(f).reader().read_to_end(&mut data).unwrap();
                    match name.as_str() {
                        "/usr/bin/hello" => {
                            assert_eq!(data, b"#!/bin/sh\necho hi\n");
                            assert_eq!(node.header.permissions, 0o4755, "set-ID bits kept");
                        }
                        "/usr/bin/big" => assert!(data == big, "a multi-block file reads back"),
                        other => panic!("unexpected file {other}"),
                    }
                }
                InnerNode::Symlink(l) => {
                    assert_eq!(
                        (name.as_str(), l.link.as_path()),
                        ("/bin", Path::new("usr/bin"))
                    )
                }
                InnerNode::CharacterDevice(d) => match name.as_str() {
                    "/dev/console" => assert_eq!(d.device_number, (5 << 8) | 1),
                    "/dev/null" => assert_eq!(d.device_number, (1 << 8) | 3),
                    other => panic!("unexpected device {other}"),
                },
                _ => {}
            }
            seen.push(name);
        }
        for want in [
            "/",
            "/bin",
            "/dev",
            "/dev/console",
            "/dev/null",
            "/usr/bin/big",
        ] {
            assert!(seen.iter().any(|s| s == want), "{want} in {seen:?}");
        }
    }
}
