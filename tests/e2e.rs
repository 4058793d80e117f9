//! Tier 3: the real binary boots a real guest inside a network namespace this test creates.
//!
//! One machine is booted and shared by the checks that do not interfere, to keep the number of
//! boots small (a TCG boot to a ready Docker takes 25–50 s here). Prerequisites missing: under
//! `CI=true` that is a failure; elsewhere the test prints why it did not run.
//!
//! Never touches the host's real interfaces or routes: every machine command runs under
//! `ip netns exec`, so the TAP device, its address and all guest traffic stay in the namespace.

mod support;
use support::ci;
use support::guest::{bin, missing_prerequisite, text, which};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MACHINE: &str = "e2e";
/// A second machine, to check that machines get disjoint subnets.
const SECOND: &str = "e2e2";

struct Harness {
    netns: String,
    home: PathBuf,
    cache: PathBuf,
    upstream: std::process::Child,
    _tmp: tempfile::TempDir,
}

/// Port of the stand-in upstream resolver on the namespace's loopback.
const UPSTREAM_PORT: &str = "5353";

impl Drop for Harness {
    fn drop(&mut self) {
        // Best effort: force the machine down, then remove the namespace.
        let _ = self.devbox(&["stop", "--force", MACHINE]);
        let _ = self.devbox(&["stop", "--force", SECOND]);
        let _ = self.upstream.kill();
        let _ = self.upstream.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.netns));
    }
}

impl Harness {
    fn new() -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let netns = format!("devbox-e2e-{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {netns}");
        let st = Command::new("ip")
            .args(["-n", &netns, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(st.success());
        // Images are cached across runs (the first build takes minutes); machines are not.
        let cache = std::env::var_os("DEVBOX_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/devbox")
            });
        // Inside the namespace, the host side resolves through the machine's DNS server, as
        // a host with `devbox dns install` would (`ip netns exec` bind-mounts this file).
        let etc = PathBuf::from("/etc/netns").join(&netns);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), "nameserver 192.168.64.1\n").unwrap();
        // The host's own resolver is never a test's target: a dnsmasq inside the namespace
        // stands in for it as the machine's upstream.
        let upstream = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
            ])
            .args([
                "--no-hosts",
                "--port",
                UPSTREAM_PORT,
                "--listen-address",
                "127.0.0.1",
            ])
            .args(["--bind-interfaces", "--address=/pkg.go.dev/10.1.2.3"])
            // The real world's answer for a name nobody has: NXDOMAIN.
            .arg("--local=/synbioz.dev/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Harness {
            netns,
            home: tmp.path().join("home"),
            cache,
            upstream,
            _tmp: tmp,
        }
    }

    /// `devbox ARGS` inside the namespace.
    fn devbox(&self, args: &[&str]) -> Output {
        self.devbox_cmd(args).output().unwrap()
    }

    fn devbox_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns])
            .arg(bin())
            .args(args)
            .env("DEVBOX_HOME", &self.home)
            .env("DEVBOX_CACHE", &self.cache)
            .env("DEVBOX_REGISTRY", self._tmp.path().join("registry"))
            .env("NO_COLOR", "1")
            .env("DEVBOX_DNS_UPSTREAMS", format!("127.0.0.1:{UPSTREAM_PORT}"))
            .stdin(Stdio::null());
        c
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let t = Instant::now();
        let o = self.devbox(args);
        eprintln!(
            "[e2e] devbox {} ({:.1} s)",
            args.join(" "),
            t.elapsed().as_secs_f64()
        );
        if !o.status.success() {
            self.dump();
            panic!(
                "devbox {} failed ({}):\n{}\n{}",
                args.join(" "),
                o.status,
                text(&o.stdout),
                text(&o.stderr)
            );
        }
        text(&o.stdout)
    }

    /// `devbox ssh MACHINE -- CMD`, asserting success, returning stdout.
    #[track_caller]
    fn ssh(&self, cmd: &str) -> String {
        self.ok(&["ssh", MACHINE, "--", cmd])
    }

    fn machine_dir(&self) -> PathBuf {
        self.home.join("machines").join(MACHINE)
    }

    fn dump(&self) {
        for f in ["supervisor.log", "serial.log"] {
            let p = self.machine_dir().join(f);
            let t = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            eprintln!(
                "---- last lines of {} ----\n{}",
                p.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }

    fn status(&self) -> String {
        text(&self.devbox(&["status", MACHINE]).stdout)
            .trim()
            .to_owned()
    }

    /// Guest processes (QEMU) of this machine still alive anywhere on the host.
    fn guest_processes(&self) -> Vec<String> {
        // Match on this run's machine directory, which is in QEMU's arguments, so that
        // another run of this test on the same host is not counted.
        let pattern = format!("{}/serial.log", self.machine_dir().display());
        let o = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        text(&o.stdout).lines().map(str::to_owned).collect()
    }

    fn tap_exists(&self) -> bool {
        let o = Command::new("ip")
            .args(["-n", &self.netns, "-o", "link", "show"])
            .output()
            .unwrap();
        text(&o.stdout).contains("dbx")
    }

    fn supervisor_pid(&self) -> i32 {
        std::fs::read_to_string(self.machine_dir().join("supervisor.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn docker_host(&self) -> String {
        let env = self.ok(&["env", MACHINE]);
        let line = env
            .lines()
            .find(|l| l.starts_with("export DOCKER_HOST="))
            .expect("env prints DOCKER_HOST");
        line.trim_start_matches("export DOCKER_HOST=")
            .trim_matches('"')
            .to_owned()
    }
}

impl Harness {
    /// The namespace's IPv4 routing table, as `ip route` prints it.
    fn routes(&self) -> String {
        let o = Command::new("ip")
            .args(["-n", &self.netns, "route"])
            .output()
            .unwrap();
        text(&o.stdout)
    }

    /// `curl` from the host side of the namespace.
    fn curl(&self, url: &str) -> String {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "curl",
                "-sS",
                "--max-time",
                "20",
                url,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "curl {url}: {}", text(&o.stderr));
        text(&o.stdout)
    }
}

/// Host directories shared into the machine: one read-write, owned by an ordinary user (so the
/// uid mapping shows), one read-only.
struct Shares {
    rw: PathBuf,
    ro: PathBuf,
    big_sha256: String,
}

const SHARE_UID: u32 = 1000;

impl Shares {
    fn prepare(tmp: &Path) -> Shares {
        use sha2::Digest;
        let rw = tmp.join("share-rw");
        let ro = tmp.join("share-ro");
        std::fs::create_dir_all(rw.join("many")).unwrap();
        std::fs::create_dir_all(&ro).unwrap();
        std::fs::write(rw.join("hello.txt"), "from host\n").unwrap();
        std::fs::write(ro.join("readme.txt"), "read only\n").unwrap();
        for i in 0..3000 {
            std::fs::write(rw.join(format!("many/f{i:04}")), "").unwrap();
        }
        // 100 MiB of non-repeating bytes (xorshift), so a misplaced block changes the hash.
        let mut big = vec![0u8; 100 << 20];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in big.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(rw.join("big.bin"), &big).unwrap();
        let big_sha256 = hex::encode(sha2::Sha256::digest(&big));
        let st = Command::new("chown")
            .args(["-R", &format!("{SHARE_UID}:{SHARE_UID}")])
            .arg(&rw)
            .status()
            .unwrap();
        assert!(st.success());
        Shares { rw, ro, big_sha256 }
    }
}

fn check_shares(h: &Harness, shares: &Shares) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mounts = h.ssh("mount");
    assert!(mounts.contains(" on /mnt/rw type nfs"), "{mounts}");
    assert!(mounts.contains(" on /mnt/ro type nfs"), "{mounts}");
    assert_eq!(h.ssh("cat /mnt/rw/hello.txt"), "from host\n");
    // The host user's files look like the guest root's, so they are writable in the guest.
    assert_eq!(h.ssh("stat -c %u /mnt/rw/hello.txt").trim(), "0");

    // File operations, in the guest, then checked on the host.
    h.ssh(
        "set -e; cd /mnt/rw; echo one > a; echo two >> a; mkdir d; mv a d/b; \
         echo 123456 > t; truncate -s 2 t; ln -s d/b link; [ \"$(readlink link)\" = d/b ]; \
         chmod 600 t; mkdir gone; rmdir gone; echo x > del; rm del; cat link",
    );
    assert_eq!(
        std::fs::read_to_string(shares.rw.join("d/b")).unwrap(),
        "one\ntwo\n"
    );
    assert_eq!(std::fs::read_to_string(shares.rw.join("t")).unwrap(), "12");
    let t = std::fs::metadata(shares.rw.join("t")).unwrap();
    assert_eq!(t.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        t.uid(),
        SHARE_UID,
        "files the guest creates belong to the share's owner"
    );
    assert_eq!(
        std::fs::read_link(shares.rw.join("link")).unwrap(),
        PathBuf::from("d/b")
    );
    assert!(!shares.rw.join("gone").exists() && !shares.rw.join("del").exists());

    // Host to guest, after the mount.
    std::fs::write(shares.rw.join("late.txt"), "written later\n").unwrap();
    assert_eq!(h.ssh("cat /mnt/rw/late.txt"), "written later\n");

    let sum = h.ssh("sha256sum /mnt/rw/big.bin");
    assert_eq!(
        sum.split_whitespace().next(),
        Some(shares.big_sha256.as_str())
    );
    assert_eq!(
        h.ssh("ls /mnt/rw/many | wc -l").trim(),
        "3000",
        "READDIR pages through"
    );
    assert_eq!(
        h.ssh("ls -l /mnt/rw/many | grep -c '^-'").trim(),
        "3000",
        "READDIRPLUS pages through"
    );

    assert_eq!(h.ssh("cat /mnt/ro/readme.txt"), "read only\n");
    let w = h.devbox(&["ssh", MACHINE, "--", "echo x > /mnt/ro/new"]);
    assert_ne!(w.status.code(), Some(0), "a read-only share refuses writes");
    assert!(!shares.ro.join("new").exists());
}

fn check_routes(h: &Harness, docker_host: &str) {
    let routes = h.routes();
    assert!(
        routes.contains("172.18.0.0/16 via 192.168.64.2 dev dbx0"),
        "{routes}"
    );
    assert!(
        routes.contains("172.19.0.0/16 via 192.168.64.2 dev dbx0"),
        "{routes}"
    );
    let docker = |args: &[&str]| docker_ok(docker_host, args);
    // Two web servers, both on port 80, none published: one on the default bridge, one on
    // a user-defined network (its subnet comes from the machine's routed pool).
    docker(&["network", "create", "demo"]);
    docker(&[
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
    assert_eq!(h.curl(&format!("http://{ip1}/")), "hello from web\n");
    assert_eq!(h.curl(&format!("http://{ip2}/")), "hello from web2\n");
}

impl Harness {
    /// `dig @server NAME TYPE` from the host side: (status, answers).
    fn dig(&self, name: &str, rtype: &str) -> (String, Vec<String>) {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "dig",
                "@192.168.64.1",
                "+tries=1",
            ])
            .args(["+time=2", name, rtype])
            .output()
            .unwrap();
        let out = text(&o.stdout);
        let status = out
            .split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("NO ANSWER")
            .to_owned();
        let short = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "dig",
                "@192.168.64.1",
                "+short",
                "+tries=1",
            ])
            .args(["+time=2", name, rtype])
            .output()
            .unwrap();
        (
            status,
            text(&short.stdout).lines().map(str::to_owned).collect(),
        )
    }

    /// Polls until `dig` gives `want` (answers, or an empty list for NXDOMAIN); returns the
    /// time it took.
    #[track_caller]
    fn await_answer(&self, name: &str, want: &[String]) -> Duration {
        let t = Instant::now();
        loop {
            let (status, answers) = self.dig(name, "A");
            let done = if want.is_empty() {
                status == "NXDOMAIN"
            } else {
                answers == want
            };
            if done {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{name}: {status} {answers:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn check_names(h: &Harness, docker_host: &str) {
    let docker = |args: &[&str]| docker_ok(docker_host, args);
    let machine = format!("{MACHINE}.dev");
    assert_eq!(h.dig(&machine, "A").1, vec!["192.168.64.2".to_owned()]);
    let web1 = docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web1"]);
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
    assert!(appeared < Duration::from_secs(1), "alias took {appeared:?}");
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
    assert!(gone < Duration::from_secs(1), "alias lingered {gone:?}");

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
fn check_guest_report(h: &Harness) {
    let t = Instant::now();
    // The boot script's PATH; sshd's has no /usr/local/sbin.
    let path = "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin";
    // A lease as udhcpc hands it over, applied to a dummy link in a network namespace of its
    // own, so eth0 and the guest's resolv.conf stay untouched.
    let lease = h.ssh(&format!(
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

    let line = h.ssh(&format!(
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

/// The host's docker CLI against the machine, asserting success; trimmed stdout.
#[track_caller]
fn docker_ok(docker_host: &str, args: &[&str]) -> String {
    let o = Command::new("docker")
        .args(["-H", docker_host])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "docker {args:?}: {}", text(&o.stderr));
    text(&o.stdout).trim().to_owned()
}

/// A tar holding a static busybox: a container image without any registry.
fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let tar_path = dir.join("bb.tar");
    let f = std::fs::File::create(&tar_path).unwrap();
    let mut b = tar::Builder::new(f);
    let bb = std::fs::read(which("busybox").unwrap()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(bb.len() as u64);
    h.set_mode(0o755);
    b.append_data(&mut h, "bin/busybox", bb.as_slice()).unwrap();
    let page = b"hello from web\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(page.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "www/index.html", page.as_slice())
        .unwrap();
    for applet in ["sh", "echo", "cat", "httpd", "nslookup", "wget", "sleep"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    b.finish().unwrap();
    tar_path
}

#[test]
fn walking_skeleton_end_to_end() {
    if let Some(why) = missing_prerequisite() {
        if ci() {
            panic!("end-to-end prerequisite missing under CI=true: {why}");
        }
        eprintln!("SKIPPED walking_skeleton_end_to_end: {why}");
        return;
    }
    let h = Harness::new();
    let t0 = Instant::now();

    // The image: built once and cached (outside the namespace: it needs the package archive).
    let o = Command::new(bin())
        .args(["image", "build"])
        .env("DEVBOX_HOME", &h.home)
        .env("DEVBOX_CACHE", &h.cache)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(o.status.success(), "image build failed");
    let version = text(&o.stdout).trim().to_owned();
    let images: serde_json::Value =
        serde_json::from_slice(&h.devbox(&["image", "ls", "--json"]).stdout).unwrap();
    let kernel_version = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["manifest"]["version"] == version.as_str())
        .map(|i| i["manifest"]["kernel_version"].as_str().unwrap().to_owned())
        .expect("built image is listed");
    eprintln!(
        "[e2e] image {version} (kernel {kernel_version}) after {:?}",
        t0.elapsed()
    );

    let shares = Shares::prepare(h._tmp.path());
    let rw = format!("{}:/mnt/rw", shares.rw.display());
    let ro = format!("{}:/mnt/ro:ro", shares.ro.display());
    h.ok(&[
        "create",
        MACHINE,
        "--cpus",
        "2",
        "--memory",
        "2048",
        "--disk-size",
        "4G",
        "--share",
        &rw,
        "--share",
        &ro,
        "--dns-domain",
        "synbioz.dev",
    ]);
    // A subnet that collides with a route the host already has is refused, naming it.
    let st = Command::new("ip")
        .args(["-n", &h.netns, "route", "add", "172.30.0.0/16", "dev", "lo"])
        .status()
        .unwrap();
    assert!(st.success());
    let c = h.devbox(&[
        "create",
        "clash",
        "--no-share",
        "--docker-subnet",
        "172.30.0.1/16",
    ]);
    assert_eq!(c.status.code(), Some(1), "{}", text(&c.stderr));
    for needle in ["172.30.0.0/16", "lo", "--docker-subnet"] {
        assert!(
            text(&c.stderr).contains(needle),
            "{needle}: {}",
            text(&c.stderr)
        );
    }
    assert!(
        h.routes().contains("172.30.0.0/16 dev lo"),
        "foreign route left untouched"
    );
    assert!(!h.home.join("machines/clash").exists());

    // ---- boot 1 ----
    h.ok(&["start", MACHINE, "--timeout", "600"]);
    assert_eq!(h.status(), "Running");
    assert!(h.tap_exists());
    let again = h.devbox(&["start", MACHINE]);
    assert!(
        again.status.success(),
        "start of a running machine is not an error"
    );
    assert!(text(&again.stderr).contains("already running"));

    assert_eq!(h.ssh("uname -r").trim(), kernel_version);
    assert!(
        h.ssh("docker info --format '{{.ServerVersion}}'")
            .trim()
            .len()
            > 1
    );
    let code = h.devbox(&[
        "ssh",
        MACHINE,
        "--",
        "sh -c 'echo out; echo err >&2; exit 7'",
    ]);
    assert_eq!(
        code.status.code(),
        Some(7),
        "remote exit code passed through"
    );
    assert_eq!(text(&code.stdout).trim(), "out");
    assert_eq!(text(&code.stderr).trim(), "err");
    // The guest prints its marker once it sees Docker answer; it polls, so it may come a
    // moment after devbox's own readiness check.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !h.ok(&["logs", MACHINE]).contains("devbox-guest: ready") {
        assert!(
            Instant::now() < deadline,
            "console log has the readiness marker"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The host's docker CLI through the forwarded socket.
    let docker_host = h.docker_host();
    let docker = |args: &[&str]| {
        Command::new("docker")
            .args(["-H", &docker_host])
            .args(args)
            .output()
            .unwrap()
    };
    let info = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        info.status.success(),
        "docker info via DOCKER_HOST: {}",
        text(&info.stderr)
    );
    let tar = busybox_rootfs_tar(h._tmp.path());
    let import = Command::new("docker")
        .args([
            "-H",
            &docker_host,
            "import",
            tar.to_str().unwrap(),
            "bb:e2e",
        ])
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "docker import: {}",
        text(&import.stderr)
    );
    let run = docker(&[
        "run",
        "--rm",
        "bb:e2e",
        "/bin/echo",
        "hello from a container",
    ]);
    assert!(run.status.success(), "docker run: {}", text(&run.stderr));
    assert_eq!(text(&run.stdout).trim(), "hello from a container");

    check_shares(&h, &shares);
    check_routes(&h, &docker_host);
    check_names(&h, &docker_host);
    check_guest_report(&h);

    // Data in /var/lib/docker survives a restart.
    h.ssh("echo kept > /var/lib/docker/devbox-marker && sync");
    let rm = h.devbox(&["rm", MACHINE]);
    assert_eq!(
        rm.status.code(),
        Some(1),
        "rm of a running machine without --force"
    );
    assert!(text(&rm.stderr).contains("--force"));

    // ---- boot 2 ----
    h.ok(&["restart", MACHINE, "--timeout", "600"]);
    assert_eq!(h.ssh("cat /var/lib/docker/devbox-marker").trim(), "kept");
    assert!(!h.ssh("docker images -q bb:e2e").trim().is_empty());
    assert_eq!(
        h.ssh("cat /mnt/rw/hello.txt"),
        "from host\n",
        "shares come back after a restart"
    );

    // A supervisor killed with SIGKILL takes its guest and TAP down and is reported crashed.
    let sup = h.supervisor_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (!h.guest_processes().is_empty() || h.tap_exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        h.guest_processes().is_empty(),
        "guest outlived its supervisor"
    );
    assert!(!h.tap_exists(), "TAP outlived its supervisor");
    assert_eq!(h.status(), "Crashed");
    let ssh = h.devbox(&["ssh", MACHINE, "--", "true"]);
    assert_eq!(ssh.status.code(), Some(1));

    // ---- boot 3: two concurrent starts, one wins ----
    let a = h
        .devbox_cmd(&["start", MACHINE, "--timeout", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let b = h.devbox(&["start", MACHINE, "--timeout", "600"]);
    let a = a.wait_with_output().unwrap();
    assert!(a.status.success(), "first start: {}", text(&a.stderr));
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
    assert_eq!(h.ssh("cat /var/lib/docker/devbox-marker").trim(), "kept");

    // ---- a second machine: the next subnets, and both machines' containers reachable ----
    h.ok(&[
        "create",
        SECOND,
        "--cpus",
        "1",
        "--memory",
        "1024",
        "--disk-size",
        "2G",
    ]);
    let second: serde_json::Value = serde_json::from_str(&h.ok(&["inspect", SECOND])).unwrap();
    assert_eq!(second["spec"]["docker"]["bridge"], "172.20.0.1/16");
    assert_eq!(second["spec"]["network"]["guest_ip"], "192.168.65.2");
    h.ok(&["start", SECOND, "--timeout", "600"]);
    // With no --share, the user's home is shared at the same path, even when that is root's
    // own home in the guest (SSH keeps working: its keys live outside home directories).
    let home = std::fs::canonicalize(std::env::var("HOME").unwrap()).unwrap();
    let mounts = h.ok(&["ssh", SECOND, "--", "mount"]);
    assert!(
        mounts.contains(&format!(" on {} type nfs", home.display())),
        "{mounts}"
    );
    let routes = h.routes();
    assert!(
        routes.contains("172.18.0.0/16 via 192.168.64.2 dev dbx0"),
        "{routes}"
    );
    assert!(
        routes.contains("172.20.0.0/16 via 192.168.65.2 dev dbx1"),
        "{routes}"
    );
    let second_host = format!(
        "unix://{}",
        h.home
            .join("machines")
            .join(SECOND)
            .join("docker.sock")
            .display()
    );
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
    assert_eq!(h.curl(&format!("http://{ip1}/")), "hello from web\n");
    assert_eq!(h.curl(&format!("http://{ip2}/")), "hello from web\n");
    h.ok(&["stop", SECOND]);
    assert!(!h.routes().contains("172.20.0.0/16"), "{}", h.routes());
    h.ok(&["rm", SECOND]);

    // ---- stop and remove: nothing left behind ----
    h.ok(&["stop", MACHINE]);
    assert_eq!(h.status(), "Stopped");
    assert!(
        !h.routes().contains("172.18.0.0/16"),
        "stop removes the routes: {}",
        h.routes()
    );
    assert!(h.guest_processes().is_empty());
    assert!(!h.tap_exists());
    for f in ["docker.sock", "control.sock", "supervisor.pid", "qmp.sock"] {
        assert!(!h.machine_dir().join(f).exists(), "{f} left after stop");
    }
    let stop_again = h.devbox(&["stop", MACHINE]);
    assert!(stop_again.status.success());
    h.ok(&["rm", MACHINE]);
    assert!(!h.machine_dir().exists());
    eprintln!("[e2e] walking skeleton passed in {:?}", t0.elapsed());
}
