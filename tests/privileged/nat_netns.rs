//! Tier 3: a machine's outbound NAT through the real applier, `nft` and `iptables`, with real
//! traffic, and no guest: the test's own network namespace plays the host, and three more
//! namespaces hang off it on veth pairs: a "machine" on `dbx0` (192.168.64.2, as a guest's
//! eth0 would be) and its share link on `dbx0s` (192.168.64.254/30, as the guest's share
//! namespace is), "the internet" on the uplink (TEST-NET-3, an HTTP server at 203.0.113.2),
//! and a third network on another host interface (TEST-NET-2, 198.51.100.2); neither the
//! share link nor that network gets routed anywhere through the host. The host's real
//! interfaces, routes and firewall are never touched. The applier checks every NAT link
//! against a lease registry of the trial's own (`ApplyTarget::under` a temporary root).
//!
//! One trial does it as an ordinary user would after `system install`: a thread of the test
//! takes another uid (raw `setresuid`, which changes only the calling thread) and keeps
//! CAP_NET_ADMIN in its permitted set alone, as the installed binary's file capability gives
//! it; the door must raise it for `nft`, `iptables` and `ip_forward`, and refuse a link whose
//! lease is not that uid's.
//!
//! Needs root, `nft`, `iptables`, busybox (httpd) and curl. Without them the trials are
//! reported as not run, except under `CI=true`, where they fail.
#![cfg(target_os = "linux")]

use crate::support::in_new_netns;
use crate::support::trials::{Missing, Trial, check, programs, root};

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use devbox::host::{AppliedReport, ApplyTarget, HostError, HostPlan, apply_to};
use devbox::nat::NatError;
use devbox::net::lease::LeaseInfo;

pub fn trials() -> Vec<Trial> {
    vec![
        check(
            "a_machine_gets_out_and_nothing_else_is_forwarded",
            tools,
            a_machine_gets_out_and_nothing_else_is_forwarded,
        ),
        check(
            "on_a_docker_host_the_rules_go_to_docker_user_and_away_again",
            tools,
            on_a_docker_host_the_rules_go_to_docker_user_and_away_again,
        ),
        check(
            "a_firewall_that_drops_everything_fails_the_start_with_its_fix",
            tools,
            a_firewall_that_drops_everything_fails_the_start_with_its_fix,
        ),
        check(
            "an_ordinary_user_gets_nat_on_their_own_lease_only",
            tools,
            an_ordinary_user_gets_nat_on_their_own_lease_only,
        ),
    ]
}

/// Root and the tools these trials drive.
fn tools() -> Result<(), Missing> {
    root()?;
    programs(&[
        ("nft", "nftables"),
        ("iptables", "iptables"),
        ("busybox", "busybox-static"),
        ("curl", "curl"),
    ])
}

/// Runs `cmd args…`; panics with its stderr when it fails.
fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &str) {
    sh("ip", &args.split_whitespace().collect::<Vec<_>>());
}

/// A named namespace for the test, deleted with it.
struct Ns(String);

impl Ns {
    fn new(test: &str, role: &str) -> Ns {
        let name = format!("dbxnat-{}-{test}-{role}", std::process::id());
        ip(&format!("netns add {name}"));
        ip(&format!("-n {name} link set lo up"));
        Ns(name)
    }

    fn run(&self, args: &str) {
        let mut v = vec!["netns", "exec", &self.0];
        v.extend(args.split_whitespace());
        sh("ip", &v);
    }

    /// Whether an HTTP GET of `url` from this namespace gets the test page within 3 s.
    fn gets(&self, url: &str) -> bool {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "curl", "-s", "-m", "3", url])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("hello from the internet")
    }

    fn serve(&self, dir: &std::path::Path) -> Server {
        let child = Command::new("ip")
            .args([
                "netns", "exec", &self.0, "busybox", "httpd", "-f", "-p", "80", "-h",
            ])
            .arg(dir)
            .spawn()
            .unwrap();
        Server(child)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test host's world: the machine on dbx0 and its share link on dbx0s (the /30 at the
/// top of its /24, as `HostOnlyNet::share_link` makes it), the internet on up0, another LAN
/// on lan0.
struct World {
    machine: Ns,
    share: Ns,
    internet: Ns,
    lan: Ns,
    _server: Server,
    _www: tempfile::TempDir,
}

/// `test` keeps the namespaces of tests running at once apart.
fn world(test: &str) -> World {
    let machine = Ns::new(test, "machine");
    let share = Ns::new(test, "share");
    let internet = Ns::new(test, "internet");
    let lan = Ns::new(test, "lan");
    for (host_if, ns, host_ip, peer_ip) in [
        ("dbx0", &machine, "192.168.64.1/24", "192.168.64.2/24"),
        ("dbx0s", &share, "192.168.64.253/30", "192.168.64.254/30"),
        ("up0", &internet, "203.0.113.1/24", "203.0.113.2/24"),
        ("lan0", &lan, "198.51.100.1/24", "198.51.100.2/24"),
    ] {
        ip(&format!(
            "link add {host_if} type veth peer name eth0 netns {}",
            ns.0
        ));
        ip(&format!("addr add {host_ip} dev {host_if}"));
        ip(&format!("link set {host_if} up"));
        ns.run(&format!("ip addr add {peer_ip} dev eth0"));
        ns.run("ip link set eth0 up");
    }
    machine.run("ip route add default via 192.168.64.1");
    share.run("ip route add default via 192.168.64.253");
    lan.run("ip route add default via 198.51.100.1");
    ip("route add default via 203.0.113.2");
    // The internet knows no route back to the host's private networks: only NAT gets replies.
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "hello from the internet\n").unwrap();
    let server = internet.serve(www.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !internet.gets("http://203.0.113.2/") {
        if std::time::Instant::now() > deadline {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &internet.0,
                    "curl",
                    "-sv",
                    "-m",
                    "3",
                    "http://203.0.113.2/",
                ])
                .output()
                .unwrap();
            panic!(
                "httpd in the internet namespace did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    World {
        machine,
        share,
        internet,
        lan,
        _server: server,
        _www: www,
    }
}

/// The trial's lease registry, under a temporary root readable by every uid (as
/// `/var/lib/devbox` is), with host-only indexes 0 and 1 leased to root.
struct Registry {
    root: tempfile::TempDir,
}

impl Registry {
    fn new() -> Registry {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let reg = Registry { root };
        let target = reg.target();
        std::fs::create_dir_all(target.registry.dir().parent().unwrap()).unwrap();
        target.registry.create().unwrap();
        for index in [0, 1] {
            let info = LeaseInfo {
                uid: 0,
                user: "root".into(),
                machine: format!("m{index}"),
                dir: "/nonexistent".into(),
                docker: vec![],
            };
            assert!(target.registry.take(index, &info).unwrap());
        }
        reg
    }

    fn target(&self) -> ApplyTarget {
        ApplyTarget::under(self.root.path())
    }

    /// Hands lease `index` to `uid`: the lease file's owner is what the door trusts.
    fn give(&self, index: u8, uid: u32) {
        let path = self.target().registry.leases_dir().join(index.to_string());
        std::os::unix::fs::chown(path, Some(uid), None).unwrap();
    }
}

fn nat(reg: &Registry, verb: &str, link: &str) -> Result<AppliedReport, HostError> {
    let mut plan = HostPlan {
        command: format!("{verb} test"),
        ..HostPlan::default()
    };
    match verb {
        "start" => plan.nat_add.push(link.into()),
        _ => plan.nat_remove.push(link.into()),
    }
    apply_to(&plan, false, &reg.target())
}

/// Turns the namespace's IPv4 forwarding off: a new namespace may inherit the host's.
fn forwarding_off() {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").unwrap();
}

fn forwarding() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .unwrap()
        .trim()
        .to_owned()
}

/// devbox's rules tagged for `link`; `None` when devbox's table is absent.
fn devbox_rules(link: &str) -> Option<usize> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", "devbox"])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["rule"]["comment"] == link)
            .count(),
    )
}

fn a_machine_gets_out_and_nothing_else_is_forwarded() {
    in_new_netns(|| {
        let reg = Registry::new();
        let w = world("out");
        let url = "http://203.0.113.2/";
        forwarding_off();
        assert!(!w.machine.gets(url), "out before devbox's NAT");

        let report = nat(&reg, "start", "dbx0").unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(forwarding(), "1");
        assert_eq!(devbox_rules("dbx0"), Some(3));
        assert!(w.machine.gets(url), "the machine reaches the internet");
        // Its share link (an address of the same /24, on `dbx0s`) is never forwarded.
        assert!(!w.share.gets(url), "the share link reaches the internet");
        // devbox turned forwarding on: the other LAN is not routed to the internet, nor to
        // the machine, and the internet cannot open connections to the machine.
        assert!(
            !w.lan.gets(url),
            "the host routes between its other interfaces"
        );
        w.internet
            .run("ip route add 192.168.64.0/24 via 203.0.113.1");
        let probe = |ns: &Ns| {
            Command::new("ip")
                .args(["netns", "exec", &ns.0, "curl", "-s", "-m", "2"])
                .arg("http://192.168.64.2:1/")
                .stderr(Stdio::null())
                .status()
                .unwrap()
        };
        // Connection refused (an RST from the machine) would mean the packet got through;
        // a timeout means it was dropped. Both fail, so time it.
        for ns in [&w.lan, &w.internet] {
            let t = std::time::Instant::now();
            assert!(!probe(ns).success());
            assert!(
                t.elapsed() >= Duration::from_millis(1500),
                "{} reached the machine (refused at once instead of dropped)",
                ns.0
            );
        }

        // A crashed supervisor's rules, then the same machine's next start: one set.
        nat(&reg, "start", "dbx0").unwrap();
        assert_eq!(devbox_rules("dbx0"), Some(3));
        // A second machine, then the first stops: the second keeps its rules.
        nat(&reg, "start", "dbx1").unwrap();
        assert_eq!(devbox_rules("dbx1"), Some(3));
        nat(&reg, "stop", "dbx0").unwrap();
        assert_eq!(devbox_rules("dbx0"), Some(0));
        assert_eq!(forwarding(), "1", "a machine still runs");
        // The last one puts everything back.
        nat(&reg, "stop", "dbx1").unwrap();
        assert_eq!(devbox_rules("dbx1"), None, "devbox's table is gone");
        assert_eq!(forwarding(), "0");
        assert!(!w.machine.gets(url));
        assert!(
            !nat(&reg, "stop", "dbx1").unwrap().changed(),
            "nothing left to remove"
        );
    });
}

fn on_a_docker_host_the_rules_go_to_docker_user_and_away_again() {
    in_new_netns(|| {
        let reg = Registry::new();
        let w = world("docker");
        let url = "http://203.0.113.2/";
        // What Docker leaves on a host: forwarding on, FORWARD policy DROP, DOCKER-USER.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        sh("iptables", &["-N", "DOCKER-USER"]);
        sh("iptables", &["-A", "DOCKER-USER", "-j", "RETURN"]);
        sh("iptables", &["-A", "FORWARD", "-j", "DOCKER-USER"]);
        sh("iptables", &["-P", "FORWARD", "DROP"]);
        assert!(!w.machine.gets(url));

        let report = nat(&reg, "start", "dbx0").unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert!(
            w.machine.gets(url),
            "the machine gets out through DOCKER-USER"
        );
        assert!(
            !w.lan.gets(url),
            "Docker's policy still drops the other LAN"
        );
        let tagged = || {
            sh("iptables", &["-S", "DOCKER-USER"])
                .matches("devbox:dbx0")
                .count()
        };
        assert_eq!(tagged(), 2);
        nat(&reg, "start", "dbx0").unwrap();
        assert_eq!(tagged(), 2, "a second start replaces, never adds");

        nat(&reg, "stop", "dbx0").unwrap();
        assert_eq!(tagged(), 0);
        assert_eq!(devbox_rules("dbx0"), None);
        assert_eq!(
            forwarding(),
            "1",
            "forwarding was on before devbox: left on"
        );
        assert!(sh("iptables", &["-S", "FORWARD"]).contains("-P FORWARD DROP"));
    });
}

fn a_firewall_that_drops_everything_fails_the_start_with_its_fix() {
    in_new_netns(|| {
        let reg = Registry::new();
        forwarding_off();
        sh("nft", &["add", "table", "inet", "lockdown"]);
        sh(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "lockdown",
                "outward",
                "{ type filter hook forward priority 0; policy drop; }",
            ],
        );
        let err = nat(&reg, "start", "dbx0").unwrap_err();
        assert!(
            matches!(&err, HostError::Nat(NatError::Blocked { .. })),
            "{err}"
        );
        use devbox::hint::Hint;
        let hint = err.hint().unwrap();
        assert!(
            hint.contains("sudo nft insert rule inet lockdown outward iifname \"dbx0\" accept"),
            "{hint}"
        );
        assert_eq!(devbox_rules("dbx0"), None, "nothing was changed");
        assert_eq!(forwarding(), "0");

        // One accept rule in it: maybe the machine's traffic gets through. A warning.
        sh(
            "nft",
            &[
                "add", "rule", "inet", "lockdown", "outward", "iifname", "\"lan0\"", "accept",
            ],
        );
        let report = nat(&reg, "start", "dbx0").unwrap();
        assert_eq!(report.warnings.len(), 1);
        assert!(report.warnings[0].fix.contains("inet lockdown outward"));
        nat(&reg, "stop", "dbx0").unwrap();
    });
}

/// An ordinary user's uid for the trial (no account needed: the door trusts uids).
const USER_UID: u32 = 64_321;

/// Runs `f` on a new thread (in this thread's network namespace) as `USER_UID`, holding
/// CAP_NET_ADMIN in its permitted set only, as an ordinary user's installed devbox does.
/// Asserts that the thread has nothing effective or ambient when `f` returns.
fn as_user<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use capctl::{Cap, CapSet, CapState, ambient};
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: prctl and the raw setresgid/setresuid syscalls change only this
            // thread's credentials (glibc's wrappers would change every thread's); nothing
            // but integers is passed.
            unsafe {
                assert_eq!(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0), 0);
                assert_eq!(
                    libc::syscall(libc::SYS_setresgid, USER_UID, USER_UID, USER_UID),
                    0
                );
                assert_eq!(
                    libc::syscall(libc::SYS_setresuid, USER_UID, USER_UID, USER_UID),
                    0
                );
            }
            let mut only = CapSet::empty();
            only.add(Cap::NET_ADMIN);
            CapState {
                effective: CapSet::empty(),
                permitted: only,
                inheritable: CapSet::empty(),
            }
            .set_current()
            .unwrap();
            assert_eq!(nix::unistd::getuid().as_raw(), USER_UID);
            let out = f();
            let after = CapState::get_current().unwrap();
            assert!(after.effective.is_empty(), "left raised: {after:?}");
            assert!(after.inheritable.is_empty(), "left inheritable: {after:?}");
            assert_eq!(ambient::is_set(Cap::NET_ADMIN), Some(false));
            out
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn an_ordinary_user_gets_nat_on_their_own_lease_only() {
    in_new_netns(|| {
        let reg = Registry::new();
        reg.give(0, USER_UID);
        let w = world("user");
        let url = "http://203.0.113.2/";
        forwarding_off();
        assert!(!w.machine.gets(url), "out before devbox's NAT");

        let refused = |r: Result<AppliedReport, HostError>| match r {
            Err(e) => e.to_string(),
            Ok(r) => panic!("applied: {r:?}"),
        };
        let (own, others, share) = as_user(|| {
            (
                nat(&reg, "start", "dbx0"),
                refused(nat(&reg, "start", "dbx1")),
                refused(nat(&reg, "start", "dbx0s")),
            )
        });
        let own = own.unwrap();
        assert!(own.warnings.is_empty(), "{:?}", own.warnings);
        assert!(
            others.contains(&format!(
                "dbx1 is leased to uid 0, not to you (uid {USER_UID})"
            )),
            "{others}"
        );
        assert!(share.contains("dbx0s"), "{share}");
        assert_eq!(forwarding(), "1", "written by the user's devbox");
        assert_eq!(devbox_rules("dbx0"), Some(3));
        assert_eq!(devbox_rules("dbx1"), Some(0), "nothing for another's lease");
        assert!(
            w.machine.gets(url),
            "the user's machine reaches the internet"
        );
        assert!(!w.share.gets(url), "the share link reaches the internet");

        // Root's machine on dbx1: the user can neither remove its NAT nor their own last.
        nat(&reg, "start", "dbx1").unwrap();
        let stop_others = as_user(|| refused(nat(&reg, "stop", "dbx1")));
        assert!(stop_others.contains("leased to uid 0"), "{stop_others}");
        assert_eq!(devbox_rules("dbx1"), Some(3));
        nat(&reg, "stop", "dbx1").unwrap();

        as_user(|| nat(&reg, "stop", "dbx0")).unwrap();
        assert_eq!(devbox_rules("dbx0"), None, "devbox's table is gone");
        assert_eq!(forwarding(), "0", "put back by the user's devbox");
        assert!(!w.machine.gets(url));
    });
}
