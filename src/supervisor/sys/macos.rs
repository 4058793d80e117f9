//! macOS parts of the supervisor: shares, which are refused: the embedded NFS server is
//! Linux-only for now (its READDIR cookies and data sync use Linux interfaces).

use anyhow::Result;

use crate::machine::MachineSpec;
use crate::machine::config_drive::NfsMount;

/// Never constructed on macOS: there is no share server yet.
pub enum NfsServer {}

pub fn start_nfs(
    _io: &tokio::runtime::Runtime,
    spec: &MachineSpec,
) -> Result<(Option<NfsServer>, Vec<NfsMount>)> {
    if spec.shares.is_empty() {
        return Ok((None, Vec::new()));
    }
    anyhow::bail!(
        "machine {} has shares, and file sharing is not available on macOS hosts yet; \
         recreate it with --no-share",
        spec.name
    )
}
