//! The NFS server driven by crafted ONC-RPC requests over TCP on loopback: escapes,
//! forged handles, oversized requests, foreign peers, unprivileged ports and weak
//! credentials, big directories, restarts, host-side renames, uid/gid mapping and the
//! owner's identity, devbox's hidden directories, idle connections and read-only exports.
//! The client below is written from RFC 5531/1813 and shares no code with the server, so an
//! encoding mistake on either side shows up here.
//!
//! The server acts as the share's owner, which needs root (CAP_SETUID/CAP_SETGID) for an
//! owner other than the test's own user, and the client binds reserved ports: run as root.
//!
//! The Linux kernel NFS client is not used: this host's kernel has no `nfs` filesystem
//! (`/proc/filesystems`) and no modules; the real-guest mount is tested end to end.

// The suite runs against a Linux host's filesystem.
#![cfg(target_os = "linux")]

/// The server's native Linux path (`O_PATH`, `d_off` cookies).
const FS_PATH: devbox::nfs::FsPath = devbox::nfs::FsPath::Native;

include!("support/nfs_rpc_suite.rs");
