//! `devbox image build`: assembles a guest image (kernel + initramfs) from Debian packages,
//! for x86_64 or arm64 (the arm64 one is for Apple silicon hosts; it is built on any host).
//!
//! Steps, on the calling thread (downloads and the compressor use worker threads of their own):
//! 1. read the suite's signed package lists from the Debian archive (verified against the
//!    archive keys devbox ships, cached under `<cache>/lists/`) and resolve the package
//!    closure as `apt-get install` would (see [`super::debian`]);
//! 2. derive the image version from the arch, that closure, the embedded guest files and the
//!    recipe constants, and return the cached image when it already exists and verifies;
//! 3. download the `.deb`s (in parallel, resumable, verified, cached by sha256 under
//!    `<cache>/debs/`), unpack them into a merged-usr staging tree, add busybox (see
//!    [`busybox`]), kernel modules with their index (see [`modules`]) and the guest files
//!    (see [`rootfs`]);
//! 4. write the kernel in the form the arch's boot loaders take (see [`kernel`]), pack the
//!    tree as a zstd-compressed newc cpio (see [`pack`]) and move the finished image
//!    directory into place.
//!
//! No apt, dpkg, busybox or depmod on the host: nothing but devbox runs, so an image is built
//! the same way on any Linux and on macOS, for either arch.

pub mod busybox;
mod kernel;
pub mod modules;
pub mod notify_module;
mod pack;
mod rootfs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Url;
use sha2::{Digest, Sha256};

use super::debian::fetch::{Fetcher, Retry};
use super::debian::keys::Keyring;
use super::debian::{self, Archive, ArchiveOptions, DebianError, Suite};
use super::{
    INITRD, Image, ImageError, KERNEL, MANIFEST, Manifest, ROOT_IMAGE, images_dir, sha256_file,
};

pub use super::debian::Package;

/// Guest architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    /// For Apple silicon hosts (Virtualization.framework runs guests of the host's arch).
    Arm64,
}

impl Arch {
    /// The architecture this devbox binary runs on, when devbox builds images for it.
    pub fn host() -> Option<Arch> {
        Arch::from_uname(std::env::consts::ARCH)
    }
    /// The arch a manifest's `arch` (`uname -m`) names.
    pub fn from_uname(name: &str) -> Option<Arch> {
        match name {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
    /// Name used in manifests (`uname -m`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }
    /// Debian architecture.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
    /// Debian's metapackage that depends on the current kernel of `flavour`.
    fn kernel_metapackage(self, flavour: Kernel) -> &'static str {
        match (self, flavour) {
            (Arch::X86_64, Kernel::Cloud) => "linux-image-cloud-amd64",
            (Arch::X86_64, Kernel::Generic) => "linux-image-amd64",
            (Arch::Arm64, Kernel::Cloud) => "linux-image-cloud-arm64",
            (Arch::Arm64, Kernel::Generic) => "linux-image-arm64",
        }
    }
}

/// Debian kernel flavour. `cloud` is built for VMs (virtio, no hardware drivers): a smaller
/// image and a faster boot. `generic` is Debian's full kernel, for what `cloud` leaves out,
/// 9p among it (`tests/bench/nfs.sh` uses it to compare shares against QEMU's virtfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    Cloud,
    Generic,
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What `build` needs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Cache directory: `images/`, `lists/` and `debs/` live below it.
    pub cache: PathBuf,
    /// Refresh the package lists and rebuild even if the image exists.
    pub force: bool,
    pub arch: Arch,
    pub kernel: Kernel,
    /// The Debian release the guest is made of.
    pub suite: Suite,
    /// Debian archive (base URL, as `debian::mirror_url` returns it).
    pub mirror: Url,
    /// Debian security archive.
    pub security_mirror: Url,
    /// Draw a download progress bar (on a terminal only).
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{metapackage} brings in no concrete kernel package")]
    NoKernel { metapackage: String },
    #[error("the package closure has no {package}")]
    NotResolved { package: String },
    #[error("the kernel package {package} has no module {module}, loadable or built in")]
    ModuleMissing { package: String, module: String },
    #[error("cannot index the kernel module {path}: {problem}")]
    ModuleIndex { path: PathBuf, problem: String },
    #[error("the kernel {path} cannot boot: it is {problem}")]
    Kernel {
        path: PathBuf,
        problem: crate::image::kernel_format::KernelProblem,
    },
    #[error("cannot gunzip the kernel {path}")]
    Gunzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{deb} holds no busybox binary")]
    NoBusybox { deb: PathBuf },
    #[error("{path} has no busybox applet table")]
    NoAppletTable { path: PathBuf },
    #[error("devbox builds no guest images for this host's architecture ({arch})")]
    UnsupportedHostArch { arch: &'static str },
    #[error("{path} is not a regular file, directory or symlink")]
    UnsupportedFile { path: PathBuf },
    #[error("{path} is larger than 4 GiB, which the cpio newc format cannot hold")]
    TooLarge { path: PathBuf },
    #[error("cannot write the root image {path}: {problem}")]
    RootImage { path: PathBuf, problem: String },
    #[error("cannot compile the guest's file-event module: {problem}{}", if output.is_empty() { String::new() } else { format!("\n{output}") })]
    Module { problem: String, output: String },
    #[error(transparent)]
    Debian(#[from] DebianError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl BuildError {
    pub fn hint(&self) -> Option<String> {
        match self {
            BuildError::NoKernel { .. } | BuildError::NotResolved { .. } => {
                Some("the mirror must carry Debian's `main` component for this architecture".into())
            }
            BuildError::Kernel { problem, .. } => Some(kernel::hint(problem)),
            BuildError::Gunzip { .. } | BuildError::ModuleIndex { .. } => Some(
                "the kernel package is damaged; `devbox image build --force` builds again from \
                 fresh package lists"
                    .into(),
            ),
            BuildError::UnsupportedHostArch { .. } => {
                Some("choose one with `--arch x86_64` or `--arch arm64`".into())
            }
            BuildError::Module { .. } => Some(
                "the module is compiled in a user namespace (`unshare --user --map-root-user \
                 --mount`, util-linux): allow unprivileged user namespaces (Debian: sysctl \
                 kernel.unprivileged_userns_clone=1; Ubuntu 24.04: sysctl \
                 kernel.apparmor_restrict_unprivileged_userns=0), or build as root with \
                 `sudo devbox image build`"
                    .into(),
            ),
            BuildError::Debian(e) => e.hint(),
            BuildError::Image(e) => e.hint(),
            _ => None,
        }
    }
}

/// Top-level packages whose closure makes up the guest (plus the kernel metapackage).
const PACKAGES: &[&str] = &[
    "docker.io",
    "containerd",
    "runc",
    "tini",
    "iptables",
    "e2fsprogs",
    "openssh-server",
    "ca-certificates",
    "netbase",
    // The guest's vsock client for its address report (usr/local/sbin/devbox-report): busybox
    // has no AF_VSOCK support, and socat has had VSOCK-CONNECT since 1.7.4 (bookworm: 1.7.4.4).
    // It costs ~0.4 MB here: its libraries (libssl3, libwrap0) are sshd's too. A program of
    // our own would need a second build for the guest's architecture.
    "socat",
    // inotifywait/inotifywatch for users and for the file-event tests (busybox has none).
    "inotify-tools",
    // The guest's init, shell and small tools, for either arch (see `busybox`).
    busybox::PACKAGE,
];

/// Top-level packages of one suite only. Debian 13 split the docker client out of docker.io
/// (which only recommends it) into docker-cli; the guest's init waits for the engine with
/// `docker version`, and `devbox ssh` users run `docker` in the guest. Debian 12's docker.io
/// holds the client itself.
fn suite_packages(suite: Suite) -> &'static [&'static str] {
    match suite {
        Suite::Bookworm => &[],
        Suite::Trixie => &["docker-cli"],
    }
}

/// zstd level of the initramfs (figures from when it held the whole system, a ~273 MB cpio,
/// 2 threads on the build host; it is now the early userspace alone, a few MB):
/// 3: 87.1 MB in 0.8 s; 9: 79.2 MB in 3.2 s; 12: 78.4 MB in 7 s; 15: 78.3 MB in 28 s;
/// 19: 70.6 MB in 90 s. Boot-time decompression barely depends on the level, so 12 it is:
/// 19's 8 MB are not worth 80 s per build.
const ZSTD_LEVEL: i32 = 12;

/// Bumped whenever the build logic changes the image in a way the inputs do not show.
/// 2: the packages are read and unpacked by devbox itself (`super::debian`), not apt and dpkg.
/// 3: busybox from its package for every arch, the module index written by devbox
/// (`modules`), modules stored uncompressed, os-release per release.
/// 4: every top-level package of the suite's list is unpacked (Debian 13's docker-cli was
/// resolved but left out).
/// 5: the `devbox_notify` module compiled for the image's kernel (see [`notify_module`]).
/// 6: the system in `root.img` (squashfs), the initramfs only the early userspace.
const RECIPE_REVISION: &str = "devbox-image-recipe-6";

/// The early userspace's init (the initramfs's `/init`): mounts `root.img` and hands over.
const EARLY_INIT: &[u8] = include_bytes!("../../assets/guest/early/init");

/// Guest files embedded in the binary: (path in the guest, mode, contents).
const GUEST_FILES: &[(&str, u32, &[u8])] = &[
    (
        "etc/inittab",
        0o644,
        include_bytes!("../../assets/guest/rootfs/etc/inittab"),
    ),
    (
        "usr/local/sbin/devbox-boot",
        0o755,
        include_bytes!("../../assets/guest/rootfs/usr/local/sbin/devbox-boot"),
    ),
    (
        "usr/local/sbin/devbox-udhcpc",
        0o755,
        include_bytes!("../../assets/guest/rootfs/usr/local/sbin/devbox-udhcpc"),
    ),
    (
        "usr/local/sbin/devbox-report",
        0o755,
        include_bytes!("../../assets/guest/rootfs/usr/local/sbin/devbox-report"),
    ),
    (
        "usr/local/sbin/devbox-shutdown",
        0o755,
        include_bytes!("../../assets/guest/rootfs/usr/local/sbin/devbox-shutdown"),
    ),
    (
        "etc/ssh/sshd_config",
        0o644,
        include_bytes!("../../assets/guest/rootfs/etc/ssh/sshd_config"),
    ),
    (
        "etc/passwd",
        0o644,
        include_bytes!("../../assets/guest/rootfs/etc/passwd"),
    ),
    (
        "etc/group",
        0o644,
        include_bytes!("../../assets/guest/rootfs/etc/group"),
    ),
    (
        "etc/shells",
        0o644,
        include_bytes!("../../assets/guest/rootfs/etc/shells"),
    ),
    (
        "etc/nsswitch.conf",
        0o644,
        include_bytes!("../../assets/guest/rootfs/etc/nsswitch.conf"),
    ),
    (
        "etc/acpi/PWRF/00000080",
        0o755,
        include_bytes!("../../assets/guest/rootfs/etc/acpi/PWRF/00000080"),
    ),
];

/// Builds the image for `opts`, or returns the cached one with the same version.
pub fn build(opts: &BuildOptions, progress: &mut dyn FnMut(&str)) -> Result<Image, BuildError> {
    let arch = opts.arch;
    let fetcher = Fetcher::new(Retry::default(), opts.progress).map_err(DebianError::from)?;
    let keyring = Keyring::pinned(opts.suite.keys()).map_err(DebianError::from)?;
    let sources = opts.suite.sources(&opts.mirror, &opts.security_mirror);
    progress(&format!(
        "reading the Debian {} package lists for {} from {} (signed by Debian's archive keys)",
        opts.suite.name(),
        arch.debian(),
        opts.mirror
    ));
    let archive = Archive::open(
        &fetcher,
        &ArchiveOptions {
            sources: &sources,
            keyring: &keyring,
            arch: arch.debian(),
            lists: &opts.cache.join("lists"),
            refresh: opts.force,
            now: SystemTime::now(),
        },
    )?;
    let metapackage = arch.kernel_metapackage(opts.kernel);
    let top = package_list(opts.suite, arch, opts.kernel);
    let closure = archive.resolve(&top)?;
    let kernel = kernel_package(&closure, metapackage)?;
    let busybox_pkg = find_package(&closure, busybox::PACKAGE)?;
    let file_events = notify_module::supported();
    let version = image_version(arch, opts.suite, &closure, file_events);

    let images = images_dir(&opts.cache);
    let dir = images.join(&version);
    if dir.exists() && !opts.force {
        match Image::open(&dir).and_then(|img| img.verify().map(|()| img)) {
            Ok(img) => {
                progress(&format!("image {version} ({arch}) is already built"));
                return Ok(img);
            }
            Err(e) => progress(&format!("rebuilding image {version}: {e}")),
        }
    }

    fs_err::create_dir_all(&images)?;
    let partial = tempfile::Builder::new()
        .prefix(".partial-")
        .tempdir_in(&images)?;
    // Dropping `partial` (on any error below) removes everything assembled so far.
    let work = partial.path();
    let extracted = rootfs::select(&closure, &kernel.name, &top);
    let wanted: Vec<&Package> = extracted
        .iter()
        .copied()
        .chain([&kernel, &busybox_pkg])
        .collect();
    let debs_dir = opts.cache.join("debs");
    progress(&format!(
        "downloading {} {} packages (cached in {})",
        wanted.len(),
        arch.debian(),
        debs_dir.display()
    ));
    debian::download(&fetcher, &wanted, &debs_dir)?;
    let mut debs = rootfs::Debs {
        dir: &debs_dir,
        by_name: wanted.iter().map(|p| (p.name.as_str(), *p)).collect(),
    };
    debs.by_name.remove(busybox_pkg.name.as_str());
    let busybox = rootfs::packaged_busybox(&debs, &busybox_pkg, &work.join("busybox"))?;

    progress("assembling the guest root");
    let stage = work.join("root");
    let kernel_version = rootfs::assemble(
        &stage,
        &work.join("kernel"),
        &rootfs::Recipe {
            debs: &debs,
            kernel_pkg: &kernel.name,
            busybox: &busybox,
            arch,
            suite: opts.suite,
            guest_files: GUEST_FILES,
        },
    )?;

    if file_events {
        let host = Arch::host().ok_or(BuildError::UnsupportedHostArch {
            arch: std::env::consts::ARCH,
        })?;
        let host_archive;
        let host_archive = if host == arch {
            &archive
        } else {
            host_archive = Archive::open(
                &fetcher,
                &ArchiveOptions {
                    sources: &sources,
                    keyring: &keyring,
                    arch: host.debian(),
                    lists: &opts.cache.join("lists"),
                    refresh: opts.force,
                    now: SystemTime::now(),
                },
            )?;
            &host_archive
        };
        let ko = notify_module::build(
            &notify_module::Inputs {
                target: arch,
                target_archive: &archive,
                kernel_pkg: &kernel.name,
                host_archive,
                host,
                fetcher: &fetcher,
                debs_dir: &debs_dir,
                work,
            },
            progress,
        )?;
        let dest = stage.join(notify_module::GUEST_PATH);
        fs_err::create_dir_all(dest.parent().expect("a path below usr/lib"))?;
        fs_err::copy(&ko, &dest)?;
        // The toolchain's root is large; the initramfs is packed from `stage` only.
        fs_err::remove_dir_all(work.join("module-root"))?;
    } else {
        progress("this host cannot compile the guest's file-event module: the image has none");
    }

    let out = work.join("image");
    fs_err::create_dir(&out)?;
    kernel::install(
        &work
            .join("kernel/boot")
            .join(format!("vmlinuz-{kernel_version}")),
        &out.join(KERNEL),
        arch,
    )?;
    progress("packing the root image (squashfs, lz4)");
    pack::root_image(&stage, &out.join(ROOT_IMAGE))?;
    progress(&format!("packing the initramfs (zstd -{ZSTD_LEVEL})"));
    let early = work.join("early");
    rootfs::early(
        &early,
        &work.join("kernel"),
        &kernel.name,
        &kernel_version,
        &busybox,
        EARLY_INIT,
    )?;
    pack::initramfs(&early, &out.join(INITRD), ZSTD_LEVEL)?;

    let mut files = BTreeMap::new();
    for f in [KERNEL, INITRD, ROOT_IMAGE] {
        files.insert(f.to_owned(), sha256_file(&out.join(f))?);
    }
    let manifest = Manifest {
        version: version.clone(),
        arch: arch.name().to_owned(),
        kernel_version,
        created: rfc3339_now(),
        packages: wanted
            .iter()
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect(),
        files,
        file_events,
        // devbox-boot (a guest file of every image built from here) installs them.
        engine_ca: true,
    };
    let json = serde_json::to_string_pretty(&manifest).map_err(std::io::Error::other)?;
    fs_err::write(out.join(MANIFEST), json + "\n")?;

    if dir.exists() {
        // Only reached with --force or a damaged image: replace it.
        fs_err::remove_dir_all(&dir)?;
    }
    fs_err::rename(&out, &dir)?;
    drop(partial);
    progress(&format!(
        "built image {version} ({arch}) in {}",
        dir.display()
    ));
    Ok(Image::open(&dir)?)
}

/// The packages whose closure makes the image of `suite` for `arch` with `kernel`, in the
/// order they are resolved (the order `apt-get install` was given them).
pub fn package_list(suite: Suite, arch: Arch, kernel: Kernel) -> Vec<&'static str> {
    let mut wanted = vec![arch.kernel_metapackage(kernel)];
    wanted.extend_from_slice(PACKAGES);
    wanted.extend_from_slice(suite_packages(suite));
    wanted
}

/// The concrete kernel (`linux-image-<abi>-cloud-amd64`) the metapackage pulled in.
fn kernel_package(closure: &[Package], metapackage: &str) -> Result<Package, BuildError> {
    let flavour = metapackage.trim_start_matches("linux-image-");
    closure
        .iter()
        .find(|p| {
            p.name != metapackage
                && p.name.starts_with("linux-image-")
                && p.name.ends_with(flavour)
                && p.name[12..].starts_with(|c: char| c.is_ascii_digit())
        })
        .cloned()
        .ok_or_else(|| BuildError::NoKernel {
            metapackage: metapackage.to_owned(),
        })
}

/// The package `name` of a resolved closure.
fn find_package(closure: &[Package], name: &str) -> Result<Package, BuildError> {
    closure
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| BuildError::NotResolved {
            package: name.to_owned(),
        })
}

/// Content version: first 16 hex digits of sha256 over the recipe revision and constants, the
/// suite, the arch, the resolved packages (name=version, sorted) and every embedded guest file.
fn image_version(arch: Arch, suite: Suite, closure: &[Package], file_events: bool) -> String {
    let mut h = Sha256::new();
    let mut line = |s: &str| {
        h.update(s.as_bytes());
        h.update(b"\n");
    };
    line(RECIPE_REVISION);
    line(suite.name());
    line(arch.name());
    line(&format!("zstd={ZSTD_LEVEL}"));
    for p in PACKAGES {
        line(p);
    }
    for c in rootfs::recipe(arch, suite) {
        line(c);
    }
    let mut pkgs: Vec<String> = closure
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect();
    pkgs.sort();
    for p in &pkgs {
        line(p);
    }
    for (path, mode, data) in GUEST_FILES {
        line(&format!(
            "{path} {mode:o} {}",
            hex::encode(Sha256::digest(data))
        ));
    }
    line(&format!(
        "early/init {}",
        hex::encode(Sha256::digest(EARLY_INIT))
    ));
    if file_events {
        for (name, data) in notify_module::SOURCE {
            line(&format!(
                "module {name} {}",
                hex::encode(Sha256::digest(data))
            ));
        }
    } else {
        line("module none");
    }
    hex::encode(h.finalize())[..16].to_owned()
}

/// Current UTC time as RFC 3339, without pulling in a date crate.
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for all dates after 1970.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            sha256: "0".repeat(64),
            size: 1,
            mirror: debian::mirror_url(debian::DEFAULT_MIRROR).unwrap(),
            filename: format!("pool/main/{name}.deb"),
        }
    }

    #[test]
    fn version_depends_on_package_versions_not_order() {
        let a = [pkg("libc6", "2.36-9"), pkg("runc", "1.1.5")];
        let b = [pkg("runc", "1.1.5"), pkg("libc6", "2.36-9")];
        let c = [pkg("libc6", "2.36-10"), pkg("runc", "1.1.5")];
        let v = image_version(Arch::X86_64, Suite::Bookworm, &a, true);
        assert_eq!(v.len(), 16);
        assert!(v.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(v, image_version(Arch::X86_64, Suite::Bookworm, &b, true));
        assert_ne!(v, image_version(Arch::X86_64, Suite::Bookworm, &c, true));
    }

    #[test]
    fn version_differs_per_arch_and_release() {
        let a = [pkg("libc6", "2.36-9")];
        let v = image_version(Arch::X86_64, Suite::Bookworm, &a, true);
        assert_ne!(v, image_version(Arch::Arm64, Suite::Bookworm, &a, true));
        assert_ne!(v, image_version(Arch::X86_64, Suite::Trixie, &a, true));
        // An image without the file-event module is another image.
        assert_ne!(v, image_version(Arch::X86_64, Suite::Bookworm, &a, false));
    }

    #[test]
    fn arch_names() {
        for arch in [Arch::X86_64, Arch::Arm64] {
            assert_eq!(Arch::from_uname(arch.name()), Some(arch));
        }
        assert_eq!(Arch::Arm64.to_string(), "aarch64");
        assert_eq!(Arch::Arm64.debian(), "arm64");
        assert_eq!(Arch::from_uname("riscv64"), None);
        assert_eq!(
            Arch::host().map(Arch::name),
            Some(std::env::consts::ARCH).filter(|a| ["x86_64", "aarch64"].contains(a))
        );
    }

    #[test]
    fn busybox_comes_from_its_package_for_every_arch() {
        for suite in [Suite::Bookworm, Suite::Trixie] {
            for arch in [Arch::X86_64, Arch::Arm64] {
                for kernel in [Kernel::Cloud, Kernel::Generic] {
                    let list = package_list(suite, arch, kernel);
                    assert!(list.contains(&"busybox-static"), "{arch} {kernel:?}");
                    assert_eq!(list[0], arch.kernel_metapackage(kernel));
                }
            }
        }
    }

    #[test]
    fn the_docker_client_is_in_every_suite_s_image() {
        // Debian 13's docker.io only recommends docker-cli; Debian 12's holds the client.
        assert!(package_list(Suite::Trixie, Arch::X86_64, Kernel::Cloud).contains(&"docker-cli"));
        assert!(
            !package_list(Suite::Bookworm, Arch::X86_64, Kernel::Cloud).contains(&"docker-cli")
        );
    }

    #[test]
    fn kernel_is_the_concrete_package_not_the_metapackage() {
        let closure = [
            pkg("libc6", "2.36-9"),
            pkg("linux-image-6.1.0-57-cloud-amd64", "6.1.192-3"),
            pkg("linux-image-cloud-amd64", "6.1.192-3"),
        ];
        let k = kernel_package(&closure, "linux-image-cloud-amd64").unwrap();
        assert_eq!(k.name, "linux-image-6.1.0-57-cloud-amd64");
        assert!(kernel_package(&closure[..1], "linux-image-cloud-amd64").is_err());
        assert!(matches!(
            find_package(&closure, "busybox-static"),
            Err(BuildError::NotResolved { .. })
        ));
    }

    #[test]
    fn guest_files_are_embedded() {
        let boot = GUEST_FILES
            .iter()
            .find(|(p, _, _)| *p == "usr/local/sbin/devbox-boot")
            .expect("boot script");
        let text = std::str::from_utf8(boot.2).unwrap();
        // The host times boots by these markers; keep them stable.
        assert!(text.contains("devbox-guest: init"));
        assert!(text.contains("devbox-guest: ready"));
        assert!(text.contains("devbox-config") && text.contains("devbox-data"));
        // DHCP guests (vz) run these two; they must be in the image, and so must socat.
        for script in ["devbox-udhcpc", "devbox-report"] {
            assert!(text.contains(script), "devbox-boot runs {script}");
            let path = format!("usr/local/sbin/{script}");
            let (_, mode, _) = GUEST_FILES
                .iter()
                .find(|(p, _, _)| *p == path)
                .unwrap_or_else(|| panic!("{path} is embedded"));
            assert_eq!(mode & 0o111, 0o111, "{path} is executable");
        }
        assert!(PACKAGES.contains(&"socat"));
    }

    #[test]
    fn rfc3339_shape() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
