//! The raw-RPC suite of `tests/nfs_rpc.rs` (escapes, forged handles, symlinks, hidden state,
//! owner identity, big directories, restarts...) against the server's portable path: the one
//! macOS hosts run (directories opened `O_RDONLY | O_NOFOLLOW` one component at a time,
//! attributes changed by name with `AT_SYMLINK_NOFOLLOW`, position cookies; see
//! `src/nfs/sys.rs`). Run here so every CI run proves its confinement, not only a Mac.
//! Needs root, like the native suite.

#![cfg(target_os = "linux")]

const FS_PATH: devbox::nfs::FsPath = devbox::nfs::FsPath::Portable;

include!("support/nfs_rpc_suite.rs");
