//! Machines at rest: the validated spec (`spec`), the files under `$DEVBOX_HOME` (`store`),
//! locking (`lock`), the observed state (`state`), the config drive the guest reads at boot
//! (`config_drive`) and where the guest's address comes from (`guest_net`).

pub mod config_drive;
pub mod guest_net;
pub mod lock;
pub mod spec;
pub mod state;
pub mod store;

pub use spec::{Driver, MachineSpec};
pub use state::{MachineState, Observed};
pub use store::{MachineDir, Store};
