//! macOS parts of the supervisor. Shares are served once the guest has reported the address
//! vmnet's DHCP gave it (see `supervisor::shares`): nothing runs before boot.

use anyhow::Result;

use crate::machine::MachineSpec;
use crate::machine::config_drive::NfsMount;

/// A running share server.
pub type NfsServer = crate::nfs::NfsServer;

/// What serving a machine's shares gives its guest before boot: nothing on macOS (the vz
/// driver's guest gets its mounts after its address report).
#[derive(Default)]
pub struct Shares {
    pub server: Option<NfsServer>,
    pub mounts: Vec<NfsMount>,
    pub nic: Option<crate::hypervisor::GuestNic>,
}

pub fn start_nfs(
    _io: &tokio::runtime::Runtime,
    _spec: &MachineSpec,
    _state: &crate::machine::spec::StateDirs,
    _echo: std::sync::Arc<crate::nfs::echo::EchoLog>,
) -> Result<Shares> {
    Ok(Shares::default())
}
