//! The machine's life: restart, a supervisor killed with SIGKILL, a disk resized while the
//! machine is down, two concurrent starts, a second machine beside the first (and the two
//! in a swarm: `swarm.rs`), stop and rm.
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

    // This restart serves the shares on the file server's portable path (macOS's), so a
    // real guest's NFS client proves it too; the next check's start goes back to Linux's.
    let t = Instant::now();
    let restarted =
        m.h.devbox_cmd(&["restart", MACHINE, "--timeout", "600"])
            .env("DEVBOX_TEST_NFS_PORTABLE", "1")
            .output()
            .unwrap();
    eprintln!(
        "[e2e] devbox restart (portable NFS path) ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    if !restarted.status.success() {
        m.h.dump();
        panic!("restart failed: {}", text(&restarted.stderr));
    }
    count_boot();
    assert_eq!(m.ssh("cat /var/lib/docker/devbox-marker").trim(), "kept");
    crate::shares::check_portable_path(m);
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

    // ---- upgrade while the machine is down (#18): the next start boots the new image ----
    upgrade_keeps_docker_state(m);

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
    assert_upgraded(m);

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
    // The share watcher came back with the new supervisor.
    crate::file_events::assert_events_flow(m);
}

/// A second machine gets the next subnets; both machines' containers are reachable from the
/// host at once; stopping the second removes its routes only. The second has IPv6
/// (`--ipv6`): its containers answer from the host over IPv6, on the default bridge and on a
/// user network whose /64 comes from the machine's pool, and by AAAA name; its stop takes the
/// IPv6 route away too. It boots the first one's image: two machines of one image share its
/// root image, each reading the one file read-only.
pub fn second_machine_gets_the_next_subnets(m: &Machine) {
    m.busybox_image();
    let second = m.sibling(SECOND);
    let image = machine_image(m);
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
            "--ipv6",
            "--image",
            &image,
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
    assert_eq!(inspect["spec"]["network"]["ipv6"], true);
    let v6 = inspect["ipv6"].clone();
    let prefix = v6["prefix"]
        .as_str()
        .expect("inspect shows the IPv6 prefix")
        .to_owned();
    assert!(
        prefix.starts_with("fd") && prefix.ends_with("00::/56"),
        "{v6}"
    );
    assert!(
        text(&created.stderr).contains(&format!("IPv6: {prefix}")),
        "{}",
        text(&created.stderr)
    );
    m.ok(&["start", SECOND, "--timeout", "600"]);
    let root = m.h.cache.join("images").join(&image).join("root.img");
    for machine in [m, &second] {
        let held = read_only_opens(vm_pid(machine), &root);
        assert!(
            !held.is_empty() && held.iter().all(|&ro| ro),
            "machine {}'s VM process holds {} open read-only (opens, read-only or not: {held:?})",
            machine.name,
            root.display()
        );
    }
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
    ipv6_containers_answer(m, &second_host, &v6);
    crate::swarm::two_machines_form_a_swarm(m, &second);
    m.ok(&["stop", SECOND]);
    assert!(!m.h.routes().contains("172.20.0.0/16"), "{}", m.h.routes());
    assert!(
        !routes6(m).contains(&prefix),
        "stop removes the IPv6 route: {}",
        routes6(m)
    );
    m.ok(&["rm", "-y", SECOND]);
    crate::swarm::nothing_is_left_after_rm(m);
}

/// The image version a machine's `machine.yaml` names.
fn machine_image(m: &Machine) -> String {
    let spec = std::fs::read_to_string(m.dir().join("machine.yaml")).unwrap();
    spec.lines()
        .find_map(|l| l.strip_prefix("image: "))
        .expect("machine.yaml names its image")
        .trim()
        .trim_matches('"')
        .to_owned()
}

/// The pid of a running machine's VM process (`state.json`).
fn vm_pid(m: &Machine) -> u32 {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.dir().join("state.json")).unwrap())
            .unwrap();
    state["vm_pid"]
        .as_u64()
        .expect("a running machine has a VM pid") as u32
}

/// For each descriptor of process `pid` open on `file`: whether it is read-only
/// (`/proc/PID/fdinfo`'s `flags`, octal, access mode `O_RDONLY`).
fn read_only_opens(pid: u32, file: &std::path::Path) -> Vec<bool> {
    let mut out = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = fd.unwrap();
        if std::fs::read_link(fd.path()).ok().as_deref() != Some(file) {
            continue;
        }
        let info =
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().display()))
                .unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .expect("fdinfo has flags");
        out.push(flags & 0o3 == 0);
    }
    out
}

/// `ip -6 route` in the test's host namespace.
fn routes6(m: &Machine) -> String {
    let o = std::process::Command::new("ip")
        .args(["-n", &m.h.netns, "-6", "route"])
        .output()
        .unwrap();
    text(&o.stdout)
}

/// The IPv6 half of the second machine's check (`v6`: its `inspect`'s `ipv6`).
fn ipv6_containers_answer(m: &Machine, docker_host: &str, v6: &serde_json::Value) {
    let prefix = v6["prefix"].as_str().unwrap();
    let routes = routes6(m);
    assert!(
        routes.contains(&format!(
            "{prefix} via {} dev dbx1",
            v6["guest_ip"].as_str().unwrap()
        )),
        "{routes}"
    );
    let bridge: ipnet::Ipv6Net = v6["bridge"].as_str().unwrap().parse().unwrap();
    let pool: ipnet::Ipv6Net = v6["pool"].as_str().unwrap().parse().unwrap();
    let addr_of = |name: &str, network: &str| -> std::net::Ipv6Addr {
        let format =
            format!("{{{{(index .NetworkSettings.Networks \"{network}\").GlobalIPv6Address}}}}");
        let a = docker_ok(docker_host, &["inspect", "-f", &format, name]);
        a.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}'s IPv6 address {a:?}: {e}"))
    };
    // The default bridge: its /64 is the prefix's `fixed-cidr-v6`.
    let a = addr_of("second", "bridge");
    assert!(bridge.contains(&a), "{a} in {bridge}");
    assert_eq!(m.h.curl(&format!("http://[{a}]/")), "hello from web\n");
    // A user network with IPv6 gets a /64 of the machine's pool.
    docker_ok(docker_host, &["network", "create", "--ipv6", "e2e-v6"]);
    docker_ok(
        docker_host,
        &[
            "run",
            "-d",
            "--name",
            "web6",
            "--network",
            "e2e-v6",
            "bb:e2e",
            "/bin/sh",
            "-c",
            "echo hello over ipv6 > /www/index.html && exec /bin/httpd -f -p 80 -h /www",
        ],
    );
    let b = addr_of("web6", "e2e-v6");
    assert!(pool.contains(&b), "{b} in {pool}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = m.h.curl_output(&format!("http://[{b}]/"));
        if o.status.success() {
            assert_eq!(text(&o.stdout), "hello over ipv6\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "web6 at [{b}] does not answer: {}",
            text(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // By name: AAAA from the second machine's DNS server, on its own link's address.
    let o = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &m.h.netns,
            "dig",
            "@192.168.65.1",
            "+short",
        ])
        .args([
            "+tries=1",
            "+time=5",
            &format!("second.{SECOND}.dev"),
            "AAAA",
        ])
        .output()
        .unwrap();
    let answers: Vec<String> = text(&o.stdout).lines().map(str::to_owned).collect();
    assert_eq!(answers, [a.to_string()], "AAAA of second.{SECOND}.dev");
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
    m.ok(&["rm", "-y", MACHINE]);
    assert!(!m.dir().exists());
    remove_derived_image(m);
    // Every machine of the run is gone, and with them their leases on the host-only networks.
    let leases: Vec<_> = std::fs::read_dir(m.h.tmp().join("registry/leases"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leases.is_empty(), "rm leaves leases behind: {leases:?}");
}

/// The version of the image derived by [`derive_image`], removed at the end of the run.
static DERIVED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// One `newc` cpio member (or the trailer, with no data) as the kernel unpacks it.
fn newc(name: &str, mode: u32, data: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
        1,
        mode,
        0,
        0,
        1,
        0,
        data.len(),
        0,
        0,
        0,
        0,
        name.len() + 1,
        0
    )
    .into_bytes();
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out
}

fn sha256_hex(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// A genuinely different image of the machine's: its kernel, and its initramfs followed by a
/// second cpio archive holding `/etc/devbox-upgrade-probe` (the kernel unpacks concatenated
/// archives in order), under a new version with a manifest whose checksums are right. It is
/// dated just before the original, so that `create` never takes it as the newest. Of an image
/// with a root image (whose system the initramfs only mounts), the root image is derived
/// instead: the same squashfs followed by a 4 KiB block holding the probe (the kernel reads
/// a squashfs up to its own length), which the guest reads at the end of its root disk.
fn derive_image(m: &Machine, current: &str) -> String {
    let images = m.h.cache.join("images");
    let from = images.join(current);
    // Versions are 16 hex digits: this one differs from the original in its first ones.
    let version = format!("dead{}", &current[4..]);
    let to = images.join(&version);
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir(&to).unwrap();
    std::fs::copy(from.join("vmlinuz"), to.join("vmlinuz")).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(from.join("manifest.json")).unwrap()).unwrap();
    manifest["version"] = version.clone().into();
    manifest["created"] = "2000-01-01T00:00:00Z".into();
    manifest["files"]["vmlinuz"] = sha256_hex(&to.join("vmlinuz")).into();
    if from.join("root.img").exists() {
        std::fs::copy(from.join("initrd.img"), to.join("initrd.img")).unwrap();
        let mut root = std::fs::read(from.join("root.img")).unwrap();
        while !root.len().is_multiple_of(4096) {
            root.push(0);
        }
        let mut probe = format!("devbox-upgrade-probe {version}\n").into_bytes();
        probe.resize(4096, 0);
        root.extend(probe);
        std::fs::write(to.join("root.img"), &root).unwrap();
        manifest["files"]["root.img"] = sha256_hex(&to.join("root.img")).into();
    } else {
        let mut initrd = std::fs::read(from.join("initrd.img")).unwrap();
        while !initrd.len().is_multiple_of(512) {
            initrd.push(0);
        }
        initrd.extend(newc(
            "etc/devbox-upgrade-probe",
            0o100644,
            version.as_bytes(),
        ));
        initrd.extend(newc("TRAILER!!!", 0, b""));
        std::fs::write(to.join("initrd.img"), &initrd).unwrap();
    }
    manifest["files"]["initrd.img"] = sha256_hex(&to.join("initrd.img")).into();
    std::fs::write(
        to.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    version
}

/// `devbox upgrade` of a machine that is down to another image keeps its Docker state (the
/// data disk), and the guest then runs the new image.
fn upgrade_keeps_docker_state(m: &Machine) {
    let current = machine_image(m);
    let derived = derive_image(m, &current);
    let o = m.ok_output(&["upgrade", MACHINE, "--image", &derived]);
    assert!(
        text(&o.stderr).contains("data disk") || text(&o.stdout).contains("data disk"),
        "{}",
        text(&o.stderr)
    );
    DERIVED.set(derived).unwrap();
}

/// After the upgrade: the marker on the data disk and the probe of the new image.
fn assert_upgraded(m: &Machine) {
    let derived = DERIVED.get().expect("upgraded earlier in this check");
    // The probe: in the system of an initramfs-only image, or in the last block of the root
    // disk (found by its serial, as the guest's init finds it).
    let probe = m.ssh(
        "if [ -e /etc/devbox-upgrade-probe ]; then cat /etc/devbox-upgrade-probe; else \
         for d in /sys/block/vd*; do if [ \"$(cat $d/serial 2>/dev/null)\" = devbox-root ]; \
         then tail -c 4096 /dev/${d##*/} | tr -d '\\000' | sed -n 's/^devbox-upgrade-probe //p'; \
         fi; done; fi",
    );
    assert_eq!(
        probe.trim(),
        derived,
        "the guest runs the image it was upgraded to"
    );
    assert_eq!(m.ssh("cat /var/lib/docker/devbox-marker").trim(), "kept");
}

/// The derived image is removed with `image rm` once no machine uses it.
fn remove_derived_image(m: &Machine) {
    if let Some(v) = DERIVED.get() {
        m.ok(&["image", "rm", v]);
        assert!(!m.h.cache.join("images").join(v).exists());
    }
}
