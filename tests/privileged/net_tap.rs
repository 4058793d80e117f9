//! Tier 3: real TAP devices, addresses and routes, each test inside a network namespace of
//! its own. `unshare(CLONE_NEWNET)` runs on a dedicated thread, so only that thread (and the
//! threads and `ip` processes it starts) enter the namespace; it disappears when the thread
//! ends, and the host's interfaces and routes are never touched.
//!
//! Needs root (CAP_SYS_ADMIN for the namespace, CAP_NET_ADMIN for the TAP). Without it the
//! tests are reported as not run, except under `CI=true`, where they fail.
#![cfg(target_os = "linux")]

use crate::support::in_new_netns;
use crate::support::trials::{Trial, check, root};

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use devbox::net::{
    HostOnlyNet, NetError, Tap, allocate_host_only, check_conflicts, have_net_admin, host_routes,
};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

pub fn trials() -> Vec<Trial> {
    vec![
        check(
            "tap_is_configured_routed_and_removed_on_close",
            root,
            tap_is_configured_routed_and_removed_on_close,
        ),
        check(
            "inheritable_fd_keeps_the_tap_alive_until_closed",
            root,
            inheritable_fd_keeps_the_tap_alive_until_closed,
        ),
        check(
            "configure_sets_any_prefix_and_rejects_nonsense",
            root,
            configure_sets_any_prefix_and_rejects_nonsense,
        ),
        check(
            "the_door_opens_a_share_link_only_for_the_callers_lease",
            root,
            the_door_opens_a_share_link_only_for_the_callers_lease,
        ),
    ]
}

/// The share link (`dbxNs`) goes through the privileged door like `dbxN`: made, with the
/// top /30 of the index's /24, for an index leased to the caller; refused, with no link
/// made, for an index leased to another uid or to nobody.
fn the_door_opens_a_share_link_only_for_the_callers_lease() {
    use devbox::host::{HostError, open_share_tap};
    use devbox::net::lease::{LeaseError, LeaseInfo, Registry};
    use std::os::unix::fs::PermissionsExt;

    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let registry = Registry::at(root.path().join("devbox"));
    registry.create().unwrap();
    let info = |machine: &str| LeaseInfo {
        uid: 0,
        user: "root".into(),
        machine: machine.into(),
        dir: "/nonexistent".into(),
        docker: Vec::new(),
    };
    assert!(registry.take(3, &info("mine")).unwrap());
    assert!(registry.take(4, &info("theirs")).unwrap());
    // Lease 4 is another user's: the owner of the file is who holds it.
    let theirs = registry.leases_dir().join("4");
    std::os::unix::fs::chown(&theirs, Some(12345), Some(12345)).unwrap();

    in_new_netns(|| {
        let (tap, link) = open_share_tap(&registry, 3, false).unwrap();
        assert_eq!((tap.name(), link.tap.as_str()), ("dbx3s", "dbx3s"));
        let info = ip_addr_show("dbx3s").expect("dbx3s exists");
        let addrs = info["addr_info"].as_array().unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a["local"] == "192.168.67.253" && a["prefixlen"] == 30),
            "{info}"
        );
        for (index, why) in [(4, "belongs to uid 12345"), (5, "nobody holds its lease")] {
            let err = open_share_tap(&registry, index, false).unwrap_err();
            assert!(
                matches!(err, HostError::Lease(LeaseError::NotYours { .. })),
                "{err:?}"
            );
            assert!(
                err.to_string().contains(why) || format!("{err:?}").contains(why),
                "{err:?}"
            );
            assert!(
                ip_addr_show(&format!("dbx{index}s")).is_none(),
                "no link made for index {index}"
            );
        }
        drop(tap);
    });
}

/// `ip -j addr show dev NAME` in the caller's namespace, parsed; `None` if there is no
/// such interface.
fn ip_addr_show(name: &str) -> Option<serde_json::Value> {
    let out = Command::new("ip")
        .args(["-j", "addr", "show", "dev", name])
        .output()
        .expect("run `ip` (iproute2)");
    if !out.status.success() {
        return None;
    }
    let mut links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(links.len() <= 1);
    links.pop()
}

/// The TAP goes away asynchronously after its last fd is closed; wait a little for it.
fn wait_gone(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ip_addr_show(name).is_some() {
        assert!(Instant::now() < deadline, "{name} still exists after close");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tap_is_configured_routed_and_removed_on_close() {
    in_new_netns(|| {
        assert!(have_net_admin());
        // A fresh namespace has no routes (its loopback is down).
        let before = host_routes().unwrap();
        assert!(before.is_empty(), "{before:?}");

        let net = allocate_host_only(&[], &before).unwrap();
        assert_eq!(net, HostOnlyNet::from_index(0).unwrap());
        let tap = Tap::create(&net.tap_name(), true).unwrap();
        assert_eq!(tap.name(), "dbx0");
        assert!(tap.as_raw_fd() >= 0);
        tap.configure(net.host_ip, 24).unwrap();
        // Configuring twice is harmless (the supervisor may retry).
        tap.configure(net.host_ip, 24).unwrap();

        let link = ip_addr_show("dbx0").expect("dbx0 exists");
        let flags: Vec<&str> = link["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert!(flags.contains(&"UP"), "{link}");
        let inet: Vec<_> = link["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["family"] == "inet")
            .collect();
        assert_eq!(inet.len(), 1, "{link}");
        assert_eq!(inet[0]["local"], "192.168.64.1");
        assert_eq!(inet[0]["prefixlen"], 24);

        // The kernel's connected route is visible, blocks index 0 for the next machine,
        // and is not a conflict for the machine that owns dbx0.
        let routes = host_routes().unwrap();
        let connected = routes
            .iter()
            .find(|r| r.dest == net.subnet)
            .unwrap_or_else(|| panic!("no 192.168.64.0/24 route in {routes:?}"));
        assert_eq!(connected.interface, "dbx0");
        assert_eq!(connected.gateway, None);
        check_conflicts(&net, &routes).unwrap();
        assert_eq!(allocate_host_only(&[], &routes).unwrap().index, 1);

        // A second device of the same name is refused, not silently shared.
        let dup = Tap::create("dbx0", false).unwrap_err();
        assert!(matches!(dup, NetError::InterfaceExists { .. }), "{dup:?}");

        drop(tap);
        wait_gone("dbx0");
        let after = host_routes().unwrap();
        assert!(after.iter().all(|r| r.dest != net.subnet), "{after:?}");
    });
}

fn inheritable_fd_keeps_the_tap_alive_until_closed() {
    in_new_netns(|| {
        let net = HostOnlyNet::from_index(3).unwrap();
        let tap = Tap::create(&net.tap_name(), false).unwrap();
        let cloexec = fcntl(tap.as_fd(), FcntlArg::F_GETFD).unwrap();
        assert!(FdFlag::from_bits_truncate(cloexec).contains(FdFlag::FD_CLOEXEC));

        let fd = tap.into_inheritable_fd().unwrap();
        let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFD).unwrap();
        assert!(!FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        assert!(ip_addr_show("dbx3").is_some(), "the fd still holds dbx3");

        drop(fd);
        wait_gone("dbx3");
    });
}

fn configure_sets_any_prefix_and_rejects_nonsense() {
    in_new_netns(|| {
        let tap = Tap::create("dbx9", false).unwrap();
        assert!(tap.configure(Ipv4Addr::new(10, 99, 0, 1), 33).is_err());
        tap.configure(Ipv4Addr::new(10, 99, 0, 1), 30).unwrap();
        let routes = host_routes().unwrap();
        assert!(
            routes
                .iter()
                .any(|r| r.dest.to_string() == "10.99.0.0/30" && r.interface == "dbx9"),
            "{routes:?}"
        );
    });
}
