//! The one error type of the NFS module: what can stop the server from starting. Problems
//! with single requests are NFS status codes sent to the guest, never errors here.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Why [`super::NfsServer::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    /// The server must listen on the machine's host-side address only.
    #[error("refusing to serve NFS on the wildcard address {addr}")]
    WildcardBind { addr: IpAddr },

    /// The allowed client must be the guest's single address.
    #[error("the allowed NFS client {client} is not a single address")]
    WildcardClient { client: IpAddr },

    /// An export name the guest could not mount, or that could be misread.
    #[error("invalid NFS export name `{name}`: {reason}")]
    ExportName { name: String, reason: &'static str },

    /// Two shares would be mounted under the same export name.
    #[error("NFS export `{name}` is listed twice")]
    DuplicateExport { name: String },

    /// An export's host directory could not be opened.
    #[error("cannot open {} for NFS export `{name}`", path.display())]
    ExportDir {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The export is devbox's own state or cache directory, or inside one.
    #[error("NFS export `{name}`: {} is inside devbox's own directory {}", path.display(), state.display())]
    ExportInStateDir {
        name: String,
        path: PathBuf,
        state: PathBuf,
    },

    /// The directory at the export's path is not the one recorded when the share was chosen.
    #[error(
        "NFS export `{name}`: {} is not the directory that was shared when the machine was created",
        path.display()
    )]
    ExportChanged { name: String, path: PathBuf },

    /// Root owns the directory, and the share was not created with `--allow-root-share`.
    #[error("NFS export `{name}`: {} is owned by root", path.display())]
    ExportRootOwned { name: String, path: PathBuf },

    /// The server can take neither the owner's identity nor already has it.
    #[error(
        "NFS export `{name}`: {} belongs to uid {owner}, and the file server, running as uid \
         {server_uid}, cannot act as that user",
        path.display()
    )]
    ExportOwner {
        name: String,
        path: PathBuf,
        owner: u32,
        server_uid: u32,
    },

    /// A directory to hide could not be examined, so the export cannot be served safely.
    #[error("NFS export `{name}`: cannot examine {}, which must stay hidden from the guest", path.display())]
    Hidden {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The listening socket could not be created.
    #[error("cannot listen for NFS on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl NfsError {
    /// A known fix, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            NfsError::WildcardBind { .. } => Some(
                "bind NFS to the machine's host-side address (its TAP address, e.g. 192.168.64.1) \
                 so that only the guest's network reaches it"
                    .to_string(),
            ),
            NfsError::WildcardClient { .. } => {
                Some("allow the guest's own address (e.g. 192.168.64.2)".to_string())
            }
            NfsError::ExportName { .. } => Some(
                "export names are absolute paths like `/home/alice/src`, without `.`/`..` \
                 components, empty components or a trailing `/`"
                    .to_string(),
            ),
            NfsError::DuplicateExport { .. } => {
                Some("give every share of the machine its own guest path".to_string())
            }
            NfsError::ExportDir { path, source, .. } => match source.kind() {
                io::ErrorKind::NotFound => Some(format!(
                    "create {} or remove the share from the machine spec",
                    path.display()
                )),
                io::ErrorKind::NotADirectory => Some(
                    "a share is opened without following symlinks: share the real directory \
                     (remove the machine and create it again with its --share options)"
                        .to_string(),
                ),
                _ => None,
            },
            NfsError::ExportInStateDir { .. } => Some(
                "remove the share from the machine: devbox's state and image cache are never \
                 shared"
                    .to_string(),
            ),
            NfsError::ExportChanged { path, .. } => Some(format!(
                "{} was replaced or moved since; if the new directory is the one to share, \
                 remove the machine and create it again with its --share options",
                path.display()
            )),
            NfsError::ExportRootOwned { .. } => Some(
                "give the directory to your user, or create the machine with \
                 --allow-root-share if the guest may act as root on it"
                    .to_string(),
            ),
            // `sudo devbox` acts as the invoking user (crate::host::privileged), so root is
            // not a way out for a user: only the owner's own devbox can serve the directory.
            NfsError::ExportOwner { owner, .. } => Some(format!(
                "share a directory you own, or let uid {owner} run the machine: devbox's file \
                 server runs as you and never as another user"
            )),
            NfsError::Hidden { .. } => None,
            NfsError::Bind { addr, source } => match source.kind() {
                io::ErrorKind::AddrNotAvailable => Some(format!(
                    "{} is not configured on this host: is the machine's TAP interface up?",
                    addr.ip()
                )),
                io::ErrorKind::AddrInUse => Some(format!(
                    "another process listens on port {}; use port 0 to pick a free one",
                    addr.port()
                )),
                io::ErrorKind::PermissionDenied => {
                    Some("ports below 1024 need root or CAP_NET_BIND_SERVICE".to_string())
                }
                _ => None,
            },
        }
    }
}
