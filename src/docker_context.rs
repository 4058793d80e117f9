//! The docker CLI's own context store, so every terminal, IDE plugin and compose run reaches a
//! machine without `DOCKER_HOST`: each machine has a context `devbox-<name>` whose endpoint is
//! its forwarded `docker.sock`, and `devbox use` makes one the CLI's current context.
//!
//! The format is the docker CLI's (github.com/docker/cli, `cli/context/store`): the config
//! directory is `$DOCKER_CONFIG`, else `~/.docker`; a context's metadata is
//! `contexts/meta/<hex sha256 of its name>/meta.json`, holding
//! `{"Name", "Metadata": {"Description"}, "Endpoints": {"docker": {"Host", "SkipTLSVerify"}}}`;
//! its TLS material (devbox has none) would be under `contexts/tls/<same id>/`. The current
//! context is the `currentContext` key of `config.json`; no key means the CLI's `default`.
//! Written by hand: no Rust crate writes this store, and it is three small JSON documents.
//!
//! `config.json` belongs to the user and to other tools (credential helpers, auths, plugins):
//! devbox changes only `currentContext`, keeps every other key, refuses a file it cannot
//! parse rather than overwrite it, and replaces it atomically (with its mode kept).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::hint::Hint;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(
        "cannot find the docker CLI's configuration directory: neither DOCKER_CONFIG nor HOME is set"
    )]
    NoConfigDir,
    #[error("{path} is not a JSON object the docker CLI wrote")]
    BadConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} holds JSON that is not an object")]
    NotAnObject { path: PathBuf },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Hint for ContextError {
    fn hint(&self) -> Option<String> {
        match self {
            ContextError::NoConfigDir => {
                Some("set DOCKER_CONFIG to the docker CLI's configuration directory".into())
            }
            ContextError::BadConfig { path, .. } | ContextError::NotAnObject { path } => {
                Some(format!(
                    "devbox does not rewrite a config it cannot read: fix {} (or move it away) and retry",
                    path.display()
                ))
            }
            ContextError::Io(_) => None,
        }
    }
}

/// The docker CLI's configuration directory: `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn config_dir() -> Result<PathBuf, ContextError> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker"))
        .ok_or(ContextError::NoConfigDir)
}

/// The context of machine `machine`.
pub fn context_name(machine: &str) -> String {
    format!("devbox-{machine}")
}

/// The directory of context `name`'s metadata under `config`.
fn meta_dir(config: &Path, name: &str) -> PathBuf {
    let id = hex::encode(Sha256::digest(name.as_bytes()));
    config.join("contexts/meta").join(id)
}

fn tls_dir(config: &Path, name: &str) -> PathBuf {
    let id = hex::encode(Sha256::digest(name.as_bytes()));
    config.join("contexts/tls").join(id)
}

/// The metadata document of machine `machine`'s context (endpoint: its docker socket).
pub fn meta_json(machine: &str, socket: &Path) -> Value {
    json!({
        "Name": context_name(machine),
        "Metadata": {"Description": format!("devbox machine {machine}")},
        "Endpoints": {
            "docker": {
                "Host": format!("unix://{}", socket.display()),
                "SkipTLSVerify": false,
            }
        }
    })
}

/// Creates or updates machine `machine`'s context to point at `socket`. Idempotent.
pub fn write(config: &Path, machine: &str, socket: &Path) -> Result<(), ContextError> {
    let dir = meta_dir(config, &context_name(machine));
    fs_err::create_dir_all(&dir)?;
    // The CLI resolves a relative endpoint against its own working directory.
    let socket = std::path::absolute(socket)?;
    let text = serde_json::to_vec(&meta_json(machine, &socket)).expect("JSON value");
    crate::atomic_file::write_atomic(&dir.join("meta.json"), &text, 0o644)?;
    Ok(())
}

/// Whether machine `machine` has a context.
pub fn exists(config: &Path, machine: &str) -> bool {
    meta_dir(config, &context_name(machine))
        .join("meta.json")
        .is_file()
}

/// Removes machine `machine`'s context; if it was the current one, the CLI goes back to its
/// default. Returns whether the current context was reset. Nothing to remove is not an error.
pub fn remove(config: &Path, machine: &str) -> Result<bool, ContextError> {
    let name = context_name(machine);
    for dir in [meta_dir(config, &name), tls_dir(config, &name)] {
        match fs_err::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    if current(config)?.as_deref() == Some(name.as_str()) {
        set_current(config, None)?;
        return Ok(true);
    }
    Ok(false)
}

fn config_file(config: &Path) -> PathBuf {
    config.join("config.json")
}

/// `config.json` as a JSON object (empty when there is no file).
fn read_config(config: &Path) -> Result<(PathBuf, Map<String, Value>, u32), ContextError> {
    use std::os::unix::fs::PermissionsExt;
    let mut path = config_file(config);
    // A config.json that is a symlink (dotfile managers) is updated where it points.
    if let Ok(target) = fs_err::canonicalize(&path) {
        path = target;
    }
    let text = match fs_err::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((path, Map::new(), 0o600));
        }
        Err(e) => return Err(e.into()),
    };
    let mode = fs_err::metadata(&path)?.permissions().mode() & 0o7777;
    if text.trim().is_empty() {
        return Ok((path, Map::new(), mode));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok((path, m, mode)),
        Ok(_) => Err(ContextError::NotAnObject { path }),
        Err(source) => Err(ContextError::BadConfig { path, source }),
    }
}

/// The docker CLI's current context as `config.json` records it (`None`: its default).
pub fn current(config: &Path) -> Result<Option<String>, ContextError> {
    let (_, map, _) = read_config(config)?;
    Ok(map
        .get("currentContext")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned))
}

/// Makes `context` the docker CLI's current context (`None`: back to its default), keeping
/// every other key of `config.json`.
pub fn set_current(config: &Path, context: Option<&str>) -> Result<(), ContextError> {
    let (path, mut map, mode) = read_config(config)?;
    match context {
        Some(c) => {
            map.insert("currentContext".into(), Value::String(c.to_owned()));
        }
        None => {
            if map.remove("currentContext").is_none() && !path.exists() {
                return Ok(());
            }
        }
    }
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    let mut text = serde_json::to_vec_pretty(&Value::Object(map)).expect("JSON value");
    text.push(b'\n');
    crate::atomic_file::write_atomic(&path, &text, mode)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meta_directory_is_the_sha256_of_the_name() {
        // sha256("devbox-dev"), as `printf %s devbox-dev | sha256sum` prints it.
        let want = {
            let out = std::process::Command::new("sh")
                .args(["-c", "printf %s devbox-dev | sha256sum"])
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()[..64].to_owned()
        };
        assert_eq!(
            meta_dir(Path::new("/c"), "devbox-dev"),
            Path::new("/c/contexts/meta").join(want)
        );
    }

    #[test]
    fn set_current_keeps_every_other_key_and_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("config.json");
        std::fs::write(
            &file,
            r#"{"auths":{"r.example":{"auth":"eA=="}},"credsStore":"pass","currentContext":"x"}"#,
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        set_current(d.path(), Some("devbox-a")).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(v["currentContext"], "devbox-a");
        assert_eq!(v["credsStore"], "pass");
        assert_eq!(v["auths"]["r.example"]["auth"], "eA==");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        set_current(d.path(), None).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert!(v.get("currentContext").is_none(), "{v}");
        assert_eq!(v["credsStore"], "pass");
    }

    #[test]
    fn a_config_that_is_not_json_is_refused_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("config.json");
        std::fs::write(&file, "{not json").unwrap();
        let e = set_current(d.path(), Some("devbox-a")).unwrap_err();
        assert!(matches!(e, ContextError::BadConfig { .. }), "{e}");
        assert!(e.hint().unwrap().contains("config.json"));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{not json");
        std::fs::write(&file, "[1]").unwrap();
        assert!(matches!(
            set_current(d.path(), None).unwrap_err(),
            ContextError::NotAnObject { .. }
        ));
    }

    #[test]
    fn removing_the_current_context_resets_it() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a", Path::new("/s/docker.sock")).unwrap();
        assert!(exists(d.path(), "a"));
        set_current(d.path(), Some("devbox-a")).unwrap();
        assert!(remove(d.path(), "a").unwrap());
        assert!(!exists(d.path(), "a"));
        assert_eq!(current(d.path()).unwrap(), None);
        // Twice: nothing left to remove.
        assert!(!remove(d.path(), "a").unwrap());
    }
}
