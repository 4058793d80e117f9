//! What `devbox edit` may change in a machine's spec, and how its flags change it. Pure but
//! for [`reresolve_shares`], which looks at the host directories a new share names.
//!
//! An edit (flags, or `$EDITOR` on `machine.yaml`) may change the settings a machine reads at
//! each start: CPUs, memory, shares and engine settings. Everything else is fixed at create
//! or has its own verb, because something outside the file depends on it: the network and
//! the Docker subnets are leased host-wide and routed, the disk's size is the file's
//! (`devbox disk resize`), the image is what `devbox upgrade` moves, and the DNS domains are
//! checked against the other machines (`devbox dns allow`).

use std::path::Path;

use serde_json::Value;

use super::engine::EngineSpec;
use super::share::{ShareError, ShareSpec, StateDirs, share_at};
use super::spec::MachineSpec;
use crate::hint::Hint;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error(
        "--unshare {path}: machine {name} has no share of that host directory or at that guest path"
    )]
    NoSuchShare { name: String, path: String },
    #[error("--engine-unset {key}: machine {name} has no such engine setting")]
    NoSuchEngineSetting { name: String, key: String },
    #[error("{first} and {second} contradict each other")]
    Conflict { first: String, second: String },
    #[error("{field} cannot be changed by `devbox edit`: {why}")]
    Fixed {
        field: &'static str,
        why: &'static str,
    },
}

impl Hint for EditError {
    fn hint(&self) -> Option<String> {
        match self {
            EditError::NoSuchShare { name, .. } | EditError::NoSuchEngineSetting { name, .. } => {
                Some(format!(
                    "`devbox inspect {name}` shows its shares and engine settings"
                ))
            }
            EditError::Conflict { .. } => Some("give one of the two".into()),
            EditError::Fixed { field, .. } => Some(match *field {
                "image" => "move a stopped machine to another image with `devbox upgrade NAME --image VERSION`".into(),
                "disk_bytes" => "grow the disk with `devbox disk resize NAME SIZE`".into(),
                "dns_domains" => "use `devbox dns allow DOMAIN -m NAME` and `devbox dns deny`".into(),
                _ => format!("put {field} back as it was; to change it, create a new machine"),
            }),
        }
    }
}

/// The changes `devbox edit NAME --…` asks for, parsed and checked one by one.
#[derive(Debug, Clone, Default)]
pub struct EditFlags {
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    /// Shares to add (one of the same host directory is replaced).
    pub add_shares: Vec<ShareSpec>,
    /// Shares to remove, by host directory or guest path; removed before any is added.
    pub unshares: Vec<String>,
    /// Engine settings to add: list keys gain the items they lack, other keys are replaced.
    pub engine: EngineSpec,
    /// daemon.json keys or environment variables to remove.
    pub engine_unset: Vec<String>,
}

impl EditFlags {
    /// No flag given: `devbox edit NAME` opens the editor instead.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_none()
            && self.memory_mib.is_none()
            && self.add_shares.is_empty()
            && self.unshares.is_empty()
            && self.engine.is_empty()
            && self.engine_unset.is_empty()
    }
}

/// `spec` with `flags` applied (not yet validated as a whole: the caller does, as for any
/// spec).
pub fn apply(spec: &MachineSpec, flags: &EditFlags) -> Result<MachineSpec, EditError> {
    check_conflicts(flags)?;
    let mut new = spec.clone();
    if let Some(c) = flags.cpus {
        new.cpus = c;
    }
    if let Some(m) = flags.memory_mib {
        new.memory_mib = m;
    }
    for path in &flags.unshares {
        let before = new.shares.len();
        new.shares.retain(|s| !share_is(s, path));
        if new.shares.len() == before {
            return Err(EditError::NoSuchShare {
                name: spec.name.clone(),
                path: path.clone(),
            });
        }
    }
    for add in &flags.add_shares {
        match new.shares.iter_mut().find(|s| s.host_path == add.host_path) {
            Some(s) => *s = add.clone(),
            None => new.shares.push(add.clone()),
        }
    }
    for key in &flags.engine_unset {
        let daemon = new.engine.daemon.remove(key).is_some();
        let env = new.engine.env.remove(key).is_some();
        // `ca`: every `--engine-ca` certificate (no daemon.json key or variable is named so).
        let ca = key == "ca" && !std::mem::take(&mut new.engine.ca).is_empty();
        if !daemon && !env && !ca {
            return Err(EditError::NoSuchEngineSetting {
                name: spec.name.clone(),
                key: key.clone(),
            });
        }
    }
    merge_engine(&mut new.engine, &flags.engine);
    Ok(new)
}

/// Refuses flags that undo each other: a share both added and removed, an engine setting
/// both set and unset.
fn check_conflicts(flags: &EditFlags) -> Result<(), EditError> {
    for path in &flags.unshares {
        if let Some(add) = flags.add_shares.iter().find(|s| share_is(s, path)) {
            return Err(EditError::Conflict {
                first: format!("--share {}", add.host_path.display()),
                second: format!("--unshare {path}"),
            });
        }
    }
    for key in &flags.engine_unset {
        if flags.engine.daemon.contains_key(key)
            || flags.engine.env.contains_key(key)
            || (key == "ca" && !flags.engine.ca.is_empty())
        {
            return Err(EditError::Conflict {
                first: format!("an --engine-* flag setting {key}"),
                second: format!("--engine-unset {key}"),
            });
        }
    }
    Ok(())
}

/// Whether `share` is the one `path` names: its host directory (as given, or as the host
/// resolves it now) or its guest path.
fn share_is(share: &ShareSpec, path: &str) -> bool {
    let trimmed = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    share.host_path == Path::new(trimmed)
        || share.guest_path == trimmed
        || std::fs::canonicalize(trimmed).is_ok_and(|c| c == share.host_path)
}

fn merge_engine(engine: &mut EngineSpec, add: &EngineSpec) {
    for (key, value) in &add.daemon {
        match (engine.daemon.get_mut(key), value) {
            (Some(Value::Array(have)), Value::Array(items)) => {
                for item in items {
                    if !have.contains(item) {
                        have.push(item.clone());
                    }
                }
            }
            _ => {
                engine.daemon.insert(key.clone(), value.clone());
            }
        }
    }
    for (name, value) in &add.env {
        engine.env.insert(name.clone(), value.clone());
    }
    for cert in &add.ca {
        if !engine.ca.contains(cert) {
            engine.ca.push(cert.clone());
        }
    }
}

/// Refuses a change to a field `devbox edit` leaves alone (see the module's header).
pub fn check_fixed(old: &MachineSpec, new: &MachineSpec) -> Result<(), EditError> {
    let fixed = |field, why| Err(EditError::Fixed { field, why });
    if new.name != old.name {
        return fixed("name", "it is the machine's directory and DNS name");
    }
    if new.driver != old.driver {
        return fixed("driver", "the machine was created for its driver");
    }
    if new.network != old.network {
        return fixed(
            "network",
            "the host-only network is leased host-wide and derived from its index",
        );
    }
    if new.docker != old.docker {
        return fixed(
            "docker",
            "the Docker subnets are allocated host-wide and routed from this host",
        );
    }
    if new.disk_bytes != old.disk_bytes {
        return fixed("disk_bytes", "it is the size of the disk file");
    }
    if new.image != old.image {
        return fixed("image", "`devbox upgrade` moves a machine to another image");
    }
    if new.tld != old.tld {
        return fixed(
            "tld",
            "the machine's DNS names and allowed domains lie under it",
        );
    }
    if new.dns_domains != old.dns_domains {
        return fixed(
            "dns_domains",
            "each domain is checked against the other machines' domains",
        );
    }
    if new.created != old.created {
        return fixed("created", "it records when the machine was created");
    }
    Ok(())
}

/// What changed from `old` to `new`, one line each, for the user (empty: nothing).
pub fn describe(old: &MachineSpec, new: &MachineSpec) -> Vec<String> {
    let mut out = Vec::new();
    if old.cpus != new.cpus {
        out.push(format!("CPUs: {} -> {}", old.cpus, new.cpus));
    }
    if old.memory_mib != new.memory_mib {
        out.push(format!(
            "memory: {} MiB -> {} MiB",
            old.memory_mib, new.memory_mib
        ));
    }
    let show = |s: &ShareSpec| {
        format!(
            "{} -> {}{}",
            s.host_path.display(),
            s.guest_path,
            if s.read_only { " (read-only)" } else { "" }
        )
    };
    for s in &old.shares {
        if !new.shares.contains(s) {
            out.push(format!("share removed: {}", show(s)));
        }
    }
    for s in &new.shares {
        if !old.shares.contains(s) {
            out.push(format!("share added: {}", show(s)));
        }
    }
    for (key, value) in &new.engine.daemon {
        if old.engine.daemon.get(key) != Some(value) {
            out.push(format!("engine: {key} = {value}"));
        }
    }
    for key in old.engine.daemon.keys() {
        if !new.engine.daemon.contains_key(key) {
            out.push(format!("engine: {key} removed"));
        }
    }
    for (name, value) in &new.engine.env {
        if old.engine.env.get(name) != Some(value) {
            out.push(format!("engine environment: {name}={value}"));
        }
    }
    for name in old.engine.env.keys() {
        if !new.engine.env.contains_key(name) {
            out.push(format!("engine environment: {name} removed"));
        }
    }
    for cert in &new.engine.ca {
        if !old.engine.ca.contains(cert) {
            out.push(format!(
                "engine CA added: {}",
                super::engine::ca_subject(cert)
            ));
        }
    }
    for cert in &old.engine.ca {
        if !new.engine.ca.contains(cert) {
            out.push(format!(
                "engine CA removed: {}",
                super::engine::ca_subject(cert)
            ));
        }
    }
    out
}

/// Shares of an edited `machine.yaml` that are not exactly ones the machine had (added by
/// hand, or with a changed host path or identity) are looked up again as `create --share`
/// looks them up: the directory must exist and be shareable, and its identity is recorded
/// as it is now (the file's `id` is never taken on trust).
pub fn reresolve_shares(
    old: &[ShareSpec],
    new: &mut [ShareSpec],
    state: &StateDirs,
) -> Result<(), ShareError> {
    for share in new.iter_mut() {
        let known = old
            .iter()
            .any(|o| o.host_path == share.host_path && o.id.is_some() && o.id == share.id);
        if known {
            continue;
        }
        *share = share_at(
            &share.host_path,
            Some(&share.guest_path),
            share.read_only,
            share.allow_root,
            state,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::share::DirId;
    use std::path::PathBuf;

    fn share(host: &str, guest: &str) -> ShareSpec {
        ShareSpec {
            host_path: PathBuf::from(host),
            guest_path: guest.into(),
            read_only: false,
            id: Some(DirId { dev: 1, ino: 2 }),
            allow_root: false,
        }
    }

    fn spec() -> MachineSpec {
        let yaml = "name: dev\ndriver: fake\ncpus: 1\nmemory_mib: 512\ndisk_bytes: 2147483648\n\
                    image: 0123456789abcdef\nnetwork:\n  index: 0\n  subnet: 192.168.64.0/24\n  \
                    host_ip: 192.168.64.1\n  guest_ip: 192.168.64.2\n  mac: 52:54:00:00:00:01\n\
                    docker:\n  bridge: 172.18.0.1/16\n  pool: 172.19.0.0/16\n  pool_size: 24\n\
                    tld: dev\ncreated: 2026-12-01T00:00:00Z\n";
        let mut s: MachineSpec = serde_norway::from_str(yaml).unwrap();
        s.shares = vec![share("/srv/a", "/a"), share("/srv/b", "/srv/b")];
        s.engine.daemon.insert(
            "registry-mirrors".into(),
            serde_json::json!(["https://m1.example.com"]),
        );
        s.engine
            .env
            .insert("HTTPS_PROXY".into(), "http://p:3128".into());
        s
    }

    #[test]
    fn flags_change_what_they_name_and_nothing_else() {
        let old = spec();
        let mut engine = EngineSpec::default();
        engine.daemon.insert(
            "registry-mirrors".into(),
            serde_json::json!(["https://m1.example.com", "https://m2.example.com"]),
        );
        engine
            .daemon
            .insert("log-level".into(), serde_json::json!("debug"));
        let flags = EditFlags {
            cpus: Some(2),
            memory_mib: Some(4096),
            add_shares: vec![share("/srv/c", "/c"), share("/srv/b", "/b")],
            unshares: vec!["/a/".into()],
            engine,
            engine_unset: vec!["HTTPS_PROXY".into()],
        };
        let new = apply(&old, &flags).unwrap();
        assert_eq!((new.cpus, new.memory_mib), (2, 4096));
        let shares: Vec<_> = new
            .shares
            .iter()
            .map(|s| (s.host_path.to_str().unwrap(), s.guest_path.as_str()))
            .collect();
        // /a removed by its guest path; /srv/b re-mapped in place; /srv/c added.
        assert_eq!(shares, [("/srv/b", "/b"), ("/srv/c", "/c")]);
        assert_eq!(
            new.engine.daemon["registry-mirrors"],
            serde_json::json!(["https://m1.example.com", "https://m2.example.com"])
        );
        assert_eq!(new.engine.daemon["log-level"], "debug");
        assert!(new.engine.env.is_empty());
        check_fixed(&old, &new).unwrap();
        assert_eq!(
            describe(&old, &new),
            [
                "CPUs: 1 -> 2",
                "memory: 512 MiB -> 4096 MiB",
                "share removed: /srv/a -> /a",
                "share removed: /srv/b -> /srv/b",
                "share added: /srv/b -> /b",
                "share added: /srv/c -> /c",
                "engine: log-level = \"debug\"",
                "engine: registry-mirrors = [\"https://m1.example.com\",\"https://m2.example.com\"]",
                "engine environment: HTTPS_PROXY removed",
            ]
        );
        assert!(describe(&old, &old).is_empty());
        assert!(!flags.is_empty());
        assert!(EditFlags::default().is_empty());
    }

    #[test]
    fn unknown_shares_and_settings_are_errors() {
        let old = spec();
        let e = apply(
            &old,
            &EditFlags {
                unshares: vec!["/nowhere".into()],
                ..EditFlags::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--unshare /nowhere: machine dev has no share of that host directory or at that guest path"
        );
        let e = apply(
            &old,
            &EditFlags {
                engine_unset: vec!["debug".into()],
                ..EditFlags::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, EditError::NoSuchEngineSetting { .. }), "{e}");
    }

    #[test]
    fn flags_that_undo_each_other_are_refused() {
        let old = spec();
        let e = apply(
            &old,
            &EditFlags {
                add_shares: vec![share("/srv/c", "/c")],
                unshares: vec!["/c".into()],
                ..EditFlags::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--share /srv/c and --unshare /c contradict each other"
        );
        let mut engine = EngineSpec::default();
        engine.env.insert("NO_PROXY".into(), "x".into());
        let e = apply(
            &old,
            &EditFlags {
                engine,
                engine_unset: vec!["NO_PROXY".into()],
                ..EditFlags::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, EditError::Conflict { .. }), "{e}");
    }

    #[test]
    fn fields_with_their_own_verb_or_a_lease_are_fixed() {
        let old = spec();
        type Change = Box<dyn Fn(&mut MachineSpec)>;
        let cases: Vec<(&str, Change)> = vec![
            ("image", Box::new(|s| s.image = "fedcba9876543210".into())),
            ("disk_bytes", Box::new(|s| s.disk_bytes *= 2)),
            ("network", Box::new(|s| s.network.index = 3)),
            ("docker", Box::new(|s| s.docker.pool_size = 25)),
            ("tld", Box::new(|s| s.tld = "test".into())),
            (
                "dns_domains",
                Box::new(|s| s.dns_domains = vec!["x.dev".into()]),
            ),
            ("name", Box::new(|s| s.name = "other".into())),
            ("created", Box::new(|s| s.created = "now".into())),
        ];
        for (field, change) in cases {
            let mut new = old.clone();
            change(&mut new);
            match check_fixed(&old, &new) {
                Err(EditError::Fixed { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let e = EditError::Fixed {
            field: "image",
            why: "",
        };
        assert!(e.hint().unwrap().contains("devbox upgrade"));
    }

    #[test]
    fn a_new_share_gets_the_identity_of_its_directory_now() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("src");
        std::fs::create_dir(&dir).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        let state = StateDirs::new(&tmp.path().join("home"), &tmp.path().join("cache"));
        let mut new = vec![ShareSpec {
            host_path: dir.clone(),
            guest_path: "/src".into(),
            read_only: true,
            // Made up by hand: replaced by the directory's real identity.
            id: Some(DirId { dev: 9, ino: 9 }),
            allow_root: false,
        }];
        // Root-owned in the tests (they run as root): refused unless allowed.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&dir).unwrap();
        if meta.uid() == 0 {
            assert!(matches!(
                reresolve_shares(&[], &mut new.clone(), &state),
                Err(ShareError::RootOwned { .. })
            ));
            new[0].allow_root = true;
        }
        reresolve_shares(&[], &mut new, &state).unwrap();
        assert_eq!(
            new[0].id,
            Some(DirId {
                dev: meta.dev(),
                ino: meta.ino()
            })
        );
        assert!(new[0].read_only);
        let mut gone = vec![share(&tmp.path().join("gone").to_string_lossy(), "/g")];
        gone[0].id = None;
        assert!(reresolve_shares(&[], &mut gone, &state).is_err());
    }
}
