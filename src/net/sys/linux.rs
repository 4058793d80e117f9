//! Linux: TAP devices through `/dev/net/tun`, addresses, links and routes through rtnetlink,
//! and the effective capability set from `/proc`.
//!
//! Every netlink request runs on a short-lived thread with its own current-thread tokio
//! runtime ([`netlink`]), so this works from plain threads and from inside a runtime alike
//! (a nested `block_on` would panic). A new thread inherits its creator's network namespace,
//! so requests act on the caller's namespace.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use futures::TryStreamExt;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteVia,
};
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use crate::net::ula::Ipv6Net;
use crate::net::vmnet::Bridge;
use crate::net::{HostRoute, Ipv4Net, NetError};

const TUN_DEVICE: &str = "/dev/net/tun";
/// `CAP_NET_ADMIN`'s bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// A TAP device owned by this process. It is not persistent: the kernel removes the
/// interface when the last file descriptor attached to it is closed, so a crashed
/// supervisor or QEMU child cannot leave it behind.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Creates the TAP device `name` (`IFF_TAP | IFF_NO_PI`, plus `IFF_VNET_HDR` when the
    /// consumer speaks virtio-net headers, as QEMU's `vhost`/`vnet_hdr=on` does).
    /// `IFF_TUN_EXCL` makes an existing interface of that name an error instead of silently
    /// attaching to it (which could be a leftover persistent device).
    pub fn create(name: &str, vnet_hdr: bool) -> Result<Tap, NetError> {
        let ifr_name = ifr_name(name)?;
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .open(TUN_DEVICE)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::PermissionDenied => NetError::NoPrivilege {
                    what: format!("opening {TUN_DEVICE} to create TAP device {name}"),
                },
                _ => NetError::Io {
                    what: format!("create TAP device {name}"),
                    source,
                },
            })?;
        // std opens with O_CLOEXEC; the fd is made inheritable only on request.
        let fd = OwnedFd::from(file.into_file());

        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_TUN_EXCL;
        if vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        // SAFETY: `ifreq` is a plain C struct (arrays, integers, a union of plain fields and
        // one raw pointer) for which all-zero bytes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        req.ifr_name = ifr_name;
        req.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: `fd` is an open `/dev/net/tun` descriptor; TUNSETIFF reads and writes a
        // `struct ifreq`, and `req` is a live, properly aligned one for the whole call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc < 0 {
            return Err(tunsetiff_error(name, Errno::last()));
        }
        Ok(Tap {
            fd,
            name: name.to_owned(),
        })
    }

    /// Assigns `host_ip/prefix` to the interface (replacing the same address if present)
    /// and brings the link up. The kernel then adds the connected route on its own.
    pub fn configure(&self, host_ip: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        configure_link(&self.name, host_ip, prefix)
    }

    /// Assigns `addr/prefix` to the interface without duplicate address detection (the
    /// link has two ends, both devbox's, and DAD would hold the address back for a second
    /// or more), then routes `routed` via `gateway` over it. The kernel adds the link's own
    /// route with the address; both go away with the interface. `NLM_F_EXCL` on the route:
    /// a route to `routed` that already exists (someone else's) makes this fail.
    pub fn configure_v6(
        &self,
        addr: Ipv6Addr,
        prefix: u8,
        routed: Ipv6Net,
        gateway: Ipv6Addr,
    ) -> Result<(), NetError> {
        let what = format!(
            "configure {addr}/{prefix} and a route to {routed} via {gateway} on {}",
            self.name
        );
        let index = link_index(&self.name, &what)?;
        netlink(&what, |handle| async move {
            let mut add = handle.address().add(index, IpAddr::V6(addr), prefix);
            add.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
            add.replace().execute().await?;
            handle
                .route()
                .add(
                    RouteMessageBuilder::<Ipv6Addr>::new()
                        .destination_prefix(routed.network(), routed.prefix_len())
                        .gateway(gateway)
                        .output_interface(index)
                        .build(),
                )
                .execute()
                .await
        })
    }

    /// Turns the link's carrier on or off. A TAP has carrier only while a reader holds it
    /// (QEMU); one that only carries an address for a server of the host (an adopted host's
    /// DNS server) gets it on, so that the link is up for systemd-resolved, which ignores
    /// links without it.
    pub fn set_carrier(&self, on: bool) -> Result<(), NetError> {
        let on = libc::c_int::from(on);
        // SAFETY: `self.fd` is an attached TAP descriptor; TUNSETCARRIER reads one `int`
        // through the pointer, which points at a live local for the whole call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETCARRIER, &on) };
        if rc < 0 {
            return Err(NetError::Io {
                what: format!("set the carrier of {}", self.name),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Gives up the descriptor with `FD_CLOEXEC` cleared, for a child to inherit
    /// (`qemu … -netdev tap,id=n0,fd=N`). Call it right before spawning: until the
    /// descriptor is closed here, any child this process forks also holds the interface.
    pub fn into_inheritable_fd(self) -> Result<OwnedFd, NetError> {
        fcntl(&self.fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| NetError::Io {
            what: format!(
                "make the descriptor of TAP device {} inheritable",
                self.name
            ),
            source: e.into(),
        })?;
        Ok(self.fd)
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Validates an interface name and lays it out as `ifr_name` (NUL-terminated, IFNAMSIZ).
fn ifr_name(name: &str) -> Result<[libc::c_char; libc::IFNAMSIZ], NetError> {
    let bad = |reason| NetError::BadName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(bad("must be 1 to 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("is reserved"));
    }
    // '%' asks the kernel to pick a number; '/' and whitespace are refused by the kernel.
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad(
            "only ASCII letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, src) in out.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(out)
}

fn tunsetiff_error(name: &str, errno: Errno) -> NetError {
    match errno {
        Errno::EPERM | Errno::EACCES => NetError::NoPrivilege {
            what: format!("creating TAP device {name}"),
        },
        // With IFF_TUN_EXCL the kernel answers EBUSY for any existing interface of that name.
        Errno::EBUSY | Errno::EEXIST => NetError::InterfaceExists {
            name: name.to_owned(),
        },
        _ => NetError::Io {
            what: format!("create TAP device {name}"),
            source: errno.into(),
        },
    }
}

/// vmnet, and so the link of a vz machine, exists only on macOS; a Linux host never boots a
/// vz machine (its driver is unavailable here), so this is never reached in practice.
pub fn vmnet_bridges() -> Result<BTreeMap<String, Bridge>, NetError> {
    Err(NetError::Io {
        what: "list the vmnet bridges".into(),
        source: std::io::Error::other("vmnet bridges exist only on macOS hosts"),
    })
}

/// Whether this process has `CAP_NET_ADMIN` in its effective set (root normally does).
pub fn have_net_admin() -> bool {
    fs_err::read_to_string("/proc/self/status").is_ok_and(|s| cap_eff_has_net_admin(&s))
}

/// The IPv4 routes of the main routing table (what `ip -4 route show table main` lists).
pub fn host_routes() -> Result<Vec<HostRoute>, NetError> {
    netlink("read the host routing table", |handle| async move {
        let names = link_names(&handle).await?;
        let mut out = Vec::new();
        let mut routes = handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(msg) = routes.try_next().await? {
            out.extend(host_route(&msg, &names));
        }
        Ok(out)
    })
}

/// Every link's name by its index, to name the interface of each route.
async fn link_names(handle: &rtnetlink::Handle) -> Result<HashMap<u32, String>, rtnetlink::Error> {
    let mut names = HashMap::new();
    let mut links = handle.link().get().execute();
    while let Some(link) = links.try_next().await? {
        if let Some(name) = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }) {
            names.insert(link.header.index, name);
        }
    }
    Ok(names)
}

/// The IPv6 routes of the main routing table, as (destination, interface name).
pub fn host_routes_v6() -> Result<Vec<(Ipv6Net, String)>, NetError> {
    netlink("read the host's IPv6 routing table", |handle| async move {
        let names = link_names(&handle).await?;
        let mut out = Vec::new();
        let mut routes = handle
            .route()
            .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
            .execute();
        while let Some(msg) = routes.try_next().await? {
            if msg.header.address_family != AddressFamily::Inet6 {
                continue;
            }
            let mut dest = Ipv6Addr::UNSPECIFIED;
            let mut oif = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet6(a)) => dest = *a,
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if let Ok(net) = Ipv6Net::new(dest, msg.header.destination_prefix_length) {
                let name = oif
                    .map(|i| names.get(&i).cloned().unwrap_or_else(|| format!("if{i}")))
                    .unwrap_or_default();
                out.push((net.trunc(), name));
            }
        }
        Ok(out)
    })
}

/// Adds `dest via gateway dev interface` to the main table. The request carries
/// `NLM_F_EXCL`, never `NLM_F_REPLACE`: an existing route to `dest` (which may belong to
/// someone else) makes it fail instead of being overwritten.
pub fn add_route(dest: Ipv4Net, gateway: Ipv4Addr, interface: &str) -> Result<(), NetError> {
    let what = format!("add route {dest} via {gateway} dev {interface}");
    let index = link_index(interface, &what)?;
    netlink(&what, |handle| async move {
        handle
            .route()
            .add(route_message(dest, gateway, index))
            .execute()
            .await
    })
}

/// Deletes exactly `dest via gateway dev interface` from the main table; the kernel matches
/// the gateway and device too, so a route to `dest` through anything else stays.
pub fn delete_route(dest: Ipv4Net, gateway: Ipv4Addr, interface: &str) -> Result<(), NetError> {
    let what = format!("delete route {dest} via {gateway} dev {interface}");
    let index = link_index(interface, &what)?;
    netlink(&what, |handle| async move {
        handle
            .route()
            .del(route_message(dest, gateway, index))
            .execute()
            .await
    })
}

fn route_message(dest: Ipv4Net, gateway: Ipv4Addr, index: u32) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dest.network(), dest.prefix_len())
        .gateway(gateway)
        .output_interface(index)
        .build()
}

fn link_index(interface: &str, what: &str) -> Result<u32, NetError> {
    nix::net::if_::if_nametoindex(interface).map_err(|e| NetError::Io {
        what: what.to_owned(),
        source: e.into(),
    })
}

/// Converts one dumped route; `None` for other families and tables.
fn host_route(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<HostRoute> {
    if msg.header.address_family != AddressFamily::Inet {
        return None;
    }
    // Tables above 255 only appear in RTA_TABLE; the header then says RT_TABLE_COMPAT.
    let table = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let mut dest = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dest = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::Via(RouteVia::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            // ECMP routes carry their interfaces per next hop; report the first.
            RouteAttribute::MultiPath(hops) if oif.is_none() => {
                oif = hops.first().map(|h| h.interface_index)
            }
            _ => {}
        }
    }
    let dest = Ipv4Net::new(dest, msg.header.destination_prefix_length)
        .ok()?
        .trunc();
    let interface = oif
        .map(|i| names.get(&i).cloned().unwrap_or_else(|| format!("if{i}")))
        .unwrap_or_default();
    Some(HostRoute {
        dest,
        gateway,
        interface,
    })
}

/// Assigns `host_ip/prefix` to interface `name` (replacing the same address if present) and
/// brings the link up. The kernel then adds the connected route on its own.
fn configure_link(name: &str, host_ip: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
    let what = format!("configure {host_ip}/{prefix} on {name}");
    if prefix > 32 {
        return Err(NetError::Io {
            what,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an IPv4 prefix is at most 32",
            ),
        });
    }
    let index = nix::net::if_::if_nametoindex(name).map_err(|e| NetError::Io {
        what: what.clone(),
        source: e.into(),
    })?;
    netlink(&what, |handle| async move {
        handle
            .address()
            .add(index, IpAddr::V4(host_ip), prefix)
            .replace()
            .execute()
            .await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
    })
}

/// Runs one rtnetlink conversation to completion on a fresh thread (see the module header).
fn netlink<T, F, Fut>(what: &str, f: F) -> Result<T, NetError>
where
    T: Send,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, rtnetlink::Error>>,
{
    let io = |source: std::io::Error| NetError::Io {
        what: what.to_owned(),
        source,
    };
    let run = || -> Result<T, NetError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(io)?;
        rt.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection().map_err(io)?;
            tokio::spawn(connection);
            f(handle).await.map_err(|e| netlink_error(what, e))
        })
    };
    std::thread::scope(|s| match s.spawn(run).join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

fn netlink_error(what: &str, e: rtnetlink::Error) -> NetError {
    match e {
        rtnetlink::Error::NetlinkError(msg) => {
            let source = msg.to_io();
            match source.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => NetError::NoPrivilege {
                    what: format!("to {what}"),
                },
                _ => NetError::Io {
                    what: what.to_owned(),
                    source,
                },
            }
        }
        other => NetError::Netlink {
            what: what.to_owned(),
            source: Box::new(other),
        },
    }
}

/// Whether the `CapEff:` line of a `/proc/<pid>/status` text has `CAP_NET_ADMIN`.
fn cap_eff_has_net_admin(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::route::RouteNextHop;

    fn names() -> HashMap<u32, String> {
        [(2, "eth0".to_owned()), (7, "dbx0".to_owned())].into()
    }

    #[test]
    fn connected_route_keeps_its_prefix_and_interface() {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(192, 168, 64, 0), 24)
            .output_interface(7)
            .build();
        let r = host_route(&msg, &names()).unwrap();
        assert_eq!(r.dest.to_string(), "192.168.64.0/24");
        assert_eq!(r.gateway, None);
        assert_eq!(r.interface, "dbx0");
    }

    #[test]
    fn default_route_has_prefix_zero_and_gateway() {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(Ipv4Addr::new(10, 0, 0, 1))
            .output_interface(2)
            .build();
        let r = host_route(&msg, &names()).unwrap();
        assert_eq!(r.dest.to_string(), "0.0.0.0/0");
        assert_eq!(r.gateway, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(r.to_string(), "0.0.0.0/0 via 10.0.0.1 dev eth0");
    }

    #[test]
    fn other_tables_and_unknown_links_are_handled() {
        let local = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(127, 0, 0, 1), 32)
            .table_id(255)
            .build();
        assert_eq!(host_route(&local, &names()), None);

        let mut ecmp = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(10, 9, 0, 0), 16)
            .build();
        let mut hop = RouteNextHop::default();
        hop.interface_index = 42;
        ecmp.attributes.push(RouteAttribute::MultiPath(vec![hop]));
        assert_eq!(host_route(&ecmp, &names()).unwrap().interface, "if42");
    }

    #[test]
    fn interface_names_are_checked_before_the_kernel_sees_them() {
        for bad in ["", "abcdefghijklmnop", "dbx%d", "a/b", "a b", ".."] {
            assert!(
                matches!(ifr_name(bad), Err(NetError::BadName { .. })),
                "{bad:?}"
            );
        }
        let raw = ifr_name("dbx12").unwrap();
        assert_eq!(
            &raw[..6],
            &[b'd', b'b', b'x', b'1', b'2', 0].map(|b| b as libc::c_char)
        );
        assert!(ifr_name("abcdefghijklmno").is_ok(), "15 bytes fit");
    }

    #[test]
    fn tunsetiff_errors_map_to_user_facing_variants() {
        assert!(matches!(
            tunsetiff_error("dbx0", Errno::EPERM),
            NetError::NoPrivilege { .. }
        ));
        assert!(matches!(
            tunsetiff_error("dbx0", Errno::EBUSY),
            NetError::InterfaceExists { .. }
        ));
        assert!(matches!(
            tunsetiff_error("dbx0", Errno::EINVAL),
            NetError::Io { .. }
        ));
    }

    #[test]
    fn cap_eff_bit_12_is_net_admin() {
        let status = |eff: &str| format!("Name:\tdevbox\nCapPrm:\t0\nCapEff:\t{eff}\nCapBnd:\t0\n");
        assert!(cap_eff_has_net_admin(&status("000001fffeffffff")));
        assert!(cap_eff_has_net_admin(&status("0000000000001000")));
        assert!(!cap_eff_has_net_admin(&status("0000000000000000")));
        assert!(!cap_eff_has_net_admin(&status("0000000000002000")));
        assert!(!cap_eff_has_net_admin("Name:\tdevbox\n"));
    }
}
