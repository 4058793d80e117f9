//! `devbox ssh-config [NAME]`: an OpenSSH `Host` block per machine, so OpenSSH's own `ssh`,
//! `scp`, `rsync`, VS Code Remote and JetBrains Gateway reach a machine as `devbox ssh` does:
//! its client key, and its host key pinned at create, in a known_hosts file of devbox's own
//! (`<machine>/known_hosts`, written here) with `StrictHostKeyChecking yes`. `HostKeyAlias`
//! names the key by machine, so the pin holds whatever address the machine has.

use std::path::Path;

use anyhow::Result;

use crate::cli::SshConfigArgs;
use crate::hint::Hint;
use crate::machine::guest_net::guest_address;
use crate::machine::state::observe;
use crate::machine::{MachineDir, Store};
use crate::output;

#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    #[error("{path} holds a character an OpenSSH config cannot quote (\" or a newline)")]
    Unquotable { path: String },
}

impl Hint for SshConfigError {
    fn hint(&self) -> Option<String> {
        Some("use a DEVBOX_HOME whose path has no double quote or newline".into())
    }
}

pub fn run(store: &Store, a: &SshConfigArgs) -> Result<i32> {
    let names = match &a.name {
        Some(n) => {
            store.existing(n)?;
            vec![n.clone()]
        }
        None => store.names()?,
    };
    let mut blocks = Vec::new();
    for name in &names {
        let dir = store.existing(name)?;
        match block_for(&dir) {
            Ok(b) => blocks.push(b),
            // Every machine was asked for: one that has no address now is left out.
            Err(e) if a.name.is_none() => output::warn(format!("{name}: {e:#}")),
            Err(e) => return Err(e),
        }
    }
    if !blocks.is_empty() {
        output::data(blocks.join("\n"));
    }
    Ok(0)
}

fn block_for(dir: &MachineDir) -> Result<String> {
    let spec = dir.load_spec()?;
    spec.require_booted("ssh-config")?;
    let ip = guest_address(&spec, &observe(dir)?)?;
    let host_key = fs_err::read_to_string(dir.host_pub_path())?;
    let alias = crate::docker_context::context_name(&dir.name);
    let known_hosts = fs_err::canonicalize(&dir.path)?.join("known_hosts");
    crate::atomic_file::write_atomic(
        &known_hosts,
        format!("{alias} {}\n", host_key.trim()).as_bytes(),
        0o600,
    )?;
    let identity = fs_err::canonicalize(dir.client_key_path())?;
    block(&dir.name, &ip.to_string(), &identity, &known_hosts, &alias)
}

/// The `Host` block. Paths are quoted, and `%` doubled: OpenSSH expands `%` tokens in
/// `IdentityFile` and `UserKnownHostsFile`.
pub fn block(
    name: &str,
    ip: &str,
    identity: &Path,
    known_hosts: &Path,
    alias: &str,
) -> Result<String> {
    let path = |p: &Path| -> Result<String> {
        let s = p.to_string_lossy();
        if s.contains('"') || s.contains('\n') {
            return Err(SshConfigError::Unquotable { path: s.into() }.into());
        }
        Ok(format!("\"{}\"", s.replace('%', "%%")))
    };
    Ok(format!(
        "Host {name}\n  HostName {ip}\n  Port 22\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  HostKeyAlias {alias}\n  PasswordAuthentication no\n",
        path(identity)?,
        path(known_hosts)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_and_percent_doubled() {
        let b = block(
            "dev",
            "10.0.0.2",
            Path::new("/h/a b%/id"),
            Path::new("/h/kh"),
            "devbox-dev",
        )
        .unwrap();
        assert!(b.contains("IdentityFile \"/h/a b%%/id\"\n"), "{b}");
        assert!(b.starts_with("Host dev\n  HostName 10.0.0.2\n"), "{b}");
        assert!(
            block("d", "1", Path::new("/a\"b"), Path::new("/k"), "x").is_err(),
            "a double quote cannot be quoted"
        );
    }
}
