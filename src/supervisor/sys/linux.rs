//! Linux parts of the supervisor: the embedded NFS server (Linux-only for now: its READDIR
//! cookies and data sync use Linux interfaces).

use anyhow::Result;

use crate::machine::MachineSpec;
use crate::machine::config_drive::NfsMount;
use crate::nfs;
use crate::supervisor::log;

/// A running share server.
pub type NfsServer = nfs::NfsServer;

/// Starts the NFS server for the machine's shares (none: no server), and returns the mounts
/// the guest makes.
pub fn start_nfs(
    io: &tokio::runtime::Runtime,
    spec: &MachineSpec,
) -> Result<(Option<NfsServer>, Vec<NfsMount>)> {
    if spec.shares.is_empty() {
        return Ok((None, Vec::new()));
    }
    let mut exports = Vec::new();
    for share in &spec.shares {
        let (uid, gid) = crate::machine::spec::share_owner(&share.host_path)?;
        exports.push(nfs::Export {
            // The guest path names the export: unique per machine, and stable across
            // restarts, so file handles stay valid.
            name: share.guest_path.clone(),
            host_path: share.host_path.clone(),
            read_only: share.read_only,
            uid,
            gid,
        });
    }
    let server = io.block_on(nfs::NfsServer::start(nfs::NfsConfig {
        bind: spec.network.host_ip.into(),
        port: 0,
        allowed_client: spec.network.guest_ip.into(),
        exports,
    }))?;
    log(format!(
        "NFS on {} exporting {}",
        server.local_addr(),
        spec.shares
            .iter()
            .map(|s| format!("{} as {}", s.host_path.display(), s.guest_path))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mounts = server
        .mounts()
        .into_iter()
        .map(|m| NfsMount {
            guest_path: m.export.clone(),
            source: m.source,
            options: m.options,
        })
        .collect();
    Ok((Some(server), mounts))
}
