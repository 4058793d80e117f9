//! Ordinary users after one `sudo devbox system install` (issue #15): users this check
//! creates (`useradd`, removed at the end) do the whole daily cycle against a real guest
//! (create, start, `docker run`, ssh, stop, rm) with no root and no capability of their own.
//!
//! Runs on one thread inside a private mount namespace and a network namespace this check
//! creates (`unshare(CLONE_NEWNS | CLONE_NEWNET)`; every process it starts inherits both), so
//! the real host is untouched: tmpfs over `/usr/local/bin` (with a copy of the docker CLI),
//! `/var/lib`, `/etc/systemd/system` and `/run/systemd` (so that no host service manager is
//! asked to load a unit), and a `/dev/net/tun` node of its own. The machine is A's own (its
//! files, its lease, its supervisor are A's), so it is not the run's shared machine: one boot.
//!
//! - before install: `create` as A fails naming `sudo devbox system install`, nothing made;
//! - `system install` (as root through sudo's variables): the binary with exactly the two
//!   capabilities, the registry, the boot job for A; `/dev/net/tun` 0600 (this host's mode)
//!   is reported with its fix, and A's `start` is refused naming it, with nothing started:
//!   CAP_NET_ADMIN does not open a file a mode closes, and devbox holds no capability that
//!   would (see the README, Privileges). With the node 0666, as udev makes it on standard
//!   distributions (and as the fix does), a second install changes nothing and says it is open;
//! - A with a binary that has no capabilities: `start` names the installed one;
//! - A: `create` (lease owned by A, private files), `start` (supervisor and QEMU as A, no
//!   effective capability, only the two permitted; its outbound NAT in devbox's nftables
//!   table, made by `nft` with CAP_NET_ADMIN handed through the door), `ssh`, the host's
//!   `docker` CLI through
//!   `devbox env` (`docker run` of an imported image), a file the guest writes in the default
//!   share (A's home) is A's; every file under A's `~/.devbox` is closed to others;
//! - B against A's machine: start, stop, ssh, status, the disk, docker.sock and control.sock
//!   are refused, and nothing changes; B's crafted `machine.yaml` (A's index) and `routes.json`
//!   (A's link, a foreign link) are refused by the privileged side;
//! - `sudo devbox …` acts as A: files A's, the supervisor A's with the two capabilities;
//! - A: `stop` (the TAP and the NAT gone), `rm` (lease gone); `system uninstall` leaves
//!   nothing.
//!
//! Every command of A and B runs through `setpriv` as that user with empty capability sets
//! and a bounding set of the two capabilities only: nothing after the install could use root
//! or any other capability, so the cycle passing proves none was needed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use crate::harness::{bounded, count_boot};
use crate::machine::busybox_rootfs_tar;
use crate::support::bin_for_any_user as bin;
use crate::support::guest::{text, which};
use crate::support::trials::{Missing, programs};

const INSTALLED: &str = "/usr/local/bin/devbox";

/// The end-to-end prerequisites and the user tools.
pub fn prerequisites() -> Result<(), Missing> {
    crate::e2e_prerequisites()?;
    programs(&[
        ("setpriv", "util-linux"),
        ("useradd", "passwd"),
        ("userdel", "passwd"),
        ("getcap", "libcap2-bin"),
    ])
}

/// A user this check created; removed (with their home) when dropped.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl TestUser {
    fn add(tag: &str, base: &Path) -> TestUser {
        let name = format!("dbxt{}{tag}", std::process::id() % 100_000);
        let home = base.join(&name);
        let st = Command::new("useradd")
            .args(["-M", "-U", "-s", "/bin/sh", "-d"])
            .arg(&home)
            .arg(&name)
            .status()
            .unwrap();
        assert!(st.success(), "useradd {name}");
        let user = nix::unistd::User::from_name(&name).unwrap().unwrap();
        let u = TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home,
        };
        std::fs::create_dir(&u.home).unwrap();
        std::fs::set_permissions(&u.home, std::fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(&u.home, Some(user.uid), Some(user.gid)).unwrap();
        u
    }

    /// `program ARGS` as this user, bounded: setpriv switches the uid, which empties every
    /// capability set, and leaves only the two capabilities in the bounding set (a
    /// file-capability binary gets them at exec; nothing can get any other); `env` is
    /// added to the user's login environment.
    fn run(&self, program: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
        let mut c = bounded("setpriv");
        c.args([
            "--reuid",
            &self.uid.to_string(),
            "--regid",
            &self.gid.to_string(),
            "--init-groups",
            "--bounding-set=-all,+net_admin,+net_bind_service",
            "--reset-env",
            "--",
            "env",
        ]);
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        c.arg(program).args(args).stdin(Stdio::null());
        let t = Instant::now();
        let o = c.output().unwrap();
        eprintln!(
            "[users] {} {} {} ({:.1} s)",
            self.name,
            program.display(),
            args.join(" "),
            t.elapsed().as_secs_f64()
        );
        o
    }

    fn devbox_dir(&self) -> PathBuf {
        self.home.join(".devbox")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["-f", &self.name]).status();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// The variables sudo sets for `user`.
fn sudo_env(user: &TestUser) -> Vec<(&'static str, String)> {
    vec![
        ("SUDO_USER", user.name.clone()),
        ("SUDO_UID", user.uid.to_string()),
        ("SUDO_GID", user.gid.to_string()),
    ]
}

/// `devbox ARGS` as root with `env`.
fn as_root(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = bounded(bin().to_str().unwrap());
    c.args(args).stdin(Stdio::null()).env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[track_caller]
fn ok(what: &str, o: &Output) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

#[track_caller]
fn refused(what: &str, o: &Output, needle: &str) {
    assert!(
        !o.status.success(),
        "{what} succeeded:\n{}",
        text(&o.stdout)
    );
    let err = text(&o.stderr);
    assert!(err.contains(needle), "{what}: wanted {needle:?} in:\n{err}");
}

/// `Uid:` (real) and the `CapPrm:`/`CapEff:` sets of a process.
fn creds(pid: u32) -> (u32, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .to_owned()
    };
    let uid = field("Uid:")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let hex = |k| u64::from_str_radix(&field(k), 16).unwrap();
    (uid, hex("CapPrm:"), hex("CapEff:"))
}

/// CAP_NET_BIND_SERVICE (10) and CAP_NET_ADMIN (12).
const NET_CAPS: u64 = (1 << 10) | (1 << 12);

/// devbox's nftables table in this check's network namespace, as `nft` lists it; `None`
/// when there is none.
fn devbox_nat() -> Option<String> {
    let o = Command::new("nft")
        .args(["list", "table", "inet", "devbox"])
        .output()
        .expect("nft");
    o.status.success().then(|| text(&o.stdout))
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn ip(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(o.status.success(), "ip {args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

fn tmpfs(dir: &Path, opts: &str) {
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(opts),
    )
    .unwrap_or_else(|e| panic!("tmpfs on {}: {e}", dir.display()));
}

/// Puts a `/dev/net/tun` node of mode `mode` over the current one (each call stacks a new
/// mount, in this check's mount namespace only).
fn tun_node(scratch: &Path, mode: u32) {
    let dir = scratch.join(format!("tun-{mode:o}"));
    std::fs::create_dir(&dir).unwrap();
    tmpfs(&dir, "mode=0755");
    let node = dir.join("tun");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(10, 200),
    )
    .unwrap();
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(mode)).unwrap();
    let none: Option<&str> = None;
    mount(Some(&node), "/dev/net/tun", none, MsFlags::MS_BIND, none).expect("bind tun");
}

/// The private view of the host this check works in (see the module header), with
/// `/dev/net/tun` as this CI host has it: 0600.
fn private_host(scratch: &Path, docker: &[u8]) {
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET).expect("unshare");
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).expect("private /");
    for dir in ["/usr/local/bin", "/var/lib", "/etc/systemd/system"] {
        tmpfs(Path::new(dir), "mode=0755");
    }
    if Path::new("/run/systemd").is_dir() {
        tmpfs(Path::new("/run/systemd"), "mode=0755");
    }
    let docker_copy = Path::new("/usr/local/bin/docker");
    std::fs::write(docker_copy, docker).unwrap();
    std::fs::set_permissions(docker_copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    tun_node(scratch, 0o600);
    ip(&["link", "set", "lo", "up"]);
}

/// Stops A's machine and its supervisor if a check failed half-way.
struct MachineGuard<'u> {
    user: &'u TestUser,
    env: Vec<(&'static str, String)>,
}

impl Drop for MachineGuard<'_> {
    fn drop(&mut self) {
        let _ = self
            .user
            .run(Path::new(INSTALLED), &["stop", "--force", "m"], &self.env);
        let pid = self.user.devbox_dir().join("machines/m/supervisor.pid");
        if let Some(pid) = std::fs::read_to_string(pid)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub fn ordinary_users_after_one_system_install() {
    // The image, outside the namespaces (the build reads the package archive), in the
    // run's cache, which the users read.
    crate::image();
    let docker = std::fs::read(which("docker").unwrap()).unwrap();
    // Homes must be reachable by their users: not inside a 0700 temp directory.
    let scratch = tempfile::Builder::new()
        .prefix("devbox-users-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = users_cache(&crate::harness().cache, scratch.path());
    let bb = busybox_rootfs_tar(scratch.path());
    std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o644)).unwrap();
    let a = TestUser::add("a", scratch.path());
    let b = TestUser::add("b", scratch.path());

    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            private_host(scratch.path(), &docker);
            run_as_users(&a, &b, &cache, scratch.path(), &bb);
        });
        if let Err(panic) = worker.join() {
            if let Ok(log) =
                std::fs::read_to_string(a.devbox_dir().join("machines/m/supervisor.log"))
            {
                let lines: Vec<&str> = log.lines().collect();
                eprintln!(
                    "---- last lines of A's supervisor.log ----\n{}",
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
            std::panic::resume_unwind(panic);
        }
    });
}

/// The run's images, copied where the test's users can read them: the run's cache may sit
/// under a directory only root can enter (root's home, the default; a clone made in
/// `mktemp -d`). Only the images: `create` needs nothing else from the cache.
fn users_cache(from: &Path, scratch: &Path) -> std::path::PathBuf {
    let to = scratch.join("cache");
    let images = to.join("images");
    for dir in [&to, &images] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for image in std::fs::read_dir(from.join("images")).unwrap() {
        let image = image.unwrap();
        if !image.file_type().unwrap().is_dir() {
            continue;
        }
        let dst = images.join(image.file_name());
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
        for file in std::fs::read_dir(image.path()).unwrap() {
            let file = file.unwrap();
            if file.file_type().unwrap().is_file() {
                let target = dst.join(file.file_name());
                std::fs::copy(file.path(), &target).unwrap();
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
    }
    to
}

fn run_as_users(a: &TestUser, b: &TestUser, cache: &Path, scratch: &Path, bb: &Path) {
    let env = vec![
        ("DEVBOX_CACHE", cache.display().to_string()),
        ("NO_COLOR", "1".to_owned()),
        ("DEVBOX_DNS_UPSTREAMS", "127.0.0.1:5353".to_owned()),
    ];
    let installed = Path::new(INSTALLED);

    // Before `system install`: the error names it, and nothing is made.
    let o = a.run(&bin(), &["create", "m", "--driver", "qemu"], &env);
    refused("create before install", &o, "sudo devbox system install");
    assert!(!a.devbox_dir().join("machines/m").exists());

    // Install, as `sudo devbox system install` from A.
    let o = as_root(&["system", "install"], &sudo_env(a));
    let out = text(&o.stderr);
    ok("system install", &o);
    let caps = text(
        &Command::new("getcap")
            .arg(INSTALLED)
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        caps.contains("cap_net_bind_service,cap_net_admin=ep"),
        "getcap: {caps}"
    );
    assert_eq!(mode(installed), 0o755);
    assert_eq!(std::fs::metadata(installed).unwrap().uid(), 0);
    assert_eq!(mode(Path::new("/var/lib/devbox/leases")), 0o1777);
    assert_eq!(mode(Path::new("/var/lib/devbox/host.lock")), 0o644);
    let service = std::fs::read_to_string("/etc/systemd/system/devbox-routes.service").unwrap();
    assert!(service.contains(&format!("User={}\n", a.uid)), "{service}");
    assert!(
        service.contains(&format!("DEVBOX_HOME={}", a.devbox_dir().display())),
        "{service}"
    );
    assert!(
        out.contains("/dev/net/tun is mode 0600: users cannot open it")
            && out.contains("MODE=\"0666\""),
        "the install names the closed /dev/net/tun and its fix:\n{out}"
    );

    ok(
        "create",
        &a.run(
            installed,
            &[
                "create",
                "m",
                "--driver",
                "qemu",
                "--cpus",
                "1",
                "--memory",
                "1024",
                "--disk-size",
                "4G",
            ],
            &env,
        ),
    );
    let machine = a.devbox_dir().join("machines/m");
    // /dev/net/tun closed to users: refused before anything starts, naming the fix.
    let o = a.run(installed, &["start", "m"], &env);
    refused(
        "start with /dev/net/tun 0600",
        &o,
        "needs /dev/net/tun, which you cannot open",
    );
    refused("its hint", &o, "sudo chmod 0666 /dev/net/tun");
    assert!(!machine.join("supervisor.pid").exists(), "nothing started");
    assert!(!ip(&["-o", "link", "show"]).contains("dbx"), "no TAP made");
    // The fix (the udev rule's mode, as standard distributions ship it).
    tun_node(scratch, 0o666);
    let again = as_root(&["system", "install"], &sudo_env(a));
    ok("system install, again", &again);
    assert!(
        !text(&again.stderr).lines().any(|l| l.starts_with("Done:")),
        "a second install changes nothing:\n{}",
        text(&again.stderr)
    );
    assert!(
        text(&again.stderr).contains("/dev/net/tun is open to users (0666)"),
        "{}",
        text(&again.stderr)
    );

    // A binary without the capabilities (a cargo build) says to use the installed one.
    let o = a.run(&bin(), &["start", "m"], &env);
    refused(
        "start with a binary without capabilities",
        &o,
        "has no capabilities",
    );
    refused(
        "the hint",
        &o,
        "use the installed devbox, /usr/local/bin/devbox",
    );

    for (p, want) in [
        (a.devbox_dir(), 0o700),
        (machine.clone(), 0o700),
        (machine.join("disk.raw"), 0o600),
        (machine.join("id_ed25519"), 0o600),
        (machine.join("ssh_host_ed25519_key"), 0o600),
        (machine.join("machine.yaml"), 0o600),
    ] {
        assert_eq!(mode(&p), want, "{}", p.display());
        assert_eq!(
            std::fs::metadata(&p).unwrap().uid(),
            a.uid,
            "{}",
            p.display()
        );
    }
    let spec = devbox::machine::Store::new(Some(a.devbox_dir()), None)
        .machine("m")
        .unwrap()
        .load_spec()
        .unwrap();
    let index = spec.network.index;
    let lease = PathBuf::from(format!("/var/lib/devbox/leases/{index}"));
    assert_eq!(std::fs::metadata(&lease).unwrap().uid(), a.uid, "A's lease");

    let _guard = MachineGuard {
        user: a,
        env: env.clone(),
    };
    ok(
        "start",
        &a.run(installed, &["start", "m", "--timeout", "600"], &env),
    );
    count_boot();
    let sup: u32 = std::fs::read_to_string(machine.join("supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (uid, prm, eff) = creds(sup);
    assert_eq!(uid, a.uid, "the supervisor runs as A");
    assert_eq!(
        prm, NET_CAPS,
        "the supervisor keeps exactly the two capabilities"
    );
    assert_eq!(eff, 0, "and none of them effective outside the door");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(machine.join("state.json")).unwrap()).unwrap();
    let qemu = state["vm_pid"].as_u64().expect("a guest pid") as u32;
    let (uid, prm, _) = creds(qemu);
    assert_eq!(
        (uid, prm),
        (a.uid, 0),
        "QEMU runs as A without capabilities"
    );
    let tap = format!("dbx{index}");
    assert!(ip(&["-o", "link", "show"]).contains(&tap));
    let nat = devbox_nat().expect("devbox's nftables table after A's start");
    assert!(
        nat.contains(&format!("\"{tap}\"")),
        "no NAT for {tap}:\n{nat}"
    );

    let uname = ok(
        "ssh",
        &a.run(installed, &["ssh", "m", "--", "uname", "-r"], &env),
    );
    assert!(!uname.trim().is_empty());
    let env_out = ok("env", &a.run(installed, &["env", "m"], &env));
    let docker_host = env_out
        .lines()
        .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
        .expect("DOCKER_HOST")
        .trim_matches('"')
        .to_owned();
    let docker_cli = Path::new("/usr/local/bin/docker");
    let bb = bb.display().to_string();
    ok(
        "docker import as A",
        &a.run(
            docker_cli,
            &["-H", &docker_host, "import", &bb, "bb:users"],
            &env,
        ),
    );
    let hello = ok(
        "docker run as A",
        &a.run(
            docker_cli,
            &[
                "-H",
                &docker_host,
                "run",
                "--rm",
                "bb:users",
                "echo",
                "hello from A",
            ],
            &env,
        ),
    );
    assert_eq!(hello.trim(), "hello from A");
    // The default share is A's home; what the guest writes there is A's.
    let marker = a.home.join("from-guest.txt");
    ok(
        "write in the share",
        &a.run(
            installed,
            &["ssh", "m", "--", &format!("echo hi > {}", marker.display())],
            &env,
        ),
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "hi\n");
    assert_eq!(std::fs::metadata(&marker).unwrap().uid(), a.uid);
    every_file_is_private(a);

    other_user_is_refused(a, b, &env, index, &docker_host);
    sudo_acts_as_the_user(a, &env);

    ok("stop", &a.run(installed, &["stop", "m"], &env));
    assert!(!ip(&["-o", "link", "show"]).contains(&tap), "the TAP went");
    assert_eq!(
        devbox_nat(),
        None,
        "the last stop takes devbox's NAT table away"
    );
    ok("rm", &a.run(installed, &["rm", "m"], &env));
    assert!(!lease.exists(), "rm gives the lease back");
    assert!(!machine.exists());

    let o = as_root(&["system", "uninstall"], &sudo_env(a));
    ok("system uninstall", &o);
    let left: Vec<_> = ["/usr/local/bin", "/var/lib", "/etc/systemd/system"]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p != Path::new("/usr/local/bin/docker"))
        .collect();
    assert!(left.is_empty(), "system uninstall left {left:?}");
}

/// Everything under A's `~/.devbox` (the running machine's disk, keys, sockets, logs and
/// state) is A's and closed to group and others; public keys (`*.pub`) may be read by all,
/// as OpenSSH's are.
fn every_file_is_private(a: &TestUser) {
    let mut open = Vec::new();
    let mut dirs = vec![a.devbox_dir()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.file_type().is_symlink() {
                continue;
            }
            let public = p.extension().is_some_and(|e| e == "pub") && md.mode() & 0o022 == 0;
            if md.uid() != a.uid || (md.mode() & 0o077 != 0 && !public) {
                open.push(format!(
                    "{} {:o} uid {}",
                    p.display(),
                    md.mode() & 0o7777,
                    md.uid()
                ));
            }
            if md.is_dir() {
                dirs.push(p);
            }
        }
    }
    assert!(open.is_empty(), "files of A open to others: {open:#?}");
}

/// User B against A's running machine: every way in is refused, and A's machine, its routes
/// and its state are as they were.
fn other_user_is_refused(
    a: &TestUser,
    b: &TestUser,
    env: &[(&str, String)],
    a_index: u8,
    docker_host: &str,
) {
    let installed = Path::new(INSTALLED);
    let machine = a.devbox_dir().join("machines/m");
    let state_before = std::fs::read(machine.join("state.json")).unwrap();
    let routes_before = ip(&["route"]);
    let mut b_on_a = env.to_vec();
    b_on_a.push(("DEVBOX_HOME", a.devbox_dir().display().to_string()));
    for verb in [
        &["start", "m"][..],
        &["stop", "m"],
        &["stop", "--force", "m"],
        &["ssh", "m", "--", "true"],
        &["status", "m"],
        &["rm", "--force", "m"],
    ] {
        let o = b.run(installed, verb, &b_on_a);
        refused(&format!("B: devbox {verb:?}"), &o, "ermission denied");
    }
    let cat = b.run(
        Path::new("/bin/cat"),
        &[&machine.join("disk.raw").display().to_string()],
        env,
    );
    refused("B reads A's disk", &cat, "Permission denied");
    let o = b.run(
        Path::new("/usr/local/bin/docker"),
        &["-H", docker_host, "info"],
        env,
    );
    refused("B on A's docker.sock", &o, "permission denied");
    let nc = b.run(
        Path::new("/bin/sh"),
        &[
            "-c",
            &format!(
                "exec 3<>/dev/null; : > {}",
                machine.join("control.sock").display()
            ),
        ],
        env,
    );
    refused("B on A's control.sock", &nc, "Permission denied");

    // B's own machine, with A's index written into its machine.yaml: the lease decides.
    ok(
        "B: create",
        &b.run(
            installed,
            &["create", "evil", "--driver", "qemu", "--no-share"],
            env,
        ),
    );
    let b_yaml = b.devbox_dir().join("machines/evil/machine.yaml");
    let yaml = std::fs::read_to_string(&b_yaml).unwrap();
    let net = devbox::net::HostOnlyNet::from_index(a_index).unwrap();
    let mut spec: devbox::machine::MachineSpec = serde_norway::from_str(&yaml).unwrap();
    spec.network.index = a_index;
    spec.network.subnet = net.subnet;
    spec.network.host_ip = net.host_ip;
    spec.network.guest_ip = net.guest_ip;
    std::fs::write(&b_yaml, serde_norway::to_string(&spec).unwrap()).unwrap();
    let o = b.run(installed, &["start", "evil"], env);
    refused(
        "B: start with A's index",
        &o,
        &format!("belongs to uid {}", a.uid),
    );

    // B's routes.json naming A's link, then a link that is not devbox's.
    let docker = spec.docker.routed().map(|d| d.to_string());
    let crafted = |interface: &str, guest: &str| {
        format!(
            "{{\"machines\": {{\"evil\": {{\"guest_ip\": \"{guest}\", \"interface\": \
             \"{interface}\", \"docker\": {{\"bridge\": \"{}\", \"pool\": \"{}\", \
             \"pool_size\": 24}}}}}}}}",
            spec.docker.bridge, docker[1]
        )
    };
    let routes_json = b.devbox_dir().join("routes.json");
    std::fs::write(
        &routes_json,
        crafted(&format!("dbx{a_index}"), &net.guest_ip.to_string()),
    )
    .unwrap();
    let o = b.run(installed, &["routes", "apply"], env);
    refused(
        "B: routes over A's link",
        &o,
        &format!("is leased to uid {}", a.uid),
    );
    // A link that is not devbox's, with a connected route (a TAP this thread holds).
    let eth7 = devbox::net::Tap::create("eth7", false).unwrap();
    eth7.configure("10.77.0.1".parse().unwrap(), 24).unwrap();
    let routes_with_eth7 = ip(&["route"]);
    std::fs::write(&routes_json, crafted("eth7", "10.77.0.2")).unwrap();
    let o = b.run(installed, &["routes", "apply"], env);
    refused(
        "B: routes over a foreign link",
        &o,
        "neither a devbox TAP device",
    );
    assert_eq!(ip(&["route"]), routes_with_eth7, "nothing routed over eth7");
    drop(eth7);

    assert_eq!(ip(&["route"]), routes_before, "no route changed");
    assert_eq!(
        std::fs::read(machine.join("state.json")).unwrap(),
        state_before,
        "A's machine untouched"
    );
    let st = a.run(installed, &["status", "m"], env);
    assert_eq!(ok("A: status", &st).trim(), "Running");
    ok("B: rm", &b.run(installed, &["rm", "evil"], env));
}

/// `sudo devbox …` from A: A's machines, files A's, a supervisor of A's with the two
/// capabilities (handed through the ambient set: this binary has none of its own).
fn sudo_acts_as_the_user(a: &TestUser, env: &[(&str, String)]) {
    let mut sudo = sudo_env(a);
    sudo.extend(env.iter().cloned());
    sudo.push(("HOME", "/root".into()));
    sudo.push(("DEVBOX_FAKE_GUEST", "ready".into()));
    let ls = ok("sudo devbox ls", &as_root(&["ls"], &sudo));
    assert!(
        ls.lines().any(|l| l.starts_with("m ")),
        "A's machines: {ls}"
    );
    ok(
        "sudo devbox create",
        &as_root(&["create", "s", "--driver", "fake", "--no-share"], &sudo),
    );
    let dir = a.devbox_dir().join("machines/s");
    for p in [dir.clone(), dir.join("disk.raw"), dir.join("machine.yaml")] {
        assert_eq!(
            std::fs::metadata(&p).unwrap().uid(),
            a.uid,
            "{}",
            p.display()
        );
    }
    assert!(
        !Path::new("/root/.devbox/machines/s").exists(),
        "never root's home"
    );
    ok("sudo devbox start", &as_root(&["start", "s"], &sudo));
    let sup: u32 = std::fs::read_to_string(dir.join("supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (uid, prm, eff) = creds(sup);
    assert_eq!(
        (uid, prm, eff),
        (a.uid, NET_CAPS, 0),
        "the supervisor of sudo start"
    );
    ok("sudo devbox stop", &as_root(&["stop", "s"], &sudo));
    ok("sudo devbox rm", &as_root(&["rm", "s"], &sudo));
    // Variables that do not agree with the passwd database: refused, with the way out.
    let mut wrong = sudo.clone();
    wrong[0].1 = "root".into();
    let o = as_root(&["ls"], &wrong);
    refused(
        "sudo with a wrong SUDO_USER",
        &o,
        "cannot act as the user who ran sudo",
    );
    refused("its hint", &o, "without sudo");
}
