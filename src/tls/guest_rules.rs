//! The guest's `DEVBOX-HTTPS` chain, as pure text: which TCP/443 connections the guest hands
//! to the supervisor's TLS listener.
//!
//! Names keep resolving to the containers' own IPs; a connection to one of those IPs on port
//! 443 — from the host (routed through the guest) or from another container (bridged, seen
//! by iptables because Docker turns on `br_netfilter`) — is DNATed in the guest's `nat`
//! PREROUTING to `<host link address>:<listener port>`, and MASQUERADEd on its way out so it
//! leaves with the guest's address (a packet from the host would otherwise come back to the
//! host with the host's own address as source, which Linux drops as martian). Only the
//! served containers' addresses are redirected: a container's own traffic to the internet on
//! 443 is untouched.
//!
//! The guest's own address (the machine's name, `<machine>.<tld>`) is redirected by a second
//! chain, `DEVBOX-HTTPS-SELF`, jumped to from the *end* of PREROUTING: after Docker's jump to
//! its `DOCKER` chain (which dockerd adds at its start, before devbox's rules exist), so a
//! container that publishes port 443 on the guest (`-p 443:443`) keeps it, its own TLS
//! untouched, and only a port 443 nobody publishes is terminated by devbox.
//!
//! The chain is rewritten whole with `iptables-restore --noflush` (one transaction, which
//! flushes only the chains it declares); the jumps into it are added once.

use std::net::Ipv4Addr;

/// The chain's name in the guest's `nat` table.
pub const CHAIN: &str = "DEVBOX-HTTPS";

/// The chain for the guest's own address, last in PREROUTING.
pub const SELF_CHAIN: &str = "DEVBOX-HTTPS-SELF";

/// The `iptables-restore --noflush` input that makes `DEVBOX-HTTPS` redirect `targets`, and
/// `DEVBOX-HTTPS-SELF` the guest's own address `guest`.
pub fn restore_input(listener: (Ipv4Addr, u16), targets: &[Ipv4Addr], guest: Ipv4Addr) -> String {
    let (host, port) = listener;
    let rule = |chain: &str, ip: &Ipv4Addr| {
        format!(
            "-A {chain} -d {ip}/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination {host}:{port}\n"
        )
    };
    let mut out = format!("*nat\n:{CHAIN} - [0:0]\n:{SELF_CHAIN} - [0:0]\n");
    for ip in targets {
        out.push_str(&rule(CHAIN, ip));
    }
    out.push_str(&rule(SELF_CHAIN, &guest));
    out.push_str("COMMIT\n");
    out
}

/// The shell command that applies `restore_input` (fed on stdin) and puts the two jumps in
/// place if they are not: PREROUTING → `DEVBOX-HTTPS`, and MASQUERADE of what goes to the
/// listener.
pub fn apply_command(listener: (Ipv4Addr, u16)) -> String {
    let (host, port) = listener;
    let jump = format!("PREROUTING -p tcp --dport 443 -j {CHAIN}");
    let last = format!("PREROUTING -p tcp --dport 443 -j {SELF_CHAIN}");
    let masq = format!("POSTROUTING -d {host}/32 -p tcp --dport {port} -j MASQUERADE");
    format!(
        "set -e; iptables-restore --noflush; \
         iptables -t nat -C {jump} 2>/dev/null || iptables -t nat -I {jump}; \
         iptables -t nat -C {last} 2>/dev/null || iptables -t nat -A {last}; \
         iptables -t nat -C {masq} 2>/dev/null || iptables -t nat -I {masq}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_served_addresses_are_redirected_to_the_listener() {
        let listener = ("192.168.64.1".parse().unwrap(), 10443);
        let guest = "192.168.64.2".parse().unwrap();
        let text = restore_input(
            listener,
            &["172.18.0.2".parse().unwrap(), "172.19.0.5".parse().unwrap()],
            guest,
        );
        assert_eq!(
            text,
            "*nat\n:DEVBOX-HTTPS - [0:0]\n:DEVBOX-HTTPS-SELF - [0:0]\n\
             -A DEVBOX-HTTPS -d 172.18.0.2/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination 192.168.64.1:10443\n\
             -A DEVBOX-HTTPS -d 172.19.0.5/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination 192.168.64.1:10443\n\
             -A DEVBOX-HTTPS-SELF -d 192.168.64.2/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination 192.168.64.1:10443\n\
             COMMIT\n"
        );
        assert_eq!(
            restore_input(listener, &[], guest),
            "*nat\n:DEVBOX-HTTPS - [0:0]\n:DEVBOX-HTTPS-SELF - [0:0]\n\
             -A DEVBOX-HTTPS-SELF -d 192.168.64.2/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination 192.168.64.1:10443\n\
             COMMIT\n",
            "no container: the containers' chain is emptied"
        );
        let cmd = apply_command(listener);
        assert!(cmd.contains("iptables -t nat -I PREROUTING -p tcp --dport 443 -j DEVBOX-HTTPS;"));
        assert!(
            cmd.contains("iptables -t nat -A PREROUTING -p tcp --dport 443 -j DEVBOX-HTTPS-SELF")
        );
        assert!(
            cmd.contains("-I POSTROUTING -d 192.168.64.1/32 -p tcp --dport 10443 -j MASQUERADE")
        );
    }
}
