//! macOS parts of the supervisor: shares, which are refused: the embedded NFS server is
//! Linux-only for now (its READDIR cookies and data sync use Linux interfaces).

use anyhow::Result;

use crate::machine::MachineSpec;
use crate::machine::config_drive::NfsMount;

/// Never constructed on macOS: there is no share server yet.
pub enum NfsServer {}

/// What serving a machine's shares gives its guest: nothing on macOS yet.
#[derive(Default)]
pub struct Shares {
    pub server: Option<NfsServer>,
    pub mounts: Vec<NfsMount>,
    pub nic: Option<crate::hypervisor::GuestNic>,
}

pub fn start_nfs(
    _io: &tokio::runtime::Runtime,
    spec: &MachineSpec,
    _state: &crate::machine::spec::StateDirs,
) -> Result<Shares> {
    if spec.shares.is_empty() {
        return Ok(Shares::default());
    }
    anyhow::bail!(
        "machine {} has shares, and file sharing is not available on macOS hosts yet; \
         recreate it with --no-share",
        spec.name
    )
}
