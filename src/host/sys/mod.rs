//! Route changes for the applier: rtnetlink on Linux, `route`/`ifconfig`/`netstat` on macOS.
//! Each file exposes the same functions: `routes`, `add_route`, `delete_route`, `hostfilter`,
//! `can_change_routes`, `ROUTE_PRIVILEGE` and `HOST_OS`; and the outbound NAT of a machine's
//! link, `add_nat` and `remove_nat` (Linux: `nat_linux.rs`; macOS keeps vmnet's own NAT).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(super) use linux::*;

#[cfg(target_os = "linux")]
mod nat_linux;
#[cfg(target_os = "linux")]
pub(super) use nat_linux::{add_nat, add_swarm, remove_nat, remove_swarm};

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub(super) use macos::*;
