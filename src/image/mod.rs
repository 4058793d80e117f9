//! Guest images: what a built or pulled image is, where images are cached, and how one is
//! chosen for a machine.
//!
//! An image is a directory `<cache>/images/<version>/` holding `vmlinuz`, `initrd.img`,
//! `root.img` and `manifest.json`: the guest's system is `root.img`, a read-only squashfs every
//! machine of the image shares as a disk, and the initramfs only mounts it (images built
//! before that have no `root.img`: their initramfs is the whole system, unpacked into RAM). The directory appears only once it is complete (it is assembled under a
//! `.partial-*` name and renamed), so a half-built or half-downloaded image is never used.
//! `build` assembles one from Debian packages, `pull` downloads one.

pub mod build;
pub mod debian;
pub mod kernel_format;
pub mod pull;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the manifest inside an image directory.
pub const MANIFEST: &str = "manifest.json";
/// Kernel file name inside an image directory.
pub const KERNEL: &str = "vmlinuz";
/// Initramfs file name inside an image directory.
pub const INITRD: &str = "initrd.img";
/// The guest's system, a squashfs image, inside an image directory (absent from images of
/// the earlier layout).
pub const ROOT_IMAGE: &str = "root.img";
/// The virtio serial of the root image's disk, by which the initramfs finds it.
pub const ROOT_DISK_SERIAL: &str = "devbox-root";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no guest image for {arch} is installed in {dir}")]
    NoImage { dir: PathBuf, arch: String },
    #[error("image {version} is for {arch} machines; this host runs {host} machines")]
    WrongArch {
        version: String,
        arch: String,
        host: String,
    },
    #[error("image {version} not found in {dir}")]
    NotFound { version: String, dir: PathBuf },
    #[error("image {dir} is damaged: {what}")]
    Damaged { dir: PathBuf, what: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ImageError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ImageError::NoImage { .. } | ImageError::NotFound { .. } => Some(
                "build one with `devbox image build` (or download one with `devbox image pull URL`)"
                    .into(),
            ),
            ImageError::Damaged { .. } => {
                Some("rebuild it with `devbox image build --force`".into())
            }
            ImageError::WrongArch { .. } => Some(
                "build an image for this host with `devbox image build` (without --arch) and \
                 pass its version, or leave --image out to use the newest one"
                    .into(),
            ),
            ImageError::Io(_) => None,
        }
    }
}

/// `manifest.json`: what an image contains, written last when an image is assembled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Content-derived version: the first 16 hex digits of the sha256 over the recipe
    /// (package list with exact versions, and the embedded guest files).
    pub version: String,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_version: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Debian packages (name -> version) the image was assembled from.
    pub packages: BTreeMap<String, String>,
    /// sha256 (hex) of each payload file, by file name (`vmlinuz`, `initrd.img`, and
    /// `root.img` in images of the current layout).
    pub files: BTreeMap<String, String>,
    /// Whether the guest has the `devbox_notify` module that raises host file changes as
    /// inotify events on shares (images built before it, or off Linux, do not).
    #[serde(default)]
    pub file_events: bool,
    /// Whether the guest's init installs the machine's extra root certificates
    /// (`create --engine-ca`); images built before it ignore them.
    #[serde(default)]
    pub engine_ca: bool,
}

impl Manifest {
    /// Major version of the image's Docker engine (`docker.io` 20.10.24+… → 20); 20 when the
    /// manifest does not say (the Debian 12 engine).
    pub fn docker_major(&self) -> u32 {
        self.packages
            .get("docker.io")
            .and_then(|v| v.split(['.', ':']).next())
            .and_then(|m| m.parse().ok())
            .unwrap_or(20)
    }
}

/// An image present in the cache.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Image {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join(KERNEL)
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join(INITRD)
    }
    /// The root image, for images that have one (the guest boots it as a read-only disk).
    pub fn root_image(&self) -> Option<PathBuf> {
        self.manifest
            .files
            .contains_key(ROOT_IMAGE)
            .then(|| self.dir.join(ROOT_IMAGE))
    }

    /// Opens an image directory and reads its manifest (no checksum pass).
    pub fn open(dir: &Path) -> Result<Image, ImageError> {
        let path = dir.join(MANIFEST);
        let text = fs_err::read_to_string(&path)?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| ImageError::Damaged {
            dir: dir.to_owned(),
            what: format!("{}: {e}", path.display()),
        })?;
        let listed = manifest.files.keys().map(String::as_str);
        for f in [KERNEL, INITRD].into_iter().chain(listed) {
            if !manifest.files.contains_key(f) || !dir.join(f).is_file() {
                return Err(ImageError::Damaged {
                    dir: dir.to_owned(),
                    what: format!("{f} is missing"),
                });
            }
        }
        Ok(Image {
            dir: dir.to_owned(),
            manifest,
        })
    }

    /// Recomputes every payload checksum and compares it with the manifest.
    pub fn verify(&self) -> Result<(), ImageError> {
        for (name, want) in &self.manifest.files {
            let got = sha256_file(&self.dir.join(name))?;
            if &got != want {
                return Err(ImageError::Damaged {
                    dir: self.dir.clone(),
                    what: format!("{name} has sha256 {got}, manifest says {want}"),
                });
            }
        }
        Ok(())
    }
}

/// `<cache>/images`.
pub fn images_dir(cache: &Path) -> PathBuf {
    cache.join("images")
}

/// Every complete image in the cache, newest first.
pub fn list(cache: &Path) -> Result<Vec<Image>, ImageError> {
    let dir = images_dir(cache);
    let mut out = Vec::new();
    let entries = match fs_err::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // in-progress builds and downloads
        }
        if let Ok(img) = Image::open(&entry.path()) {
            out.push(img);
        }
    }
    out.sort_by(|a, b| b.manifest.created.cmp(&a.manifest.created));
    Ok(out)
}

/// The image with this version, or the newest one when `version` is `None`; either way one
/// for the host's architecture, the only one a machine here can run (every driver runs guests
/// of the host's arch). Rust's names of the arches devbox builds match `uname -m`.
pub fn find(cache: &Path, version: Option<&str>) -> Result<Image, ImageError> {
    find_for(cache, version, std::env::consts::ARCH)
}

/// [`find`] for machines of `arch` (`uname -m`).
pub fn find_for(cache: &Path, version: Option<&str>, arch: &str) -> Result<Image, ImageError> {
    let all = list(cache)?;
    match version {
        Some(v) => {
            let img = all
                .into_iter()
                .find(|i| i.manifest.version == v)
                .ok_or_else(|| ImageError::NotFound {
                    version: v.to_owned(),
                    dir: images_dir(cache),
                })?;
            if img.manifest.arch != arch {
                return Err(ImageError::WrongArch {
                    version: v.to_owned(),
                    arch: img.manifest.arch,
                    host: arch.to_owned(),
                });
            }
            Ok(img)
        }
        None => all
            .into_iter()
            .find(|i| i.manifest.arch == arch)
            .ok_or_else(|| ImageError::NoImage {
                dir: images_dir(cache),
                arch: arch.to_owned(),
            }),
    }
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, std::io::Error> {
    let mut f = fs_err::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete image directory with this version, arch and creation time.
    fn fake_image(cache: &Path, version: &str, arch: &str, created: &str) {
        let dir = images_dir(cache).join(version);
        fs_err::create_dir_all(&dir).unwrap();
        let mut files = BTreeMap::new();
        for f in [KERNEL, INITRD] {
            fs_err::write(dir.join(f), f).unwrap();
            files.insert(f.to_owned(), sha256_file(&dir.join(f)).unwrap());
        }
        let m = Manifest {
            version: version.into(),
            arch: arch.into(),
            kernel_version: "6.1.0-56-cloud".into(),
            created: created.into(),
            packages: BTreeMap::new(),
            files,
            file_events: false,
            engine_ca: false,
        };
        fs_err::write(dir.join(MANIFEST), serde_json::to_string(&m).unwrap()).unwrap();
    }

    #[test]
    fn a_listed_root_image_must_be_there() {
        let cache = tempfile::tempdir().unwrap();
        fake_image(cache.path(), "aaaa", "x86_64", "2025-01-01T00:00:00Z");
        let dir = images_dir(cache.path()).join("aaaa");
        let earlier = Image::open(&dir).unwrap();
        assert_eq!(earlier.root_image(), None, "the earlier layout has none");
        let mut m = earlier.manifest.clone();
        fs_err::write(dir.join(ROOT_IMAGE), "root").unwrap();
        m.files.insert(
            ROOT_IMAGE.into(),
            sha256_file(&dir.join(ROOT_IMAGE)).unwrap(),
        );
        fs_err::write(dir.join(MANIFEST), serde_json::to_string(&m).unwrap()).unwrap();
        let img = Image::open(&dir).unwrap();
        assert_eq!(img.root_image(), Some(dir.join(ROOT_IMAGE)));
        img.verify().unwrap();
        fs_err::remove_file(dir.join(ROOT_IMAGE)).unwrap();
        let err = Image::open(&dir).unwrap_err().to_string();
        assert!(err.contains("root.img is missing"), "{err}");
    }

    #[test]
    fn machines_get_images_of_their_arch_only() {
        let cache = tempfile::tempdir().unwrap();
        let c = cache.path();
        fake_image(c, "aaaa", "x86_64", "2025-01-01T00:00:00Z");
        // Newer, but for the other arch: built for a Mac on this host.
        fake_image(c, "bbbb", "aarch64", "2025-02-01T00:00:00Z");
        assert_eq!(
            find_for(c, None, "x86_64").unwrap().manifest.version,
            "aaaa"
        );
        assert_eq!(
            find_for(c, None, "aarch64").unwrap().manifest.version,
            "bbbb"
        );
        assert_eq!(
            find_for(c, Some("aaaa"), "x86_64")
                .unwrap()
                .manifest
                .version,
            "aaaa"
        );
        let e = find_for(c, Some("bbbb"), "x86_64").unwrap_err();
        assert!(matches!(e, ImageError::WrongArch { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "image bbbb is for aarch64 machines; this host runs x86_64 machines"
        );
        let e = find_for(c, None, "riscv64").unwrap_err();
        assert!(
            e.to_string().starts_with("no guest image for riscv64"),
            "{e}"
        );
    }
}
