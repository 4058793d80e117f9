//! The state directory: `$DEVBOX_HOME/machines/<name>/`, one directory per machine.
//!
//! Every file is written atomically (temp file in the same directory, fsync, rename, fsync the
//! directory), so a crash never leaves a torn `machine.yaml` or `state.json`. A machine
//! directory appears under its name only when complete: `create` assembles it under a
//! dot-name and renames it into place.

use std::path::{Path, PathBuf};

use fs_err as fs;

use super::spec::{InvalidField, MachineSpec, SpecError, StateDirs, validate_name};
use crate::atomic_file::{sync_dir, write_atomic};
use crate::hint::Hint;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no machine named {name:?}")]
    NotFound { name: String },
    /// A name that is not a machine name (`..`, `/etc`, `a/b`): never joined to a path.
    #[error(transparent)]
    Name(SpecError),
    #[error("a machine named {name:?} already exists")]
    Exists { name: String },
    #[error("{path}:{line}:{column}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}:{line}: {field} is not valid", path.display())]
    Invalid {
        path: PathBuf,
        /// The line of the field (1 when it could not be found).
        line: usize,
        field: String,
        #[source]
        source: SpecError,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Hint for StoreError {
    fn hint(&self) -> Option<String> {
        match self {
            StoreError::NotFound { .. } | StoreError::Name(_) => {
                Some("`devbox ls` lists the machines".into())
            }
            StoreError::Exists { name } => Some(format!(
                "pick another name, or remove the old one with `devbox rm {name}`"
            )),
            StoreError::Corrupt { path, .. } | StoreError::Invalid { path, .. } => {
                // The machine's name is its directory's.
                let name = path
                    .parent()
                    .and_then(Path::file_name)
                    .map_or("NAME".into(), |n| n.to_string_lossy());
                Some(format!(
                    "fix it with `devbox edit {name}` (which checks it before saving), or remove \
                     the machine with `devbox rm --force {name}`"
                ))
            }
            StoreError::Io(_) => None,
        }
    }
}

/// Where devbox keeps machines and where it caches images.
#[derive(Debug, Clone)]
pub struct Store {
    pub home: PathBuf,
    pub cache: PathBuf,
}

impl Store {
    pub fn new(home: Option<PathBuf>, cache: Option<PathBuf>) -> Store {
        let user_home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        let home = home.unwrap_or_else(|| user_home.join(".devbox"));
        let cache = cache.unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| user_home.join(".cache"))
                .join("devbox")
        });
        Store { home, cache }
    }

    /// The directories no share may be, lie in, or show to a guest.
    pub fn state_dirs(&self) -> StateDirs {
        StateDirs::new(&self.home, &self.cache)
    }

    pub fn machines_dir(&self) -> PathBuf {
        self.home.join("machines")
    }

    /// The directory of the machine `name`, which need not exist. This is the one place a
    /// name becomes a path, so it is checked here with the rule `create` applies: a name that
    /// is not a DNS label (`..`, `/etc`, `a/b`) is refused before it can reach outside
    /// `machines/`.
    pub fn machine(&self, name: &str) -> Result<MachineDir, StoreError> {
        validate_name(name).map_err(StoreError::Name)?;
        Ok(MachineDir {
            name: name.to_owned(),
            path: self.machines_dir().join(name),
        })
    }

    /// An existing machine's directory, or `NotFound`; a directory the caller may not enter
    /// (another user's) is that I/O error, naming the path, not "no such machine".
    pub fn existing(&self, name: &str) -> Result<MachineDir, StoreError> {
        let dir = self.machine(name)?;
        match fs::metadata(dir.spec_path()) {
            Ok(m) if m.is_file() => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(e.into()),
            _ => Err(StoreError::NotFound {
                name: name.to_owned(),
            }),
        }
    }

    /// Names of all machines, sorted.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(self.machines_dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Dot-names are staging and trash; anything else that is not a valid name cannot
            // be a machine (nothing creates it) and is left alone.
            if validate_name(&name).is_ok() && entry.path().join(SPEC_FILE).is_file() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Creates `$DEVBOX_HOME` and its `machines/` when missing, each mode 0700: another local
    /// user must not see a machine's disk, keys or sockets. Existing ones keep their mode (the
    /// user may have chosen it), but every machine directory is 0700 ([`MachineDir::make_private`]).
    pub fn create_private_dirs(&self) -> Result<(), StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [&self.home, &self.machines_dir()] {
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("creating {}: {e}", dir.display()),
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// A fresh staging directory for `create` (mode 0700); [`Staging::commit`] renames it
    /// into place.
    pub fn stage(&self, name: &str) -> Result<Staging, StoreError> {
        let target = self.machine(name)?.path;
        let machines = self.machines_dir();
        self.create_private_dirs()?;
        if target.exists() {
            return Err(StoreError::Exists {
                name: name.to_owned(),
            });
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".creating-{name}-"))
            // The machine's directory is the user's alone, whatever the umask.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(&machines)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("creating a directory in {}: {e}", machines.display()),
                )
            })?;
        Ok(Staging {
            name: name.to_owned(),
            dir: Some(tmp),
            target,
        })
    }
}

/// A machine directory being assembled. Dropped without `commit`, it is removed whole.
pub struct Staging {
    name: String,
    dir: Option<tempfile::TempDir>,
    target: PathBuf,
}

impl Staging {
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("staging dir present until commit")
            .path()
    }

    pub fn dir(&self) -> MachineDir {
        MachineDir {
            name: self.name.clone(),
            path: self.path().to_owned(),
        }
    }

    /// Moves the finished directory to `machines/<name>`. Fails (and cleans up) if another
    /// `create` got there first: renaming onto a non-empty directory is refused by the kernel.
    pub fn commit(mut self) -> Result<MachineDir, StoreError> {
        let tmp = self.dir.take().expect("staging dir present until commit");
        let from = tmp.keep();
        match std::fs::rename(&from, &self.target) {
            Ok(()) => {
                sync_dir(self.target.parent().expect("machine dir has a parent"))?;
                Ok(MachineDir {
                    name: self.name.clone(),
                    path: self.target.clone(),
                })
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&from);
                if self.target.exists() {
                    Err(StoreError::Exists {
                        name: self.name.clone(),
                    })
                } else {
                    Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "renaming {} to {}: {e}",
                            from.display(),
                            self.target.display()
                        ),
                    )
                    .into())
                }
            }
        }
    }
}

const SPEC_FILE: &str = "machine.yaml";

/// The files of one machine.
#[derive(Debug, Clone)]
pub struct MachineDir {
    pub name: String,
    pub path: PathBuf,
}

impl MachineDir {
    pub fn spec_path(&self) -> PathBuf {
        self.path.join(SPEC_FILE)
    }
    pub fn state_path(&self) -> PathBuf {
        self.path.join("state.json")
    }
    pub fn disk_path(&self) -> PathBuf {
        self.path.join("disk.raw")
    }
    pub fn config_drive_path(&self) -> PathBuf {
        self.path.join("config.tar")
    }
    pub fn client_key_path(&self) -> PathBuf {
        self.path.join("id_ed25519")
    }
    pub fn client_pub_path(&self) -> PathBuf {
        self.path.join("id_ed25519.pub")
    }
    pub fn host_key_path(&self) -> PathBuf {
        self.path.join("ssh_host_ed25519_key")
    }
    pub fn host_pub_path(&self) -> PathBuf {
        self.path.join("ssh_host_ed25519_key.pub")
    }
    pub fn serial_log_path(&self) -> PathBuf {
        self.path.join("serial.log")
    }
    pub fn supervisor_log_path(&self) -> PathBuf {
        self.path.join("supervisor.log")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.path.join("supervisor.pid")
    }
    pub fn control_socket_path(&self) -> PathBuf {
        self.path.join("control.sock")
    }
    pub fn docker_socket_path(&self) -> PathBuf {
        self.path.join("docker.sock")
    }
    pub fn qmp_socket_path(&self) -> PathBuf {
        self.path.join("qmp.sock")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.path.join("machine.lock")
    }
    pub fn supervisor_lock_path(&self) -> PathBuf {
        self.path.join("supervisor.lock")
    }
    /// `dns.json`: the running machine's DNS server and owned domains (`crate::resolver`).
    pub fn dns_state_path(&self) -> PathBuf {
        self.path.join("dns.json")
    }

    /// The files a supervisor creates while it runs and removes when it ends; a supervisor
    /// that died (SIGKILL) leaves them behind for the next command to remove.
    pub fn runtime_files(&self) -> [PathBuf; 4] {
        [
            self.docker_socket_path(),
            self.control_socket_path(),
            self.qmp_socket_path(),
            self.pid_path(),
        ]
    }

    /// Makes the machine directory 0700 and its disk and keys 0600 (machines created by
    /// earlier versions had a 0755 directory and a 0644 disk).
    pub fn make_private(&self) -> Result<(), StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let set = |p: PathBuf, mode: u32| -> Result<(), StoreError> {
            match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(std::io::Error::new(
                    e.kind(),
                    format!("setting the mode of {}: {e}", p.display()),
                )
                .into()),
            }
        };
        set(self.path.clone(), 0o700)?;
        set(self.disk_path(), 0o600)?;
        set(self.client_key_path(), 0o600)?;
        set(self.host_key_path(), 0o600)
    }

    /// Removes [`MachineDir::runtime_files`] (absent ones are fine).
    pub fn remove_runtime_files(&self) {
        for path in self.runtime_files() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Reads and validates `machine.yaml`; a parse error names the file, line and column.
    pub fn load_spec(&self) -> Result<MachineSpec, StoreError> {
        let path = self.spec_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    name: self.name.clone(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.parse_spec(&text)
    }

    /// Parses and validates `text` as this machine's `machine.yaml` (what [`Self::load_spec`]
    /// does with the file; `devbox edit` checks an edited copy with it before saving). Errors
    /// name the spec's path, and the line and column in `text`.
    pub fn parse_spec(&self, text: &str) -> Result<MachineSpec, StoreError> {
        let path = self.spec_path();
        let spec: MachineSpec = serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            StoreError::Corrupt {
                path: path.clone(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        if spec.name != self.name {
            return Err(StoreError::Corrupt {
                path,
                line: 1,
                column: 1,
                message: format!(
                    "name: {:?} does not match the directory name {:?}",
                    spec.name, self.name
                ),
            });
        }
        spec.validate(&super::spec::HostLimits::of_this_host())
            .map_err(|InvalidField { field, source }| StoreError::Invalid {
                path,
                line: yaml_line(text, &field),
                field,
                source,
            })?;
        Ok(spec)
    }

    pub fn save_spec(&self, spec: &MachineSpec) -> Result<(), StoreError> {
        let text = serde_norway::to_string(spec).map_err(std::io::Error::other)?;
        write_atomic(&self.spec_path(), text.as_bytes(), 0o600)?;
        Ok(())
    }
}

/// The line of `field` (`cpus`, `network.subnet`, `shares[1].guest_path`) in `machine.yaml`
/// as devbox writes it (block style, one key per line, list items as `- key: …`); 1 when it
/// is not found. Only for messages: it never decides anything.
fn yaml_line(text: &str, field: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    // Where a line's key starts: after its indentation and the `- ` of a list item.
    let key_indent = |i: usize| lines[i].len() - lines[i].trim_start_matches([' ', '-']).len();
    let key_is = |i: usize, key: &str| {
        lines[i]
            .trim_start_matches([' ', '-'])
            .split_once(':')
            .is_some_and(|(k, _)| k == key)
    };
    let filled = |i: &usize| !lines[*i].trim().is_empty();
    let is_item = |i: &usize| lines[*i].trim_start().starts_with("- ");
    // The lines to search and the indentation of their keys.
    let (mut lo, mut hi, mut indent) = (0, lines.len(), 0);
    let mut found = None;
    for part in field.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(at) = (lo..hi).find(|&i| key_indent(i) == indent && key_is(i, key)) else {
            break;
        };
        found = Some(at);
        // The key's block: the lines after it that are indented deeper.
        let end = (at + 1..hi)
            .find(|&i| filled(&i) && key_indent(i) <= key_indent(at))
            .unwrap_or(hi);
        match index {
            None => {
                lo = at + 1;
                hi = end;
                indent = (lo..hi).find(filled).map_or(usize::MAX, key_indent);
            }
            Some(n) => {
                let items: Vec<usize> = (at + 1..end).filter(is_item).collect();
                let Some(&item) = items.get(n) else { break };
                found = Some(item);
                lo = item;
                hi = items.get(n + 1).copied().unwrap_or(end);
                indent = key_indent(item);
            }
        }
    }
    found.map_or(1, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_their_line() {
        let text = "name: dev\ncpus: 2\nnetwork:\n  index: 0\n  subnet: 192.0.0.0/2\n\
                    docker:\n  bridge: 172.18.0.1/16\n  pool: 8.8.0.0/16\nshares:\n\
                    - host_path: /a\n  guest_path: /a\n- host_path: /b\n  guest_path: /b/../c\n\
                    tld: dev\n";
        assert_eq!(yaml_line(text, "cpus"), 2);
        assert_eq!(yaml_line(text, "network.subnet"), 5);
        assert_eq!(yaml_line(text, "docker.pool"), 8);
        assert_eq!(yaml_line(text, "shares[1].guest_path"), 13);
        assert_eq!(yaml_line(text, "shares[0].host_path"), 10);
        assert_eq!(yaml_line(text, "tld"), 14);
        assert_eq!(yaml_line(text, "nothing.here"), 1);
    }

    #[test]
    fn staging_is_removed_unless_committed() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::new(Some(d.path().join("home")), None);
        {
            let st = store.stage("a").unwrap();
            std::fs::write(st.path().join("x"), "y").unwrap();
        }
        assert_eq!(std::fs::read_dir(store.machines_dir()).unwrap().count(), 0);
        let st = store.stage("a").unwrap();
        std::fs::write(st.path().join("machine.yaml"), "y").unwrap();
        let dir = st.commit().unwrap();
        assert_eq!(store.names().unwrap(), vec!["a".to_string()]);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&dir.path),
            0o700,
            "a machine directory is the user's alone"
        );
        assert_eq!(mode(&store.machines_dir()), 0o700);
        assert_eq!(mode(&store.home), 0o700);
        assert!(matches!(store.stage("a"), Err(StoreError::Exists { .. })));
    }

    #[test]
    fn a_name_that_is_not_a_machine_name_never_becomes_a_path() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::new(Some(d.path().join("home")), None);
        for bad in ["..", ".", "/etc", "../x", "a/b", "", "-a", "A"] {
            assert!(
                matches!(store.machine(bad), Err(StoreError::Name(_))),
                "{bad:?} accepted"
            );
            assert!(matches!(store.existing(bad), Err(StoreError::Name(_))));
            assert!(matches!(store.stage(bad), Err(StoreError::Name(_))));
        }
        // Refused before anything was created.
        assert!(!d.path().join("home").exists());
        let err = store.machine("../x").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid machine name \"../x\""),
            "{err}"
        );
        assert_eq!(
            err.hint().as_deref(),
            Some("`devbox ls` lists the machines")
        );
    }
}
