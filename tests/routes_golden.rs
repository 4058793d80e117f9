//! Tier 1: golden tests of what the routes feature renders: the guest's daemon.json
//! fragment, the host plan's dry-run text (Linux and macOS), the launchd plist (also parsed
//! back with the `plist` crate), the systemd units and the macOS command lines.
//! `UPDATE_GOLDEN=1 cargo test --test routes_golden` rewrites the files; review the diff.

mod support;
use support::golden;

use std::collections::BTreeSet;
use std::path::Path;

use devbox::host::{self, FileSpec, HostFilter, HostOs, HostPlan, LAUNCHD_LABEL};
use devbox::net::HostRoute;
use devbox::routes::{
    Claim, DockerSubnets, MachineRoutes, RoutesState, allocate_docker_subnets, route_plan_for,
};

fn subnets() -> DockerSubnets {
    allocate_docker_subnets(&[], &[], None).unwrap()
}

const EXE: &str = "/usr/local/bin/devbox";
const HOME: &str = "/Users/alice/.devbox";

/// Two machines: `dev` running on dbx0 with the default subnets, `web` on dbx1 with the
/// next pair, and a leftover route of `dev` from an older subnet.
fn two_machine_plan() -> HostPlan {
    let dev = subnets();
    let taken: Vec<Claim> = dev
        .routed()
        .into_iter()
        .map(|subnet| Claim {
            machine: "dev".into(),
            subnet,
        })
        .collect();
    let web = allocate_docker_subnets(&taken, &[], None).unwrap();
    let table = [
        HostRoute {
            dest: "10.210.0.0/16".parse().unwrap(),
            gateway: Some("192.168.64.2".parse().unwrap()),
            interface: "dbx0".into(),
        },
        HostRoute {
            dest: "192.168.64.0/24".parse().unwrap(),
            gateway: None,
            interface: "dbx0".into(),
        },
        HostRoute {
            dest: "192.168.65.0/24".parse().unwrap(),
            gateway: None,
            interface: "dbx1".into(),
        },
    ];
    let state = RoutesState {
        machines: [
            (
                "dev".to_owned(),
                MachineRoutes {
                    guest_ip: "192.168.64.2".parse().unwrap(),
                    interface: "dbx0".into(),
                    docker: dev,
                },
            ),
            (
                "web".to_owned(),
                MachineRoutes {
                    guest_ip: "192.168.65.2".parse().unwrap(),
                    interface: "dbx1".into(),
                    docker: web,
                },
            ),
        ]
        .into(),
    };
    let plan = HostPlan::routes(
        "routes apply",
        state.host_plan(&table, &BTreeSet::new()).unwrap(),
    );
    plan.check_allowed().unwrap();
    plan
}

#[test]
fn daemon_json_fragment_for_the_bookworm_engine_and_for_28() {
    let text = |major| {
        let mut s = serde_json::to_string_pretty(&subnets().daemon_json_fragment(major)).unwrap();
        s.push('\n');
        s
    };
    golden("host", "daemon.json", &text(20));
    golden("host", "daemon-engine28.json", &text(28));
}

#[test]
fn route_plan_json() {
    let plan = route_plan_for(
        "dev",
        &subnets(),
        "192.168.64.2".parse().unwrap(),
        "dbx0",
        &[],
    )
    .unwrap();
    let mut s = serde_json::to_string_pretty(&plan).unwrap();
    s.push('\n');
    golden("host", "route-plan.json", &s);
}

#[test]
fn dry_run_text_linux_and_macos() {
    let plan = two_machine_plan();
    golden("host", "plan-routes-linux.txt", &plan.render(HostOs::Linux));
    let mut mac = plan.clone();
    mac.hostfilters.push(HostFilter {
        bridge: "bridge100".into(),
        member: "vmenet0".into(),
    });
    golden("host", "plan-routes-macos.txt", &mac.render(HostOs::Macos));

    let install = |os| host::install_plan(os, Path::new(EXE), Path::new(HOME)).unwrap();
    golden(
        "host",
        "plan-install-linux.txt",
        &install(HostOs::Linux).render(HostOs::Linux),
    );
    golden(
        "host",
        "plan-install-macos.txt",
        &install(HostOs::Macos).render(HostOs::Macos),
    );
    golden(
        "host",
        "plan-uninstall-linux.txt",
        &host::uninstall_plan(HostOs::Linux).render(HostOs::Linux),
    );
    golden(
        "host",
        "plan-uninstall-macos.txt",
        &host::uninstall_plan(HostOs::Macos).render(HostOs::Macos),
    );
}

#[test]
fn plan_serialises_for_the_privileged_door() {
    let mut plan = two_machine_plan();
    plan.write_files.push(FileSpec {
        path: "/etc/resolver/dev.dev".into(),
        mode: 0o644,
        contents: "nameserver 192.168.64.1\nport 5353\n".into(),
    });
    let json = serde_json::to_string_pretty(&plan).unwrap();
    assert_eq!(serde_json::from_str::<HostPlan>(&json).unwrap(), plan);
    golden("host", "plan.json", &(json + "\n"));
}

#[test]
fn launchd_plist_renders_and_parses_back() {
    let text = host::render_launchd_plist(Path::new(EXE), Path::new(HOME)).unwrap();
    golden("host", "dev.devbox.routes.plist", &text);

    let v: plist::Value = plist::from_bytes(text.as_bytes()).unwrap();
    let d = v.as_dictionary().unwrap();
    assert_eq!(d["Label"].as_string(), Some(LAUNCHD_LABEL));
    let argv: Vec<&str> = d["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_string().unwrap())
        .collect();
    assert_eq!(argv, [EXE, "routes", "apply"]);
    assert_eq!(d["RunAtLoad"].as_boolean(), Some(true));
    let watch: Vec<&str> = d["WatchPaths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_string().unwrap())
        .collect();
    assert_eq!(watch, ["/Users/alice/.devbox/routes.json"]);
    let env = d["EnvironmentVariables"].as_dictionary().unwrap();
    assert_eq!(env["DEVBOX_HOME"].as_string(), Some(HOME));
    assert!(!d.contains_key("LaunchOnlyOnce"), "it would block reruns");

    // Characters XML gives meaning to survive the round trip.
    let odd = "/Users/a<b>&'\"c/devbox";
    let text = host::render_launchd_plist(Path::new(odd), Path::new(HOME)).unwrap();
    let v: plist::Value = plist::from_bytes(text.as_bytes()).unwrap();
    let first = &v.as_dictionary().unwrap()["ProgramArguments"]
        .as_array()
        .unwrap()[0];
    assert_eq!(first.as_string(), Some(odd));
}

#[test]
fn systemd_units() {
    // As `sudo devbox system install` from alice (uid 1000) writes them: the job runs as her.
    let units = host::render_systemd_units(
        Path::new(EXE),
        Path::new("/home/alice/.devbox"),
        Some((1000, 1000)),
    )
    .unwrap();
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["devbox-routes.service", "devbox-routes.path"]);
    for (name, text) in &units {
        golden("host", name, text);
        assert!(text.contains("WantedBy=multi-user.target"), "{name}");
    }
    assert!(units[0].1.contains("\nUser=1000\nGroup=1000\n"));
    // As root (CI), no User= line.
    let root =
        host::render_systemd_units(Path::new(EXE), Path::new("/root/.devbox"), None).unwrap();
    assert!(!root[0].1.contains("User="));
}

/// systemd's own parser on the units: `systemd-analyze verify` (no running systemd needed).
/// Where it is not installed the test says so and checks nothing more.
#[test]
fn systemd_analyze_verifies_the_units() {
    let Some(analyze) = support::guest::which("systemd-analyze") else {
        if support::ci() {
            panic!("systemd-analyze is not installed (package systemd), and CI=true");
        }
        eprintln!("not run: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The binary the units run must exist for verify: a stand-in at the same relative place.
    let exe = dir.path().join("devbox");
    std::fs::write(&exe, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let home = dir.path().join("home/.devbox");
    std::fs::create_dir_all(&home).unwrap();
    let units = host::render_systemd_units(&exe, &home, Some((0, 0))).unwrap();
    let mut paths = Vec::new();
    for (name, text) in &units {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    let o = std::process::Command::new(analyze)
        .arg("verify")
        .args(&paths)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "systemd-analyze verify: {err}");
    // Warnings about the units themselves (not about the host's other units) fail it too.
    for (name, _) in &units {
        assert!(!err.contains(name.as_str()), "{name}: {err}");
    }
}

#[test]
fn macos_and_linux_command_lines() {
    let plan = route_plan_for(
        "dev",
        &subnets(),
        "192.168.64.2".parse().unwrap(),
        "dbx0",
        &[],
    )
    .unwrap();
    let r = &plan.add[0];
    let mut lines = vec![
        host::route_add_argv(r),
        host::route_delete_argv(r),
        host::hostfilter_argv(&HostFilter {
            bridge: "bridge100".into(),
            member: "vmenet0".into(),
        }),
        host::launchctl_bootstrap_argv(Path::new(host::LAUNCHD_PLIST_PATH)),
        host::launchctl_bootout_argv(LAUNCHD_LABEL),
        host::ip_route_argv("add", r),
        host::systemctl_argv(&["enable", "--now", host::SYSTEMD_PATH_UNIT]),
    ]
    .into_iter()
    .map(|argv| serde_json::to_string(&argv).unwrap())
    .collect::<Vec<_>>()
    .join("\n");
    lines.push('\n');
    golden("host", "commands.argv", &lines);
}

/// `sudo devbox system install --dry-run` from alice on a fresh host, and the uninstall of
/// what it recorded, on both OSes.
#[test]
fn system_install_and_uninstall_plans() {
    use devbox::host::install::{
        InstallInputs, InstallRecord, JobUser, install_plan, uninstall_plan,
    };
    for (os, name) in [(HostOs::Linux, "linux"), (HostOs::Macos, "macos")] {
        let home = match os {
            HostOs::Linux => "/home/alice/.devbox",
            HostOs::Macos => HOME,
        };
        let plan = install_plan(&InstallInputs {
            os,
            exe: "/home/alice/src/devbox/target/release/devbox".into(),
            exe_sha256: "5d0f".into(),
            installed_sha256: None,
            installed_caps: false,
            record: None,
            existing: vec![],
            user: JobUser {
                uid: 1000,
                gid: 1000,
                devbox_home: home.into(),
            },
            force: false,
        })
        .unwrap();
        plan.check_allowed().unwrap();
        golden(
            "host",
            &format!("plan-system-install-{name}.txt"),
            &plan.render(os),
        );
        let record: InstallRecord = serde_json::from_str(
            &plan
                .write_files
                .iter()
                .find(|f| f.path.ends_with("install.json"))
                .unwrap()
                .contents,
        )
        .unwrap();
        let (un, _) = uninstall_plan(&record, Some("5d0f"), &[], false).unwrap();
        un.check_allowed().unwrap();
        golden(
            "host",
            &format!("plan-system-uninstall-{name}.txt"),
            &un.render(os),
        );
    }
}
