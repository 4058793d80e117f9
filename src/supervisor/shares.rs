//! The machine's shares, as the embedded NFS server exports them, on either kind of link.
//!
//! - A TAP link (qemu, kvm on Linux): the server runs on the machine's share link before boot
//!   and the mounts are on the config drive (`sys::start_nfs`).
//! - vmnet's NAT (vz on macOS): the host's address on the NAT bridge, and the guest's, are
//!   known only once the guest has its DHCP lease and has reported it; so the server starts
//!   then, bound to that bridge and address and answering only the reported guest address,
//!   and the mounts reach the guest over SSH as `/run/devbox/nfs-mounts`, which its init waits
//!   for (`DEVBOX_SHARES='host'` in devbox.env) before it sets the file server's firewall,
//!   mounts the shares and starts dockerd: the same order as on a TAP link.

use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::machine::MachineSpec;
use crate::machine::config_drive::{NfsMount, nfs_mounts_file};
use crate::machine::spec::{ShareError, SpecError, StateDirs, check_shares};
use crate::net::vmnet::NatLink;
use crate::nfs;
use crate::ssh;

/// The exports for the machine's shares, checked again first (`machine.yaml` is the user's
/// to edit, and the host may have changed since create): none is or lies in devbox's own
/// directories (`state`), none contains another, and each is still the directory recorded at
/// create (the server opens it without following symlinks and compares its identity).
pub fn exports(spec: &MachineSpec, state: &StateDirs) -> Result<Vec<nfs::Export>> {
    check_shares(&spec.shares, Some(state)).map_err(SpecError::from)?;
    let mut exports = Vec::new();
    for share in &spec.shares {
        let id = share.id.ok_or_else(|| {
            SpecError::from(ShareError::NoIdentity {
                path: share.host_path.clone(),
            })
        })?;
        exports.push(nfs::Export {
            // The guest path names the export: unique per machine, and stable across
            // restarts, so file handles stay valid.
            name: share.guest_path.clone(),
            host_path: share.host_path.clone(),
            dir_id: (id.dev, id.ino),
            read_only: share.read_only,
            allow_root: share.allow_root,
        });
    }
    Ok(exports)
}

/// The guest's mounts of `server`'s exports.
pub fn mounts(server: &nfs::NfsServer) -> Vec<NfsMount> {
    server
        .mounts()
        .into_iter()
        .map(|m| NfsMount {
            guest_path: m.export.clone(),
            source: m.source,
            options: m.options,
        })
        .collect()
}

/// One line for the supervisor's log: where the server listens and what it exports.
pub fn describe(server: &nfs::NfsServer, on: &str, spec: &MachineSpec) -> String {
    format!(
        "NFS on {} ({on}) exporting {}",
        server.local_addr(),
        spec.shares
            .iter()
            .map(|s| format!("{} as {}", s.host_path.display(), s.guest_path))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Starts the server for a machine on vmnet's NAT: on the host's address of the guest's
/// bridge, bound to that bridge, for the reported guest address only.
pub fn serve_on_nat(
    io: &tokio::runtime::Runtime,
    spec: &MachineSpec,
    state: &StateDirs,
    link: &NatLink,
    guest_ip: Ipv4Addr,
    echo: std::sync::Arc<nfs::echo::EchoLog>,
) -> Result<(nfs::NfsServer, Vec<NfsMount>)> {
    let exports = exports(spec, state)?;
    let server = io
        .block_on(nfs::NfsServer::start(nfs::NfsConfig {
            bind: link.host_ip.into(),
            bind_device: Some(link.bridge.clone()),
            port: 0,
            allowed_client: guest_ip.into(),
            exports,
            hidden: state.paths(),
            idle_timeout: nfs::IDLE_TIMEOUT,
            fs_path: nfs::FsPath::default(),
            echo: Some(echo),
        }))
        .with_context(|| format!("cannot serve the shares on {}", link.bridge))?;
    let mounts = mounts(&server);
    Ok((server, mounts))
}

/// The command that hands the guest its mounts: written whole, then renamed into place, so
/// the guest's init never reads half a file.
pub fn delivery_command(mounts: &[NfsMount]) -> String {
    let text = nfs_mounts_file(mounts);
    format!(
        "umask 022 && mkdir -p /run/devbox && printf '%s' '{}' > /run/devbox/nfs-mounts.new \
         && mv /run/devbox/nfs-mounts.new /run/devbox/nfs-mounts",
        text.replace('\'', r"'\''")
    )
}

/// Gives the guest its mounts over SSH (its sshd runs before it reports its address).
pub fn deliver(target: &ssh::Target, mounts: &[NfsMount], deadline: Instant) -> Result<()> {
    let conn = ssh::wait_until_reachable(target, deadline)
        .context("cannot reach the guest to give it its shares")?;
    let out = conn
        .exec_capture(&delivery_command(mounts))
        .context("cannot give the guest its shares")?;
    anyhow::ensure!(
        out.status == 0,
        "the guest refused its shares (exit {}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mounts_reach_the_guest_whole_and_quoted() {
        let mounts = [
            NfsMount {
                guest_path: "/Users/ann/it's here".into(),
                source: "192.168.64.1:/Users/ann/it's here".into(),
                options: "vers=3,proto=tcp,port=2049".into(),
            },
            NfsMount {
                guest_path: "/src".into(),
                source: "192.168.64.1:/src".into(),
                options: "ro,vers=3".into(),
            },
        ];
        let cmd = delivery_command(&mounts);
        // Run it with a shell against a scratch directory in place of /run/devbox.
        let dir = tempfile::tempdir().unwrap();
        let cmd = cmd.replace("/run/devbox", dir.path().to_str().unwrap());
        let st = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("nfs-mounts")).unwrap(),
            nfs_mounts_file(&mounts)
        );
        assert!(!dir.path().join("nfs-mounts.new").exists());
    }
}
