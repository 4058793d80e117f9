//! System calls behind `net`: one file per host OS (only Linux so far; the macOS side will
//! use `route`/`ifconfig` and vmnet).

#[cfg(target_os = "linux")]
pub(super) mod linux;
