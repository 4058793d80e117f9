//! devbox's engine settings on an adopted host (issue #21): merged into the host's own
//! `daemon.json` (the host's keys kept, devbox's keys set), the file as it was kept once
//! beside it so that `rm --purge` puts it back, and the engine restarted by systemd.
//!
//! Nothing is written unless the engine can be restarted afterwards (systemd), and a
//! `daemon.json` that is not a JSON object is refused with its path: devbox never replaces a
//! file it cannot read.

use crate::output::guest_text::escape;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::Facts;
use crate::ssh::{Connection, quote};

/// Where Docker reads its settings on Debian and Ubuntu.
pub const ETC_DOCKER: &str = "/etc/docker";
/// The host's `daemon.json` before devbox first wrote it, beside it.
const ORIGINAL: &str = "daemon.json.devbox-original";
/// What [`ORIGINAL`] holds when there was no `daemon.json`.
const ABSENT: &str = "# devbox: there was no daemon.json\n";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "{path} on {host} is not a JSON object ({why}), so devbox cannot add its settings to it"
    )]
    Unreadable {
        host: String,
        path: String,
        why: String,
    },
    #[error(
        "{host} does not run systemd, so devbox cannot restart its Docker engine with new settings"
    )]
    NoRestart { host: String },
    #[error("`{command}` on {host} exited with status {status}: {stderr}")]
    Command {
        host: String,
        command: String,
        status: i32,
        stderr: String,
    },
    #[error("the Docker engine on {host} did not answer within {waited:?} of its restart")]
    NotBack { host: String, waited: Duration },
    #[error(transparent)]
    Ssh(#[from] crate::ssh::SshError),
}

impl SettingsError {
    pub fn hint(&self) -> Option<String> {
        match self {
            SettingsError::Unreadable { path, .. } => Some(format!(
                "fix {path} (`python3 -m json.tool {path}` shows where it breaks) or move it \
                 away, then run the command again"
            )),
            SettingsError::NoRestart { .. } => Some(
                "devbox adopts hosts that run systemd; on another init, configure and restart \
                 dockerd yourself"
                    .to_owned(),
            ),
            SettingsError::NotBack { .. } => Some(
                "see `journalctl -u docker.service` on the host: a setting it refuses stops the \
                 engine (devbox put the host's own settings back)"
                    .to_owned(),
            ),
            _ => None,
        }
    }
}

/// The host's `daemon.json` (`None`: there is none) with `ours` set over it.
pub fn merge(existing: Option<&str>, ours: &Map<String, Value>) -> Result<String, String> {
    let mut v = match existing {
        None => Map::new(),
        Some(text) if text.trim().is_empty() => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err("its top level is not an object".to_owned()),
            Err(e) => return Err(e.to_string()),
        },
    };
    for (k, val) in ours {
        v.insert(k.clone(), val.clone());
    }
    let mut s = serde_json::to_string_pretty(&Value::Object(v)).expect("JSON values");
    s.push('\n');
    Ok(s)
}

/// One host's settings, at `etc_docker` (the tests point it elsewhere).
pub struct HostSettings<'a> {
    pub conn: &'a Connection,
    pub facts: &'a Facts,
    pub host: &'a str,
    pub etc_docker: &'a str,
    pub timeout: Duration,
}

impl HostSettings<'_> {
    fn sudo(&self) -> &'static str {
        if self.facts.root() { "" } else { "sudo -n " }
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.etc_docker)
    }

    /// Runs `script` under `sh -c` (through sudo when not root), `stdin` fed to it.
    fn sh(&self, script: &str, stdin: Option<&[u8]>) -> Result<Vec<u8>, SettingsError> {
        let command = format!("{}sh -c {}", self.sudo(), quote(script));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut input = stdin.map(std::io::Cursor::new);
        let status = self.conn.exec_until_deadline(
            &command,
            input.as_mut().map(|c| c as &mut dyn std::io::Read),
            &mut out,
            &mut err,
            Instant::now() + self.timeout,
        )?;
        if status != 0 {
            return Err(SettingsError::Command {
                host: self.host.to_owned(),
                command,
                status,
                stderr: escape(&err).trim().to_owned(),
            });
        }
        Ok(out)
    }

    /// The host's `daemon.json`, or `None` when it has none.
    fn read(&self) -> Result<Option<String>, SettingsError> {
        let f = quote(&self.path("daemon.json"));
        let out = self.sh(
            &format!("if [ -e {f} ]; then echo present; cat {f}; fi"),
            None,
        )?;
        let text = String::from_utf8_lossy(&out);
        Ok(text.strip_prefix("present\n").map(str::to_owned))
    }

    /// Merges `ours` into the host's `daemon.json` (keeping the file as it was, once, for
    /// [`HostSettings::restore`]), restarts the engine and waits for it to answer.
    pub fn apply(&self, ours: &Map<String, Value>) -> Result<(), SettingsError> {
        if !self.facts.systemd {
            return Err(SettingsError::NoRestart {
                host: self.host.to_owned(),
            });
        }
        let existing = self.read()?;
        let merged = merge(existing.as_deref(), ours).map_err(|why| SettingsError::Unreadable {
            host: self.host.to_owned(),
            path: self.path("daemon.json"),
            why,
        })?;
        let (dir, file, orig) = (
            quote(self.etc_docker),
            quote(&self.path("daemon.json")),
            quote(&self.path(ORIGINAL)),
        );
        // The original is kept only the first time: adopting again must not take devbox's
        // own file for the host's.
        let keep = match existing {
            Some(_) => format!("[ -e {orig} ] || cp -p {file} {orig}"),
            None => format!("[ -e {orig} ] || printf %s {} > {orig}", quote(ABSENT)),
        };
        self.sh(
            &format!(
                "umask 022 && mkdir -p {dir} && {{ {keep}; }} && cat > {file}.devbox-new && \
                 mv {file}.devbox-new {file}"
            ),
            Some(merged.as_bytes()),
        )?;
        if let Err(e) = self.restart() {
            // An engine that refuses the settings is given its own back, so that a failed
            // adoption leaves the host as it was (best effort: the first error is the one
            // reported).
            let _ = self.restore();
            return Err(e);
        }
        Ok(())
    }

    /// Puts back the host's own `daemon.json` as it was before devbox first wrote it (none, if
    /// there was none) and restarts the engine; nothing to do when devbox never wrote it.
    /// Returns whether anything was restored.
    pub fn restore(&self) -> Result<bool, SettingsError> {
        let (file, orig) = (
            quote(&self.path("daemon.json")),
            quote(&self.path(ORIGINAL)),
        );
        let out = self.sh(
            &format!(
                "[ -e {orig} ] || exit 0; echo restored; \
                 if [ \"$(cat {orig})\" = {} ]; then rm -f {file} {orig}; else mv {orig} {file}; fi",
                quote(ABSENT.trim_end())
            ),
            None,
        )?;
        if !String::from_utf8_lossy(&out).contains("restored") {
            return Ok(false);
        }
        if self.facts.systemd {
            self.restart()?;
        }
        Ok(true)
    }

    fn restart(&self) -> Result<(), SettingsError> {
        self.sh("systemctl restart docker.service", None)?;
        let start = Instant::now();
        let deadline = start + self.timeout;
        loop {
            if self
                .sh("docker version --format '{{.Server.Version}}'", None)
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SettingsError::NotBack {
                    host: self.host.to_owned(),
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours() -> Map<String, Value> {
        json!({"bip": "172.18.0.1/16", "labels": ["devbox.machine=box"]})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn the_hosts_keys_are_kept_and_devboxs_are_set() {
        let merged = merge(
            Some(r#"{"log-driver": "journald", "bip": "10.0.0.1/24"}"#),
            &ours(),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(v["log-driver"], "journald");
        assert_eq!(v["bip"], "172.18.0.1/16");
        assert_eq!(v["labels"][0], "devbox.machine=box");
        assert_eq!(
            merge(None, &ours()).unwrap(),
            merge(Some(" \n"), &ours()).unwrap()
        );
    }

    #[test]
    fn a_file_that_is_not_an_object_is_not_replaced() {
        assert!(
            merge(Some("[1, 2]"), &ours())
                .unwrap_err()
                .contains("not an object")
        );
        assert!(merge(Some("{\"bip\": "), &ours()).is_err());
    }
}
