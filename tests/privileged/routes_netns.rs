//! Tier 3: the applier against a real routing table, each test inside a network namespace
//! of its own (`unshare(CLONE_NEWNET)` on a dedicated thread, as in `net_tap.rs`), so the
//! host's interfaces and routes are never touched. Files go to a temporary root.
//!
//! Needs root. Without it the tests are reported as not run, except under `CI=true`, where
//! they fail.
#![cfg(target_os = "linux")]

use crate::support::in_new_netns;
use crate::support::trials::{Trial, check, root};

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use devbox::hint::Hint;
use devbox::host::{ApplyTarget, FileSpec, HostError, HostPlan, Outcome, apply_to};
use devbox::net::lease::{LeaseInfo, Registry};
use devbox::net::{HostOnlyNet, HostRoute, Tap, host_routes};
use devbox::routes::{
    DockerSubnets, PlannedRoute, RouteError, RoutePlan, removal_plan_for, route_plan_for,
};

pub fn trials() -> Vec<Trial> {
    vec![
        check(
            "apply_adds_routes_once_and_removes_them",
            root,
            apply_adds_routes_once_and_removes_them,
        ),
        check(
            "the_boot_job_spares_a_running_machines_routes",
            root,
            the_boot_job_spares_a_running_machines_routes,
        ),
        check(
            "a_foreign_route_is_a_conflict_and_stays",
            root,
            a_foreign_route_is_a_conflict_and_stays,
        ),
        check(
            "a_failed_add_leaves_no_route_behind",
            root,
            a_failed_add_leaves_no_route_behind,
        ),
        check(
            "the_allowlist_refuses_before_any_change",
            root,
            the_allowlist_refuses_before_any_change,
        ),
        check(
            "a_crafted_routes_json_is_refused_by_routes_apply",
            root,
            a_crafted_routes_json_is_refused_by_routes_apply,
        ),
    ]
}

/// The machine's TAP `dbx<index>`, up, with the host's address: what a running machine has.
fn machine_tap(index: u8) -> (Tap, HostOnlyNet) {
    let net = HostOnlyNet::from_index(index).unwrap();
    let tap = Tap::create(&net.tap_name(), false).unwrap();
    tap.configure(net.host_ip, 24).unwrap();
    (tap, net)
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run `ip`");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn subnets() -> DockerSubnets {
    DockerSubnets {
        bridge: "172.18.0.1/16".parse().unwrap(),
        pool: "172.19.0.0/16".parse().unwrap(),
        pool_size: 24,
    }
}

fn routes_to(dest: &str) -> Vec<HostRoute> {
    host_routes()
        .unwrap()
        .into_iter()
        .filter(|r| r.dest.to_string() == dest)
        .collect()
}

/// Leases host-only `index` with the Docker subnets `docker` to this (root) process in
/// `target`'s registry, as `create` does: the applier acts only on a caller's own leases.
fn lease(target: &ApplyTarget, index: u8, docker: &[&str]) {
    std::fs::create_dir_all(target.registry.dir().parent().unwrap()).unwrap();
    target.registry.create().unwrap();
    let info = LeaseInfo {
        uid: 0,
        user: "root".into(),
        machine: format!("m{index}"),
        dir: "/nonexistent".into(),
        docker: docker.iter().map(|d| d.parse().unwrap()).collect(),
    };
    assert!(target.registry.take(index, &info).unwrap());
}

fn plan(routes: RoutePlan) -> HostPlan {
    HostPlan {
        command: "routes apply".into(),
        routes,
        ..HostPlan::default()
    }
}

fn apply_adds_routes_once_and_removes_them() {
    in_new_netns(|| {
        let (_tap, net) = machine_tap(0);
        let root = tempfile::tempdir().unwrap();
        let target = ApplyTarget::under(root.path());
        lease(&target, 0, &["172.18.0.0/16", "172.19.0.0/16"]);

        let routes = route_plan_for(
            "dev",
            &subnets(),
            net.guest_ip,
            "dbx0",
            &host_routes().unwrap(),
        )
        .unwrap();
        let mut p = plan(routes);
        p.write_files.push(FileSpec {
            path: "/etc/resolver/dev.test".into(),
            mode: 0o644,
            contents: "nameserver 192.168.64.1\n".into(),
        });
        let report = apply_to(&p, false, &target).unwrap();
        assert!(report.changed(), "{report}");
        for dest in ["172.18.0.0/16", "172.19.0.0/16"] {
            let r = routes_to(dest);
            assert_eq!(r.len(), 1, "{dest}: {r:?}");
            assert_eq!(
                r[0].to_string(),
                format!("{dest} via 192.168.64.2 dev dbx0")
            );
        }
        let file = root.path().join("etc/resolver/dev.test");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "nameserver 192.168.64.1\n"
        );
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o644
        );

        // Again, as the boot job does: the table now holds our routes; nothing changes.
        let again = route_plan_for(
            "dev",
            &subnets(),
            net.guest_ip,
            "dbx0",
            &host_routes().unwrap(),
        )
        .unwrap();
        assert_eq!(
            again, p.routes,
            "the plan does not depend on what is applied"
        );
        let report = apply_to(&p, false, &target).unwrap();
        assert!(!report.changed(), "{report}");
        assert!(
            report
                .steps
                .iter()
                .all(|s| s.outcome == Outcome::AlreadyDone),
            "{report}"
        );
        assert_eq!(routes_to("172.18.0.0/16").len(), 1, "no duplicate");

        // Dry run changes nothing.
        let removal = plan(removal_plan_for("dev", &subnets(), net.guest_ip, "dbx0").unwrap());
        let dry = apply_to(&removal, true, &target).unwrap();
        assert!(dry.steps.iter().all(|s| s.outcome == Outcome::Planned));
        assert_eq!(routes_to("172.18.0.0/16").len(), 1);

        let report = apply_to(&removal, false, &target).unwrap();
        assert!(report.changed(), "{report}");
        assert!(routes_to("172.18.0.0/16").is_empty());
        assert!(routes_to("172.19.0.0/16").is_empty());
        // The connected route of the TAP is not ours to touch.
        assert_eq!(routes_to("192.168.64.0/24").len(), 1);
        // Removing what is gone is fine.
        apply_to(&removal, false, &target).unwrap();
    });
}

fn a_foreign_route_is_a_conflict_and_stays() {
    in_new_netns(|| {
        let (_tap, net) = machine_tap(0);
        // A "VPN" on another link already routes 172.18.0.0/16.
        let vpn = Tap::create("vpn1", false).unwrap();
        vpn.configure("10.8.0.1".parse().unwrap(), 24).unwrap();
        ip(&[
            "route",
            "add",
            "172.18.0.0/16",
            "via",
            "10.8.0.2",
            "dev",
            "vpn1",
        ]);
        let before = host_routes().unwrap();

        // Planning sees it…
        let err = route_plan_for("dev", &subnets(), net.guest_ip, "dbx0", &before).unwrap_err();
        assert!(matches!(&err, RouteError::Conflict { interface, .. } if interface == "vpn1"));

        // …and so does the applier, given a plan computed before the VPN came up.
        let stale = route_plan_for("dev", &subnets(), net.guest_ip, "dbx0", &[]).unwrap();
        let root = tempfile::tempdir().unwrap();
        let target = ApplyTarget::under(root.path());
        lease(&target, 0, &["172.18.0.0/16", "172.19.0.0/16"]);
        let err = apply_to(&plan(stale), false, &target).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Docker subnet 172.18.0.0/16 overlaps the host route 172.18.0.0/16 on vpn1; \
             pick another subnet with --docker-subnet"
        );
        assert!(err.hint().unwrap().contains("vpn1"));
        let after = host_routes().unwrap();
        assert_eq!(before, after, "nothing added, the VPN route untouched");
        assert_eq!(
            routes_to("172.18.0.0/16")[0].to_string(),
            "172.18.0.0/16 via 10.8.0.2 dev vpn1"
        );
    });
}

fn a_failed_add_leaves_no_route_behind() {
    in_new_netns(|| {
        let (_tap, net) = machine_tap(0);
        let mut routes = route_plan_for("dev", &subnets(), net.guest_ip, "dbx0", &[]).unwrap();
        // dbx1 is allowed (a devbox link) but does not exist here: its add fails last.
        routes.add.push(PlannedRoute {
            dest: "172.30.0.0/16".parse().unwrap(),
            gateway: "192.168.65.2".parse().unwrap(),
            interface: "dbx1".into(),
            machine: "web".into(),
        });
        routes.normalize();
        let root = tempfile::tempdir().unwrap();
        let target = ApplyTarget::under(root.path());
        lease(&target, 0, &["172.18.0.0/16", "172.19.0.0/16"]);
        lease(&target, 1, &["172.30.0.0/16"]);
        let err = apply_to(&plan(routes), false, &target).unwrap_err();
        assert!(matches!(err, HostError::Net(_)), "{err:?}");
        for dest in ["172.18.0.0/16", "172.19.0.0/16", "172.30.0.0/16"] {
            assert!(routes_to(dest).is_empty(), "{dest} left behind");
        }
    });
}

fn the_allowlist_refuses_before_any_change() {
    in_new_netns(|| {
        let (_tap, net) = machine_tap(0);
        let other = Tap::create("eth9", false).unwrap();
        other.configure("10.9.0.1".parse().unwrap(), 24).unwrap();
        let root = tempfile::tempdir().unwrap();
        let target = ApplyTarget::under(root.path());
        let good = route_plan_for("dev", &subnets(), net.guest_ip, "dbx0", &[]).unwrap();
        let before = host_routes().unwrap();

        let with_extra = |extra: PlannedRoute| {
            let mut r = good.clone();
            r.add.push(extra);
            r.normalize();
            plan(r)
        };
        let public = with_extra(PlannedRoute {
            dest: "8.8.8.0/24".parse().unwrap(),
            gateway: net.guest_ip,
            interface: "dbx0".into(),
            machine: "dev".into(),
        });
        let foreign_link = with_extra(PlannedRoute {
            dest: "172.20.0.0/16".parse().unwrap(),
            gateway: "10.9.0.2".parse().unwrap(),
            interface: "eth9".into(),
            machine: "dev".into(),
        });
        let mut foreign_file = plan(good.clone());
        foreign_file.write_files.push(FileSpec {
            path: "/etc/passwd".into(),
            mode: 0o644,
            contents: "root::0:0::/:/bin/sh\n".into(),
        });
        for (p, why) in [
            (public, "8.8.8.0/24"),
            (foreign_link, "eth9"),
            (foreign_file, "/etc/passwd"),
        ] {
            let err = apply_to(&p, false, &target).unwrap_err();
            assert!(matches!(err, HostError::Refused { .. }), "{err:?}");
            assert!(err.to_string().contains(why), "{err}");
            // Refused in dry-run as well.
            assert!(apply_to(&p, true, &target).is_err());
        }
        assert_eq!(host_routes().unwrap(), before, "no route changed");
        assert!(!root.path().join("etc").exists(), "no file written");
    });
}

/// Security review finding 8, end to end: the boot job (`devbox routes apply`) never takes
/// away the routes of a machine whose supervisor runs, even when `routes.json` lost its
/// entry; once that supervisor is gone, the same job clears them.
fn the_boot_job_spares_a_running_machines_routes() {
    in_new_netns(|| {
        let env = crate::support::cli::Env::new();
        for name in ["a", "b"] {
            crate::support::cli::succeeds(&env.create_fake(name));
        }
        // Machine b (index 1) runs: its TAP and its Docker routes are up, but routes.json
        // does not name it (the lost update).
        let (_tap, net) = machine_tap(1);
        let store = devbox::machine::Store::new(Some(env.home.clone()), None);
        let b = store.machine("b").unwrap().load_spec().unwrap();
        assert_eq!(b.network.index, 1);
        let dests = b.docker.routed().map(|d| d.to_string());
        let docker = route_plan_for("b", &b.docker, net.guest_ip, "dbx1", &[]).unwrap();
        let target = ApplyTarget {
            registry: Registry::at(&env.registry),
            ..ApplyTarget::under(env.home.as_path())
        };
        apply_to(&plan(docker), false, &target).unwrap();
        assert_eq!(routes_to(&dests[0]).len(), 1);
        std::fs::create_dir_all(&env.home).unwrap();
        std::fs::write(env.home.join("routes.json"), "{\"machines\": {}}\n").unwrap();

        // Its supervisor holds its lock, as a live one does.
        let lock = std::fs::File::create(env.machine_dir("b").join("supervisor.lock")).unwrap();
        let held =
            nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
        crate::support::cli::succeeds(&env.run(&["routes", "apply"]));
        for dest in &dests {
            assert_eq!(
                routes_to(dest).len(),
                1,
                "{dest} of the running machine removed"
            );
        }

        // The supervisor is gone: its routes are leftovers now, and go.
        drop(held);
        crate::support::cli::succeeds(&env.run(&["routes", "apply"]));
        for dest in &dests {
            assert!(routes_to(dest).is_empty(), "{dest} left behind");
        }
    });
}

/// Issue 15's bad input, through the real binary: `routes apply` (the boot job, holding
/// CAP_NET_ADMIN) reads the user's `routes.json` and must refuse what it names beyond the
/// user's lease: a Docker pool covering the host's default route, a subnet of the right size
/// that is not the lease's, and a link that is not devbox's. Nothing is routed.
fn a_crafted_routes_json_is_refused_by_routes_apply() {
    in_new_netns(|| {
        let env = crate::support::cli::Env::new();
        crate::support::cli::succeeds(&env.run(&[
            "create",
            "--driver",
            "fake",
            "--no-share",
            "--cpus",
            "1",
            "--memory",
            "512",
            "--disk-size",
            "2G",
            "a",
        ]));
        let (_tap, net) = machine_tap(0);
        // The namespace's "internet": a default route via a gateway on another link.
        let eth9 = Tap::create("eth9", false).unwrap();
        eth9.configure("10.9.0.1".parse().unwrap(), 24).unwrap();
        ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.9.0.254",
            "dev",
            "eth9",
        ]);
        let before = host_routes().unwrap();
        let crafted = |interface: &str, guest: &str, bridge: &str, pool: &str| {
            format!(
                "{{\"machines\": {{\"a\": {{\"guest_ip\": \"{guest}\", \"interface\": \
                 \"{interface}\", \"docker\": {{\"bridge\": \"{bridge}\", \"pool\": \
                 \"{pool}\", \"pool_size\": 24}}}}}}}}"
            )
        };
        let guest = net.guest_ip.to_string();
        for (json, why) in [
            (
                crafted("dbx0", &guest, "172.18.0.1/16", "0.0.0.0/1"),
                "0.0.0.0/1",
            ),
            (
                crafted("dbx0", &guest, "172.18.0.1/16", "172.31.0.0/16"),
                "172.31.0.0/16",
            ),
            (
                crafted("eth9", "10.9.0.2", "172.18.0.1/16", "172.19.0.0/16"),
                "eth9",
            ),
        ] {
            std::fs::write(env.home.join("routes.json"), &json).unwrap();
            let o = env.run(&["routes", "apply"]);
            crate::support::cli::fails_with(&o, why);
            assert_eq!(host_routes().unwrap(), before, "nothing routed for {json}");
        }
        drop(eth9);
    });
}
