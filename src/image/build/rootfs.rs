//! The guest's root tree: which packages are unpacked, how (merged /usr, directory symlinks
//! kept), what is pruned, and what is added (busybox and its applets, see [`super::busybox`];
//! kernel modules with their dependency closure and index, see [`super::modules`]; the
//! embedded guest files).
//!
//! Nothing of the guest's arch runs on the host, and no host tool runs at all: the build is
//! the same on any Linux and on macOS.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::modules::{self, ModuleTree};
use super::{Arch, BuildError, Package, busybox};
use crate::image::debian::{DebianError, Suite, deb};

/// Packages of the closure unpacked besides the top-level ones (`super::package_list`) and the
/// `lib*` ones: zlib1g is a library whose name does not say so.
const EXTRA_EXTRACT: &[&str] = &["zlib1g"];

/// `lib*` packages of the closure that the guest does not need: PAM modules (sshd runs with
/// `UsePAM no` and needs only libpam itself), perl, SELinux policy tools, dpkg's databases.
const LIB_DENY: &[&str] = &[
    "libpam-modules",
    "libpam-modules-bin",
    "libpam-runtime",
    "libsemanage-common",
    "libsemanage2",
    "libsepol2",
    "libklibc",
    "libkmod2",
    "libdb5.3",
    "libgdbm6",
    "libgdbm-compat4",
];

/// Unpacked but unused: documentation, init-system glue, and tools the guest never runs.
const PRUNE: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/bash-completion",
    "usr/share/zsh",
    "usr/share/fish",
    "usr/share/vim",
    "usr/share/openssh",
    "usr/share/ca-certificates",
    "usr/lib/systemd",
    "usr/lib/tmpfiles.d",
    "usr/lib/sysusers.d",
    "etc/init.d",
    "etc/init",
    "etc/systemd",
    "etc/logrotate.d",
    "etc/default",
    "etc/ufw",
    "etc/apparmor.d",
    "etc/pam.d",
    "usr/bin/ctr",
    "usr/bin/containerd-stress",
    "usr/bin/containerd-shim",
    "usr/bin/containerd-shim-runc-v1",
    "usr/sbin/debugfs",
    "usr/sbin/e2image",
    "usr/sbin/e4crypt",
    "usr/sbin/e4defrag",
    "usr/sbin/filefrag",
    "usr/sbin/mklost+found",
    "usr/sbin/e2freefrag",
    "usr/sbin/e2undo",
    "usr/sbin/e2mmpstatus",
    "usr/sbin/e2scrub",
    "usr/sbin/e2scrub_all",
    "usr/sbin/badblocks",
    "usr/sbin/logsave",
    "usr/sbin/nfnl_osf",
    "usr/sbin/ovrouter",
    "usr/sbin/xtables-monitor",
];

/// iptables "alternatives" (normally made by postinst, which is not run), linked to the
/// release's default backend ([`iptables_backend`]).
const IPTABLES_LINKS: &[&str] = &[
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
];

/// The iptables binary the [`IPTABLES_LINKS`] point to: Debian's default backend of the
/// release. Debian 12 images keep the legacy (x_tables) one they have always had; Debian 13's
/// default is nf_tables (devbox-boot loads the modules of whichever backend the image has).
pub fn iptables_backend(suite: Suite) -> &'static str {
    match suite {
        Suite::Bookworm => "xtables-legacy-multi",
        Suite::Trixie => "xtables-nft-multi",
    }
}

/// Every constant of this recipe for `arch` and `suite`, for the image version: changing any
/// of them changes the image even when the packages stay the same.
pub fn recipe(arch: Arch, suite: Suite) -> impl Iterator<Item = &'static str> {
    [
        EXTRA_EXTRACT,
        LIB_DENY,
        PRUNE,
        modules::MODULE_SELECTION,
        modules::arch_module_selection(arch),
        modules::REQUIRED_MODULES,
        IPTABLES_LINKS,
        busybox::SBIN_APPLETS,
    ]
    .into_iter()
    .flatten()
    .copied()
    .chain([iptables_backend(suite)])
}

/// The downloaded `.deb`s of the image, by package name.
pub struct Debs<'a> {
    /// `<cache>/debs`.
    pub dir: &'a Path,
    pub by_name: BTreeMap<&'a str, &'a Package>,
}

/// Unpacks a `busybox-static` package into `dir`; returns its busybox binary.
pub fn packaged_busybox(debs: &Debs, pkg: &Package, dir: &Path) -> Result<PathBuf, BuildError> {
    fs_err::create_dir_all(dir)?;
    unpack(debs.dir, pkg, dir)?;
    busybox::binary_in(dir).ok_or_else(|| BuildError::NoBusybox {
        deb: pkg.cached(debs.dir),
    })
}

/// Packages of the closure that are unpacked into the root (the kernel is handled apart):
/// the top-level ones `wanted` (the image's package list), their libraries, [`EXTRA_EXTRACT`].
pub fn select<'a>(closure: &'a [Package], kernel: &str, wanted: &[&str]) -> Vec<&'a Package> {
    closure
        .iter()
        .filter(|p| p.name != kernel && p.name != busybox::PACKAGE)
        .filter(|p| {
            wanted.contains(&p.name.as_str())
                || EXTRA_EXTRACT.contains(&p.name.as_str())
                || (p.name.starts_with("lib")
                    && !p.name.ends_with("-perl")
                    && !p.name.starts_with("libperl")
                    && !LIB_DENY.contains(&p.name.as_str()))
        })
        .collect()
}

/// What [`assemble`] builds the root from.
pub struct Recipe<'a> {
    pub debs: &'a Debs<'a>,
    /// The concrete kernel package (`linux-image-<abi>-cloud-amd64`), among `debs`.
    pub kernel_pkg: &'a str,
    /// The guest's busybox binary (from its unpacked package).
    pub busybox: &'a Path,
    pub arch: Arch,
    pub suite: Suite,
    pub guest_files: &'a [(&'a str, u32, &'a [u8])],
}

/// Builds the root tree in `stage` (kernel unpacked in `kernel_dir`); returns `uname -r`.
pub fn assemble(stage: &Path, kernel_dir: &Path, r: &Recipe) -> Result<String, BuildError> {
    let (debs, kernel_pkg) = (r.debs, r.kernel_pkg);
    // Merged /usr: packages that still ship /bin, /sbin, /lib land below /usr through these
    // links, which unpacking keeps (as `tar --keep-directory-symlink` did).
    for d in ["usr/bin", "usr/sbin", "usr/lib", "usr/lib64"] {
        fs_err::create_dir_all(stage.join(d))?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        symlink(target, stage.join(link)).map_err(|e| io_at(e, &stage.join(link)))?;
    }
    // In name order, as before: where two packages ship one path, the later one's stays.
    for (name, pkg) in &debs.by_name {
        if *name != kernel_pkg {
            unpack(debs.dir, pkg, stage)?;
        }
    }
    for p in PRUNE {
        remove(&stage.join(p))?;
    }
    for entry in fs_err::read_dir(stage.join("usr/sbin"))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // arptables/ebtables/iptables translators (nft syntax) are not used.
        if name.ends_with("-translate")
            || name.starts_with("arptables")
            || name.starts_with("ebtables")
        {
            remove(&entry.path())?;
        }
    }
    for name in IPTABLES_LINKS {
        let link = stage.join("usr/sbin").join(name);
        remove(&link)?;
        symlink(iptables_backend(r.suite), &link).map_err(|e| io_at(e, &link))?;
    }
    ca_bundle(stage)?;
    busybox::install(stage, r.busybox)?;
    skeleton(stage, r.guest_files)?;
    let os_release = stage.join("usr/lib/os-release");
    remove(&os_release)?;
    fs_err::write(&os_release, os_release_text(r.suite))?;

    fs_err::create_dir_all(kernel_dir)?;
    let kernel = debs
        .by_name
        .get(kernel_pkg)
        .ok_or_else(|| BuildError::NotResolved {
            package: kernel_pkg.to_owned(),
        })?;
    unpack(debs.dir, kernel, kernel_dir)?;
    let kver = kernel_pkg.trim_start_matches("linux-image-").to_owned();
    install_modules(stage, kernel_dir, kernel_pkg, &kver, r.arch)?;
    Ok(kver)
}

/// The guest's `/usr/lib/os-release` (os-release(5)): devbox's guest, like Debian.
fn os_release_text(suite: Suite) -> String {
    let v = suite.version();
    format!(
        "PRETTY_NAME=\"devbox guest (Debian {v} packages)\"\n\
         NAME=\"devbox\"\n\
         ID=devbox\n\
         ID_LIKE=debian\n\
         VERSION_ID=\"{v}\"\n\
         VERSION_CODENAME={}\n",
        suite.name()
    )
}

/// Unpacks the cached `.deb` of `pkg` into `dest` (see [`deb::unpack`]).
fn unpack(debs: &Path, pkg: &Package, dest: &Path) -> Result<(), BuildError> {
    deb::unpack(&pkg.cached(debs), dest, &pkg.sha256).map_err(DebianError::from)?;
    Ok(())
}

/// ca-certificates' postinst normally builds this bundle; dockerd needs it to pull over TLS.
fn ca_bundle(stage: &Path) -> Result<(), BuildError> {
    let src = stage.join("usr/share/ca-certificates");
    let mut certs = Vec::new();
    collect_files(&src, &mut certs)?;
    certs.retain(|p| p.extension().is_some_and(|e| e == "crt"));
    certs.sort();
    let mut bundle = Vec::new();
    for c in &certs {
        bundle.extend(fs_err::read(c)?);
    }
    let dir = stage.join("etc/ssl/certs");
    fs_err::create_dir_all(&dir)?;
    fs_err::write(dir.join("ca-certificates.crt"), bundle)?;
    Ok(())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BuildError> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_files(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Mount points, writable dirs, and the embedded guest files.
fn skeleton(stage: &Path, guest_files: &[(&str, u32, &[u8])]) -> Result<(), BuildError> {
    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("mnt/data", 0o755),
        ("var/lib/docker", 0o711),
        ("var/log", 0o755),
        ("etc/docker", 0o755),
    ] {
        let path = stage.join(dir);
        fs_err::create_dir_all(&path)?;
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    for (link, target) in [("var/run", "../run"), ("etc/mtab", "/proc/self/mounts")] {
        let path = stage.join(link);
        remove(&path)?;
        symlink(target, &path).map_err(|e| io_at(e, &path))?;
    }
    for (rel, mode, data) in guest_files {
        let path = stage.join(rel);
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        remove(&path)?;
        fs_err::write(&path, data)?;
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
    }
    Ok(())
}

/// Builds the early userspace in `early` (the initramfs): `/init` (`init`), the static
/// busybox with the applets it uses, the device nodes (added when packed) and the modules
/// that mounting the root image takes, with their index (see [`super::modules`]).
pub fn early(
    early: &Path,
    kernel_dir: &Path,
    kernel_pkg: &str,
    kver: &str,
    busybox: &Path,
    init: &[u8],
) -> Result<(), BuildError> {
    for d in ["usr/bin", "usr/sbin", "dev", "proc", "sys", "run"] {
        fs_err::create_dir_all(early.join(d))?;
    }
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")] {
        symlink(target, early.join(link)).map_err(|e| io_at(e, &early.join(link)))?;
    }
    let bin = early.join("usr/bin/busybox");
    fs_err::copy(busybox, &bin)?;
    fs_err::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    for applet in EARLY_APPLETS {
        let link = early.join(super::busybox::applet_path(applet));
        symlink("/usr/bin/busybox", &link).map_err(|e| io_at(e, &link))?;
    }
    let path = early.join("init");
    fs_err::write(&path, init)?;
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;

    copy_modules(
        early,
        kernel_dir,
        kernel_pkg,
        kver,
        modules::EARLY_MODULE_SELECTION,
        modules::EARLY_MODULES,
    )
}

/// The busybox applets `/init` of the early userspace runs (it checks nothing else exists).
const EARLY_APPLETS: &[&str] = &[
    "cat",
    "mkdir",
    "modprobe",
    "mount",
    "sh",
    "sleep",
    "switch_root",
    "umount",
];

/// The kernel package's module directory (Debian 13's kernel packages ship the modules below
/// /usr/lib, Debian 12's below /lib).
fn module_source(kernel_dir: &Path, kernel_pkg: &str, kver: &str) -> Result<PathBuf, BuildError> {
    ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|d| kernel_dir.join(d).join(kver))
        .find(|d| d.is_dir())
        .ok_or_else(|| BuildError::ModuleMissing {
            package: kernel_pkg.to_owned(),
            module: format!("directory lib/modules/{kver}"),
        })
}

/// Copies the selected modules and their dependencies (uncompressed) and writes their index
/// (see [`super::modules`]).
fn install_modules(
    stage: &Path,
    kernel_dir: &Path,
    kernel_pkg: &str,
    kver: &str,
    arch: Arch,
) -> Result<(), BuildError> {
    let selection: Vec<&str> = modules::MODULE_SELECTION
        .iter()
        .chain(modules::arch_module_selection(arch))
        .copied()
        .collect();
    copy_modules(
        stage,
        kernel_dir,
        kernel_pkg,
        kver,
        &selection,
        modules::REQUIRED_MODULES,
    )
}

/// Copies the kernel package's modules that match `selection`, with their dependencies
/// (uncompressed), below `root`'s `usr/lib/modules/<kver>` and writes their index; a module of
/// `required` that is neither copied nor built in is an error.
fn copy_modules(
    root: &Path,
    kernel_dir: &Path,
    kernel_pkg: &str,
    kver: &str,
    selection: &[&str],
    required: &[&str],
) -> Result<(), BuildError> {
    let tree = ModuleTree::scan(&module_source(kernel_dir, kernel_pkg, kver)?)?;
    let dest = root.join("usr/lib/modules").join(kver);
    fs_err::create_dir_all(&dest)?;
    let set = tree.closure(&tree.select(selection), Some(&dest))?;
    let names: BTreeSet<String> = set.modules.keys().cloned().collect();
    if let Some(m) = modules::missing_module(required, &names, &tree.builtin()?) {
        return Err(BuildError::ModuleMissing {
            package: kernel_pkg.to_owned(),
            module: m.to_owned(),
        });
    }
    tree.copy_lists(&dest)?;
    set.write_index(&dest)
}

/// Removes a file, symlink or directory tree; absent is fine.
fn remove(path: &Path) -> Result<(), BuildError> {
    match path.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(e, path).into()),
        Ok(m) if m.is_dir() => Ok(fs_err::remove_dir_all(path)?),
        Ok(_) => Ok(fs_err::remove_file(path)?),
    }
}

/// An io::Error that names its path (for std calls fs-err does not wrap, like symlink).
pub fn io_at(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str) -> Package {
        Package {
            name: name.into(),
            version: "1".into(),
            arch: "amd64".into(),
            sha256: "0".repeat(64),
            size: 1,
            mirror: crate::image::debian::mirror_url("http://127.0.0.1/").unwrap(),
            filename: format!("pool/{name}.deb"),
        }
    }

    #[test]
    fn selects_wanted_packages_and_libraries_only() {
        let closure: Vec<Package> = [
            "libc6",
            "perl-base",
            "libperl5.36",
            "libfile-find-rule-perl",
            "libpam0g",
            "libpam-modules",
            "docker.io",
            "docker-cli",
            "dpkg",
            "busybox-static",
            "linux-image-6.1.0-56-cloud-amd64",
        ]
        .into_iter()
        .map(pkg)
        .collect();
        let wanted = ["docker.io", "docker-cli", "busybox-static"];
        let names: Vec<&str> = select(&closure, "linux-image-6.1.0-56-cloud-amd64", &wanted)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["libc6", "libpam0g", "docker.io", "docker-cli"]);
    }

    #[test]
    fn recipe_depends_on_arch_and_release() {
        let x86: Vec<&str> = recipe(Arch::X86_64, Suite::Trixie).collect();
        let arm: Vec<&str> = recipe(Arch::Arm64, Suite::Trixie).collect();
        assert!(x86.contains(&"kernel/arch/x86/crypto/"));
        assert!(!arm.iter().any(|p| p.contains("arch/x86")));
        assert!(arm.contains(&"kernel/arch/arm64/crypto/"));
        assert!(x86.contains(&"xtables-nft-multi"));
        let old: Vec<&str> = recipe(Arch::X86_64, Suite::Bookworm).collect();
        assert!(old.contains(&"xtables-legacy-multi") && !old.contains(&"xtables-nft-multi"));
    }

    #[test]
    fn os_release_names_the_debian_release() {
        let text = os_release_text(Suite::Trixie);
        assert!(text.contains("VERSION_ID=\"13\"\n"), "{text}");
        assert!(text.contains("VERSION_CODENAME=trixie\n"), "{text}");
        assert!(text.contains("ID_LIKE=debian\n"), "{text}");
        assert!(os_release_text(Suite::Bookworm).contains("(Debian 12 packages)"));
    }
}
