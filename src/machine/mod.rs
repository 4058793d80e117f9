//! Machines at rest: the validated spec (`spec`) and its shares (`share`), what `devbox
//! edit` may change in it (`edit`), the driver and what it can do (`driver`), the files
//! under `$DEVBOX_HOME` (`store`), locking (`lock`), the observed state (`state`), the config
//! drive the guest reads at boot (`config_drive`) and which address is the guest's
//! (`guest_net`).

pub mod config_drive;
pub mod driver;
pub mod edit;
pub mod engine;
pub mod guest_net;
pub mod lock;
pub mod share;
pub mod spec;
pub mod state;
pub mod store;

pub use driver::{Addressing, Capabilities, Driver, GuestAccess, Link};
pub use spec::{MachineSpec, RemoteSpec};
pub use state::{MachineState, Observed};
pub use store::{MachineDir, Store};
