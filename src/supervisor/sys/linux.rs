//! Linux parts of the supervisor: the embedded NFS server on the machine's share link.

use anyhow::Result;

use crate::hypervisor::GuestNic;
use crate::machine::MachineSpec;
use crate::machine::config_drive::NfsMount;
use crate::machine::spec::{StateDirs, share_link_mac};
use crate::nfs;
use crate::supervisor::log;

/// Set (to anything) in `devbox start`'s environment by the e2e tests: the file server then
/// uses its portable path, the one macOS hosts run.
pub const TEST_PORTABLE_ENV: &str = "DEVBOX_TEST_NFS_PORTABLE";

/// A running share server.
pub type NfsServer = nfs::NfsServer;

/// What serving a machine's shares needs while it runs, and gives its guest.
#[derive(Default)]
pub struct Shares {
    /// Held until the machine ends.
    pub server: Option<NfsServer>,
    /// The mounts the guest makes (config drive).
    pub mounts: Vec<NfsMount>,
    /// The guest's NIC on the share link (boot config).
    pub nic: Option<GuestNic>,
}

/// Starts the NFS server for the machine's shares (none: no server, no share link), on the
/// machine's share link (`net::ShareLink`): a TAP device of its own, which the guest hands
/// to its NFS client alone, with the server bound to that device (the exports are checked
/// again first: `shares::exports`).
pub fn start_nfs(
    io: &tokio::runtime::Runtime,
    spec: &MachineSpec,
    state: &StateDirs,
    echo: std::sync::Arc<nfs::echo::EchoLog>,
) -> Result<Shares> {
    if spec.shares.is_empty() {
        return Ok(Shares::default());
    }
    let exports = crate::supervisor::shares::exports(spec, state)?;
    // Through the privileged door: only the share link of an index leased to the caller.
    let (tap, link) = crate::host::open_share_tap(
        &crate::net::lease::Registry::system(),
        spec.network.index,
        true,
    )?;
    // The portable path (macOS's) only when a test asks, so that it is proven against a real
    // guest's NFS client too (see src/nfs/sys.rs); never a user-facing setting.
    let fs_path = if std::env::var_os(TEST_PORTABLE_ENV).is_some() {
        nfs::FsPath::Portable
    } else {
        nfs::FsPath::default()
    };
    let server = io.block_on(nfs::NfsServer::start(nfs::NfsConfig {
        bind: link.host_ip.into(),
        bind_device: Some(link.tap.clone()),
        port: 0,
        allowed_client: link.guest_ip.into(),
        exports,
        hidden: state.paths(),
        idle_timeout: nfs::IDLE_TIMEOUT,
        fs_path,
        echo: Some(echo),
    }))?;
    log(crate::supervisor::shares::describe(
        &server,
        &format!("{}, {fs_path:?} path", link.tap),
        spec,
    ));
    let mounts = crate::supervisor::shares::mounts(&server);
    Ok(Shares {
        server: Some(server),
        mounts,
        nic: Some(GuestNic {
            tap: tap.into_inheritable_fd()?,
            mac: share_link_mac(&spec.name),
        }),
    })
}
