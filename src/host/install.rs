//! `devbox system install|uninstall`: the one-time set-up, as a [`HostPlan`] like every other
//! host change, and the checks for what it cannot change itself.
//!
//! Install (root, once): the running binary copied to `/usr/local/bin/devbox` (root, 0755)
//! with `cap_net_admin,cap_net_bind_service+ep` on Linux; the lease registry
//! (`/var/lib/devbox/`, its sticky `leases/`, `host.lock`); the boot-time route job
//! (`units.rs`) for the invoking user's `~/.devbox`, run as that user on Linux (the binary's
//! capabilities are all it needs; as root on macOS, where there are none). It never
//! overwrites a `/usr/local/bin/devbox` it did not put there, unless forced.
//!
//! What install *added* (not what was there before) is recorded in
//! `/var/lib/devbox/install.json` ([`InstallRecord`]), and uninstall removes exactly that; it
//! never removes a lease: with machines still registered it leaves the registry in place.
//!
//! The step executors for the new step kinds (`apply.rs` calls them) are here too.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::apply::Outcome;
use super::plan::{
    BinaryInstall, DirSpec, FileSpec, HostOs, HostPlan, INSTALLED_BINARY, REGISTRY_DIRS,
    ServiceUnit,
};
use super::{HostError, units};
use crate::hint::Hint;

/// The install record.
pub const RECORD_PATH: &str = "/var/lib/devbox/install.json";
const HOST_LOCK_PATH: &str = "/var/lib/devbox/host.lock";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{} exists and is not a devbox that `system install` put there", path.display())]
    NotOurs { path: PathBuf },
    #[error(
        "{count} machine network lease(s) are still registered in /var/lib/devbox/leases \
         (host-only indexes {indexes})"
    )]
    LeasesRemain { count: usize, indexes: String },
}

impl Hint for InstallError {
    fn hint(&self) -> Option<String> {
        match self {
            InstallError::NotOurs { path } => Some(format!(
                "move {} away, or pass --force to replace it",
                path.display()
            )),
            InstallError::LeasesRemain { .. } => Some(
                "each user removes their machines first (`devbox rm NAME`); or pass --force to \
                 uninstall everything else and leave the registry in place"
                    .into(),
            ),
        }
    }
}

/// What `system install` added, so that uninstall removes exactly that.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRecord {
    /// sha256 of the binary install put at `/usr/local/bin/devbox`.
    #[serde(default)]
    pub binary_sha256: Option<String>,
    /// Directories install created.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    /// Files install created (the lock, unit files).
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Service jobs install loaded.
    #[serde(default)]
    pub units: Vec<ServiceUnit>,
}

/// The user whose boot-time route job install sets up (the one who ran `sudo`, or root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUser {
    pub uid: u32,
    pub gid: u32,
    /// Their `~/.devbox`.
    pub devbox_home: PathBuf,
}

/// What the host looks like now, as `system install` needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallInputs {
    pub os: HostOs,
    /// The running binary, and its sha256.
    pub exe: PathBuf,
    pub exe_sha256: String,
    /// The sha256 of `/usr/local/bin/devbox` when it exists, and whether it carries the
    /// capabilities.
    pub installed_sha256: Option<String>,
    pub installed_caps: bool,
    /// The previous install's record.
    pub record: Option<InstallRecord>,
    /// Which of the registry's directories and the lock exist already.
    pub existing: Vec<PathBuf>,
    pub user: JobUser,
    pub force: bool,
}

/// The plan of `system install`.
pub fn install_plan(i: &InstallInputs) -> Result<HostPlan, HostError> {
    let record_before = i.record.clone().unwrap_or_default();
    let mut record = record_before.clone();
    let mut plan = HostPlan {
        command: "system install".into(),
        ..HostPlan::default()
    };

    let caps = i.os == HostOs::Linux;
    let ours = |sha: &String| Some(sha) == record_before.binary_sha256.as_ref();
    match &i.installed_sha256 {
        Some(sha) if sha != &i.exe_sha256 && !ours(sha) && !i.force => {
            return Err(install_error(InstallError::NotOurs {
                path: INSTALLED_BINARY.into(),
            }));
        }
        Some(sha) if sha == &i.exe_sha256 && (i.installed_caps || !caps) => {}
        _ => {
            plan.install_binary = Some(BinaryInstall {
                source: i.exe.clone(),
                path: INSTALLED_BINARY.into(),
                caps,
            })
        }
    }
    record.binary_sha256 = Some(i.exe_sha256.clone());

    let existed = |p: &Path| i.existing.iter().any(|e| e == p);
    for (path, mode) in REGISTRY_DIRS {
        let path = PathBuf::from(path);
        if !existed(&path) && !record.dirs.contains(&path) {
            record.dirs.push(path.clone());
        }
        plan.create_dirs.push(DirSpec { path, mode });
    }
    let lock = PathBuf::from(HOST_LOCK_PATH);
    if !existed(&lock) {
        plan.write_files.push(FileSpec {
            path: lock.clone(),
            mode: 0o644,
            contents: String::new(),
        });
        if !record.files.contains(&lock) {
            record.files.push(lock);
        }
    }

    let run_as = (i.os == HostOs::Linux).then_some((i.user.uid, i.user.gid));
    let job = units::install_plan_as(
        i.os,
        Path::new(INSTALLED_BINARY),
        &i.user.devbox_home,
        run_as,
    )?;
    for f in job.write_files {
        if !record.files.contains(&f.path) {
            record.files.push(f.path.clone());
        }
        plan.write_files.push(f);
    }
    for u in job.load_units {
        if !record.units.contains(&u) {
            record.units.push(u.clone());
        }
        plan.load_units.push(u);
    }

    record.dirs.sort();
    record.files.sort();
    record.units.sort();
    let mut text = serde_json::to_string_pretty(&record).expect("plain data serialises");
    text.push('\n');
    plan.write_files.push(FileSpec {
        path: RECORD_PATH.into(),
        mode: 0o644,
        contents: text,
    });
    plan.normalize();
    Ok(plan)
}

fn install_error(e: InstallError) -> HostError {
    HostError::Refused {
        item: "install devbox".into(),
        why: format!("{e}; {}", e.hint().unwrap_or_default()),
    }
}

/// What uninstall leaves in place, and why (for the output).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    pub notes: Vec<String>,
}

/// The plan of `system uninstall`: exactly what `record` says install added. `installed_sha256`
/// is that of `/usr/local/bin/devbox` now (a binary someone replaced since is left alone);
/// `leases` the indexes still registered (the registry stays while there are any; without
/// `force` that is an error).
pub fn uninstall_plan(
    record: &InstallRecord,
    installed_sha256: Option<&str>,
    leases: &[u8],
    force: bool,
) -> Result<(HostPlan, Kept), InstallError> {
    let mut kept = Kept::default();
    let mut plan = HostPlan {
        command: "system uninstall".into(),
        ..HostPlan::default()
    };
    if !leases.is_empty() && !force {
        return Err(InstallError::LeasesRemain {
            count: leases.len(),
            indexes: leases
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    match (installed_sha256, &record.binary_sha256) {
        (Some(now), Some(ours)) if now == ours => {
            plan.remove_binary = Some(INSTALLED_BINARY.into())
        }
        (Some(_), _) => kept.notes.push(format!(
            "{INSTALLED_BINARY} was replaced since `system install`: left in place"
        )),
        (None, _) => {}
    }
    for u in &record.units {
        plan.unload_units.push(u.clone());
    }
    let registry_stays = !leases.is_empty();
    for f in &record.files {
        if registry_stays && f == Path::new(HOST_LOCK_PATH) {
            continue;
        }
        plan.remove_files.push(f.clone());
    }
    if registry_stays {
        kept.notes.push(format!(
            "the lease registry stays: machines still hold indexes {}",
            leases
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    } else {
        plan.remove_dirs.extend(record.dirs.iter().cloned());
        plan.remove_files.push(RECORD_PATH.into());
    }
    plan.normalize();
    Ok((plan, kept))
}

/// `CreateDir`: a root-owned directory with exactly `mode` (chmod after mkdir: the umask would
/// drop the sticky and world bits). A directory that is there with that mode and owner is
/// already done; one owned by someone else is refused, not taken over.
pub(super) fn create_dir(path: &Path, mode: u32) -> Result<Outcome, HostError> {
    let io = |what, source| HostError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && m.uid() == 0 && m.mode() & 0o7777 == mode => {
            return Ok(Outcome::AlreadyDone);
        }
        Ok(m) if !m.is_dir() || m.uid() != 0 => {
            return Err(HostError::Refused {
                item: format!("create {}", path.display()),
                why: "something else is there (not a directory owned by root)".into(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(path).map_err(|e| io("create", e))?;
        }
        Err(e) => return Err(io("inspect", e)),
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("set the mode of", e))?;
    Ok(Outcome::Done)
}

/// `RemoveDir`: only when empty (anything left in it is not install's to remove).
pub(super) fn remove_dir(path: &Path) -> Result<Outcome, HostError> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(Outcome::Done),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Outcome::AlreadyDone),
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
            Ok(Outcome::Skipped("not empty".into()))
        }
        Err(source) => Err(HostError::Io {
            what: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

/// `RemoveBinary`.
pub(super) fn remove_file(path: &Path) -> Result<Outcome, HostError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(Outcome::Done),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Outcome::AlreadyDone),
        Err(source) => Err(HostError::Io {
            what: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

/// `InstallBinary`: copies `source` to a temp file beside `target`, makes it root's and 0755,
/// sets the capabilities (after the last write: a write drops them), syncs it and renames it
/// over `target`. Already done when `target` has the same bytes, mode, owner and
/// capabilities.
pub(super) fn install_binary(
    source: &Path,
    target: &Path,
    caps: bool,
) -> Result<Outcome, HostError> {
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| HostError::Io { what, path, source }
    };
    let bytes = fs_err::read(source).map_err(io("read", source))?;
    let in_place = std::fs::symlink_metadata(target)
        .is_ok_and(|m| m.is_file() && m.uid() == 0 && m.mode() & 0o7777 == 0o755)
        && std::fs::read(target).is_ok_and(|b| b == bytes)
        && (!caps || super::privileged::has_installed_caps(target).unwrap_or(false));
    if in_place {
        return Ok(Outcome::AlreadyDone);
    }
    let dir = target.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".devbox-install-{}", std::process::id()));
    let write = || -> Result<(), HostError> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o700)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(&bytes).map_err(io("write", &tmp))?;
        nix::unistd::fchown(
            &f,
            Some(nix::unistd::Uid::from_raw(0)),
            Some(nix::unistd::Gid::from_raw(0)),
        )
        .map_err(|e| io("chown", &tmp)(e.into()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))
            .map_err(io("set the mode of", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
        drop(f);
        if caps {
            super::privileged::set_installed_caps(&tmp)
                .map_err(io("set the capabilities of", &tmp))?;
        }
        std::fs::rename(&tmp, target).map_err(io("rename into place", target))?;
        crate::atomic_file::sync_dir(dir).map_err(io("sync", dir))
    };
    let out = write();
    if out.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    out.map(|()| Outcome::Done)
}

/// A problem `system install` cannot fix itself, with the exact fix; or a fact worth knowing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Ok(String),
    Fix { problem: String, fix: String },
    Info(String),
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Ok(s) => write!(f, "ok: {s}"),
            Check::Info(s) => write!(f, "note: {s}"),
            Check::Fix { problem, fix } => write!(f, "to fix: {problem}\n  fix: {fix}"),
        }
    }
}

/// `/dev/net/tun` must be open to users (rw for others), as udev makes it on standard
/// distributions. `mode` is its mode, `None` when it does not exist.
pub fn tun_check(mode: Option<u32>) -> Check {
    match mode {
        None => Check::Fix {
            problem: "/dev/net/tun does not exist (the tun module is not loaded)".into(),
            fix: "sudo modprobe tun".into(),
        },
        Some(m) if m & 0o006 == 0o006 => Check::Ok(format!("/dev/net/tun is open to users ({:04o})", m & 0o7777)),
        Some(m) => Check::Fix {
            problem: format!(
                "/dev/net/tun is mode {:04o}: users cannot open it, so their machines cannot \
                 get a network device",
                m & 0o7777
            ),
            fix: "echo 'KERNEL==\"tun\", MODE=\"0666\"' | sudo tee /etc/udev/rules.d/60-devbox-tun.rules \
                  && sudo udevadm control --reload && sudo udevadm trigger --name-match=net/tun \
                  (or, until the next boot: sudo chmod 0666 /dev/net/tun)"
                .into(),
        },
    }
}

/// When the kvm driver is usable here, the user must be able to open `/dev/kvm`: its group
/// (`kvm_gid`, with `kvm_mode`) among theirs, or open to everyone.
pub fn kvm_check(
    usable: bool,
    kvm: Option<(u32, u32)>,
    user: &str,
    user_uid: u32,
    user_groups: &[u32],
) -> Check {
    let Some((gid, mode)) = kvm.filter(|_| usable) else {
        return Check::Info(
            "the kvm driver is not usable on this host: machines use QEMU (TCG or its KVM)".into(),
        );
    };
    if user_uid == 0
        || mode & 0o006 == 0o006
        || (mode & 0o060 == 0o060 && user_groups.contains(&gid))
    {
        return Check::Ok(format!("{user} can open /dev/kvm"));
    }
    Check::Fix {
        problem: format!(
            "{user} cannot open /dev/kvm (group {gid}, mode {:04o})",
            mode & 0o7777
        ),
        fix: format!("sudo usermod -aG kvm {user}, then log out and in again"),
    }
}

/// Names of the machines on the host's resolver.
pub fn resolver_check(os: HostOs, resolved_active: bool) -> Check {
    match (os, resolved_active) {
        (HostOs::Linux, true) => Check::Ok(
            "systemd-resolved runs: each machine's supervisor routes its domains to its DNS \
             server on its own link"
                .into(),
        ),
        (HostOs::Linux, false) => Check::Info(
            "systemd-resolved does not run: `devbox dns install NAME` prints the dnsmasq or \
             unbound lines that send a machine's domains to its DNS server"
                .into(),
        ),
        (HostOs::Macos, _) => Check::Info(
            "names: `sudo devbox dns install NAME` writes the machine's /etc/resolver files".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> InstallInputs {
        InstallInputs {
            os: HostOs::Linux,
            exe: "/home/alice/src/devbox/target/release/devbox".into(),
            exe_sha256: "aaaa".into(),
            installed_sha256: None,
            installed_caps: false,
            record: None,
            existing: vec![],
            user: JobUser {
                uid: 1000,
                gid: 1000,
                devbox_home: "/home/alice/.devbox".into(),
            },
            force: false,
        }
    }

    fn record_of(plan: &HostPlan) -> InstallRecord {
        let f = plan
            .write_files
            .iter()
            .find(|f| f.path == Path::new(RECORD_PATH))
            .unwrap();
        serde_json::from_str(&f.contents).unwrap()
    }

    #[test]
    fn a_fresh_install_records_everything_it_adds_and_uninstall_mirrors_it() {
        let plan = install_plan(&inputs()).unwrap();
        plan.check_allowed().unwrap();
        assert!(plan.install_binary.as_ref().unwrap().caps);
        let rec = record_of(&plan);
        assert_eq!(rec.binary_sha256.as_deref(), Some("aaaa"));
        assert_eq!(rec.dirs.len(), 2);
        assert!(rec.files.contains(&PathBuf::from(HOST_LOCK_PATH)));
        assert_eq!(rec.units.len(), 2);
        let (un, kept) = uninstall_plan(&rec, Some("aaaa"), &[], false).unwrap();
        un.check_allowed().unwrap();
        assert!(kept.notes.is_empty());
        assert_eq!(
            un.remove_binary.as_deref(),
            Some(Path::new(INSTALLED_BINARY))
        );
        assert_eq!(un.unload_units, plan.load_units);
        let written: Vec<_> = plan.write_files.iter().map(|f| f.path.clone()).collect();
        let mut removed = un.remove_files.clone();
        removed.sort();
        assert_eq!(removed, written, "every file install wrote, and only those");
        assert_eq!(un.remove_dirs[0], Path::new("/var/lib/devbox/leases"));
    }

    #[test]
    fn a_second_install_changes_nothing_it_need_not_and_keeps_the_record() {
        let first = install_plan(&inputs()).unwrap();
        let mut again = inputs();
        again.installed_sha256 = Some("aaaa".into());
        again.installed_caps = true;
        again.record = Some(record_of(&first));
        again.existing = vec![
            "/var/lib/devbox".into(),
            "/var/lib/devbox/leases".into(),
            HOST_LOCK_PATH.into(),
        ];
        let plan = install_plan(&again).unwrap();
        assert_eq!(plan.install_binary, None);
        assert_eq!(
            record_of(&plan),
            record_of(&first),
            "what was added stays recorded"
        );
        assert!(
            !plan
                .write_files
                .iter()
                .any(|f| f.path == Path::new(HOST_LOCK_PATH))
        );
    }

    #[test]
    fn what_was_there_before_is_not_recorded_and_a_foreign_binary_is_refused() {
        let mut i = inputs();
        i.existing = vec!["/var/lib/devbox".into()];
        i.installed_sha256 = Some("bbbb".into());
        let err = install_plan(&i).unwrap_err().to_string();
        assert!(
            err.contains("is not a devbox that `system install` put there"),
            "{err}"
        );
        assert!(err.contains("--force"), "{err}");
        i.force = true;
        let plan = install_plan(&i).unwrap();
        assert!(plan.install_binary.is_some());
        let rec = record_of(&plan);
        assert_eq!(rec.dirs, [PathBuf::from("/var/lib/devbox/leases")]);
        // A binary replaced after install is left alone by uninstall.
        let (un, kept) = uninstall_plan(&rec, Some("cccc"), &[], false).unwrap();
        assert_eq!(un.remove_binary, None);
        assert!(kept.notes[0].contains("replaced"), "{kept:?}");
    }

    #[test]
    fn uninstall_never_removes_leases() {
        let rec = record_of(&install_plan(&inputs()).unwrap());
        let err = uninstall_plan(&rec, Some("aaaa"), &[0, 3], false).unwrap_err();
        assert!(err.to_string().contains("indexes 0, 3"), "{err}");
        assert!(err.hint().unwrap().contains("devbox rm"));
        let (un, kept) = uninstall_plan(&rec, Some("aaaa"), &[0, 3], true).unwrap();
        assert!(un.remove_dirs.is_empty());
        assert!(
            !un.remove_files
                .iter()
                .any(|f| f == Path::new(HOST_LOCK_PATH))
        );
        assert!(!un.remove_files.iter().any(|f| f == Path::new(RECORD_PATH)));
        assert!(kept.notes[0].contains("registry stays"));
    }

    #[test]
    fn checks_name_the_exact_fix() {
        assert!(matches!(tun_check(Some(0o20666)), Check::Ok(_)));
        let Check::Fix { problem, fix } = tun_check(Some(0o20600)) else {
            panic!("a fix");
        };
        assert!(problem.contains("mode 0600"), "{problem}");
        assert!(fix.contains("MODE=\"0666\"") && fix.contains("chmod 0666 /dev/net/tun"));
        let Check::Fix { fix, .. } = kvm_check(true, Some((108, 0o660)), "alice", 1000, &[1000])
        else {
            panic!("a fix");
        };
        assert_eq!(fix, "sudo usermod -aG kvm alice, then log out and in again");
        assert!(matches!(
            kvm_check(true, Some((108, 0o660)), "alice", 1000, &[1000, 108]),
            Check::Ok(_)
        ));
        assert!(matches!(
            kvm_check(false, Some((108, 0o660)), "alice", 1000, &[]),
            Check::Info(_)
        ));
    }
}
