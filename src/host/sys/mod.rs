//! Route changes for the applier: rtnetlink on Linux, `route`/`ifconfig`/`netstat` on macOS.
//! Each file exposes the same functions: `routes`, `add_route`, `delete_route`, `hostfilter`,
//! `can_change_routes`, `ROUTE_PRIVILEGE` and `HOST_OS`.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(super) use linux::*;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub(super) use macos::*;
