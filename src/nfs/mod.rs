//! Embedded NFSv3 server: serves a machine's shared project directories to its guest.
//!
//! What it exposes: [`NfsServer::start`] with an [`NfsConfig`] (bind address and device =
//! the host's end of the machine's share link, the one allowed client = the guest's end, the
//! [`Export`]s, and the directories never to serve), [`NfsServer::mounts`] giving one
//! [`GuestMount`] per export, and [`mount_line`], the command the guest runs for each. All
//! exports are served on one TCP port, which carries NFS v3, MOUNT v3 and a minimal PORTMAP,
//! so the guest needs neither rpcbind nor `mount.nfs` (`port=`/`mountport=` point the kernel
//! at it).
//!
//! Security model (README, "File sharing"): only the guest's kernel client can connect (the
//! guest's address from a reserved port, `AUTH_UNIX`, on a device only its NFS client uses);
//! every operation runs with the export owner's filesystem identity (`identity.rs`) and
//! never sets a set-ID bit (`ops.rs`); devbox's own state and cache directories are hidden
//! wherever they appear (`open.rs`, `fs.rs`); an export is opened without following symlinks
//! and must be the directory recorded when it was chosen (`open.rs`).
//!
//! Tasks: one accept task, and per connection a reader and a writer task; each request is
//! handled on tokio's blocking pool (`server.rs`); per export, a scanner thread when a
//! handle must be looked for (`index.rs`). Dropping the [`NfsServer`] or calling
//! [`NfsServer::shutdown`] stops the tasks; a running scan ends on its own.
//!
//! Why our own protocol layer instead of `nfsserve`/`nfs3_server` (research services.md §1):
//! both crates own the accept loop with no per-connection hook (no peer allowlist), both
//! grow a buffer to whatever length a fragment header or XDR opaque announces before
//! reading it (`nfs3_types`' `Opaque::unpack` does `vec![0; len]` from the wire), nfsserve's
//! plain READDIR ignores the cookie (endless listing), and nfs3_server prefixes every handle
//! with its start time, so handles die with every supervisor restart (its only stream-level
//! entry point is a hidden test feature that cannot set the generation). Fixing that means
//! forking either crate; the protocol surface devbox needs (RFC 1813 NFS v3 + MOUNT, RFC
//! 5531 record marking) is small enough to own instead, with a decoder that never allocates
//! from wire lengths (`xdr.rs`).
//!
//! Layout: `rpc.rs` (records, call/reply headers, credentials), `xdr.rs`, `proto.rs`
//! (dispatch, credential checks, MOUNT, PORTMAP), `nfs3.rs` (NFS procedures), `ops.rs`
//! (operations on an export), `fs.rs` (confined resolution, hidden objects), `index.rs`
//! (handle index and the scanner thread), `open.rs` (opening an export at start),
//! `identity.rs` (the owner's filesystem identity), `attr.rs` (attributes, uid/gid mapping),
//! `handle.rs` (handles and status codes), `server.rs` (connections and their limits).

mod attr;
pub mod echo;
mod error;
mod fs;
mod handle;
mod identity;
mod index;
mod nfs3;
mod open;
mod ops;
mod proto;
mod rpc;
mod server;
mod sys;
mod xdr;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::NfsError;
pub use server::IDLE_TIMEOUT;
pub use sys::FsPath;

/// One shared directory. Its owner (the owner of `host_path`) is the identity the server
/// takes for every operation on it (`identity.rs`): files the guest creates belong to them,
/// and files they own appear to the guest as owned by uid/gid 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Export path the guest mounts, e.g. `/home/alice/src` (absolute, normalised).
    pub name: String,
    /// The host directory served: absolute and canonical; opened without following
    /// symlinks.
    pub host_path: PathBuf,
    /// `(st_dev, st_ino)` the directory must have (recorded when the share was chosen).
    pub dir_id: (u64, u64),
    /// Every mutation is refused with NFS3ERR_ROFS.
    pub read_only: bool,
    /// Serve the directory even though root owns it (the server then acts as root on it);
    /// otherwise a root-owned directory is refused.
    pub allow_root: bool,
}

/// What [`NfsServer::start`] serves, where, and to whom.
#[derive(Debug, Clone)]
pub struct NfsConfig {
    /// The machine's host-side address; never a wildcard.
    pub bind: IpAddr,
    /// The network device the listening socket is bound to (`SO_BINDTODEVICE`): connections
    /// arriving on any other device are refused by the kernel, even for `bind`'s address
    /// (Linux delivers a packet for any local address whatever the device it came in on).
    pub bind_device: Option<String>,
    /// 0 picks a free port.
    pub port: u16,
    /// The guest's address; connections from any other peer, or from a port that is not
    /// a reserved one (below 1024), are closed unread.
    pub allowed_client: IpAddr,
    pub exports: Vec<Export>,
    /// Directories never served, wherever they appear in an export (devbox's state and image
    /// cache directories); an export that is one of them, or inside one, is refused.
    /// Absolute and canonical.
    pub hidden: Vec<PathBuf>,
    /// A connection with nothing in flight that sends nothing for this long is closed
    /// ([`IDLE_TIMEOUT`] in devbox).
    pub idle_timeout: Duration,
    /// How host objects are reached: the platform's default; on Linux, tests also run the
    /// portable path macOS hosts use (see `sys.rs`).
    pub fs_path: FsPath,
    /// Where the server records the changes it makes, for the share watcher to tell them
    /// from the host's own (see `echo.rs`).
    pub echo: Option<Arc<echo::EchoLog>>,
}

/// How the guest mounts one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestMount {
    pub export: String,
    pub port: u16,
    /// The full `-o` option string.
    pub options: String,
    /// `HOST_IP:/name` (`[v6]:/name` for IPv6).
    pub source: String,
}

/// A running server.
pub struct NfsServer {
    addr: SocketAddr,
    exports: Vec<String>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl NfsServer {
    /// Opens every export directory, binds `cfg.bind:cfg.port` and starts serving.
    pub async fn start(cfg: NfsConfig) -> Result<NfsServer, NfsError> {
        if cfg.bind.is_unspecified() {
            return Err(NfsError::WildcardBind { addr: cfg.bind });
        }
        if cfg.allowed_client.is_unspecified() || cfg.allowed_client.is_multicast() {
            return Err(NfsError::WildcardClient {
                client: cfg.allowed_client,
            });
        }
        let mut seen = HashSet::new();
        let mut exports = Vec::with_capacity(cfg.exports.len());
        for e in &cfg.exports {
            check_export_name(&e.name)?;
            if !seen.insert(handle::export_id(&e.name)) {
                return Err(NfsError::DuplicateExport {
                    name: e.name.clone(),
                });
            }
            exports.push(open::open_export(
                e,
                &cfg.hidden,
                cfg.fs_path,
                cfg.echo.clone(),
            )?);
        }
        let want = SocketAddr::new(cfg.bind, cfg.port);
        let listener = listen(want, cfg.bind_device.as_deref())
            .map_err(|source| NfsError::Bind { addr: want, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| NfsError::Bind { addr: want, source })?;
        let shared = Arc::new(proto::Shared {
            exports,
            port: addr.port(),
            verf: instance_verifier(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(server::accept_loop(
            listener,
            cfg.allowed_client,
            cfg.idle_timeout,
            shared,
            stop_rx,
        ));
        Ok(NfsServer {
            addr,
            exports: cfg.exports.iter().map(|e| e.name.clone()).collect(),
            stop,
            task: Some(task),
        })
    }

    /// The address actually listened on (the real port when `port` was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// One entry per export, in configuration order.
    pub fn mounts(&self) -> Vec<GuestMount> {
        let ip = self.addr.ip();
        let port = self.addr.port();
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        self.exports
            .iter()
            .map(|name| GuestMount {
                export: name.clone(),
                port,
                // nolock: there is no lockd on the host (locks stay local to the guest);
                // noacl: NFS_ACL is not served; addr= is mandatory for the kernel's text
                // mount options (research services.md §1.6).
                options: format!(
                    "vers=3,proto=tcp,port={port},mountport={port},mountproto=tcp,nolock,noacl,addr={ip}"
                ),
                source: format!("{host}:{name}"),
            })
            .collect()
    }

    /// Stops accepting, closes every connection and waits for the accept task.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `setsockopt(IP_BOUND_IF)`: the socket accepts only what arrives on `dev` (macOS has no
/// `SO_BINDTODEVICE`; neither nix nor socket2 wraps this option for listening sockets).
#[cfg(target_vendor = "apple")]
fn bind_to_interface(sock: &TcpSocket, dev: &str, v6: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let index = nix::net::if_::if_nametoindex(dev).map_err(std::io::Error::from)?;
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_BOUND_IF)
    } else {
        (libc::IPPROTO_IP, libc::IP_BOUND_IF)
    };
    let index = index as libc::c_int;
    // SAFETY: a valid socket and a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&index as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn listen(addr: SocketAddr, device: Option<&str>) -> std::io::Result<TcpListener> {
    let sock = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    sock.set_reuseaddr(true)?;
    if let Some(dev) = device {
        // Since Linux 5.7 no capability is needed for this (on a socket not yet bound to a
        // device).
        #[cfg(target_os = "linux")]
        sock.bind_device(Some(dev.as_bytes()))?;
        // macOS: IP_BOUND_IF / IPV6_BOUND_IF, its equivalent (the vmnet bridge).
        #[cfg(target_vendor = "apple")]
        bind_to_interface(&sock, dev, addr.is_ipv6())?;
        #[cfg(not(any(target_os = "linux", target_vendor = "apple")))]
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("cannot bind the file server to {dev} on this platform"),
        ));
    }
    sock.bind(addr)?;
    sock.listen(64)
}

/// The busybox `mount` command the guest runs for `m` at `guest_path`.
pub fn mount_line(m: &GuestMount, guest_path: &str) -> String {
    format!(
        "mount -t nfs -o {} {} {}",
        m.options,
        shell_quote(&m.source),
        shell_quote(guest_path)
    )
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%[]=".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn check_export_name(name: &str) -> Result<(), NfsError> {
    let fail = |reason| {
        Err(NfsError::ExportName {
            name: name.to_string(),
            reason,
        })
    };
    if !name.starts_with('/') {
        return fail("it must be an absolute path");
    }
    if name.len() > 1024 {
        return fail("it is longer than 1024 bytes");
    }
    if name.chars().any(|c| c.is_control()) {
        return fail("it contains a control character");
    }
    if name != "/" {
        if name.ends_with('/') {
            return fail("it ends with `/`");
        }
        if name[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return fail("it has an empty, `.` or `..` component");
        }
    }
    Ok(())
}

/// A WRITE verifier that differs between server instances.
fn instance_verifier() -> [u8; 8] {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ u64::from(std::process::id()).rotate_left(48)).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(source: &str) -> GuestMount {
        GuestMount {
            export: "/home/alice/src".into(),
            port: 40123,
            options: "vers=3,proto=tcp,port=40123,mountport=40123,mountproto=tcp,nolock,noacl,addr=192.168.64.1".into(),
            source: source.into(),
        }
    }

    #[test]
    fn mount_line_golden() {
        assert_eq!(
            mount_line(&mount("192.168.64.1:/home/alice/src"), "/home/alice/src"),
            "mount -t nfs -o vers=3,proto=tcp,port=40123,mountport=40123,mountproto=tcp,nolock,noacl,addr=192.168.64.1 192.168.64.1:/home/alice/src /home/alice/src"
        );
        assert_eq!(
            mount_line(&mount("192.168.64.1:/Users/me/My App"), "/Users/me/My App"),
            "mount -t nfs -o vers=3,proto=tcp,port=40123,mountport=40123,mountproto=tcp,nolock,noacl,addr=192.168.64.1 '192.168.64.1:/Users/me/My App' '/Users/me/My App'"
        );
        assert_eq!(
            mount_line(&mount("192.168.64.1:/it's"), "/it's"),
            r"mount -t nfs -o vers=3,proto=tcp,port=40123,mountport=40123,mountproto=tcp,nolock,noacl,addr=192.168.64.1 '192.168.64.1:/it'\''s' '/it'\''s'"
        );
    }

    #[test]
    fn export_names() {
        for ok in ["/", "/home/alice", "/Users/me/My App", "/a..b"] {
            assert!(check_export_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "rel", "/a/", "/a//b", "/a/../b", "/./a", "/a\nb"] {
            assert!(check_export_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn wildcard_bind_and_client_are_refused() {
        let cfg = NfsConfig {
            bind: "0.0.0.0".parse().unwrap(),
            bind_device: None,
            port: 0,
            allowed_client: "127.0.0.1".parse().unwrap(),
            exports: vec![],
            hidden: vec![],
            idle_timeout: IDLE_TIMEOUT,
            fs_path: FsPath::default(),
            echo: None,
        };
        let err = NfsServer::start(cfg.clone()).await.err().unwrap();
        assert!(matches!(err, NfsError::WildcardBind { .. }));
        assert!(err.hint().is_some());
        let cfg = NfsConfig {
            bind: "127.0.0.1".parse().unwrap(),
            allowed_client: "::".parse().unwrap(),
            ..cfg
        };
        let err = NfsServer::start(cfg).await.err().unwrap();
        assert!(matches!(err, NfsError::WildcardClient { .. }));
    }
}
