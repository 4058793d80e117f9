//! Shared folders: the host's directories in the guest over devbox's NFSv3 server, and the
//! shared machine, which is created with two of them; who can reach a share and with what
//! power (only the guest's kernel client, as the share's owner), and handles that survive the
//! host moving a directory.
//!
//! The raw NFS client is `nfs_probe.c` (built statically here: it runs in an image holding
//! nothing else) sending a MOUNT call built here from RFC 5531/1813 (no code shared with the
//! server), from reserved port 700, as a container with Docker's default capabilities
//! (CAP_NET_BIND_SERVICE) or any root process can. The same program and bytes sent to a
//! server on the host's loopback get a file handle back, so a refusal in the guest is the
//! guest's doing, not a broken request.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::MACHINE;
use crate::harness::bounded;
use crate::machine::Machine;
use crate::support::guest::text;

static SHARES: OnceLock<Shares> = OnceLock::new();

/// Creates the shared machine: 2 vCPUs, 2 GiB of memory, a 2 GiB disk (small enough to fill
/// in `disk::check_full_disk`; `lifecycle` grows it to 4 GiB), one read-write and one
/// read-only share, a Docker label, the internet's registry as an insecure one and the CA of
/// its TLS registry.
pub fn create(m: &Machine) {
    let shares = SHARES.get_or_init(|| Shares::prepare(m.h.tmp()));
    let rw = format!("{}:/mnt/rw", shares.rw.display());
    let ro = format!("{}:/mnt/ro:ro", shares.ro.display());
    let registry = format!(
        "{}:{}",
        crate::harness::INTERNET_NAME,
        crate::harness::REGISTRY_PORT
    );
    m.ok(&[
        "create",
        MACHINE,
        "--cpus",
        "2",
        "--memory",
        "2048",
        "--disk-size",
        "2G",
        "--share",
        &rw,
        "--share",
        &ro,
        // Lets containers take aliases under synbioz.dev (the network checks); go.dev stays refused.
        "--dns-domain",
        "synbioz.dev",
        // docker-machine's engine flags (`outside::check_engine_settings`); the registry is
        // the internet namespace's (`outside::check_outbound_nat`).
        "--engine-label",
        "provider=devbox",
        "--engine-insecure-registry",
        &registry,
        // The private CA of the internet's TLS registry (`outside::check_outbound_nat`).
        "--engine-ca",
        crate::harness::internet_ca(m.h.tmp()).to_str().unwrap(),
    ]);
}

/// Host directories shared into the machine: one read-write, owned by an ordinary user (so the
/// uid mapping shows), one read-only.
pub struct Shares {
    rw: PathBuf,
    ro: PathBuf,
    big_sha256: String,
}

pub const SHARE_UID: u32 = 1000;

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
        // Both belong to an ordinary user, as a home or a project does (a directory root owns
        // is refused without --allow-root-share).
        let st = Command::new("chown")
            .args(["-R", &format!("{SHARE_UID}:{SHARE_UID}")])
            .arg(&rw)
            .arg(&ro)
            .status()
            .unwrap();
        assert!(st.success());
        Shares { rw, ro, big_sha256 }
    }
}

fn shares() -> &'static Shares {
    SHARES
        .get()
        .expect("the shared machine was created with its shares")
}

/// The host side of the shared machine's read-write share (`/mnt/rw` in the guest).
pub fn shares_rw() -> &'static Path {
    &shares().rw
}

/// The host side of the shared machine's read-only share (`/mnt/ro` in the guest).
pub fn shares_ro() -> &'static Path {
    &shares().ro
}

pub fn check_shares(m: &Machine) {
    let shares = shares();
    let mounts = m.ssh("mount");
    assert!(mounts.contains(" on /mnt/rw type nfs"), "{mounts}");
    assert!(mounts.contains(" on /mnt/ro type nfs"), "{mounts}");
    assert_eq!(m.ssh("cat /mnt/rw/hello.txt"), "from host\n");
    // The host user's files look like the guest root's, so they are writable in the guest.
    assert_eq!(m.ssh("stat -c %u /mnt/rw/hello.txt").trim(), "0");

    // File operations, in the guest, then checked on the host.
    m.ssh(
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
    assert_eq!(m.ssh("cat /mnt/rw/late.txt"), "written later\n");

    let sum = m.ssh("sha256sum /mnt/rw/big.bin");
    assert_eq!(
        sum.split_whitespace().next(),
        Some(shares.big_sha256.as_str())
    );
    assert_eq!(
        m.ssh("ls /mnt/rw/many | wc -l").trim(),
        "3000",
        "READDIR pages through"
    );
    assert_eq!(
        m.ssh("ls -l /mnt/rw/many | grep -c '^-'").trim(),
        "3000",
        "READDIRPLUS pages through"
    );

    assert_eq!(m.ssh("cat /mnt/ro/readme.txt"), "read only\n");
    let w = m.ssh_output("echo x > /mnt/ro/new");
    assert_ne!(w.status.code(), Some(0), "a read-only share refuses writes");
    assert!(!shares.ro.join("new").exists());
}

/// The share operations of [`check_shares`] again, on a machine whose file server runs its
/// portable path (see `restart_keeps_data_and_shares`), which its log must say.
pub fn check_portable_path(m: &Machine) {
    let shares = shares();
    let log = m.supervisor_log();
    let started = log.lines().rev().find(|l| l.contains("NFS on"));
    assert!(
        started.is_some_and(|l| l.contains("Portable path")),
        "the server of this start did not take the portable path: {started:?}"
    );
    m.ssh(
        "set -e; cd /mnt/rw; rm -rf p; mkdir p; echo one > p/a; echo two >> p/a; mv p/a p/b; \
         echo 123456 > p/t; truncate -s 2 p/t; chmod 640 p/t; touch -d '2001-02-03 04:05:06' p/t; \
         ln -s b p/l; [ \"$(readlink p/l)\" = b ]; mkdir p/gone; rmdir p/gone; cat p/l",
    );
    let p = shares.rw.join("p");
    assert_eq!(std::fs::read_to_string(p.join("b")).unwrap(), "one\ntwo\n");
    assert_eq!(std::fs::read_to_string(p.join("t")).unwrap(), "12");
    let t = std::fs::metadata(p.join("t")).unwrap();
    assert_eq!(t.permissions().mode() & 0o777, 0o640, "chmod by name");
    assert_eq!(t.mtime(), 981_173_106, "utimensat by name");
    assert_eq!(t.uid(), SHARE_UID);
    assert_eq!(std::fs::read_link(p.join("l")).unwrap(), PathBuf::from("b"));
    assert_eq!(
        m.ssh("ls /mnt/rw/many | wc -l").trim(),
        "3000",
        "READDIR pages through with position cookies"
    );
    assert_eq!(
        m.ssh("ls -l /mnt/rw/many | grep -c '^-'").trim(),
        "3000",
        "READDIRPLUS pages through with position cookies"
    );
    let sum = m.ssh("sha256sum /mnt/rw/big.bin");
    assert_eq!(
        sum.split_whitespace().next(),
        Some(shares.big_sha256.as_str())
    );
    let w = m.ssh_output("echo x > /mnt/ro/new");
    assert_ne!(w.status.code(), Some(0), "a read-only share refuses writes");
    assert!(!shares.ro.join("new").exists());
}

/// A MOUNT v3 MNT call for `export` with an AUTH_UNIX credential (uid 0), record-marked.
fn mount_call(export: &str) -> Vec<u8> {
    let be = |v: u32| v.to_be_bytes();
    let opaque = |d: &[u8]| {
        let mut o = be(d.len() as u32).to_vec();
        o.extend_from_slice(d);
        o.resize(o.len() + (4 - d.len() % 4) % 4, 0);
        o
    };
    let mut cred = Vec::new();
    for part in [&be(0)[..], &opaque(b"e2e"), &be(0), &be(0), &be(0)] {
        cred.extend_from_slice(part);
    }
    let mut call = Vec::new();
    // xid, CALL, RPC 2, MOUNT, v3, MNT, AUTH_UNIX + body, AUTH_NONE verifier, the path.
    for part in [
        &be(0x0e2e_0001)[..],
        &be(0),
        &be(2),
        &be(100_005),
        &be(3),
        &be(1),
        &be(1),
        &opaque(&cred),
        &be(0),
        &be(0),
        &opaque(export.as_bytes()),
    ] {
        call.extend_from_slice(part);
    }
    let mut rec = be(call.len() as u32 | 0x8000_0000).to_vec();
    rec.extend_from_slice(&call);
    rec
}

/// Whether `reply` is an accepted MNT reply with status MNT3_OK (a root file handle).
fn mount_ok(reply: &[u8]) -> bool {
    // mark, xid, REPLY, MSG_ACCEPTED, verifier (flavor, length 0), SUCCESS, mountstat3
    let word = |i: usize| {
        reply
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    };
    word(2) == Some(1) && word(3) == Some(0) && word(6) == Some(0) && word(7) == Some(0)
}

/// Runs `cmd` with `input` on stdin; (exit code, stdout, stderr).
fn with_input(mut cmd: Command, input: &[u8]) -> (Option<i32>, Vec<u8>, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), out.stdout, text(&out.stderr))
}

/// Builds `nfs_probe.c` statically into `dir`, and the machine's `nfsprobe:e2e` image, which
/// holds only it.
fn build_probe(m: &Machine) -> PathBuf {
    let dir = m.h.tmp();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/nfs_probe.c");
    let bin = dir.join("nfs-probe");
    let st = Command::new("cc")
        .args(["-static", "-Os", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) with a static libc (libc6-dev)");
    assert!(st.success(), "building {}", src.display());
    let tar_path = dir.join("nfs-probe.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    let bytes = std::fs::read(&bin).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o755);
    b.append_data(&mut h, "nfs-probe", bytes.as_slice())
        .unwrap();
    b.finish().unwrap();
    m.docker_ok(&["import", tar_path.to_str().unwrap(), "nfsprobe:e2e"]);
    bin
}

/// The file server's address and port, as the guest mounted `guest_path`.
fn server_of(m: &Machine, guest_path: &str) -> (String, u16) {
    let mounts = m.ssh("cat /proc/mounts");
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(guest_path) && l.contains(" nfs "))
        .unwrap_or_else(|| panic!("{guest_path} is not an NFS mount:\n{mounts}"));
    let opts = line.split_whitespace().nth(3).unwrap();
    let opt = |k: &str| {
        opts.split(',')
            .find_map(|o| o.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {opts}"))
            .to_owned()
    };
    (opt("addr="), opt("port=").parse().unwrap())
}

/// Only the guest's kernel NFS client reaches the file server: a raw client is refused from
/// a container on the default bridge, one on a user network, one sharing the guest's
/// network, and from a root shell in the guest; the guest's own mounts keep working.
pub fn check_raw_clients_are_refused(m: &Machine) {
    #[cfg(target_os = "linux")]
    raw_clients_are_refused(m);
    // The control below runs devbox's NFS server, which exists on Linux hosts only (src/nfs).
    #[cfg(not(target_os = "linux"))]
    panic!(
        "{}: the embedded NFS server runs on Linux hosts only",
        m.name
    );
}

#[cfg(target_os = "linux")]
fn raw_clients_are_refused(m: &Machine) {
    let shares = shares();
    let call = mount_call("/mnt/rw");
    let probe = build_probe(m);
    // The same bytes and program against a server on the host's loopback: a handle.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let meta = std::fs::metadata(&shares.rw).unwrap();
    let server = rt
        .block_on(devbox::nfs::NfsServer::start(devbox::nfs::NfsConfig {
            bind: "127.0.0.1".parse().unwrap(),
            bind_device: None,
            port: 0,
            allowed_client: "127.0.0.1".parse().unwrap(),
            exports: vec![devbox::nfs::Export {
                name: "/mnt/rw".into(),
                host_path: shares.rw.canonicalize().unwrap(),
                dir_id: (meta.dev(), meta.ino()),
                read_only: true,
                allow_root: false,
            }],
            fs_path: devbox::nfs::FsPath::default(),
            echo: None,
            hidden: Vec::new(),
            idle_timeout: devbox::nfs::IDLE_TIMEOUT,
        }))
        .unwrap();
    let mut cmd = bounded(probe.to_str().unwrap());
    cmd.arg("127.0.0.1")
        .arg(server.local_addr().port().to_string())
        .arg("700");
    let (code, reply, err) = with_input(cmd, &call);
    assert!(
        code == Some(0) && mount_ok(&reply),
        "control: the raw client got no handle from a loopback server ({code:?}, {} bytes; \
         {err})",
        reply.len()
    );
    drop(server);
    drop(rt);

    let (addr, port) = server_of(m, "/mnt/rw");
    let port = port.to_string();
    // A user network of this check's own, removed after, so that it takes no subnet another
    // check expects.
    let user_net = "e2e-nfsprobe";
    m.docker_ok(&["network", "create", user_net]);
    let docker_host = m.docker_host();
    for network in [None, Some(user_net), Some("host")] {
        let mut cmd = bounded("docker");
        cmd.args(["-H", &docker_host, "run", "-i", "--rm"]);
        if let Some(n) = network {
            cmd.args(["--network", n]);
        }
        cmd.args(["nfsprobe:e2e", "/nfs-probe", &addr, &port, "700"]);
        let (code, reply, err) = with_input(cmd, &call);
        assert!(
            code == Some(2) && reply.is_empty() && err.contains("refused"),
            "a container (network {network:?}) reached the file server: {code:?}, {} bytes \
             back; {err}",
            reply.len()
        );
    }
    m.docker_ok(&["network", "rm", user_net]);
    // Any process of the guest, root's included (the kernel client's sockets have no file).
    std::fs::write(shares.rw.join(".mount-call"), &call).unwrap();
    std::fs::copy(&probe, shares.rw.join(".nfs-probe")).unwrap();
    let in_guest = format!(
        "set -o pipefail; /mnt/rw/.nfs-probe {addr} {port} 700 < /mnt/rw/.mount-call | wc -c; \
         echo exit=$?"
    );
    let guest_probe = || {
        let o = m.ssh_output(&in_guest);
        (text(&o.stdout), text(&o.stderr))
    };
    let (out, err) = guest_probe();
    assert!(
        out.split_whitespace().collect::<Vec<_>>() == ["0", "exit=2"] && err.contains("refused"),
        "a guest process reached the file server: {out:?} {err}"
    );
    // Without that firewall rule, still nothing: the file server listens on the share link,
    // which the guest's main network namespace has no way to.
    let rule = format!(
        "OUTPUT -d {addr} -p tcp --dport {port} -m owner --socket-exists -j REJECT \
         --reject-with tcp-reset"
    );
    m.ssh(&format!("iptables -D {rule}"));
    let (out, err) = guest_probe();
    m.ssh(&format!("iptables -A {rule}"));
    assert!(
        out.split_whitespace().collect::<Vec<_>>() == ["0", "exit=2"] && err.contains("refused"),
        "with the guest's firewall rule removed, a guest process reached the file server: \
         {out:?} {err}"
    );
    let ns = m.ssh("ls /run/netns; ip -o link show shares0 2>&1 || true");
    assert!(ns.contains("shares"), "{ns}");
    assert!(
        !ns.contains("shares0:"),
        "the share link's NIC is in the main namespace: {ns}"
    );
    std::fs::remove_file(shares.rw.join(".mount-call")).unwrap();
    std::fs::remove_file(shares.rw.join(".nfs-probe")).unwrap();
    assert_eq!(
        m.ssh("cat /mnt/rw/hello.txt"),
        "from host\n",
        "the guest's own mount"
    );
}

/// What the guest creates belongs to the share's owner, without a set-ID bit, and a file of
/// the host's root in the share stays root's.
pub fn check_owner_identity(m: &Machine) {
    let shares = shares();
    let root_file = shares.rw.join("root-owned");
    std::fs::write(&root_file, "root's\n").unwrap();
    std::os::unix::fs::chown(&root_file, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&root_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = m.ssh(
        "cd /mnt/rw && printf '#!/bin/sh\\nid\\n' > made && chmod 4755 made; \
         cp made made2 && chmod 6755 made2; mkdir -m 2775 madedir; \
         stat -c '%n %u %a' made made2 madedir root-owned; \
         echo evil >> root-owned && echo wrote || echo refused",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"made 0 755"), "{out}");
    assert!(lines.contains(&"made2 0 755"), "{out}");
    assert!(lines.contains(&"madedir 0 775"), "{out}");
    assert!(lines.contains(&"root-owned 65534 644"), "{out}");
    assert_eq!(lines.last(), Some(&"refused"), "{out}");
    for (name, mode) in [("made", 0o755), ("made2", 0o755), ("madedir", 0o775)] {
        let meta = std::fs::metadata(shares.rw.join(name)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (SHARE_UID, SHARE_UID, mode),
            "{name} on the host"
        );
    }
    assert_eq!(std::fs::read_to_string(&root_file).unwrap(), "root's\n");
    std::fs::remove_file(&root_file).unwrap();
    m.ssh("rm -rf /mnt/rw/made /mnt/rw/made2 /mnt/rw/madedir");
}

/// The host moves a directory the guest is working in (a shell's cwd, files opened by
/// relative paths), twice, then into another directory: the guest keeps working in it.
pub fn check_host_side_moves(m: &Machine) {
    let shares = shares();
    std::fs::create_dir_all(shares.rw.join("mv/proj/sub")).unwrap();
    std::fs::create_dir_all(shares.rw.join("mv/elsewhere")).unwrap();
    for d in ["mv", "mv/proj", "mv/proj/sub", "mv/elsewhere"] {
        std::os::unix::fs::chown(shares.rw.join(d), Some(SHARE_UID), Some(SHARE_UID)).unwrap();
    }
    // A worker in the guest: appends a line a second to `log` by a path relative to its
    // working directory, and to `held`, a file it keeps open; it stops when told.
    m.ssh(
        "cd /mnt/rw/mv/proj/sub && setsid sh -c 'exec 3>>held; n=0; \
         while [ ! -e stop ]; do n=$((n+1)); echo $n >> log || echo ERR >> log; \
         echo $n >&3; sync; sleep 1; done; echo stopped >> log' \
         </dev/null >/dev/null 2>/var/log/e2e-mv.err &",
    );
    let log_at = |rel: &str| shares.rw.join(rel).join("sub/log");
    let wait_growth = |rel: &str| {
        let path = log_at(rel);
        let before = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .count();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = std::fs::read_to_string(&path).unwrap_or_default();
            let held = std::fs::read_to_string(path.with_file_name("held")).unwrap_or_default();
            if now.lines().count() >= before + 3 && held.lines().count() >= before + 3 {
                assert!(!now.contains("ERR"), "{now}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the guest stopped working in {rel}: {now}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait_growth("mv/proj");
    for (from, to) in [
        ("mv/proj", "mv/proj2"),
        ("mv/proj2", "mv/proj3"),
        ("mv/proj3", "mv/elsewhere/proj"),
    ] {
        std::fs::rename(shares.rw.join(from), shares.rw.join(to)).unwrap();
        wait_growth(to);
    }
    // Told to stop through its (moved) working directory: it sees the file.
    let sub = shares.rw.join("mv/elsewhere/proj/sub");
    std::fs::write(sub.join("stop"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(sub.join("log"))
        .unwrap()
        .contains("stopped")
    {
        assert!(Instant::now() < deadline, "the guest's worker did not stop");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        m.ssh("cat /var/log/e2e-mv.err"),
        "",
        "the worker saw no error"
    );
    std::fs::remove_dir_all(shares.rw.join("mv")).unwrap();
}
