//! Tier 3: the virtio-net device model moving frames both ways through a real TAP device, in
//! a network namespace the test creates (on a dedicated thread, as net_tap.rs does).
//! The test plays the guest driver; the host side is ordinary UDP sockets.
//!
//! Needs root; without it the test is reported as not run, except under `CI=true`, where it
//! fails.
#![cfg(target_os = "linux")]

use crate::kvm_support::*;
use crate::support::in_new_netns;
use crate::support::trials::{Trial, check, root};

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devbox::hypervisor::kvm::devices::virtio::guest_ram;
use devbox::hypervisor::kvm::devices::virtio::mmio::MmioTransport;
use devbox::hypervisor::kvm::devices::virtio::net::{self, Net, VNET_HDR_LEN};
use devbox::net::Tap;

pub fn trials() -> Vec<Trial> {
    vec![check(
        "frames_cross_a_tap_both_ways",
        root,
        frames_cross_a_tap_both_ways,
    )]
}

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// vnet header + Ethernet + IPv4 + UDP (checksum 0: none) carrying `payload`.
fn udp_frame(dst_mac: [u8; 6], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&GUEST_IP.octets());
    ip.extend_from_slice(&HOST_IP.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&4000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?}");
}

fn wait_readable(fd: BorrowedFd<'_>, ms: u16) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) > 0
}

fn frames_cross_a_tap_both_ways() {
    in_new_netns(|| {
        ip(&["link", "set", "lo", "up"]);
        let tap = Tap::create("dbxk0", true).unwrap();
        tap.configure(HOST_IP, 24).unwrap();
        // /sys shows the namespace it was mounted in, so ask `ip` for the TAP's address.
        let out = Command::new("ip")
            .args(["-j", "link", "show", "dev", "dbxk0"])
            .output()
            .unwrap();
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let host_mac = net::parse_mac(links[0]["address"].as_str().unwrap()).unwrap();
        ip(&[
            "neigh",
            "replace",
            &GUEST_IP.to_string(),
            "lladdr",
            "52:54:00:12:34:56",
            "dev",
            "dbxk0",
        ]);
        let fd: OwnedFd = tap.into_inheritable_fd().unwrap();
        // A second descriptor of the same TAP queue, to wait on like the event loop does.
        let watch = fd.try_clone().unwrap();

        let mem = Arc::new(guest_ram(64 << 20).unwrap());
        let dev = Net::new(fd, GUEST_MAC).unwrap();
        let mut t = MmioTransport::new(Box::new(dev), mem.clone()).unwrap();
        let mut g = GuestDriver::start(&mut t, mem, 64, u64::MAX);
        assert!(t.is_activated());
        let mut mac = [0u8; 6];
        t.read(0x100, &mut mac);
        assert_eq!(mac, GUEST_MAC);

        // Guest -> host.
        let sock = UdpSocket::bind((HOST_IP, 5555)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let frame = udp_frame(host_mac, 5555, b"hello from the guest");
        let a = g.alloc(frame.len() as u64);
        g.put(a, &frame);
        g.add_chain(net::TX, &[(a, frame.len() as u32, false)]);
        notify(&mut t, net::TX as u32);
        assert_eq!(g.used(net::TX).len(), 1);
        let mut buf = [0u8; 100];
        let (n, from) = sock
            .recv_from(&mut buf)
            .expect("host receives the guest's datagram");
        assert_eq!(&buf[..n], b"hello from the guest");
        assert_eq!(from.ip(), GUEST_IP);

        // A TX chain shorter than the vnet header is dropped, not sent.
        g.add_chain(net::TX, &[(a, 4, false)]);
        notify(&mut t, net::TX as u32);
        assert_eq!(g.used(net::TX), vec![(1, 0)]);

        // Host -> guest: one buffer too small for any frame, then big ones.
        let small = g.alloc(64);
        g.add_chain(net::RX, &[(small, 64, true)]);
        let mut bufs = vec![];
        for _ in 0..8 {
            let b = g.alloc(net::MAX_FRAME as u64);
            g.add_chain(net::RX, &[(b, net::MAX_FRAME as u32, true)]);
            bufs.push(b);
        }
        notify(&mut t, net::RX as u32);
        let out = UdpSocket::bind((HOST_IP, 0)).unwrap();
        let payload = b"hello from the host, long enough to overflow a sixty-four byte buffer";
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            // The first frame to arrive lands on the small buffer and is dropped; resend.
            out.send_to(payload, (GUEST_IP, 6666)).unwrap();
            if wait_readable(watch.as_fd(), 100) {
                t.backend_ready();
            }
            for (id, len) in g.used(net::RX) {
                if id == 0 {
                    assert_eq!(len, 0, "the small buffer comes back empty");
                    continue;
                }
                let b = bufs[id as usize - 1];
                let f = g.get(b, len as usize);
                if f.windows(payload.len()).any(|w| w == payload) {
                    got = Some(f);
                }
            }
        }
        let f = got.expect("the guest receives the host's datagram");
        assert_eq!(
            &f[VNET_HDR_LEN..VNET_HDR_LEN + 6],
            &GUEST_MAC,
            "destination MAC"
        );
        assert!(t.irq().read().is_ok(), "RX interrupt raised");
    });
}
