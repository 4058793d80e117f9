//! The guest's root tree: which packages are unpacked, how (merged /usr, directory symlinks
//! kept), what is pruned, and what is added (busybox and its applets, kernel modules with
//! their dependency closure, the embedded guest files).
//!
//! Nothing of the guest's arch runs on the host: the host's busybox computes `modules.dep`
//! (busybox `depmod` reads the modules' `.modinfo` as bytes, whatever their arch) and lists
//! the applet directories, and a foreign busybox's applet names are read from its binary.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Arch, BuildError, Package, run};
use crate::image::debian::{DebianError, deb};

/// The host's static busybox (Debian's busybox-static); in x86_64 images it is also the
/// guest's init and shell.
const HOST_BUSYBOX: &str = "/bin/busybox";

/// Packages of the closure unpacked besides the top-level ones (`super::PACKAGES`) and the
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

/// Kernel modules copied into the guest (paths below `lib/modules/<kver>/`; a trailing `/`
/// takes the whole directory). Their modules.dep closure comes along.
const MODULE_SELECTION: &[&str] = &[
    // virtio transports and devices (nothing runs udev: devbox-boot loads these by name)
    "kernel/drivers/virtio/",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/drivers/net/virtio_net.ko",
    "kernel/drivers/char/hw_random/virtio-rng.ko",
    "kernel/drivers/char/virtio_console.ko",
    // ACPI power button -> input events read by busybox acpid
    "kernel/drivers/acpi/button.ko",
    "kernel/drivers/input/evdev.ko",
    // container networking
    "kernel/drivers/net/tun.ko",
    "kernel/drivers/net/veth.ko",
    "kernel/drivers/net/dummy.ko",
    "kernel/drivers/net/macvlan.ko",
    "kernel/drivers/net/ipvlan/",
    "kernel/drivers/net/vxlan/",
    "kernel/net/netfilter/",
    "kernel/net/ipv4/",
    "kernel/net/ipv6/",
    "kernel/net/bridge/",
    "kernel/net/802/",
    "kernel/net/8021q/",
    "kernel/net/llc/",
    "kernel/net/core/",
    "kernel/net/sched/",
    "kernel/net/packet/",
    "kernel/net/xfrm/",
    "kernel/net/key/",
    // vsock over virtio (not the VMware/Hyper-V transports)
    "kernel/net/vmw_vsock/vsock.ko",
    "kernel/net/vmw_vsock/vsock_diag.ko",
    "kernel/net/vmw_vsock/vsock_loopback.ko",
    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
    // NFSv3 client for shared folders
    "kernel/net/sunrpc/",
    "kernel/fs/nfs/",
    "kernel/fs/nfs_common/",
    "kernel/fs/lockd/",
    "kernel/fs/fscache/",
    "kernel/fs/netfs/",
    // 9p (virtfs), where the kernel has it (generic flavour; the cloud kernel is built
    // without CONFIG_9P_FS)
    "kernel/fs/9p/",
    "kernel/net/9p/",
    // docker storage and FUSE
    "kernel/fs/overlayfs/",
    "kernel/fs/fuse/",
    "kernel/lib/",
    "kernel/crypto/",
];

/// Arch-specific additions to [`MODULE_SELECTION`]: the accelerated counterparts of the
/// generic crypto and library modules selected there (`kernel/crypto/`, `kernel/lib/`).
fn arch_module_selection(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => &["kernel/arch/x86/crypto/"],
        Arch::Arm64 => &["kernel/arch/arm64/crypto/", "kernel/arch/arm64/lib/"],
    }
}

/// Modules devbox-boot or devbox features rely on; a kernel that neither ships them as modules
/// nor builds them in (`modules.builtin`) is an error. Which is which differs per arch: the
/// arm64 cloud kernel builds `button` in, the amd64 one ships it as a module.
const REQUIRED_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_rng",
    "virtio_console",
    "vmw_vsock_virtio_transport",
    "sunrpc",
    "lockd",
    "grace",
    "nfs",
    "nfsv3",
    "nfs_acl",
    "tun",
    "overlay",
    "br_netfilter",
    "iptable_nat",
    "xt_MASQUERADE",
    "button",
    "evdev",
];

/// iptables "alternatives" (normally made by postinst, which is not run): legacy backend.
const IPTABLES_LINKS: &[&str] = &[
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
];

/// Every constant of this recipe for `arch`, for the image version: changing any of them
/// changes the image even when the packages stay the same.
pub fn recipe(arch: Arch) -> impl Iterator<Item = &'static str> {
    [
        EXTRA_EXTRACT,
        LIB_DENY,
        PRUNE,
        MODULE_SELECTION,
        arch_module_selection(arch),
        REQUIRED_MODULES,
        IPTABLES_LINKS,
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// The busybox that goes into the image, and the host's, which runs during the build.
pub struct Busybox<'a> {
    pub image: &'a Path,
    pub host: &'a Path,
}

/// The host's static busybox.
pub fn host_busybox() -> Result<PathBuf, BuildError> {
    let path = PathBuf::from(HOST_BUSYBOX);
    if !path.is_file() {
        return Err(BuildError::ToolMissing {
            tool: HOST_BUSYBOX.into(),
            package: "busybox-static",
        });
    }
    Ok(path)
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
    // bookworm ships /bin/busybox; later releases move it below /usr.
    ["usr/bin/busybox", "bin/busybox"]
        .iter()
        .map(|p| dir.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| BuildError::NoBusybox {
            deb: pkg.cached(debs.dir),
        })
}

/// Packages of the closure that are unpacked into the root (the kernel is handled apart).
pub fn select<'a>(closure: &'a [Package], kernel: &str) -> Vec<&'a Package> {
    closure
        .iter()
        .filter(|p| p.name != kernel)
        .filter(|p| {
            super::PACKAGES.contains(&p.name.as_str())
                || EXTRA_EXTRACT.contains(&p.name.as_str())
                || (p.name.starts_with("lib")
                    && !p.name.ends_with("-perl")
                    && !p.name.starts_with("libperl")
                    && !LIB_DENY.contains(&p.name.as_str()))
        })
        .collect()
}

/// Builds the root tree in `stage` (kernel unpacked in `kernel_dir`); returns `uname -r`.
pub fn assemble(
    stage: &Path,
    kernel_dir: &Path,
    debs: &Debs,
    kernel_pkg: &str,
    busybox: &Busybox,
    arch: Arch,
    guest_files: &[(&str, u32, &[u8])],
) -> Result<String, BuildError> {
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
        symlink("xtables-legacy-multi", &link).map_err(|e| io_at(e, &link))?;
    }
    ca_bundle(stage)?;
    install_busybox(stage, busybox)?;
    skeleton(stage, guest_files)?;

    fs_err::create_dir_all(kernel_dir)?;
    let kernel = debs
        .by_name
        .get(kernel_pkg)
        .ok_or_else(|| BuildError::NotResolved {
            package: kernel_pkg.to_owned(),
        })?;
    unpack(debs.dir, kernel, kernel_dir)?;
    let kver = kernel_pkg.trim_start_matches("linux-image-").to_owned();
    install_modules(stage, kernel_dir, kernel_pkg, &kver, busybox.host, arch)?;
    Ok(kver)
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

/// Copies busybox to /usr/bin and links every applet that no package provides, plus /init.
fn install_busybox(stage: &Path, busybox: &Busybox) -> Result<(), BuildError> {
    let dest = stage.join("usr/bin/busybox");
    fs_err::copy(busybox.image, &dest)?;
    fs_err::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
    // Only the host's busybox can run here; it says where each of its applets goes.
    let out = run(Command::new(busybox.host).arg("--list-full"))?;
    let host_list = String::from_utf8_lossy(&out.stdout);
    let applets: Vec<String> = if busybox.image == busybox.host {
        host_list.lines().map(str::to_owned).collect()
    } else {
        let names = applet_names(&fs_err::read(busybox.image)?).ok_or_else(|| {
            BuildError::NoAppletTable {
                path: busybox.image.to_owned(),
            }
        })?;
        applets_at_host_paths(&names, &host_list)
    };
    for applet in &applets {
        let rel = applet_path(applet);
        let link = stage.join(&rel);
        if link.symlink_metadata().is_ok() {
            continue; // a real tool from a package wins (e.g. e2fsprogs' mkfs)
        }
        if let Some(parent) = link.parent() {
            fs_err::create_dir_all(parent)?;
        }
        symlink("/usr/bin/busybox", &link).map_err(|e| io_at(e, &link))?;
    }
    // The kernel runs /init from the initramfs; busybox init then reads /etc/inittab.
    let init = stage.join("init");
    symlink("usr/bin/busybox", &init).map_err(|e| io_at(e, &init))?;
    Ok(())
}

/// The applet names compiled into a busybox binary. busybox keeps them as one sorted run of
/// NUL-terminated strings, `[`, `[[`, `acpid`, …, ended by an empty string
/// (`applet_names[]` in the generated `include/applet_tables.h`).
fn applet_names(binary: &[u8]) -> Option<Vec<String>> {
    const START: &[u8] = b"\0[\0[[\0";
    let start = binary.windows(START.len()).position(|w| w == START)? + 1;
    let mut names = Vec::new();
    for raw in binary[start..].split(|&b| b == 0) {
        if raw.is_empty() {
            break;
        }
        let name = std::str::from_utf8(raw).ok()?;
        // Applet names are short printable words; anything else means a false start.
        if name.len() > 32 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        names.push(name.to_owned());
    }
    (names.len() > 2).then_some(names)
}

/// `--list-full` lines for `names`: at the host busybox's path for the applet when it has
/// one (same upstream config: Debian builds busybox-static alike for every arch), else in
/// `usr/bin` (the guest's PATH has both bin directories).
fn applets_at_host_paths(names: &[String], host_list_full: &str) -> Vec<String> {
    let host: BTreeMap<&str, &str> = host_list_full
        .lines()
        .map(|l| (l.rsplit('/').next().unwrap_or(l), l))
        .collect();
    names
        .iter()
        .map(|n| match host.get(n.as_str()) {
            Some(path) => (*path).to_owned(),
            None => format!("usr/bin/{n}"),
        })
        .collect()
}

/// Maps an applet path of `busybox --list-full` into the merged-usr tree.
fn applet_path(applet: &str) -> String {
    match applet.split_once('/') {
        Some(("bin", rest)) => format!("usr/bin/{rest}"),
        Some(("sbin", rest)) => format!("usr/sbin/{rest}"),
        _ => applet.to_owned(),
    }
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

/// Copies the selected modules and their dependencies, then regenerates modules.dep.
fn install_modules(
    stage: &Path,
    kernel_dir: &Path,
    kernel_pkg: &str,
    kver: &str,
    host_busybox: &Path,
    arch: Arch,
) -> Result<(), BuildError> {
    let src = kernel_dir.join("lib/modules").join(kver);
    // The kernel deb ships no modules.dep (depmod runs in its postinst); busybox makes one.
    run(Command::new(host_busybox)
        .arg("depmod")
        .arg("-b")
        .arg(kernel_dir)
        .arg(kver))?;
    let deps = parse_modules_dep(&fs_err::read_to_string(src.join("modules.dep"))?);
    let selection: Vec<&str> = MODULE_SELECTION
        .iter()
        .chain(arch_module_selection(arch))
        .copied()
        .collect();
    let chosen = module_closure(&deps, &selection);
    let builtin = match fs_err::read_to_string(src.join("modules.builtin")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    if let Some(m) = missing_module(REQUIRED_MODULES, &chosen, &builtin) {
        return Err(BuildError::ModuleMissing {
            package: kernel_pkg.to_owned(),
            module: m.to_owned(),
        });
    }
    let dest = stage.join("usr/lib/modules").join(kver);
    for rel in &chosen {
        let to = dest.join(rel);
        if let Some(parent) = to.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::copy(src.join(rel), &to)?;
    }
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        if src.join(f).exists() {
            fs_err::copy(src.join(f), dest.join(f))?;
        }
    }
    run(Command::new(host_busybox)
        .arg("depmod")
        .arg("-b")
        .arg(stage)
        .arg(kver))?;
    Ok(())
}

/// The first of `required` that is neither among the `chosen` module files nor built in
/// (`builtin`: the kernel's `modules.builtin`, one `kernel/…/name.ko` path per line).
fn missing_module<'a>(
    required: &[&'a str],
    chosen: &BTreeSet<String>,
    builtin: &str,
) -> Option<&'a str> {
    let present: BTreeSet<String> = chosen
        .iter()
        .map(String::as_str)
        .chain(builtin.lines().map(str::trim).filter(|l| !l.is_empty()))
        .map(module_name)
        .collect();
    required.iter().copied().find(|m| !present.contains(*m))
}

/// `modules.dep` as module -> dependencies (paths relative to `lib/modules/<kver>`).
fn parse_modules_dep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, deps)| {
            (
                m.trim().to_owned(),
                deps.split_whitespace().map(str::to_owned).collect(),
            )
        })
        .collect()
}

/// Modules matching `selection` (exact paths or `dir/` prefixes) and everything they need.
fn module_closure(deps: &BTreeMap<String, Vec<String>>, selection: &[&str]) -> BTreeSet<String> {
    let mut pending: Vec<&String> = deps
        .keys()
        .filter(|m| {
            selection.iter().any(|s| {
                if s.ends_with('/') {
                    m.starts_with(s)
                } else {
                    m == s
                }
            })
        })
        .collect();
    let mut out = BTreeSet::new();
    while let Some(m) = pending.pop() {
        if out.insert(m.clone()) {
            pending.extend(deps.get(m).into_iter().flatten());
        }
    }
    out
}

/// Module name as modprobe spells it: file stem with `-` folded to `_`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.trim_end_matches(".ko").replace('-', "_")
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
fn io_at(e: std::io::Error, path: &Path) -> std::io::Error {
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
            "dpkg",
            "linux-image-6.1.0-56-cloud-amd64",
        ]
        .into_iter()
        .map(pkg)
        .collect();
        let names: Vec<&str> = select(&closure, "linux-image-6.1.0-56-cloud-amd64")
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["libc6", "libpam0g", "docker.io"]);
    }

    #[test]
    fn module_closure_follows_dependencies() {
        let deps = parse_modules_dep(
            "kernel/fs/nfs/nfsv3.ko: kernel/fs/nfs/nfs.ko kernel/net/sunrpc/sunrpc.ko\n\
             kernel/fs/nfs/nfs.ko: kernel/net/sunrpc/sunrpc.ko\n\
             kernel/net/sunrpc/sunrpc.ko:\n\
             kernel/drivers/char/hw_random/virtio-rng.ko:\n\
             kernel/sound/snd.ko:\n",
        );
        let got = module_closure(
            &deps,
            &["kernel/fs/nfs/nfsv3.ko", "kernel/drivers/char/hw_random/"],
        );
        let got: Vec<&str> = got.iter().map(String::as_str).collect();
        assert_eq!(
            got,
            [
                "kernel/drivers/char/hw_random/virtio-rng.ko",
                "kernel/fs/nfs/nfs.ko",
                "kernel/fs/nfs/nfsv3.ko",
                "kernel/net/sunrpc/sunrpc.ko"
            ]
        );
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
            "virtio_rng"
        );
    }

    #[test]
    fn built_in_modules_satisfy_requirements() {
        let chosen: BTreeSet<String> = [
            "kernel/drivers/input/evdev.ko",
            "kernel/drivers/char/hw_random/virtio-rng.ko",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        // arm64's cloud kernel builds the ACPI button in; amd64's ships it as a module.
        let builtin = "kernel/fs/ext4/ext4.ko\nkernel/drivers/acpi/button.ko\n";
        let required = ["evdev", "virtio_rng", "button"];
        assert_eq!(missing_module(&required, &chosen, builtin), None);
        assert_eq!(missing_module(&required, &chosen, ""), Some("button"));
        assert_eq!(
            missing_module(&["virtio_blk", "button"], &chosen, builtin),
            Some("virtio_blk")
        );
    }

    #[test]
    fn arch_specific_module_paths() {
        let x86: Vec<&str> = recipe(Arch::X86_64).collect();
        let arm: Vec<&str> = recipe(Arch::Arm64).collect();
        assert!(x86.contains(&"kernel/arch/x86/crypto/"));
        assert!(!arm.iter().any(|p| p.contains("arch/x86")));
        assert!(arm.contains(&"kernel/arch/arm64/crypto/"));
    }

    #[test]
    fn applet_names_are_read_from_the_binary() {
        // As in busybox's rodata: other strings, the NUL-separated sorted names, an empty one.
        let mut bin = b"\x7fELF junk\0usage: [ EXPR ]\0".to_vec();
        bin.extend_from_slice(b"\0[\0[[\0acpid\0modprobe\0sh\0zcat\0\0more data\0");
        assert_eq!(
            applet_names(&bin).unwrap(),
            ["[", "[[", "acpid", "modprobe", "sh", "zcat"]
        );
        assert_eq!(applet_names(b"no table here\0"), None);
        // A false start (binary garbage after `[[`) is not taken for the table.
        assert_eq!(applet_names(b"\0[\0[[\0\x01\x02\0\0"), None);
    }

    #[test]
    fn foreign_applets_go_where_the_host_puts_them() {
        let host = "usr/bin/[\nbin/sh\nsbin/modprobe\nusr/sbin/acpid\n";
        let names: Vec<String> = ["acpid", "modprobe", "sh", "newapplet"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            applets_at_host_paths(&names, host),
            [
                "usr/sbin/acpid",
                "sbin/modprobe",
                "bin/sh",
                "usr/bin/newapplet"
            ]
        );
    }

    #[test]
    fn applets_land_in_merged_usr() {
        assert_eq!(applet_path("bin/sh"), "usr/bin/sh");
        assert_eq!(applet_path("sbin/modprobe"), "usr/sbin/modprobe");
        assert_eq!(applet_path("usr/bin/tar"), "usr/bin/tar");
        assert_eq!(applet_path("linuxrc"), "linuxrc");
    }
}
