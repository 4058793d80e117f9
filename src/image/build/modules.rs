//! The guest's kernel modules: which ones go into the image, and the index busybox `modprobe`
//! reads to load them, written here instead of by a `depmod` run on the host.
//!
//! The guest's `modprobe` is busybox's (no kmod in the image; `/usr/sbin/modprobe` is a
//! busybox applet, and the kernel runs it for autoloading: devbox-boot points
//! `/proc/sys/kernel/modprobe` at it). busybox modprobe (modutils/modprobe.c, 1.35–1.37) reads,
//! below `/lib/modules/$(uname -r)/`:
//! - `modules.dep`: `kernel/a.ko: kernel/b.ko kernel/c.ko`, every module with its *whole*
//!   dependency closure, loaded from the last to the first, then the module itself;
//! - `modules.alias`: `alias <pattern> <module>`, from the modules' `alias=` tags; the
//!   kernel's own requests go through these (`nft-chain-2-nat`, `net-pf-16-proto-12`,
//!   `fs-overlay`, `crypto-sha256`, device ids);
//! - `modules.symbols`: `alias symbol:<name> <module>`, for the kernel's `symbol_request()`;
//! - `modules.builtin`: the built-in modules, copied from the kernel package (a request for
//!   one is then reported as built in rather than missing).
//!
//! Each file is derived from the modules' own ELF data, read with the `object` crate: the
//! `.modinfo` section (NUL-separated `key=value` tags: `name=`, `depends=`, `alias=`, which
//! kbuild's modpost writes) and the `__ksymtab_<name>` symbols an exporting module carries.
//! Architecture does not matter: only sections and symbols are read, so the arm64 modules are
//! indexed on any host, as busybox's and kmod's `depmod` would.
//!
//! Debian 13's kernels ship their modules xz-compressed (`.ko.xz`; Debian 12's are plain
//! `.ko`). They are stored uncompressed in the image: the initramfs is compressed as a whole
//! (xz inside zstd would only cost decompression at every load), and the boot loads them as
//! Debian 12's images did.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSymbol};

use super::{Arch, BuildError};

/// Kernel modules copied into the guest (paths below `lib/modules/<kver>/`; a trailing `/`
/// takes the whole directory). Their dependency closure comes along.
pub const MODULE_SELECTION: &[&str] = &[
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

/// The modules of the early userspace (the initramfs), which mounts the root image: the virtio
/// transports, the block driver, squashfs and overlayfs. Their dependency closure comes along.
pub const EARLY_MODULE_SELECTION: &[&str] = &[
    "kernel/drivers/virtio/virtio_mmio.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/fs/squashfs/",
    "kernel/fs/overlayfs/",
];

/// What the early userspace cannot do without, as modules or built in.
pub const EARLY_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "squashfs",
    "overlay",
];

/// Arch-specific additions to [`MODULE_SELECTION`]: the accelerated counterparts of the
/// generic crypto and library modules selected there (`kernel/crypto/`, `kernel/lib/`).
pub fn arch_module_selection(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => &["kernel/arch/x86/crypto/"],
        Arch::Arm64 => &["kernel/arch/arm64/crypto/", "kernel/arch/arm64/lib/"],
    }
}

/// Modules devbox-boot or devbox features rely on; a kernel that neither ships them as modules
/// nor builds them in (`modules.builtin`) is an error. Which is which differs per arch and
/// release: the arm64 cloud kernels build `button` in, Debian 13's build `virtio_pci` and
/// `virtio_console` in, the amd64 ones of Debian 12 ship all three as modules.
pub const REQUIRED_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_rng",
    "virtio_console",
    "virtio_balloon",
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
    // iptables' two backends: nf_tables (Debian 13's iptables) and x_tables (Debian 12's)
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "iptable_nat",
    "xt_MASQUERADE",
    "button",
    "evdev",
];

/// Files of the kernel package copied next to the index as they are.
const COPIED: &[&str] = &[
    "modules.builtin",
    "modules.builtin.modinfo",
    "modules.order",
];

/// Module file suffixes Debian kernels use, and how each is read.
const SUFFIXES: &[(&str, Compression)] = &[
    (".ko", Compression::None),
    (".ko.xz", Compression::Xz),
    (".ko.zst", Compression::Zstd),
    (".ko.gz", Compression::Gzip),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
}

/// Every module file of a kernel's module directory, by module name.
#[derive(Debug)]
pub struct ModuleTree {
    /// `…/lib/modules/<kver>`.
    root: PathBuf,
    /// Module name (file stem, `-` folded to `_`, as kbuild names it) -> its file.
    files: BTreeMap<String, ModuleFile>,
}

#[derive(Debug, Clone)]
struct ModuleFile {
    /// Path below the root as shipped (`kernel/fs/nfs/nfs.ko.xz`).
    shipped: String,
    compression: Compression,
}

impl ModuleFile {
    /// Path below the root once stored uncompressed (`kernel/fs/nfs/nfs.ko`).
    fn path(&self) -> String {
        let (suffix, _) = SUFFIXES
            .iter()
            .find(|(_, c)| *c == self.compression)
            .expect("every compression has a suffix");
        format!("{}.ko", &self.shipped[..self.shipped.len() - suffix.len()])
    }
}

/// One module as the index needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Path below `lib/modules/<kver>` in the image (`kernel/fs/nfs/nfs.ko`).
    pub path: String,
    /// Its name (`nfs`), from its `name=` tag.
    pub name: String,
    /// Names of the modules it needs (its `depends=` tag).
    pub depends: Vec<String>,
    /// Its `alias=` tags.
    pub aliases: Vec<String>,
    /// The symbols it exports.
    pub symbols: Vec<String>,
}

/// Modules with their index, as they go into the image.
#[derive(Debug, Default)]
pub struct ModuleSet {
    /// By name.
    pub modules: BTreeMap<String, Module>,
}

impl ModuleTree {
    /// Lists the module files below `root` (`…/lib/modules/<kver>`).
    pub fn scan(root: &Path) -> Result<ModuleTree, BuildError> {
        let mut files = BTreeMap::new();
        let mut found = Vec::new();
        walk(root, &root.join("kernel"), &mut found)?;
        for shipped in found {
            let Some((stem, compression)) = SUFFIXES
                .iter()
                .find_map(|(s, c)| shipped.strip_suffix(s).map(|stem| (stem, *c)))
            else {
                continue;
            };
            let name = module_name(stem);
            let file = ModuleFile {
                shipped: shipped.clone(),
                compression,
            };
            if let Some(other) = files.insert(name.clone(), file) {
                return Err(BuildError::ModuleIndex {
                    path: root.join(&shipped),
                    problem: format!("module {name} is also shipped as {}", other.shipped),
                });
            }
        }
        Ok(ModuleTree {
            root: root.to_owned(),
            files,
        })
    }

    /// Module names that match `selection` (paths below the root without the compression
    /// suffix, `.ko`; or directory prefixes ending in `/`).
    pub fn select(&self, selection: &[&str]) -> Vec<String> {
        self.files
            .iter()
            .filter(|(_, f)| {
                let path = f.path();
                selection.iter().any(|s| {
                    if s.ends_with('/') {
                        path.starts_with(s)
                    } else {
                        path == *s
                    }
                })
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Every module's name.
    pub fn names(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    /// Reads the modules `wanted` and everything they depend on. With `dest`, each one is
    /// also written there uncompressed, at its [`Module::path`].
    pub fn closure(&self, wanted: &[String], dest: Option<&Path>) -> Result<ModuleSet, BuildError> {
        let mut set = ModuleSet::default();
        let mut pending: Vec<String> = wanted.to_vec();
        while let Some(name) = pending.pop() {
            if set.modules.contains_key(&name) {
                continue;
            }
            let file = self
                .files
                .get(&name)
                .ok_or_else(|| BuildError::ModuleIndex {
                    path: self.root.clone(),
                    problem: format!("module {name} is needed but not shipped"),
                })?;
            let src = self.root.join(&file.shipped);
            let bytes = read_module(&src, file.compression)?;
            let module =
                parse(&bytes, &file.path()).map_err(|problem| BuildError::ModuleIndex {
                    path: src.clone(),
                    problem,
                })?;
            if module.name != name {
                return Err(BuildError::ModuleIndex {
                    path: src,
                    problem: format!(
                        "its .modinfo names it {}, its file name says {name}",
                        module.name
                    ),
                });
            }
            if let Some(dest) = dest {
                let to = dest.join(&module.path);
                if let Some(parent) = to.parent() {
                    fs_err::create_dir_all(parent)?;
                }
                fs_err::write(&to, &bytes)?;
            }
            for dep in &module.depends {
                if !set.modules.contains_key(dep) {
                    pending.push(dep.clone());
                }
            }
            set.modules.insert(name, module);
        }
        Ok(set)
    }

    /// Copies the kernel package's [`COPIED`] files that exist into `dest`.
    pub fn copy_lists(&self, dest: &Path) -> Result<(), BuildError> {
        for f in COPIED {
            let src = self.root.join(f);
            if src.exists() {
                fs_err::copy(&src, dest.join(f))?;
            }
        }
        Ok(())
    }

    /// The kernel's `modules.builtin` (empty when the package has none).
    pub fn builtin(&self) -> Result<String, BuildError> {
        match fs_err::read_to_string(self.root.join("modules.builtin")) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e.into()),
        }
    }
}

impl ModuleSet {
    /// `modules.dep`: one line per module, sorted by path, each with its whole dependency
    /// closure in an order busybox and kmod load from the end: every module is listed
    /// before the modules it needs.
    pub fn modules_dep(&self) -> Result<String, BuildError> {
        let mut out = String::new();
        for m in self.by_path() {
            out.push_str(&m.path);
            out.push(':');
            for dep in self.load_order(m)?.iter().rev() {
                out.push(' ');
                out.push_str(&self.modules[dep].path);
            }
            out.push('\n');
        }
        Ok(out)
    }

    /// `modules.alias`: `alias <pattern> <module>` for every `alias=` tag.
    pub fn modules_alias(&self) -> String {
        let mut out = String::from("# Aliases extracted from modules themselves.\n");
        for m in self.by_path() {
            for a in &m.aliases {
                out.push_str(&format!("alias {a} {}\n", m.name));
            }
        }
        out
    }

    /// `modules.symbols`: `alias symbol:<name> <module>` for every exported symbol.
    pub fn modules_symbols(&self) -> String {
        let mut out = String::from("# Aliases for symbols, used by symbol_request().\n");
        for m in self.by_path() {
            for s in &m.symbols {
                out.push_str(&format!("alias symbol:{s} {}\n", m.name));
            }
        }
        out
    }

    /// Writes the three index files into `dir` (`lib/modules/<kver>` of the image).
    pub fn write_index(&self, dir: &Path) -> Result<(), BuildError> {
        fs_err::write(dir.join("modules.dep"), self.modules_dep()?)?;
        fs_err::write(dir.join("modules.alias"), self.modules_alias())?;
        fs_err::write(dir.join("modules.symbols"), self.modules_symbols())?;
        Ok(())
    }

    fn by_path(&self) -> Vec<&Module> {
        let mut all: Vec<&Module> = self.modules.values().collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all
    }

    /// The modules `m` needs, each after the ones it needs itself (depth-first post-order,
    /// dependencies taken by name for a stable result); `m` itself is left out.
    fn load_order(&self, m: &Module) -> Result<Vec<String>, BuildError> {
        // (module, index of the next dependency to visit); a module on the stack that is
        // reached again is a cycle, which the kernel could never load.
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut on_stack = BTreeSet::from([m.name.clone()]);
        let mut stack: Vec<(&Module, Vec<&String>, usize)> = vec![(m, sorted(&m.depends), 0)];
        while let Some((module, deps, next)) = stack.last_mut() {
            let Some(dep) = deps.get(*next).copied() else {
                let name = module.name.clone();
                on_stack.remove(&name);
                done.insert(name.clone());
                stack.pop();
                if name != m.name {
                    order.push(name);
                }
                continue;
            };
            *next += 1;
            if done.contains(dep) {
                continue;
            }
            if on_stack.contains(dep) {
                return Err(BuildError::ModuleIndex {
                    path: PathBuf::from(&module.path),
                    problem: format!("its dependencies loop back to {dep}"),
                });
            }
            let d = self
                .modules
                .get(dep)
                .ok_or_else(|| BuildError::ModuleIndex {
                    path: PathBuf::from(&module.path),
                    problem: format!("it depends on {dep}, which is not in the image"),
                })?;
            on_stack.insert(dep.clone());
            stack.push((d, sorted(&d.depends), 0));
        }
        Ok(order)
    }
}

fn sorted(names: &[String]) -> Vec<&String> {
    let mut v: Vec<&String> = names.iter().collect();
    v.sort();
    v
}

/// Reads a module file, uncompressed.
fn read_module(path: &Path, compression: Compression) -> Result<Vec<u8>, BuildError> {
    let file = std::io::BufReader::new(fs_err::File::open(path)?);
    let mut reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file)?),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(file)),
    };
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| BuildError::ModuleIndex {
            path: path.to_owned(),
            problem: format!("it cannot be decompressed: {e}"),
        })?;
    Ok(bytes)
}

/// A module's index data from its ELF image: the `.modinfo` tags and the exported symbols.
pub fn parse(elf: &[u8], path: &str) -> Result<Module, String> {
    let file = object::File::parse(elf).map_err(|e| format!("it is not an ELF object: {e}"))?;
    let modinfo = file
        .section_by_name(".modinfo")
        .ok_or("it has no .modinfo section")?
        .data()
        .map_err(|e| format!("its .modinfo section cannot be read: {e}"))?;
    let mut name = None;
    let mut depends = Vec::new();
    let mut aliases = Vec::new();
    for tag in modinfo.split(|&b| b == 0).filter(|t| !t.is_empty()) {
        let tag = std::str::from_utf8(tag).map_err(|_| "its .modinfo is not text")?;
        let Some((key, value)) = tag.split_once('=') else {
            continue;
        };
        match key {
            "name" => name = Some(value.to_owned()),
            "depends" => {
                depends.extend(value.split(',').filter(|d| !d.is_empty()).map(module_name))
            }
            "alias" => aliases.push(value.to_owned()),
            _ => {}
        }
    }
    let mut symbols: Vec<String> = file
        .symbols()
        .filter_map(|s| s.name().ok()?.strip_prefix("__ksymtab_").map(str::to_owned))
        .collect();
    symbols.sort();
    symbols.dedup();
    Ok(Module {
        path: path.to_owned(),
        // Kernels before 5.2 carry no `name=`; kbuild derives it from the file name.
        name: name.unwrap_or_else(|| module_name(path)),
        depends,
        aliases,
        symbols,
    })
}

/// The module files below `dir`, as paths relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), BuildError> {
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).expect("walk stays below root");
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Module name as kbuild and modprobe spell it: the file name without `.ko…`, with `-`
/// folded to `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split_once(".ko").map_or(file, |(stem, _)| stem);
    stem.replace('-', "_")
}

/// The first of `required` that is neither in `set` nor built in (`builtin`: the kernel's
/// `modules.builtin`, one `kernel/…/name.ko` path per line).
pub fn missing_module<'a>(
    required: &[&'a str],
    set: &BTreeSet<String>,
    builtin: &str,
) -> Option<&'a str> {
    let present: BTreeSet<String> = set
        .iter()
        .cloned()
        .chain(
            builtin
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(module_name),
        )
        .collect();
    required.iter().copied().find(|m| !present.contains(*m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write;

    /// A relocatable ELF like a kernel module: a `.modinfo` section holding `tags` and one
    /// `__ksymtab_<name>` symbol per exported name.
    fn module_elf(arch: object::Architecture, tags: &[&str], exports: &[&str]) -> Vec<u8> {
        let mut obj =
            write::Object::new(object::BinaryFormat::Elf, arch, object::Endianness::Little);
        let modinfo = obj.add_section(Vec::new(), b".modinfo".to_vec(), object::SectionKind::Data);
        let mut data = Vec::new();
        for t in tags {
            data.extend_from_slice(t.as_bytes());
            data.push(0);
        }
        obj.append_section_data(modinfo, &data, 1);
        let ksymtab = obj.add_section(
            Vec::new(),
            b"___ksymtab+x".to_vec(),
            object::SectionKind::Data,
        );
        for (i, e) in exports.iter().enumerate() {
            obj.append_section_data(ksymtab, &[0; 12], 4);
            obj.add_symbol(write::Symbol {
                name: format!("__ksymtab_{e}").into_bytes(),
                value: 12 * i as u64,
                size: 12,
                kind: object::SymbolKind::Data,
                scope: object::SymbolScope::Compilation,
                weak: false,
                section: write::SymbolSection::Section(ksymtab),
                flags: object::SymbolFlags::None,
            });
        }
        obj.write().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new(data, 6)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// A module tree: nfsv3 -> nfs -> (sunrpc, grace), lockd -> (sunrpc, grace), and
    /// virtio-rng alone; nfs and nfsv3 compressed as Debian 13 ships them.
    fn tree(root: &Path, arch: object::Architecture) {
        let files: &[(&str, &[&str], &[&str])] = &[
            (
                "kernel/fs/nfs/nfsv3.ko.xz",
                &["alias=nfs-version-3", "depends=nfs,sunrpc", "name=nfsv3"],
                &[],
            ),
            (
                "kernel/fs/nfs/nfs.ko.xz",
                &[
                    "alias=fs-nfs",
                    "alias=nfs-layouttype4-1",
                    "depends=sunrpc,lockd,grace",
                    "name=nfs",
                ],
                &["nfs_probe_server"],
            ),
            (
                "kernel/fs/lockd/lockd.ko",
                &["depends=sunrpc,grace", "name=lockd"],
                &["nlmclnt_init"],
            ),
            (
                "kernel/fs/nfs_common/grace.ko",
                &["depends=", "name=grace"],
                &["locks_start_grace"],
            ),
            (
                "kernel/net/sunrpc/sunrpc.ko",
                &["depends=", "name=sunrpc"],
                &["rpc_call_sync", "xprt_get"],
            ),
            (
                "kernel/drivers/char/hw_random/virtio-rng.ko",
                &["alias=virtio:d00000004v*", "depends=", "name=virtio_rng"],
                &[],
            ),
        ];
        for (path, tags, exports) in files {
            let p = root.join(path);
            fs_err::create_dir_all(p.parent().unwrap()).unwrap();
            let elf = module_elf(arch, tags, exports);
            let bytes = if path.ends_with(".xz") { xz(&elf) } else { elf };
            fs_err::write(p, bytes).unwrap();
        }
        fs_err::write(
            root.join("modules.builtin"),
            "kernel/drivers/virtio/virtio.ko\n",
        )
        .unwrap();
    }

    #[test]
    fn index_of_a_closure_as_modprobe_reads_it() {
        for arch in [object::Architecture::X86_64, object::Architecture::Aarch64] {
            let tmp = tempfile::tempdir().unwrap();
            let (root, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
            tree(&root, arch);
            let t = ModuleTree::scan(&root).unwrap();
            assert_eq!(
                t.names(),
                ["grace", "lockd", "nfs", "nfsv3", "sunrpc", "virtio_rng"]
            );
            let wanted = t.select(&[
                "kernel/fs/nfs/",
                "kernel/drivers/char/hw_random/virtio-rng.ko",
            ]);
            assert_eq!(wanted, ["nfs", "nfsv3", "virtio_rng"]);
            let set = t.closure(&wanted, Some(&dest)).unwrap();
            assert_eq!(
                set.modules.len(),
                6,
                "{arch:?}: lockd and grace come with nfs"
            );
            assert_eq!(
                set.modules_dep().unwrap(),
                "kernel/drivers/char/hw_random/virtio-rng.ko:\n\
                 kernel/fs/lockd/lockd.ko: kernel/net/sunrpc/sunrpc.ko kernel/fs/nfs_common/grace.ko\n\
                 kernel/fs/nfs/nfs.ko: kernel/fs/lockd/lockd.ko kernel/net/sunrpc/sunrpc.ko kernel/fs/nfs_common/grace.ko\n\
                 kernel/fs/nfs/nfsv3.ko: kernel/fs/nfs/nfs.ko kernel/fs/lockd/lockd.ko kernel/net/sunrpc/sunrpc.ko kernel/fs/nfs_common/grace.ko\n\
                 kernel/fs/nfs_common/grace.ko:\n\
                 kernel/net/sunrpc/sunrpc.ko:\n"
            );
            assert_eq!(
                set.modules_alias(),
                "# Aliases extracted from modules themselves.\n\
                 alias virtio:d00000004v* virtio_rng\n\
                 alias fs-nfs nfs\n\
                 alias nfs-layouttype4-1 nfs\n\
                 alias nfs-version-3 nfsv3\n"
            );
            assert_eq!(
                set.modules_symbols(),
                "# Aliases for symbols, used by symbol_request().\n\
                 alias symbol:nlmclnt_init lockd\n\
                 alias symbol:nfs_probe_server nfs\n\
                 alias symbol:locks_start_grace grace\n\
                 alias symbol:rpc_call_sync sunrpc\n\
                 alias symbol:xprt_get sunrpc\n"
            );
            // Stored uncompressed, at the `.ko` path the index names.
            let stored = fs_err::read(dest.join("kernel/fs/nfs/nfs.ko")).unwrap();
            assert_eq!(&stored[..4], b"\x7fELF");
            assert!(!dest.join("kernel/fs/nfs/nfs.ko.xz").exists());
            let builtin = t.builtin().unwrap();
            let names: BTreeSet<String> = set.modules.keys().cloned().collect();
            assert_eq!(
                missing_module(&["virtio", "nfs", "grace"], &names, &builtin),
                None
            );
            assert_eq!(
                missing_module(&["nfs", "tun"], &names, &builtin),
                Some("tun")
            );
        }
    }

    #[test]
    fn every_dependency_comes_before_the_ones_it_needs() {
        // A diamond and a chain: d needs b and c, both need a; e needs d.
        let m = |name: &str, deps: &[&str]| Module {
            path: format!("kernel/{name}.ko"),
            name: name.into(),
            depends: deps.iter().map(|d| d.to_string()).collect(),
            aliases: vec![],
            symbols: vec![],
        };
        let set = ModuleSet {
            modules: [
                m("a", &[]),
                m("b", &["a"]),
                m("c", &["a"]),
                m("d", &["c", "b"]),
                m("e", &["d"]),
            ]
            .into_iter()
            .map(|m| (m.name.clone(), m))
            .collect(),
        };
        let dep = set.modules_dep().unwrap();
        let line = dep.lines().find(|l| l.starts_with("kernel/e.ko:")).unwrap();
        assert_eq!(
            line,
            "kernel/e.ko: kernel/d.ko kernel/c.ko kernel/b.ko kernel/a.ko"
        );
        // A loop, or a dependency that is not there, is refused rather than written.
        let mut broken = ModuleSet {
            modules: set.modules.clone(),
        };
        broken.modules.get_mut("a").unwrap().depends = vec!["e".into()];
        let e = broken.modules_dep().unwrap_err();
        assert!(e.to_string().contains("loop back"), "{e}");
        broken.modules.get_mut("a").unwrap().depends = vec!["zz".into()];
        let e = broken.modules_dep().unwrap_err();
        assert!(
            e.to_string()
                .contains("depends on zz, which is not in the image"),
            "{e}"
        );
    }

    #[test]
    fn bad_modules_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs_err::create_dir_all(root.join("kernel/fs")).unwrap();
        fs_err::write(root.join("kernel/fs/bad.ko"), b"not an ELF").unwrap();
        fs_err::write(root.join("kernel/fs/cut.ko.xz"), &xz(b"data")[..10]).unwrap();
        let t = ModuleTree::scan(root).unwrap();
        let e = t.closure(&["bad".into()], None).unwrap_err();
        assert!(e.to_string().contains("kernel/fs/bad.ko"), "{e}");
        assert!(e.to_string().contains("not an ELF object"), "{e}");
        let e = t.closure(&["cut".into()], None).unwrap_err();
        assert!(e.to_string().contains("cannot be decompressed"), "{e}");
        let e = t.closure(&["absent".into()], None).unwrap_err();
        assert!(
            e.to_string()
                .contains("module absent is needed but not shipped"),
            "{e}"
        );
        // The name a module gives itself must be the one its file says.
        fs_err::write(
            root.join("kernel/fs/other.ko"),
            module_elf(object::Architecture::X86_64, &["name=renamed"], &[]),
        )
        .unwrap();
        let t = ModuleTree::scan(root).unwrap();
        let e = t.closure(&["other".into()], None).unwrap_err();
        assert!(e.to_string().contains("names it renamed"), "{e}");
    }

    #[test]
    fn module_names_as_kbuild_spells_them() {
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
            "virtio_rng"
        );
        assert_eq!(module_name("kernel/fs/nfs/nfs.ko.xz"), "nfs");
        assert_eq!(
            module_name("kernel/net/netfilter/xt_MASQUERADE.ko.zst"),
            "xt_MASQUERADE"
        );
    }

    #[test]
    fn arch_specific_module_paths() {
        assert!(arch_module_selection(Arch::X86_64).contains(&"kernel/arch/x86/crypto/"));
        assert!(
            !arch_module_selection(Arch::Arm64)
                .iter()
                .any(|p| p.contains("arch/x86"))
        );
        assert!(arch_module_selection(Arch::Arm64).contains(&"kernel/arch/arm64/crypto/"));
    }
}
