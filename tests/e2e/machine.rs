//! A machine of the run, as the checks see it: its name, the harness it lives in, and the
//! commands a check runs against it (`ssh`, the host's `docker` through its forwarded socket,
//! its files on the host).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::harness::{Harness, docker, docker_ok};
use crate::support::guest::{text, which};

pub const MIB: u64 = 1 << 20;

/// The image every machine of the run boots.
pub struct Image {
    pub kernel_version: String,
    /// The `docker.io` package's version (`26.1.5+dfsg1-9+deb13u1+b1`), from the manifest.
    pub docker_package: String,
}

pub struct Machine {
    pub name: String,
    pub h: &'static Harness,
    pub image: &'static Image,
    docker_host: OnceLock<String>,
}

impl Machine {
    pub fn new(name: &str, h: &'static Harness, image: &'static Image) -> Machine {
        Machine {
            name: name.to_owned(),
            h,
            image,
            docker_host: OnceLock::new(),
        }
    }

    /// Another machine of the same run (created by the check that uses it).
    pub fn sibling(&self, name: &str) -> Machine {
        Machine::new(name, self.h, self.image)
    }

    /// `devbox ARGS`, asserting success (with the logs on failure); stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        self.h.ok(args)
    }

    /// `devbox ARGS`, asserting success (with the logs on failure).
    #[track_caller]
    pub fn ok_output(&self, args: &[&str]) -> Output {
        self.h.ok_output(args)
    }

    /// `devbox ARGS`, whatever its outcome.
    pub fn devbox(&self, args: &[&str]) -> Output {
        self.h.devbox(args)
    }

    /// `devbox ssh MACHINE -- CMD`, asserting success; stdout.
    #[track_caller]
    pub fn ssh(&self, cmd: &str) -> String {
        self.ok(&["ssh", &self.name, "--", cmd])
    }

    /// `devbox ssh MACHINE -- CMD`, whatever its outcome.
    pub fn ssh_output(&self, cmd: &str) -> Output {
        self.devbox(&["ssh", &self.name, "--", cmd])
    }

    pub fn dir(&self) -> PathBuf {
        self.h.home.join("machines").join(&self.name)
    }

    pub fn status(&self) -> String {
        text(&self.devbox(&["status", &self.name]).stdout)
            .trim()
            .to_owned()
    }

    /// The machine's supervisor log, all of it.
    pub fn supervisor_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("supervisor.log")).unwrap_or_default()
    }

    pub fn supervisor_pid(&self) -> i32 {
        std::fs::read_to_string(self.dir().join("supervisor.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Guest processes (QEMU) of this machine still alive anywhere on the host.
    pub fn guest_processes(&self) -> Vec<String> {
        // Match on this run's machine directory, which is in QEMU's arguments, so that
        // another run of this test on the same host is not counted.
        let pattern = format!("{}/serial.log", self.dir().display());
        let o = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        text(&o.stdout).lines().map(str::to_owned).collect()
    }

    /// `DOCKER_HOST` as `devbox env` prints it.
    pub fn docker_host(&self) -> String {
        self.docker_host
            .get_or_init(|| {
                let env: serde_json::Value =
                    serde_json::from_str(&self.ok(&["env", &self.name, "--json"]))
                        .expect("env --json prints JSON");
                env["variables"]["DOCKER_HOST"]
                    .as_str()
                    .expect("env prints DOCKER_HOST")
                    .to_owned()
            })
            .clone()
    }

    /// The host's docker CLI through the machine's forwarded socket, asserting success;
    /// trimmed stdout.
    #[track_caller]
    pub fn docker_ok(&self, args: &[&str]) -> String {
        docker_ok(&self.docker_host(), args)
    }

    /// The host's docker CLI through the machine's forwarded socket.
    pub fn docker(&self, args: &[&str]) -> Output {
        docker(&self.docker_host(), args)
    }

    /// Makes sure the machine has the `bb:e2e` image (a static busybox, see
    /// [`busybox_rootfs_tar`]), importing it through the host's docker CLI if not.
    pub fn busybox_image(&self) {
        if !self.docker_ok(&["images", "-q", "bb:e2e"]).is_empty() {
            return;
        }
        let tar = busybox_rootfs_tar(self.h.tmp());
        self.docker_ok(&["import", tar.to_str().unwrap(), "bb:e2e"]);
    }

    /// Whether the console of the current boot has this whole line.
    pub fn serial_has(&self, line: &str) -> bool {
        std::fs::read_to_string(self.dir().join("serial.log"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim_end() == line)
    }

    /// The host file's allocated bytes (st_blocks * 512).
    pub fn allocated(&self) -> u64 {
        std::fs::metadata(self.dir().join("disk.raw"))
            .unwrap()
            .blocks()
            * 512
    }

    /// Polls the host file until its allocation is at most `target`; returns the time it
    /// took, or None after `limit`.
    pub fn await_allocated_at_most(&self, target: u64, limit: Duration) -> Option<Duration> {
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
    pub fn guest_df(&self) -> (u64, u64, u64) {
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

    /// Whether the guest holds its data disk reserve (devbox-boot's `.devbox-reserve`).
    pub fn reserve_held(&self) -> bool {
        self.ssh("if [ -e /mnt/data/.devbox-reserve ]; then echo held; else echo released; fi")
            .trim()
            == "held"
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// A tar holding a static busybox and a web page: a container image without any registry.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
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
