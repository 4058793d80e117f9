//! The machine's life: restart, a supervisor killed with SIGKILL, a disk resized while the
//! machine is down, two concurrent starts, a second machine beside the first, stop and rm.
//! These change the shared machine's state, so they run after every shared check, in order.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::MACHINE;
use crate::harness::{count_boot, docker_ok};
use crate::machine::{MIB, Machine, busybox_rootfs_tar, mib};
use crate::support::guest::text;

/// A second machine, to check that machines get disjoint subnets.
const SECOND: &str = "e2e2";

/// Data in /var/lib/docker and the shares survive a restart; `rm` of a running machine
/// wants `--force`.
pub fn restart_keeps_data_and_shares(m: &Machine) {
    m.busybox_image();
    m.ssh("echo kept > /var/lib/docker/devbox-marker && sync");
    let rm = m.devbox(&["rm", MACHINE]);
    assert_eq!(
        rm.status.code(),
        Some(1),
        "rm of a running machine without --force"
    );
    assert!(text(&rm.stderr).contains("--force"));

    m.ok(&["restart", MACHINE, "--timeout", "600"]);
    assert_eq!(m.ssh("cat /var/lib/docker/devbox-marker").trim(), "kept");
    assert_eq!(
        m.h.nat_rules("dbx0"),
        Some(3),
        "after the crash and a new start, one set of NAT rules"
    );
    assert!(!m.ssh("docker images -q bb:e2e").trim().is_empty());
    assert_eq!(
        m.ssh("cat /mnt/rw/hello.txt"),
        "from host\n",
        "shares come back after a restart"
    );
}

/// A supervisor killed with SIGKILL takes its guest and TAP down and is reported crashed;
/// the disk of a machine that is down (crashed) can be grown; of two concurrent starts one
/// wins, recovers from the crash, and the guest grows its filesystem, keeping its data.
pub fn killed_supervisor_resize_then_concurrent_starts(m: &Machine) {
    m.busybox_image();
    m.ssh("echo kept > /var/lib/docker/devbox-marker && sync");
    let (size_before, _, _) = m.guest_df();
    let refused = m.devbox(&["disk", "resize", MACHINE, "4G"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "resize of a running machine"
    );

    let sup = m.supervisor_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (!m.guest_processes().is_empty() || m.h.tap_exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        m.guest_processes().is_empty(),
        "guest outlived its supervisor"
    );
    assert!(!m.h.tap_exists(), "TAP outlived its supervisor");
    assert_eq!(m.status(), "Crashed");
    let ssh = m.ssh_output("true");
    assert_eq!(ssh.status.code(), Some(1));

    // ---- resize 2G -> 4G while the machine is down ----
    let o = m.ok_output(&["disk", "resize", MACHINE, "4G"]);
    assert!(
        text(&o.stderr).contains("from 2G to 4G"),
        "{}",
        text(&o.stderr)
    );

    // ---- two concurrent starts, one wins ----
    let a =
        m.h.devbox_cmd(&["start", MACHINE, "--timeout", "600"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let b = m.devbox(&["start", MACHINE, "--timeout", "600"]);
    let a = a.wait_with_output().unwrap();
    assert!(a.status.success(), "first start: {}", text(&a.stderr));
    count_boot();
    assert_eq!(
        b.status.code(),
        Some(1),
        "second start must lose: {}",
        text(&b.stderr)
    );
    assert!(
        text(&b.stderr).contains("another devbox command"),
        "{}",
        text(&b.stderr)
    );
    assert!(
        text(&a.stderr).contains("cleaning up"),
        "recovered from the crash"
    );
    assert_eq!(m.ssh("cat /var/lib/docker/devbox-marker").trim(), "kept");

    let (size_after, _, _) = m.guest_df();
    eprintln!(
        "[e2e] FIGURES resize: guest filesystem {:.1} MiB -> {:.1} MiB",
        mib(size_before),
        mib(size_after)
    );
    assert!(
        size_after > size_before + (1900 * MIB),
        "the guest grew its filesystem: {size_before} -> {size_after}"
    );
    assert!(m.reserve_held(), "the reserve is taken back at boot");
    assert!(!m.ssh("docker images -q bb:e2e").trim().is_empty());
}

/// A second machine gets the next subnets; both machines' containers are reachable from the
/// host at once; stopping the second removes its routes only.
pub fn second_machine_gets_the_next_subnets(m: &Machine) {
    m.busybox_image();
    let second = m.sibling(SECOND);
    // As root without SUDO_USER: no default share (root's home holds the state directory and
    // is no user's home to share), and create says why.
    let created =
        m.h.devbox_cmd(&[
            "create",
            SECOND,
            "--cpus",
            "1",
            "--memory",
            "1024",
            "--disk-size",
            "2G",
        ])
        .env_remove("SUDO_USER")
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", text(&created.stderr));
    assert!(
        text(&created.stderr).contains("No default share: devbox runs as root without SUDO_USER"),
        "{}",
        text(&created.stderr)
    );
    let inspect: serde_json::Value = serde_json::from_str(&m.ok(&["inspect", SECOND])).unwrap();
    assert_eq!(inspect["spec"]["docker"]["bridge"], "172.20.0.1/16");
    assert_eq!(inspect["spec"]["network"]["guest_ip"], "192.168.65.2");
    m.ok(&["start", SECOND, "--timeout", "600"]);
    let mounts = second.ssh("mount");
    assert!(!mounts.contains(" type nfs"), "{mounts}");
    let routes = m.h.routes();
    assert!(
        routes.contains("172.18.0.0/16 via 192.168.64.2 dev dbx0"),
        "{routes}"
    );
    assert!(
        routes.contains("172.20.0.0/16 via 192.168.65.2 dev dbx1"),
        "{routes}"
    );
    let docker_host = m.docker_host();
    let second_host = format!(
        "unix://{}",
        m.h.home
            .join("machines")
            .join(SECOND)
            .join("docker.sock")
            .display()
    );
    let tar = busybox_rootfs_tar(m.h.tmp());
    docker_ok(&second_host, &["import", tar.to_str().unwrap(), "bb:e2e"]);
    let httpd = ["bb:e2e", "/bin/httpd", "-f", "-p", "80", "-h", "/www"];
    for (host, name) in [(&docker_host, "first"), (&second_host, "second")] {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend(httpd);
        docker_ok(host, &args);
    }
    let ip_of = |host: &str, name: &str| {
        docker_ok(
            host,
            &["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name],
        )
    };
    let (ip1, ip2) = (ip_of(&docker_host, "first"), ip_of(&second_host, "second"));
    assert!(
        ip1.starts_with("172.18.") && ip2.starts_with("172.20."),
        "{ip1} {ip2}"
    );
    assert_eq!(m.h.curl(&format!("http://{ip1}/")), "hello from web\n");
    assert_eq!(m.h.curl(&format!("http://{ip2}/")), "hello from web\n");
    m.ok(&["stop", SECOND]);
    assert!(!m.h.routes().contains("172.20.0.0/16"), "{}", m.h.routes());
    m.ok(&["rm", SECOND]);
}

/// Stop and remove: nothing left behind (routes, NAT rules, guest, TAP, sockets, the machine's
/// files).
pub fn stop_and_rm_leave_nothing(m: &Machine) {
    m.ok(&["stop", MACHINE]);
    assert_eq!(m.status(), "Stopped");
    assert!(
        !m.h.routes().contains("172.18.0.0/16"),
        "stop removes the routes: {}",
        m.h.routes()
    );
    assert!(m.guest_processes().is_empty());
    assert!(!m.h.tap_exists());
    assert_eq!(
        m.h.nat_rules("dbx0"),
        None,
        "the last stop removes devbox's nftables table"
    );
    for f in ["docker.sock", "control.sock", "supervisor.pid", "qmp.sock"] {
        assert!(!m.dir().join(f).exists(), "{f} left after stop");
    }
    let stop_again = m.devbox(&["stop", MACHINE]);
    assert!(stop_again.status.success());
    m.ok(&["rm", MACHINE]);
    assert!(!m.dir().exists());
    // Every machine of the run is gone, and with them their leases on the host-only networks.
    let leases: Vec<_> = std::fs::read_dir(m.h.tmp().join("registry/leases"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leases.is_empty(), "rm leaves leases behind: {leases:?}");
}
