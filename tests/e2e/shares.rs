//! Shared folders: the host's directories in the guest over devbox's NFSv3 server, and the
//! shared machine, which is created with two of them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::MACHINE;
use crate::machine::Machine;

static SHARES: OnceLock<Shares> = OnceLock::new();

/// Creates the shared machine: 2 vCPUs, 2 GiB of memory, a 2 GiB disk (small enough to fill
/// in `disk::check_full_disk`; `lifecycle` grows it to 4 GiB), one read-write and one
/// read-only share.
pub fn create(m: &Machine) {
    let shares = SHARES.get_or_init(|| Shares::prepare(m.h.tmp()));
    let rw = format!("{}:/mnt/rw", shares.rw.display());
    let ro = format!("{}:/mnt/ro:ro", shares.ro.display());
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
        let st = Command::new("chown")
            .args(["-R", &format!("{SHARE_UID}:{SHARE_UID}")])
            .arg(&rw)
            .status()
            .unwrap();
        assert!(st.success());
        Shares { rw, ro, big_sha256 }
    }
}

pub fn check_shares(m: &Machine) {
    let shares = SHARES
        .get()
        .expect("the shared machine was created with its shares");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
