//! The guest's `devbox_notify` kernel module (`assets/guest/module/`), compiled at image build.
//!
//! NFS carries no change notifications, and nothing a program can do in the guest raises an
//! inotify event for a change made on the host without changing the file itself; so the guest
//! kernel raises them, through this small module (it calls the same fsnotify hooks the VFS
//! calls for a local change). A kernel module must be built against the exact kernel it
//! loads into, and Debian's kernel changes with every point release, so it cannot ship
//! prebuilt: it is compiled here, next to the kernel it is for, with Debian's own compiler
//! and that kernel's headers package.
//!
//! No compiler or root is needed on the host: the toolchain comes from the same signed
//! archive as the guest (packages of the *build host's* architecture, plus the target's
//! headers; a cross compiler when the arches differ), unpacked into a throwaway root, and
//! `make` runs chrooted in it inside a new user and mount namespace (`unshare`), where the
//! calling user is root over nothing but that namespace. This is Linux-only; an image built on
//! another host has no module, and its manifest says so (`file_events: false`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::rootfs::{Debs, io_at};
use super::{Arch, BuildError};
use crate::image::debian::{self, Archive, DebianError, Package};

/// The module's source and its kbuild file, embedded like the guest files.
pub const SOURCE: &[(&str, &[u8])] = &[
    (
        "devbox_notify.c",
        include_bytes!("../../../assets/guest/module/devbox_notify.c"),
    ),
    (
        "Kbuild",
        include_bytes!("../../../assets/guest/module/Kbuild"),
    ),
];

/// Where the guest finds the module (loaded by `devbox-boot` with `insmod`).
pub const GUEST_PATH: &str = "usr/lib/devbox/devbox_notify.ko";

/// Debian's compiler major version for the kernels devbox builds images of (Debian 13's
/// kernel is built with gcc-14, and kbuild refuses flags an older compiler lacks).
const GCC: &str = "14";

/// Whether this host can compile the module (see the module docs).
pub fn supported() -> bool {
    cfg!(target_os = "linux") && Arch::host().is_some()
}

/// The GNU triplet of `arch` (cross compilers are named after it).
fn triplet(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64-linux-gnu",
        Arch::Arm64 => "aarch64-linux-gnu",
    }
}

/// The kernel's `ARCH=`.
fn kernel_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86",
        Arch::Arm64 => "arm64",
    }
}

/// The compiler package for `target` on a host of `host`.
fn compiler_package(host: Arch, target: Arch) -> String {
    if host == target {
        format!("gcc-{GCC}")
    } else {
        // Debian names cross compilers gcc-14-aarch64-linux-gnu, gcc-14-x86-64-linux-gnu.
        format!("gcc-{GCC}-{}", triplet(target).replace('_', "-"))
    }
}

/// What [`build`] needs: the target's verified archive and kernel, the host's archive.
pub struct Inputs<'a> {
    pub target: Arch,
    pub target_archive: &'a Archive,
    /// The image's concrete kernel package (`linux-image-<kver>`).
    pub kernel_pkg: &'a str,
    /// The build host's archive (the same one as `target_archive` when the arches match).
    pub host_archive: &'a Archive,
    pub host: Arch,
    pub fetcher: &'a debian::fetch::Fetcher,
    pub debs_dir: &'a Path,
    /// Scratch directory (removed with the partial image).
    pub work: &'a Path,
}

/// The packages of the build root: (from the target's archive, from the host's archive).
pub fn toolchain(i: &Inputs) -> Result<(Vec<Package>, Vec<Package>), BuildError> {
    let kver = i.kernel_pkg.trim_start_matches("linux-image-");
    let headers = format!("linux-headers-{kver}");
    // The arch-specific headers alone: their dependencies (the common headers, kbuild's
    // host tools, the compiler) are taken for the host below.
    let target_closure = i.target_archive.resolve(&[&headers])?;
    let arch_headers = target_closure
        .iter()
        .find(|p| p.name == headers)
        .cloned()
        .ok_or(BuildError::NotResolved {
            package: headers.clone(),
        })?;
    let mut host_wanted: Vec<String> = target_closure
        .iter()
        .filter(|p| p.name.starts_with("linux-kbuild-") || p.name.ends_with("-common"))
        .filter(|p| p.name.starts_with("linux-"))
        .map(|p| p.name.clone())
        .collect();
    if !host_wanted.iter().any(|n| n.starts_with("linux-kbuild-")) {
        return Err(BuildError::NotResolved {
            package: format!("linux-kbuild for {headers}"),
        });
    }
    host_wanted.extend([
        compiler_package(i.host, i.target),
        "make".to_owned(),
        "dash".to_owned(),
        "coreutils".to_owned(),
        "mawk".to_owned(),
        "sed".to_owned(),
        "grep".to_owned(),
    ]);
    let names: Vec<&str> = host_wanted.iter().map(String::as_str).collect();
    let host_closure = i.host_archive.resolve(&names)?;
    // The headers package of the host's arch pulls that arch's kernel image in; neither is
    // needed (and for a native build the target's headers are the ones above).
    let host_closure = host_closure
        .into_iter()
        .filter(|p| !p.name.starts_with("linux-image-") && p.name != headers)
        .collect();
    Ok((vec![arch_headers], host_closure))
}

/// Compiles the module for the image's kernel; returns the `.ko`.
pub fn build(i: &Inputs, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, BuildError> {
    let (from_target, from_host) = toolchain(i)?;
    let all: Vec<&Package> = from_target.iter().chain(&from_host).collect();
    progress(&format!(
        "downloading the toolchain for the file-event module ({} packages)",
        all.len()
    ));
    debian::download(i.fetcher, &all, i.debs_dir)?;
    let root = i.work.join("module-root");
    for d in [
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "dev",
        "tmp",
        "build",
    ] {
        fs_err::create_dir_all(root.join(d))?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        let at = root.join(link);
        std::os::unix::fs::symlink(target, &at).map_err(|e| io_at(e, &at))?;
    }
    let debs = Debs {
        dir: i.debs_dir,
        by_name: all.iter().map(|p| (p.name.as_str(), *p)).collect(),
    };
    for pkg in debs.by_name.values() {
        debian::deb::unpack(&pkg.cached(debs.dir), &root, &pkg.sha256)
            .map_err(DebianError::from)?;
    }
    // What maintainer scripts and alternatives would have made.
    for (link, target) in [("usr/bin/sh", "dash"), ("usr/bin/awk", "mawk")] {
        let at = root.join(link);
        if fs_err::symlink_metadata(&at).is_err() {
            std::os::unix::fs::symlink(target, &at).map_err(|e| io_at(e, &at))?;
        }
    }
    for (name, data) in SOURCE {
        fs_err::write(root.join("build").join(name), data)?;
    }
    let kver = i.kernel_pkg.trim_start_matches("linux-image-");
    let cross = if i.host == i.target {
        String::new()
    } else {
        format!("{}-", triplet(i.target))
    };
    let make = format!(
        "make -C /usr/src/linux-headers-{kver} M=/build ARCH={} CROSS_COMPILE={cross} \
         CC={cross}gcc-{GCC} modules",
        kernel_arch(i.target)
    );
    progress(&format!("compiling the file-event module for {kver}"));
    run_chrooted(&root, &make)?;
    let ko = root.join("build/devbox_notify.ko");
    if !ko.is_file() {
        return Err(BuildError::Module {
            problem: "make finished without devbox_notify.ko".into(),
            output: String::new(),
        });
    }
    Ok(ko)
}

/// Runs `command` with /bin/sh chrooted in `root`, in new user and mount namespaces (as
/// root: a new mount namespace only). The host's /dev is bound in (the compiler writes to
/// /dev/null); nothing else of the host is visible.
fn run_chrooted(root: &Path, command: &str) -> Result<(), BuildError> {
    let mut unshare = Command::new("unshare");
    if !nix::unistd::geteuid().is_root() {
        unshare.args(["--user", "--map-root-user"]);
    }
    unshare
        .args(["--mount", "--", "/bin/sh", "-c"])
        .arg(
            "mount --rbind /dev \"$1/dev\" && exec chroot \"$1\" /usr/bin/env -i \
             PATH=/usr/bin:/usr/sbin HOME=/tmp LC_ALL=C /bin/sh -c \"$2\"",
        )
        .arg("sh")
        .arg(root)
        .arg(command);
    let out = unshare.output().map_err(|e| BuildError::Module {
        problem: format!("cannot run unshare: {e}"),
        output: String::new(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    Err(BuildError::Module {
        problem: format!("the build in a user namespace failed ({})", out.status),
        output: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compilers_are_named_as_debian_names_them() {
        assert_eq!(compiler_package(Arch::X86_64, Arch::X86_64), "gcc-14");
        assert_eq!(
            compiler_package(Arch::X86_64, Arch::Arm64),
            "gcc-14-aarch64-linux-gnu"
        );
        assert_eq!(
            compiler_package(Arch::Arm64, Arch::X86_64),
            "gcc-14-x86-64-linux-gnu"
        );
    }

    #[test]
    fn the_source_is_embedded() {
        let (_, c) = SOURCE[0];
        let text = std::str::from_utf8(c).unwrap();
        assert!(text.contains("MODULE_LICENSE(\"GPL\")"));
        assert!(text.contains("\"devbox-notify\""));
    }
}
