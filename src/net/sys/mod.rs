//! System calls behind `net`: one file per host OS, each exposing `Tap`, `host_routes` and `vmnet_bridges`
//! (Linux also the route and capability calls the host applier uses).

#[cfg(target_os = "linux")]
pub(super) mod linux;

#[cfg(target_os = "macos")]
pub(super) mod macos;
