//! Tier 3: the data disk end to end, on one real guest booted twice inside a network namespace
//! this test creates: discard reaching the host file, a full disk (containers keep serving,
//! SSH works, the guest's reserve gives dockerd room, `status` warns), and a resize.
//!
//! Prerequisites missing: under `CI=true` that is a failure; elsewhere the test prints why it
//! did not run. Every machine command runs under `ip netns exec`, so the TAP device, its
//! address and all guest traffic stay in the namespace.

mod support;
use support::ci;
use support::guest::{bin, missing_prerequisite, text, which};

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MACHINE: &str = "e2edisk";
const MIB: u64 = 1 << 20;

struct Harness {
    netns: String,
    home: PathBuf,
    cache: PathBuf,
    tmp: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.devbox(&["stop", "--force", MACHINE]);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

impl Harness {
    fn new() -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let netns = format!("devbox-e2edisk-{}", std::process::id());
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
        let cache = std::env::var_os("DEVBOX_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/devbox")
            });
        Harness {
            netns,
            home: tmp.path().join("home"),
            cache,
            tmp,
        }
    }

    fn devbox(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(bin())
            .args(args)
            .env("DEVBOX_HOME", &self.home)
            .env("DEVBOX_CACHE", &self.cache)
            .env("DEVBOX_REGISTRY", self.tmp.path().join("registry"))
            .env("NO_COLOR", "1")
            // No upstream is needed: nothing here resolves names outside the machine.
            .env("DEVBOX_DNS_UPSTREAMS", "127.0.0.1:5353")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Output {
        let t = Instant::now();
        let o = self.devbox(args);
        eprintln!(
            "[e2e-disk] devbox {} ({:.1} s)",
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
        o
    }

    #[track_caller]
    fn ssh(&self, cmd: &str) -> String {
        text(&self.ok(&["ssh", MACHINE, "--", cmd]).stdout)
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

    /// The host file's allocated bytes (st_blocks * 512).
    fn allocated(&self) -> u64 {
        std::fs::metadata(self.machine_dir().join("disk.raw"))
            .unwrap()
            .blocks()
            * 512
    }

    /// Polls the host file until its allocation is at most `target`; returns the time it
    /// took, or None after `limit`.
    fn await_allocated_at_most(&self, target: u64, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.allocated() <= target {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Guest filesystem: (size, used, free to root) in bytes.
    /// "Free" leaves out the clusters ext4 keeps for its own metadata, which statfs counts
    /// as free but no write can use.
    fn guest_df(&self) -> (u64, u64, u64) {
        let out = self
            .ssh("stat -f -c '%b %f %S' /var/lib/docker; cat /sys/fs/ext4/vd*/reserved_clusters");
        let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let (blocks, free, bs, resv) = (v[0], v[1], v[2], v[3]);
        (
            blocks * bs,
            (blocks - free) * bs,
            free.saturating_sub(resv) * bs,
        )
    }

    fn reserve_held(&self) -> bool {
        self.ssh("if [ -e /mnt/data/.devbox-reserve ]; then echo held; else echo released; fi")
            .trim()
            == "held"
    }

    fn curl(&self, url: &str) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "curl",
                "-sS",
                "--max-time",
                "20",
            ])
            .arg(url)
            .output()
            .unwrap()
    }

    fn docker(&self, docker_host: &str, args: &[&str]) -> Output {
        Command::new("docker")
            .args(["-H", docker_host])
            .args(args)
            .output()
            .unwrap()
    }

    fn docker_host(&self) -> String {
        let env = text(&self.ok(&["env", MACHINE]).stdout);
        let line = env
            .lines()
            .find(|l| l.starts_with("export DOCKER_HOST="))
            .expect("env prints DOCKER_HOST");
        line.trim_start_matches("export DOCKER_HOST=")
            .trim_matches('"')
            .to_owned()
    }
}

/// A tar holding a static busybox and a page: a container image without any registry.
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
    for applet in ["sh", "echo", "cat", "httpd"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    b.finish().unwrap();
    tar_path
}

/// Deleting data in the guest gives the space back in the host file (online discard).
fn check_discard(h: &Harness) {
    let discard_max = h.ssh(
        "for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = devbox-data ] && cat $d/queue/discard_max_bytes; done",
    );
    eprintln!(
        "[e2e-disk] guest data disk discard_max_bytes = {}",
        discard_max.trim()
    );
    assert_ne!(discard_max.trim(), "0", "the data disk offers discard");

    let before = h.allocated();
    let t = Instant::now();
    h.ssh("dd if=/dev/urandom of=/var/lib/docker/x bs=1M count=300 2>/dev/null && sync");
    let write_time = t.elapsed();
    let after_write = h.allocated();
    let written = after_write.saturating_sub(before);
    assert!(
        written >= 290 * MIB,
        "300 MiB written in the guest allocated only {:.1} MiB on the host",
        mib(written)
    );
    let t = Instant::now();
    h.ssh("rm /var/lib/docker/x && sync");
    let rm_time = t.elapsed();
    let target = after_write - written * 9 / 10;
    let reclaimed = h.await_allocated_at_most(target, Duration::from_secs(60));
    let after_rm = h.allocated();
    eprintln!(
        "[e2e-disk] FIGURES discard: host allocated {:.1} MiB before, {:.1} MiB after writing 300 MiB \
         ({:.1} MiB allocated, dd+sync {:.1} s), {:.1} MiB after rm+sync ({:.1} MiB freed = {:.0} %); \
         rm+sync took {:.2} s, host file down by 90 % {:?} after it returned",
        mib(before),
        mib(after_write),
        mib(written),
        write_time.as_secs_f64(),
        mib(after_rm),
        mib(after_write - after_rm),
        (after_write - after_rm) as f64 * 100.0 / written as f64,
        rm_time.as_secs_f64(),
        reclaimed
    );
    assert!(
        reclaimed.is_some(),
        "the host file kept {:.1} of {:.1} MiB after the guest deleted them",
        mib(after_rm - before),
        mib(written)
    );
}

/// A full data disk: the container keeps serving, SSH works, the reserve gives dockerd room,
/// `status` warns; after removing the filler the space comes back in the guest and the host.
fn check_full_disk(h: &Harness, docker_host: &str) {
    let tar = busybox_rootfs_tar(h.tmp.path());
    let o = h.docker(docker_host, &["import", tar.to_str().unwrap(), "bb:e2e"]);
    assert!(o.status.success(), "docker import: {}", text(&o.stderr));
    let o = h.docker(
        docker_host,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "bb:e2e",
            "/bin/httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ],
    );
    assert!(o.status.success(), "docker run: {}", text(&o.stderr));
    let o = h.docker(
        docker_host,
        &["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"],
    );
    let ip = text(&o.stdout).trim().to_owned();
    let url = format!("http://{ip}/");
    let c = h.curl(&url);
    assert_eq!(text(&c.stdout), "hello from web\n", "{}", text(&c.stderr));
    assert!(h.reserve_held(), "the guest made its reserve at boot");

    // Fill with non-zero data (a 16 MiB random chunk repeated), so the host file really
    // grows: QEMU's detect-zeroes=unmap would turn zeros into holes.
    let before_fill = h.allocated();
    let t = Instant::now();
    let fill = h.devbox(&[
        "ssh",
        MACHINE,
        "--",
        "dd if=/dev/urandom of=/tmp/chunk bs=1M count=16 2>/dev/null; \
         while cat /tmp/chunk; do :; done >/var/lib/docker/filler; sync; rm /tmp/chunk",
    ]);
    let fill_time = t.elapsed();
    assert!(
        text(&fill.stderr).contains("No space left on device"),
        "the filler stops at ENOSPC: {}",
        text(&fill.stderr)
    );
    let (size, used, free) = h.guest_df();
    let after_fill = h.allocated();
    eprintln!(
        "[e2e-disk] FIGURES fill: {:.1} s; guest {:.1} MiB used of {:.1} MiB, {:.1} MiB free; \
         host allocated {:.1} -> {:.1} MiB",
        fill_time.as_secs_f64(),
        mib(used),
        mib(size),
        mib(free),
        mib(before_fill),
        mib(after_fill)
    );

    // At ENOSPC, before the guest releases its reserve: what still works.
    let t = Instant::now();
    let early_run = h.docker(docker_host, &["run", "--rm", "bb:e2e", "/bin/echo", "ok"]);
    eprintln!(
        "[e2e-disk] FIGURES at ENOSPC, reserve {}: `docker run` {} ({:.1} s): {}",
        if h.reserve_held() {
            "held"
        } else {
            "already released"
        },
        if early_run.status.success() {
            "succeeded"
        } else {
            "failed"
        },
        t.elapsed().as_secs_f64(),
        text(&early_run.stderr).trim()
    );
    let c = h.curl(&url);
    assert_eq!(
        text(&c.stdout),
        "hello from web\n",
        "the container serves on a full disk: {}",
        text(&c.stderr)
    );
    assert_eq!(
        h.ssh("echo ssh-ok").trim(),
        "ssh-ok",
        "devbox ssh on a full disk"
    );
    assert!(!h.ssh("pidof dockerd").trim().is_empty(), "dockerd runs");
    let ps = h.docker(docker_host, &["ps", "--format", "{{.Names}}"]);
    assert_eq!(text(&ps.stdout).trim(), "web", "{}", text(&ps.stderr));

    // The guest releases its reserve once the disk has stayed full for two checks.
    let t = Instant::now();
    while h.reserve_held() {
        assert!(t.elapsed() < Duration::from_secs(30), "reserve still held");
        std::thread::sleep(Duration::from_secs(1));
    }
    let (_, _, free) = h.guest_df();
    eprintln!(
        "[e2e-disk] FIGURES reserve released {:.1} s after the fill ended; {:.1} MiB free",
        t.elapsed().as_secs_f64(),
        mib(free)
    );
    assert!(free >= 60 * MIB, "the reserve's room is free: {free}");
    let run = h.docker(docker_host, &["run", "--rm", "bb:e2e", "/bin/echo", "ok"]);
    assert!(
        run.status.success() && text(&run.stdout).trim() == "ok",
        "dockerd creates a container on the full disk once the reserve is released: {}",
        text(&run.stderr)
    );
    assert!(
        h.serial_has("devbox-guest: data disk full: released the reserve"),
        "console marker"
    );

    // The supervisor measures every 30 s; `status` and `ls` read its figure. Wait for a
    // measurement of the full disk (one taken during the fill may already warn).
    let t = Instant::now();
    loop {
        let st = h.devbox(&["status", MACHINE]);
        let warned_pct = text(&st.stderr)
            .split("% full")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|p| p.parse::<u8>().ok());
        if warned_pct.is_some_and(|p| p >= 95) {
            eprintln!(
                "[e2e-disk] status warned {:.1} s after the reserve was released: {}",
                t.elapsed().as_secs_f64(),
                text(&st.stderr).trim()
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(45),
            "status never warned: {}",
            text(&st.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let ls = h.ok(&["ls"]);
    assert!(text(&ls.stderr).contains("% full"), "{}", text(&ls.stderr));
    let sup = std::fs::read_to_string(h.machine_dir().join("supervisor.log")).unwrap();
    assert!(
        sup.contains("warning: machine e2edisk: the guest filesystem"),
        "{sup}"
    );
    let usage = text(&h.ok(&["disk", "usage", MACHINE]).stdout);
    eprintln!("[e2e-disk] disk usage on a full disk:\n{usage}");
    assert!(usage.contains("guest reserve: released"), "{usage}");
    assert!(usage.contains("Images"), "docker's view: {usage}");

    // Remove the filler: the space is back in the guest, and in the host file.
    let full_alloc = h.allocated();
    h.ssh("rm /var/lib/docker/filler && sync");
    let (_, used, free) = h.guest_df();
    assert!(
        used < size / 4,
        "guest space is back: {used} used of {size}"
    );
    let reclaimed = h.await_allocated_at_most(before_fill + 64 * MIB, Duration::from_secs(60));
    eprintln!(
        "[e2e-disk] FIGURES filler removed: guest {:.1} MiB used, {:.1} MiB free; host allocated \
         {:.1} -> {:.1} MiB, back under before-fill + 64 MiB after {:?}",
        mib(used),
        mib(free),
        mib(full_alloc),
        mib(h.allocated()),
        reclaimed
    );
    assert!(
        reclaimed.is_some(),
        "the host file gave the filler's space back"
    );
    let u: serde_json::Value =
        serde_json::from_slice(&h.ok(&["disk", "usage", MACHINE, "--json"]).stdout).unwrap();
    assert_eq!(u["reclaim"], "available");
    assert!(u["guest"]["used_pct"].as_u64().unwrap() < 25, "{u}");
}

impl Harness {
    fn serial_has(&self, line: &str) -> bool {
        std::fs::read_to_string(self.machine_dir().join("serial.log"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim_end() == line)
    }
}

#[test]
fn data_disk_end_to_end() {
    if let Some(why) = missing_prerequisite() {
        if ci() {
            panic!("end-to-end prerequisite missing under CI=true: {why}");
        }
        eprintln!("SKIPPED data_disk_end_to_end: {why}");
        return;
    }
    let h = Harness::new();
    let t0 = Instant::now();
    let o = Command::new(bin())
        .args(["image", "build"])
        .env("DEVBOX_HOME", &h.home)
        .env("DEVBOX_CACHE", &h.cache)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(o.status.success(), "image build failed");
    eprintln!("[e2e-disk] image ready after {:?}", t0.elapsed());

    h.ok(&[
        "create",
        MACHINE,
        "--cpus",
        "2",
        "--memory",
        "1024",
        "--disk-size",
        "2G",
        "--no-share",
    ]);

    // ---- boot 1 ----
    h.ok(&["start", MACHINE, "--timeout", "600"]);
    check_discard(&h);
    let docker_host = h.docker_host();
    check_full_disk(&h, &docker_host);

    // ---- resize 2G -> 4G while stopped ----
    h.ssh("echo kept > /var/lib/docker/devbox-marker && sync");
    let (size_before, _, _) = h.guest_df();
    let refused = h.devbox(&["disk", "resize", MACHINE, "4G"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "resize of a running machine"
    );
    h.ok(&["stop", MACHINE]);
    let o = h.ok(&["disk", "resize", MACHINE, "4G"]);
    assert!(
        text(&o.stderr).contains("from 2G to 4G"),
        "{}",
        text(&o.stderr)
    );

    // ---- boot 2 ----
    h.ok(&["start", MACHINE, "--timeout", "600"]);
    let (size_after, _, _) = h.guest_df();
    eprintln!(
        "[e2e-disk] FIGURES resize: guest filesystem {:.1} MiB -> {:.1} MiB",
        mib(size_before),
        mib(size_after)
    );
    assert!(
        size_after > size_before + (1900 * MIB),
        "the guest grew its filesystem: {size_before} -> {size_after}"
    );
    assert_eq!(h.ssh("cat /var/lib/docker/devbox-marker").trim(), "kept");
    assert!(h.reserve_held(), "the reserve is taken back at boot");
    assert!(!h.ssh("docker images -q bb:e2e").trim().is_empty());
    h.ok(&["stop", MACHINE]);
    h.ok(&["rm", MACHINE]);
    eprintln!("[e2e-disk] passed in {:?}", t0.elapsed());
}
