//! The machine on the network: the host routes container subnets via the guest, the
//! machine's DNS server names the machine and its containers, and the guest side of a vz
//! machine's networking (DHCP lease script, vsock address report) works in this image.

use std::process::Command;
use std::time::Instant;

use crate::MACHINE;
use crate::machine::Machine;

/// The container `web1` (busybox httpd on port 80, default bridge), started if it is not
/// running; its address.
fn web1(m: &Machine) -> String {
    if m.docker(&["inspect", "web1"]).status.success() {
        m.docker_ok(&["start", "web1"]);
    } else {
        m.docker_ok(&[
            "run",
            "-d",
            "--name",
            "web1",
            "bb:e2e",
            "/bin/httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ]);
    }
    m.docker_ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web1"])
}

pub fn check_routes(m: &Machine) {
    m.busybox_image();
    let routes = m.h.routes();
    assert!(
        routes.contains("172.18.0.0/16 via 192.168.64.2 dev dbx0"),
        "{routes}"
    );
    assert!(
        routes.contains("172.19.0.0/16 via 192.168.64.2 dev dbx0"),
        "{routes}"
    );
    let docker = |args: &[&str]| m.docker_ok(args);
    // Two web servers, both on port 80, none published: one on the default bridge, one on
    // a user-defined network (its subnet comes from the machine's routed pool).
    docker(&["network", "create", "demo"]);
    web1(m);
    docker(&[
        "run",
        "-d",
        "--name",
        "web2",
        "--network",
        "demo",
        "bb:e2e",
        "/bin/sh",
        "-c",
        "echo hello from web2 > /www/index.html && exec /bin/httpd -f -p 80 -h /www",
    ]);
    let ip = |name: &str| {
        docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            name,
        ])
    };
    let (ip1, ip2) = (ip("web1"), ip("web2"));
    assert!(ip1.starts_with("172.18."), "{ip1}");
    assert!(ip2.starts_with("172.19."), "{ip2}");
    assert_eq!(m.h.curl(&format!("http://{ip1}/")), "hello from web\n");
    assert_eq!(m.h.curl(&format!("http://{ip2}/")), "hello from web2\n");
}

/// Containers are reachable by IP from the host (`check_routes`), and from nothing else that
/// can reach the guest's eth0: a neighbour of the host, routed through it, gets nowhere.
pub fn check_containers_only_from_the_host(m: &Machine) {
    m.busybox_image();
    let h = m.h;
    let ip = web1(m);
    let lan = format!("{}-lan", h.netns);
    let run = |args: &[&str]| {
        let st = Command::new("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    run(&["netns", "add", &lan]);
    let _cleanup = NetnsGuard(lan.clone());
    run(&[
        "-n", &h.netns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1", "netns",
        &lan,
    ]);
    run(&["-n", &h.netns, "addr", "add", "10.77.0.1/24", "dev", "lan0"]);
    run(&["-n", &h.netns, "link", "set", "lan0", "up"]);
    run(&["-n", &lan, "addr", "add", "10.77.0.2/24", "dev", "lan1"]);
    run(&["-n", &lan, "link", "set", "lan1", "up"]);
    run(&["-n", &lan, "link", "set", "lo", "up"]);
    run(&[
        "-n",
        &lan,
        "route",
        "add",
        "172.18.0.0/16",
        "via",
        "10.77.0.1",
    ]);
    let forwarding = |on: &str| {
        run(&[
            "netns",
            "exec",
            &h.netns,
            "sysctl",
            "-qw",
            &format!("net.ipv4.ip_forward={on}"),
        ])
    };
    // Put back afterwards as it was: while the machine runs, devbox's NAT has it on.
    let before = h.ip_forward();
    forwarding("1");
    // The host side still reaches the container; the neighbour, forwarded by it, does not.
    assert_eq!(h.curl(&format!("http://{ip}/")), "hello from web\n");
    let o = Command::new("ip")
        .args(["netns", "exec", &lan, "curl", "-sS", "--max-time", "5"])
        .arg(format!("http://{ip}/"))
        .output()
        .unwrap();
    forwarding(&before);
    assert!(
        !o.status.success(),
        "a neighbour of the host reached a container: {}",
        crate::support::guest::text(&o.stdout)
    );
}

/// Deletes a network namespace this module made, however the check ends (its veth goes with
/// it).
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub fn check_names(m: &Machine) {
    m.busybox_image();
    let h = m.h;
    let docker = |args: &[&str]| m.docker_ok(args);
    let machine = format!("{MACHINE}.dev");
    assert_eq!(h.dig(&machine, "A").1, vec!["192.168.64.2".to_owned()]);
    let web1 = web1(m);
    h.await_answer(&format!("web1.{machine}"), std::slice::from_ref(&web1));
    let (status, _) = h.dig(&format!("nope.{machine}"), "A");
    assert_eq!(
        status, "NXDOMAIN",
        "unknown names under the machine are NXDOMAIN"
    );

    // An alias, dnsdock style, follows the container's start and stop.
    docker(&[
        "run",
        "-d",
        "--name",
        "aliased",
        "-e",
        // synbioz.dev is allowed for the machine (create --dns-domain); go.dev is not.
        "DNSDOCK_ALIAS=www.synbioz.dev,pkg.go.dev",
        "bb:e2e",
        "/bin/httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let ip = docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "aliased"]);
    let appeared = h.await_answer("www.synbioz.dev", std::slice::from_ref(&ip));
    eprintln!("[e2e] alias answered {appeared:?} after `docker run` returned");
    assert_eq!(
        h.curl("http://www.synbioz.dev/"),
        "hello from web\n",
        "by name from the host side"
    );
    assert_eq!(
        h.dig("pkg.go.dev", "A").1,
        vec!["10.1.2.3".to_owned()],
        "a container's alias never takes a public name outside the allowed domains"
    );
    docker(&["stop", "-t", "1", "aliased"]);
    // Once no container claims it, the name is no longer devbox's: the upstream's answer
    // (here NXDOMAIN) is relayed.
    let gone = h.await_answer("www.synbioz.dev", &[]);
    eprintln!("[e2e] alias gone {gone:?} after `docker stop` returned");

    // Names devbox does not own, even under the TLD, go to the upstream and come back as is.
    assert_eq!(h.dig("pkg.go.dev", "A").1, vec!["10.1.2.3".to_owned()]);

    // Containers resolve each other and the machine through the same server.
    let out = docker(&[
        "run",
        "--rm",
        "bb:e2e",
        "/bin/nslookup",
        &format!("web1.{machine}"),
    ]);
    assert!(out.contains(&web1), "{out}");
    let out = docker(&["run", "--rm", "bb:e2e", "/bin/nslookup", &machine]);
    assert!(out.contains("192.168.64.2"), "{out}");

    // The host side: without systemd-resolved, the exact configuration to add is printed.
    let plan = h.ok(&["dns", "install", MACHINE, "--dry-run"]);
    assert!(
        plan.contains(&format!("server=/{machine}/192.168.64.1")) || plan.contains("resolvectl"),
        "{plan}"
    );
}

/// The guest side of a vz machine's networking, run in this (qemu) guest, which has the same
/// image: the udhcpc event script configures a link from a lease, and the address reporter
/// sends a line the host's parser (`devbox::hypervisor::guest_report`) reads as the guest's
/// real address. There is no vhost-vsock here, so the report goes to the guest's own
/// loopback CID 1 (vsock_loopback), where socat stands in for the host's listener; the CID
/// is the reporter's only difference from a vz boot.
pub fn check_guest_report(m: &Machine) {
    let t = Instant::now();
    // The boot script's PATH; sshd's has no /usr/local/sbin.
    let path = "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin";
    // A lease as udhcpc hands it over, applied to a dummy link in a network namespace of its
    // own, so eth0 and the guest's resolv.conf stay untouched.
    let lease = m.ssh(&format!(
        "{path}; set -e; modprobe dummy; unshare -n sh -c 'set -e; ip link add d0 type dummy; \
         export interface=d0 ip=10.9.8.7 mask=24 router=10.9.8.1 dns=\"10.9.8.53 10.9.8.54\" \
         domain=lan RESOLV_CONF=/tmp/devbox-e2e-resolv; \
         devbox-udhcpc deconfig; devbox-udhcpc bound; devbox-udhcpc renew; \
         ip -4 -o addr show dev d0; ip route; cat $RESOLV_CONF'"
    ));
    assert!(lease.contains(" inet 10.9.8.7/24 "), "{lease}");
    assert_eq!(
        lease.matches(" inet ").count(),
        1,
        "a renewal keeps one address: {lease}"
    );
    assert!(lease.contains("default via 10.9.8.1 dev d0"), "{lease}");
    assert!(
        lease.contains("search lan\nnameserver 10.9.8.53\nnameserver 10.9.8.54\n"),
        "{lease}"
    );

    let line = m.ssh(&format!(
        "{path}; set -e; modprobe vsock_loopback; rm -f /tmp/devbox-e2e-report; \
         socat -u VSOCK-LISTEN:{port} CREATE:/tmp/devbox-e2e-report & \
         devbox-report 1; wait; cat /tmp/devbox-e2e-report",
        port = devbox::hypervisor::guest_report::PORT
    ));
    assert_eq!(line, "devbox-ready 1 ip=192.168.64.2\n");
    let report = devbox::hypervisor::guest_report::read(line.as_bytes()).unwrap();
    assert_eq!(
        report.ip.to_string(),
        "192.168.64.2",
        "the guest's eth0 address"
    );
    eprintln!(
        "[e2e] guest lease script and vsock report checked in {:?}",
        t.elapsed()
    );
}
