//! Hole punching on the host file system: `fallocate(PUNCH_HOLE | KEEP_SIZE)` on Linux,
//! `fcntl(F_PUNCHHOLE)` on macOS. Each file exposes `punch_hole(file, offset, len)`.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(super) use linux::*;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub(super) use macos::*;
