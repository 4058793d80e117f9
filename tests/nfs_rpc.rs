//! The NFS server driven by crafted ONC-RPC requests over TCP on loopback: escapes,
//! forged handles, oversized requests, foreign peers, big directories, restarts, uid/gid
//! mapping and read-only exports. The client below is written from RFC 5531/1813 and shares
//! no code with the server, so an encoding mistake on either side shows up here.
//!
//! The Linux kernel NFS client is not used: this host's kernel has no `nfs` filesystem
//! (`/proc/filesystems`) and no modules; the real-guest mount is tested end to end.

// The NFS server is Linux-only for now (see `pub mod nfs` in src/lib.rs).
#![cfg(target_os = "linux")]

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use devbox::nfs::{Export, NfsConfig, NfsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

// ---- a minimal ONC-RPC / NFSv3 client -------------------------------------------------

const NFS: u32 = 100_003;
const MOUNT: u32 = 100_005;

const OK: u32 = 0;
const PERM: u32 = 1;
const NOENT: u32 = 2;
const ACCES: u32 = 13;
const EXIST: u32 = 17;
const INVAL: u32 = 22;
const ROFS: u32 = 30;
const STALE: u32 = 70;
const BADHANDLE: u32 = 10001;
const NOTSUPP: u32 = 10004;

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn opaque(mut self, d: &[u8]) -> Self {
        self = self.u32(d.len() as u32);
        self.0.extend_from_slice(d);
        self.0.resize(self.0.len() + (4 - d.len() % 4) % 4, 0);
        self
    }
    /// sattr3 with only the given fields set.
    fn sattr(
        self,
        mode: Option<u32>,
        uid: Option<u32>,
        size: Option<u64>,
        mtime: Option<u32>,
    ) -> Self {
        let mut e = self;
        for v in [mode, uid] {
            e = match v {
                Some(v) => e.u32(1).u32(v),
                None => e.u32(0),
            };
        }
        e = e.u32(0); // gid
        e = match size {
            Some(s) => e.u32(1).u64(s),
            None => e.u32(0),
        };
        e = e.u32(0); // atime: don't change
        match mtime {
            Some(t) => e.u32(2).u32(t).u32(0),
            None => e.u32(0),
        }
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn u32(&mut self) -> u32 {
        let (h, t) = self.0.split_at(4);
        self.0 = t;
        u32::from_be_bytes(h.try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (h, t) = self.0.split_at(n);
        self.0 = &t[(4 - n % 4) % 4..];
        h
    }
    fn opaque(&mut self) -> &'a [u8] {
        let n = self.u32() as usize;
        self.bytes(n)
    }
    fn fattr(&mut self) -> Fattr {
        let ftype = self.u32();
        let mode = self.u32();
        let _nlink = self.u32();
        let uid = self.u32();
        let gid = self.u32();
        let size = self.u64();
        let _used = self.u64();
        let _rdev = self.u64();
        let _fsid = self.u64();
        let fileid = self.u64();
        let _atime = self.u64();
        let mtime = self.u32();
        let _ = self.u32();
        let _ctime = self.u64();
        Fattr {
            ftype,
            mode,
            uid,
            gid,
            size,
            fileid,
            mtime,
        }
    }
    fn post_op(&mut self) -> Option<Fattr> {
        (self.u32() == 1).then(|| self.fattr())
    }
    fn wcc(&mut self) {
        if self.u32() == 1 {
            self.bytes(24);
        }
        self.post_op();
    }
}

#[derive(Debug, Clone, Copy)]
struct Fattr {
    ftype: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    fileid: u64,
    mtime: u32,
}

struct Client {
    sock: TcpStream,
    xid: u32,
}

/// Accepted reply: (accept_stat, results).
struct Reply {
    accept: u32,
    body: Vec<u8>,
}

impl Reply {
    fn dec(&self) -> Dec<'_> {
        assert_eq!(
            self.accept, 0,
            "RPC not accepted: accept_stat {}",
            self.accept
        );
        Dec(&self.body)
    }
    fn status(&self) -> u32 {
        self.dec().u32()
    }
}

impl Client {
    async fn connect(server: SocketAddr, from: IpAddr) -> std::io::Result<Client> {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(from, 0))?;
        let sock = sock.connect(server).await?;
        Ok(Client { sock, xid: 1 })
    }

    async fn send_raw(&mut self, record: &[u8]) -> std::io::Result<()> {
        self.sock
            .write_all(&(record.len() as u32 | 0x8000_0000).to_be_bytes())
            .await?;
        self.sock.write_all(record).await
    }

    async fn read_reply(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let mut h = [0u8; 4];
            self.sock.read_exact(&mut h).await?;
            let h = u32::from_be_bytes(h);
            let start = body.len();
            body.resize(start + (h & 0x7fff_ffff) as usize, 0);
            self.sock.read_exact(&mut body[start..]).await?;
            if h & 0x8000_0000 != 0 {
                return Ok(body);
            }
        }
    }

    async fn call(&mut self, prog: u32, proc_: u32, args: Enc) -> Reply {
        self.try_call(prog, proc_, args)
            .await
            .expect("RPC transport failed")
    }

    async fn try_call(&mut self, prog: u32, proc_: u32, args: Enc) -> std::io::Result<Reply> {
        self.xid += 1;
        let cred = Enc::default()
            .u32(0) // stamp
            .opaque(b"guest")
            .u32(0) // uid: the guest's root
            .u32(0)
            .u32(0);
        let mut rec = Enc::default()
            .u32(self.xid)
            .u32(0) // CALL
            .u32(2)
            .u32(prog)
            .u32(3)
            .u32(proc_)
            .u32(1) // AUTH_UNIX
            .opaque(&cred.0)
            .u32(0)
            .u32(0)
            .0;
        rec.extend_from_slice(&args.0);
        self.send_raw(&rec).await?;
        let reply = tokio::time::timeout(Duration::from_secs(20), self.read_reply())
            .await
            .map_err(|_| std::io::Error::other("no reply"))??;
        let mut d = Dec(&reply);
        assert_eq!(d.u32(), self.xid);
        assert_eq!(d.u32(), 1, "not a REPLY");
        assert_eq!(d.u32(), 0, "RPC denied");
        d.u32();
        d.opaque();
        let accept = d.u32();
        Ok(Reply {
            accept,
            body: d.0.to_vec(),
        })
    }

    async fn mnt(&mut self, path: &str) -> Result<Vec<u8>, u32> {
        let r = self
            .call(MOUNT, 1, Enc::default().opaque(path.as_bytes()))
            .await;
        let mut d = r.dec();
        match d.u32() {
            0 => Ok(d.opaque().to_vec()),
            e => Err(e),
        }
    }

    async fn getattr(&mut self, fh: &[u8]) -> Result<Fattr, u32> {
        let r = self.call(NFS, 1, Enc::default().opaque(fh)).await;
        let mut d = r.dec();
        match d.u32() {
            0 => Ok(d.fattr()),
            e => Err(e),
        }
    }

    async fn lookup(&mut self, dir: &[u8], name: &[u8]) -> Result<Vec<u8>, u32> {
        let r = self
            .call(NFS, 3, Enc::default().opaque(dir).opaque(name))
            .await;
        let mut d = r.dec();
        match d.u32() {
            0 => Ok(d.opaque().to_vec()),
            e => Err(e),
        }
    }

    /// CREATE/MKDIR/SYMLINK style result: the new handle.
    fn created(r: &Reply) -> Result<Vec<u8>, u32> {
        let mut d = r.dec();
        match d.u32() {
            0 => {
                assert_eq!(d.u32(), 1, "no handle returned");
                Ok(d.opaque().to_vec())
            }
            e => Err(e),
        }
    }

    async fn create(&mut self, dir: &[u8], name: &[u8], mode: u32) -> Result<Vec<u8>, u32> {
        let args =
            Enc::default()
                .opaque(dir)
                .opaque(name)
                .u32(1)
                .sattr(Some(mode), None, None, None);
        let r = self.call(NFS, 8, args).await;
        Self::created(&r)
    }

    async fn mkdir(&mut self, dir: &[u8], name: &[u8]) -> Result<Vec<u8>, u32> {
        let args = Enc::default()
            .opaque(dir)
            .opaque(name)
            .sattr(Some(0o750), None, None, None);
        let r = self.call(NFS, 9, args).await;
        Self::created(&r)
    }

    async fn symlink(&mut self, dir: &[u8], name: &[u8], target: &[u8]) -> Result<Vec<u8>, u32> {
        let args = Enc::default()
            .opaque(dir)
            .opaque(name)
            .sattr(None, None, None, None)
            .opaque(target);
        let r = self.call(NFS, 10, args).await;
        Self::created(&r)
    }

    async fn read(&mut self, fh: &[u8], offset: u64, count: u32) -> Result<Vec<u8>, u32> {
        let r = self
            .call(NFS, 6, Enc::default().opaque(fh).u64(offset).u32(count))
            .await;
        let mut d = r.dec();
        match d.u32() {
            0 => {
                d.post_op();
                let n = d.u32();
                let _eof = d.u32();
                let data = d.opaque().to_vec();
                assert_eq!(n as usize, data.len());
                Ok(data)
            }
            e => Err(e),
        }
    }

    async fn write(&mut self, fh: &[u8], offset: u64, count: u32, data: &[u8]) -> Result<u32, u32> {
        let args = Enc::default()
            .opaque(fh)
            .u64(offset)
            .u32(count)
            .u32(2)
            .opaque(data);
        let r = self.call(NFS, 7, args).await;
        let mut d = r.dec();
        match d.u32() {
            0 => {
                d.wcc();
                Ok(d.u32())
            }
            e => Err(e),
        }
    }

    async fn setattr(
        &mut self,
        fh: &[u8],
        mode: Option<u32>,
        uid: Option<u32>,
        size: Option<u64>,
        mtime: Option<u32>,
    ) -> u32 {
        let args = Enc::default()
            .opaque(fh)
            .sattr(mode, uid, size, mtime)
            .u32(0);
        self.call(NFS, 2, args).await.status()
    }

    /// Lists a directory with READDIR (plus = false) or READDIRPLUS, following cookies.
    /// Returns the names and the number of calls; panics after `max_calls`.
    async fn list(&mut self, dir: &[u8], plus: bool, max_calls: usize) -> (Vec<Vec<u8>>, usize) {
        let mut names = Vec::new();
        let mut cookie = 0u64;
        let mut verf = [0u8; 8];
        for calls in 1..=max_calls {
            let mut args = Enc::default().opaque(dir).u64(cookie);
            args.0.extend_from_slice(&verf);
            args = if plus {
                args.u32(4096).u32(16384)
            } else {
                args.u32(4096)
            };
            let r = self.call(NFS, if plus { 17 } else { 16 }, args).await;
            let mut d = r.dec();
            assert_eq!(d.u32(), OK);
            d.post_op();
            verf.copy_from_slice(d.bytes(8));
            while d.u32() == 1 {
                let _fileid = d.u64();
                names.push(d.opaque().to_vec());
                cookie = d.u64();
                if plus {
                    assert!(
                        d.post_op().is_some(),
                        "READDIRPLUS entry without attributes"
                    );
                    assert_eq!(d.u32(), 1, "READDIRPLUS entry without handle");
                    assert_eq!(d.opaque().len(), 24);
                }
            }
            if d.u32() == 1 {
                return (names, calls);
            }
        }
        panic!(
            "directory listing did not reach EOF in {max_calls} calls ({} names)",
            names.len()
        );
    }
}

// ---- fixture -----------------------------------------------------------------------------

const LOCAL: &str = "127.0.0.1";
const OWNER_UID: u32 = 1234;
const OWNER_GID: u32 = 2345;

struct Fixture {
    _tmp: tempfile::TempDir,
    export: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&export).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"TOP-SECRET-host-file\n").unwrap();
    Fixture {
        _tmp: tmp,
        export,
        outside,
    }
}

fn config(exports: Vec<Export>, client: &str) -> NfsConfig {
    NfsConfig {
        bind: LOCAL.parse().unwrap(),
        port: 0,
        allowed_client: client.parse().unwrap(),
        exports,
    }
}

fn export(name: &str, path: &Path, read_only: bool) -> Export {
    Export {
        name: name.into(),
        host_path: path.to_path_buf(),
        read_only,
        uid: OWNER_UID,
        gid: OWNER_GID,
    }
}

async fn serve(f: &Fixture, read_only: bool) -> (NfsServer, Client, Vec<u8>) {
    let server = NfsServer::start(config(vec![export("/proj", &f.export, read_only)], LOCAL))
        .await
        .unwrap();
    let mut client = Client::connect(server.local_addr(), LOCAL.parse().unwrap())
        .await
        .unwrap();
    let root = client.mnt("/proj").await.unwrap();
    (server, client, root)
}

/// After each bad request the server must still serve good ones.
async fn assert_alive(c: &mut Client, root: &[u8]) {
    let a = c
        .getattr(root)
        .await
        .expect("GETATTR of the root after a bad request");
    assert_eq!(a.ftype, 2);
}

fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = walk(dir);
    all.sort();
    all
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

// ---- tests -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_escape_are_refused() {
    let f = fixture();
    let (_server, mut c, root) = serve(&f, false).await;
    let before = tree(f.export.parent().unwrap());

    for bad in [
        &b"../x"[..],
        b"../outside/secret",
        b"/abs",
        b"/tmp/abs",
        b"a/b",
        b"x\0y",
    ] {
        assert_eq!(
            c.create(&root, bad, 0o644).await,
            Err(ACCES),
            "CREATE {:?}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(c.mkdir(&root, bad).await, Err(ACCES));
        assert_eq!(c.symlink(&root, bad, b"t").await, Err(ACCES));
        assert_alive(&mut c, &root).await;
    }
    assert_eq!(c.create(&root, b"..", 0o644).await, Err(EXIST));
    assert_eq!(c.create(&root, b".", 0o644).await, Err(EXIST));
    assert!(!Path::new("/abs").exists() && !Path::new("/tmp/abs").exists());
    assert_eq!(
        tree(f.export.parent().unwrap()),
        before,
        "something was created"
    );
    assert_eq!(
        std::fs::read(f.outside.join("secret")).unwrap(),
        b"TOP-SECRET-host-file\n"
    );

    // `..` of the export root is the root itself; `../x` style lookups find nothing.
    assert_eq!(c.lookup(&root, b"..").await.unwrap(), root);
    assert_eq!(c.lookup(&root, b".").await.unwrap(), root);
    assert_eq!(c.lookup(&root, b"../outside").await, Err(NOENT));
    assert_eq!(c.lookup(&root, b"/etc").await, Err(NOENT));
    let sub = c.mkdir(&root, b"sub").await.unwrap();
    assert_eq!(c.lookup(&sub, b"..").await.unwrap(), root);
    assert!(c.create(&root, b"good", 0o644).await.is_ok());
    assert!(f.export.join("good").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_are_never_followed_by_the_server() {
    let f = fixture();
    let (_server, mut c, root) = serve(&f, false).await;
    let secret = f.outside.join("secret");
    for (name, target) in [
        (&b"passwd"[..], &b"/etc/passwd"[..]),
        (b"abs", secret.as_os_str().as_encoded_bytes()),
        (b"rel", b"../outside/secret"),
    ] {
        let link = c.symlink(&root, name, target).await.unwrap();
        assert_eq!(c.getattr(&link).await.unwrap().ftype, 5, "not a symlink");
        assert_eq!(
            c.read(&link, 0, 4096).await,
            Err(INVAL),
            "READ through a symlink"
        );
        assert_eq!(c.write(&link, 0, 4, b"evil").await, Err(INVAL));
        assert_eq!(c.setattr(&link, None, None, Some(0), None).await, NOTSUPP);
        // READLINK gives the target as data for the guest to resolve.
        let r = c.call(NFS, 5, Enc::default().opaque(&link)).await;
        let mut d = r.dec();
        assert_eq!(d.u32(), OK);
        d.post_op();
        assert_eq!(d.opaque(), target);
        // A directory symlink cannot be used as a directory handle either.
        assert_eq!(c.lookup(&link, b"secret").await, Err(20)); // NOTDIR
        assert_eq!(c.create(&link, b"x", 0o644).await, Err(20));
        assert_alive(&mut c, &root).await;
    }
    let dirlink = c
        .symlink(&root, b"out", f.outside.as_os_str().as_encoded_bytes())
        .await
        .unwrap();
    assert_eq!(c.lookup(&dirlink, b"secret").await, Err(20));
    assert_eq!(std::fs::read(&secret).unwrap(), b"TOP-SECRET-host-file\n");
    assert_eq!(std::fs::read_dir(&f.outside).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_handles() {
    let f = fixture();
    let (_server, mut c, root) = serve(&f, false).await;
    for forged in [
        vec![],
        vec![1; 5],
        vec![0xAB; 24],
        vec![0; 64],
        root[..23].to_vec(),
    ] {
        assert_eq!(
            c.getattr(&forged).await.err(),
            Some(BADHANDLE),
            "{forged:?}"
        );
        assert_alive(&mut c, &root).await;
    }
    // Longer than NFS3_FHSIZE: malformed arguments.
    let r = c.call(NFS, 1, Enc::default().opaque(&[0; 65])).await;
    assert_eq!(r.accept, 4, "GARBAGE_ARGS");
    assert_alive(&mut c, &root).await;

    // Well-formed handle of another export id: STALE.
    let mut other = root.clone();
    other[4] ^= 0xff;
    assert_eq!(c.getattr(&other).await.err(), Some(STALE));

    // A handle for an inode that is not in the export (the outside secret): STALE.
    let secret = std::fs::metadata(f.outside.join("secret")).unwrap();
    let mut forged = root.clone();
    forged[3] = 1; // regular file
    forged[8..16].copy_from_slice(&secret.dev().to_be_bytes());
    forged[16..24].copy_from_slice(&secret.ino().to_be_bytes());
    assert_eq!(c.getattr(&forged).await.err(), Some(STALE));
    assert_eq!(c.read(&forged, 0, 100).await, Err(STALE));

    // A file deleted on the host: STALE.
    let fh = c.create(&root, b"gone", 0o644).await.unwrap();
    std::fs::remove_file(f.export.join("gone")).unwrap();
    assert_eq!(c.getattr(&fh).await.err(), Some(STALE));
    // Inode number reused by an object of another type: STALE, not served as the new one.
    let mut as_dir = fh.clone();
    as_dir[3] = 2;
    assert_eq!(c.getattr(&as_dir).await.err(), Some(STALE));
    assert_alive(&mut c, &root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_clamped_or_refused() {
    let f = fixture();
    let (server, mut c, root) = serve(&f, false).await;
    let big = vec![7u8; 3 * 1024 * 1024];
    std::fs::write(f.export.join("big"), &big).unwrap();
    let fh = c.lookup(&root, b"big").await.unwrap();

    let data = c.read(&fh, 0, u32::MAX).await.unwrap();
    assert_eq!(data.len(), 1024 * 1024, "READ count clamped to rtmax");
    let data = c.read(&fh, u64::MAX - 10, u32::MAX).await.unwrap();
    assert!(data.is_empty());

    // WRITE announcing 4 GiB with 4 bytes of data writes 4 bytes.
    assert_eq!(c.write(&fh, 0, u32::MAX, b"head").await, Ok(4));
    assert_eq!(
        &std::fs::read(f.export.join("big")).unwrap()[..5],
        b"head\x07"
    );
    // A WRITE of 1 MiB (the advertised wtmax) fits in a record.
    assert_eq!(
        c.write(&fh, 0, 1 << 20, &vec![1u8; 1 << 20]).await,
        Ok(1 << 20)
    );

    // A record announcing 2 GiB: the connection is closed, nothing is allocated for it.
    let mut bad = Client::connect(server.local_addr(), LOCAL.parse().unwrap())
        .await
        .unwrap();
    bad.sock
        .write_all(&0xffff_ffffu32.to_be_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 4];
    let n = tokio::time::timeout(Duration::from_secs(10), bad.sock.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "connection not closed: {n:?}");

    // A 2 MiB WRITE record (over the cap): the connection is closed, nothing written.
    let mut bad = Client::connect(server.local_addr(), LOCAL.parse().unwrap())
        .await
        .unwrap();
    let args = Enc::default()
        .opaque(&fh)
        .u64(0)
        .u32(2 << 20)
        .u32(2)
        .opaque(&vec![9u8; 2 << 20]);
    let res = bad.try_call(NFS, 7, args).await;
    assert!(res.is_err(), "a 2 MiB record was served");
    assert_ne!(std::fs::read(f.export.join("big")).unwrap()[0], 9);

    // The server keeps serving, on the old connection and on new ones.
    assert_alive(&mut c, &root).await;
    let mut fresh = Client::connect(server.local_addr(), LOCAL.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(fresh.mnt("/proj").await.unwrap(), root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_other_than_the_guest_are_refused() {
    let f = fixture();
    let server = NfsServer::start(config(vec![export("/proj", &f.export, false)], "127.0.0.3"))
        .await
        .unwrap();
    // 127.0.0.2 is a loopback address on Linux without any configuration.
    let mut intruder = Client::connect(server.local_addr(), "127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    let res = intruder
        .try_call(MOUNT, 1, Enc::default().opaque(b"/proj"))
        .await;
    assert!(res.is_err(), "a foreign peer got a reply");
    let mut guest = Client::connect(server.local_addr(), "127.0.0.3".parse().unwrap())
        .await
        .unwrap();
    let root = guest.mnt("/proj").await.unwrap();
    assert_alive(&mut guest, &root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readdir_and_readdirplus_page_through_3000_entries() {
    let f = fixture();
    for i in 0..3000 {
        std::fs::write(
            f.export.join(format!("file-{i:05}-with-a-longer-name")),
            b"",
        )
        .unwrap();
    }
    let (_server, mut c, root) = serve(&f, false).await;
    for plus in [false, true] {
        let (mut names, calls) = c.list(&root, plus, 1000).await;
        assert!(calls > 1, "the listing should need several replies");
        names.retain(|n| n != b"." && n != b"..");
        assert_eq!(
            names.len(),
            3000,
            "plus={plus}: duplicates or missing names"
        );
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 3000, "plus={plus}: duplicate names");
        assert_eq!(names[0], b"file-00000-with-a-longer-name");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_survive_a_server_restart() {
    let f = fixture();
    std::fs::create_dir_all(f.export.join("a/b")).unwrap();
    std::fs::write(f.export.join("a/b/file"), b"stable content").unwrap();
    let (server, mut c, root) = serve(&f, false).await;
    let a = c.lookup(&root, b"a").await.unwrap();
    let b = c.lookup(&a, b"b").await.unwrap();
    let file = c.lookup(&b, b"file").await.unwrap();
    let fileid = c.getattr(&file).await.unwrap().fileid;
    assert_eq!(
        fileid,
        std::fs::metadata(f.export.join("a/b/file")).unwrap().ino()
    );
    drop(c);
    server.shutdown().await;

    let (_server, mut c, root2) = serve(&f, false).await;
    assert_eq!(root2, root, "root handle changed across a restart");
    // The old handle works directly, before any LOOKUP has indexed the file.
    assert_eq!(c.read(&file, 0, 100).await.unwrap(), b"stable content");
    assert_eq!(c.getattr(&file).await.unwrap().fileid, fileid);
    assert_eq!(c.lookup(&root, b"a").await.unwrap(), a);
    assert_eq!(c.lookup(&b, b"file").await.unwrap(), file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_mapping_and_attributes() {
    let f = fixture();
    std::os::unix::fs::chown(&f.export, Some(OWNER_UID), Some(OWNER_GID)).unwrap();
    std::fs::write(f.export.join("theirs"), b"x").unwrap();
    std::os::unix::fs::chown(f.export.join("theirs"), Some(4242), Some(4343)).unwrap();
    let (_server, mut c, root) = serve(&f, false).await;

    let a = c.getattr(&root).await.unwrap();
    assert_eq!(
        (a.uid, a.gid),
        (0, 0),
        "the share owner appears as the guest's root"
    );
    let theirs = c.lookup(&root, b"theirs").await.unwrap();
    let a = c.getattr(&theirs).await.unwrap();
    assert_eq!((a.uid, a.gid), (4242, 4343));

    // Created objects belong to the share owner, with exactly the mode asked for.
    let fh = c.create(&root, b"new", 0o640).await.unwrap();
    let m = std::fs::metadata(f.export.join("new")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (OWNER_UID, OWNER_GID, 0o640)
    );
    let a = c.getattr(&fh).await.unwrap();
    assert_eq!((a.uid, a.gid, a.mode, a.ftype), (0, 0, 0o640, 1));
    c.mkdir(&root, b"dir").await.unwrap();
    let m = std::fs::metadata(f.export.join("dir")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (OWNER_UID, OWNER_GID, 0o750)
    );
    c.symlink(&root, b"link", b"new").await.unwrap();
    let m = std::fs::symlink_metadata(f.export.join("link")).unwrap();
    assert_eq!((m.uid(), m.gid()), (OWNER_UID, OWNER_GID));

    // WRITE, then SETATTR: size, mode, mtime; chown only to the owner.
    assert_eq!(c.write(&fh, 0, 11, b"hello world").await, Ok(11));
    assert_eq!(c.getattr(&fh).await.unwrap().size, 11);
    assert_eq!(c.setattr(&fh, None, None, Some(5), None).await, OK);
    assert_eq!(std::fs::read(f.export.join("new")).unwrap(), b"hello");
    assert_eq!(
        c.setattr(&fh, Some(0o600), None, None, Some(1_000_000))
            .await,
        OK
    );
    let m = std::fs::metadata(f.export.join("new")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o600, 1_000_000));
    assert_eq!(c.getattr(&fh).await.unwrap().mtime, 1_000_000);
    assert_eq!(c.setattr(&fh, None, Some(0), None, None).await, OK);
    assert_eq!(c.setattr(&fh, None, Some(4242), None, None).await, PERM);
    assert_eq!(c.setattr(&theirs, None, Some(0), None, None).await, OK);
    assert_eq!(
        std::fs::metadata(f.export.join("theirs")).unwrap().uid(),
        OWNER_UID
    );
    assert_eq!(
        std::fs::metadata(f.export.join("new")).unwrap().uid(),
        OWNER_UID
    );

    // RENAME across directories; LINK is not supported.
    let dir = c.lookup(&root, b"dir").await.unwrap();
    let args = Enc::default()
        .opaque(&root)
        .opaque(b"new")
        .opaque(&dir)
        .opaque(b"moved");
    assert_eq!(c.call(NFS, 14, args).await.status(), OK);
    assert_eq!(std::fs::read(f.export.join("dir/moved")).unwrap(), b"hello");
    assert_eq!(
        c.read(&fh, 0, 10).await.unwrap(),
        b"hello",
        "handle still valid after RENAME"
    );
    let args = Enc::default().opaque(&fh).opaque(&root).opaque(b"hard");
    assert_eq!(c.call(NFS, 15, args).await.status(), NOTSUPP);
    assert!(!f.export.join("hard").exists());
    // REMOVE and RMDIR.
    let args = Enc::default().opaque(&dir).opaque(b"moved");
    assert_eq!(c.call(NFS, 12, args).await.status(), OK);
    let args = Enc::default().opaque(&root).opaque(b"dir");
    assert_eq!(c.call(NFS, 13, args).await.status(), OK);
    assert!(!f.export.join("dir").exists());
    assert_eq!(c.getattr(&fh).await.err(), Some(STALE));
    let _ = std::fs::set_permissions(&f.export, std::fs::Permissions::from_mode(0o755));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_exports_refuse_every_mutation() {
    let f = fixture();
    std::fs::write(f.export.join("file"), b"read me").unwrap();
    std::fs::create_dir(f.export.join("dir")).unwrap();
    let before = tree(&f.export);
    let (_server, mut c, root) = serve(&f, true).await;
    let file = c.lookup(&root, b"file").await.unwrap();
    let dir = c.lookup(&root, b"dir").await.unwrap();

    assert_eq!(c.create(&root, b"x", 0o644).await, Err(ROFS));
    assert_eq!(c.mkdir(&root, b"x").await, Err(ROFS));
    assert_eq!(c.symlink(&root, b"x", b"file").await, Err(ROFS));
    assert_eq!(c.write(&file, 0, 3, b"bad").await, Err(ROFS));
    assert_eq!(c.setattr(&file, None, None, Some(0), None).await, ROFS);
    assert_eq!(c.setattr(&file, Some(0o777), None, None, None).await, ROFS);
    let calls: Vec<(u32, Enc)> = vec![
        (12, Enc::default().opaque(&root).opaque(b"file")),
        (13, Enc::default().opaque(&root).opaque(b"dir")),
        (
            14,
            Enc::default()
                .opaque(&root)
                .opaque(b"file")
                .opaque(&dir)
                .opaque(b"moved"),
        ),
        (
            15,
            Enc::default().opaque(&file).opaque(&root).opaque(b"hard"),
        ),
        (
            11,
            Enc::default()
                .opaque(&root)
                .opaque(b"fifo")
                .u32(7)
                .sattr(None, None, None, None),
        ),
    ];
    for (proc_, args) in calls {
        assert_eq!(
            c.call(NFS, proc_, args).await.status(),
            ROFS,
            "proc {proc_}"
        );
    }
    // ACCESS grants no modification bits.
    let r = c.call(NFS, 4, Enc::default().opaque(&file).u32(0x3f)).await;
    let mut d = r.dec();
    assert_eq!(d.u32(), OK);
    d.post_op();
    assert_eq!(d.u32() & (4 | 8 | 16), 0);

    assert_eq!(c.read(&file, 0, 100).await.unwrap(), b"read me");
    assert_eq!(tree(&f.export), before);
    assert_eq!(std::fs::read(f.export.join("file")).unwrap(), b"read me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_exports_on_one_port() {
    let f = fixture();
    let server = NfsServer::start(config(
        vec![
            export("/proj", &f.export, false),
            export("/other/share", &f.outside, true),
        ],
        LOCAL,
    ))
    .await
    .unwrap();
    let mounts = server.mounts();
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[1].source, format!("{LOCAL}:/other/share"));
    assert!(mounts[0].options.contains(&format!(
        "port={},mountport={}",
        mounts[0].port, mounts[0].port
    )));

    let mut c = Client::connect(server.local_addr(), LOCAL.parse().unwrap())
        .await
        .unwrap();
    let proj = c.mnt("/proj").await.unwrap();
    let other = c.mnt("/other/share/").await.unwrap();
    assert_ne!(proj, other);
    assert_eq!(c.mnt("/other").await, Err(NOENT));
    assert_eq!(c.mnt("/").await, Err(NOENT));
    let secret = c.lookup(&other, b"secret").await.unwrap();
    assert_eq!(
        c.read(&secret, 0, 100).await.unwrap(),
        b"TOP-SECRET-host-file\n"
    );
    assert_eq!(c.create(&other, b"x", 0o644).await, Err(ROFS));
    // RENAME between exports: XDEV.
    std::fs::write(f.export.join("f"), b"").unwrap();
    let args = Enc::default()
        .opaque(&proj)
        .opaque(b"f")
        .opaque(&other)
        .opaque(b"f");
    assert_eq!(c.call(NFS, 14, args).await.status(), 18);
    // EXPORT lists both.
    let r = c.call(MOUNT, 5, Enc::default()).await;
    let mut d = r.dec();
    let mut names = Vec::new();
    while d.u32() == 1 {
        names.push(String::from_utf8(d.opaque().to_vec()).unwrap());
        while d.u32() == 1 {
            d.opaque();
        }
    }
    assert_eq!(names, ["/proj", "/other/share"]);
}
