// The raw-RPC suite, included by tests/nfs_rpc.rs (Linux's native path) and
// tests/nfs_rpc_portable.rs (the portable path macOS hosts use), which define `FS_PATH`.
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

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
const JUKEBOX: u32 = 10008;

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

/// The credential a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// AUTH_UNIX with this uid (the kernel client's).
    Unix(u32),
    /// AUTH_NONE.
    None,
    /// AUTH_UNIX whose body is cut short.
    BrokenUnix,
}

struct Client {
    sock: TcpStream,
    xid: u32,
    flavor: Flavor,
}

/// An RPC refused for its credential: MSG_DENIED / AUTH_ERROR with this `auth_stat`.
#[derive(Debug, PartialEq, Eq)]
struct Denied(u32);

/// Reserved source ports handed out to the test clients of this process, from the top down.
static NEXT_PORT: AtomicU16 = AtomicU16::new(1023);

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
    /// Connects from a reserved port of `from` (below 1024, as the kernel client does).
    async fn connect(server: SocketAddr, from: IpAddr) -> std::io::Result<Client> {
        for _ in 0..400 {
            let port = NEXT_PORT
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                    Some(if p <= 600 { 1023 } else { p - 1 })
                })
                .unwrap();
            match Client::connect_from(server, SocketAddr::new(from, port)).await {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => continue,
                other => return other,
            }
        }
        Err(std::io::Error::other("no free reserved port"))
    }

    /// Connects from exactly `local` (port 0: an ephemeral port).
    async fn connect_from(server: SocketAddr, local: SocketAddr) -> std::io::Result<Client> {
        let sock = TcpSocket::new_v4()?;
        sock.set_reuseaddr(true)?;
        sock.bind(local)?;
        let sock = sock.connect(server).await?;
        Ok(Client {
            sock,
            xid: 1,
            flavor: Flavor::Unix(0),
        })
    }

    async fn send_raw(&mut self, record: &[u8]) -> std::io::Result<()> {
        // Record mark and record in one write: two small writes would wait for each other
        // (Nagle's algorithm against the server's delayed ACK, 40 ms a call).
        let mut bytes = (record.len() as u32 | 0x8000_0000).to_be_bytes().to_vec();
        bytes.extend_from_slice(record);
        self.sock.write_all(&bytes).await
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
        match self.call_or_denied(prog, proc_, args).await? {
            Ok(reply) => Ok(reply),
            Err(denied) => panic!("RPC denied: {denied:?}"),
        }
    }

    /// A call whose reply may be MSG_DENIED for the credential.
    async fn call_or_denied(
        &mut self,
        prog: u32,
        proc_: u32,
        args: Enc,
    ) -> std::io::Result<Result<Reply, Denied>> {
        self.xid += 1;
        let unix = |uid: u32| {
            Enc::default()
                .u32(0) // stamp
                .opaque(b"guest")
                .u32(uid)
                .u32(0)
                .u32(0)
                .0
        };
        let (flavor, body) = match self.flavor {
            Flavor::Unix(uid) => (1, unix(uid)),
            Flavor::None => (0, Vec::new()),
            Flavor::BrokenUnix => (1, unix(0)[..10].to_vec()),
        };
        let mut rec = Enc::default()
            .u32(self.xid)
            .u32(0) // CALL
            .u32(2)
            .u32(prog)
            .u32(3)
            .u32(proc_)
            .u32(flavor)
            .opaque(&body)
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
        if d.u32() == 1 {
            assert_eq!(d.u32(), 1, "MSG_DENIED, but not AUTH_ERROR");
            return Ok(Err(Denied(d.u32())));
        }
        d.u32();
        d.opaque();
        let accept = d.u32();
        Ok(Ok(Reply {
            accept,
            body: d.0.to_vec(),
        }))
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
    give_to_owner(&export);
    give_to_owner(&outside);
    Fixture {
        _tmp: tmp,
        export,
        outside,
    }
}

/// Gives `path` and everything below it to the share's owner (files the test writes as root
/// are the owner's files in a real share).
fn give_to_owner(path: &Path) {
    std::os::unix::fs::lchown(path, Some(OWNER_UID), Some(OWNER_GID)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            give_to_owner(&e.unwrap().path());
        }
    }
}

fn config(exports: Vec<Export>, client: &str) -> NfsConfig {
    NfsConfig {
        bind: LOCAL.parse().unwrap(),
        bind_device: None,
        port: 0,
        allowed_client: client.parse().unwrap(),
        exports,
        hidden: Vec::new(),
        idle_timeout: devbox::nfs::IDLE_TIMEOUT,
        fs_path: FS_PATH,
        echo: None,
    }
}

fn export(name: &str, path: &Path, read_only: bool) -> Export {
    let m = std::fs::metadata(path).unwrap();
    Export {
        name: name.into(),
        host_path: path.canonicalize().unwrap(),
        dir_id: (m.dev(), m.ino()),
        read_only,
        allow_root: false,
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
    give_to_owner(&f.export.join("big"));
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
    // Another user's file stays theirs: the owner could not take it either.
    assert_eq!(c.setattr(&theirs, None, Some(0), None, None).await, PERM);
    assert_eq!(
        std::fs::metadata(f.export.join("theirs")).unwrap().uid(),
        4242
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

// ---- who may use a share ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_ports_and_weak_credentials_are_refused() {
    let f = fixture();
    let server = NfsServer::start(config(vec![export("/proj", &f.export, false)], LOCAL))
        .await
        .unwrap();
    let addr = server.local_addr();
    // The guest's own address from an unprivileged port, as any process without
    // CAP_NET_BIND_SERVICE connects: closed before a byte is read.
    let mut c = Client::connect_from(addr, SocketAddr::new(LOCAL.parse().unwrap(), 0))
        .await
        .unwrap();
    let port = c.sock.local_addr().unwrap().port();
    assert!(port >= 1024, "{port}");
    let res = c
        .call_or_denied(MOUNT, 1, Enc::default().opaque(b"/proj"))
        .await;
    assert!(
        res.is_err(),
        "a call from port {port} was answered: {:?}",
        res.map(|r| r.map(|r| r.body))
    );

    // A reserved port, AUTH_NONE: NULL is answered, anything else is AUTH_TOOWEAK (5).
    let mut c = Client::connect(addr, LOCAL.parse().unwrap()).await.unwrap();
    let root = c.mnt("/proj").await.unwrap();
    c.flavor = Flavor::None;
    for prog in [NFS, MOUNT] {
        let r = c.call_or_denied(prog, 0, Enc::default()).await.unwrap();
        assert_eq!(r.map(|r| r.accept), Ok(0), "NULL of {prog}");
    }
    let weak: Vec<(u32, u32, Enc)> = vec![
        (MOUNT, 1, Enc::default().opaque(b"/proj")),
        (MOUNT, 5, Enc::default()),
        (NFS, 1, Enc::default().opaque(&root)),
        (NFS, 3, Enc::default().opaque(&root).opaque(b"x")),
        (
            NFS,
            8,
            Enc::default()
                .opaque(&root)
                .opaque(b"planted")
                .u32(0)
                .sattr(Some(0o644), None, None, None),
        ),
    ];
    for (prog, proc_, args) in weak {
        let r = c.call_or_denied(prog, proc_, args).await.unwrap();
        assert_eq!(
            r.err(),
            Some(Denied(5)),
            "program {prog} procedure {proc_} with AUTH_NONE"
        );
    }
    assert!(!f.export.join("planted").exists());
    // A malformed AUTH_UNIX body: AUTH_BADCRED (1).
    c.flavor = Flavor::BrokenUnix;
    let r = c
        .call_or_denied(NFS, 1, Enc::default().opaque(&root))
        .await
        .unwrap();
    assert_eq!(r.err(), Some(Denied(1)));
    // AUTH_UNIX, any uid (the identity used is the share owner's): served.
    c.flavor = Flavor::Unix(1000);
    assert_alive(&mut c, &root).await;
}

// ---- the owner's identity ----------------------------------------------------------------

/// MKDIR with an explicit mode.
async fn mkdir_mode(c: &mut Client, dir: &[u8], name: &[u8], mode: u32) -> Result<Vec<u8>, u32> {
    let args = Enc::default()
        .opaque(dir)
        .opaque(name)
        .sattr(Some(mode), None, None, None);
    let r = c.call(NFS, 9, args).await;
    Client::created(&r)
}

/// ACCESS bits granted out of all six.
async fn access(c: &mut Client, fh: &[u8]) -> u32 {
    let r = c.call(NFS, 4, Enc::default().opaque(fh).u32(0x3f)).await;
    let mut d = r.dec();
    assert_eq!(d.u32(), OK);
    d.post_op();
    d.u32()
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_acts_as_the_share_owner() {
    let f = fixture();
    // Root's files in the owner's share, as `sudo make install` or `sudo vim` leave them.
    let secret = f.export.join("root-only");
    std::fs::write(&secret, b"root-only secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let exe = f.export.join("root-exe");
    std::fs::write(&exe, b"#!/bin/sh\necho root\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A sticky world-writable directory (like /tmp) with another user's file in it.
    let sticky = f.export.join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(sticky.join("theirs"), b"x").unwrap();
    std::os::unix::fs::chown(sticky.join("theirs"), Some(4242), Some(4242)).unwrap();
    let (_server, mut c, root) = serve(&f, false).await;

    let secret_fh = c.lookup(&root, b"root-only").await.unwrap();
    assert_eq!(c.read(&secret_fh, 0, 100).await, Err(ACCES), "READ");
    assert_eq!(c.write(&secret_fh, 0, 4, b"evil").await, Err(ACCES));
    let exe_fh = c.lookup(&root, b"root-exe").await.unwrap();
    assert_eq!(c.write(&exe_fh, 0, 4, b"evil").await, Err(ACCES));
    assert_eq!(
        c.setattr(&exe_fh, Some(0o4755), None, None, None).await,
        PERM
    );
    assert_eq!(c.setattr(&exe_fh, None, Some(0), None, None).await, PERM);
    assert_eq!(c.setattr(&exe_fh, None, None, Some(0), None).await, ACCES);
    let m = std::fs::metadata(&exe).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o755));
    assert_eq!(std::fs::read(&exe).unwrap(), b"#!/bin/sh\necho root\n");
    assert_eq!(std::fs::read(&secret).unwrap(), b"root-only secret\n");
    // The guest sees root's files as nobody's, and may not modify them.
    let a = c.getattr(&exe_fh).await.unwrap();
    assert_eq!((a.uid, a.gid), (65534, 65534));
    assert_eq!(access(&mut c, &exe_fh).await & (4 | 8 | 16), 0);
    assert_eq!(access(&mut c, &exe_fh).await & 1, 1, "readable by all");
    // The sticky bit holds: another user's file there is not the owner's to remove.
    let sticky_fh = c.lookup(&root, b"sticky").await.unwrap();
    let args = Enc::default().opaque(&sticky_fh).opaque(b"theirs");
    assert_eq!(c.call(NFS, 12, args).await.status(), PERM);
    assert!(sticky.join("theirs").exists());

    // Set-ID bits are never set from the guest: not at CREATE, MKDIR nor SETATTR.
    let fh = c.create(&root, b"suid", 0o6755).await.unwrap();
    assert_eq!(mode_of(&f.export.join("suid")), 0o755);
    assert_eq!(c.write(&fh, 0, 5, b"#!x\n\n").await, Ok(5));
    assert_eq!(c.setattr(&fh, Some(0o4755), None, None, None).await, OK);
    assert_eq!(mode_of(&f.export.join("suid")), 0o755);
    assert_eq!(c.setattr(&fh, Some(0o2711), None, None, None).await, OK);
    assert_eq!(mode_of(&f.export.join("suid")), 0o711);
    mkdir_mode(&mut c, &root, b"sgid", 0o2775).await.unwrap();
    assert_eq!(mode_of(&f.export.join("sgid")), 0o775);
    // Bits the host set are the host's: kept when asked for, cleared when not.
    std::fs::set_permissions(
        f.export.join("suid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    assert_eq!(c.setattr(&fh, Some(0o4750), None, None, None).await, OK);
    assert_eq!(mode_of(&f.export.join("suid")), 0o4750);
    assert_eq!(c.setattr(&fh, Some(0o750), None, None, None).await, OK);
    assert_eq!(mode_of(&f.export.join("suid")), 0o750);
    // The owner's own files: everything the owner may do.
    let m = std::fs::metadata(f.export.join("suid")).unwrap();
    assert_eq!((m.uid(), m.gid()), (OWNER_UID, OWNER_GID));
    assert_eq!(c.setattr(&fh, Some(0o000), None, None, None).await, OK);
    assert_eq!(
        c.setattr(&fh, Some(0o640), None, None, Some(1_000_000))
            .await,
        OK,
        "the owner changes a mode-000 file's attributes"
    );
    assert_eq!(mode_of(&f.export.join("suid")), 0o640);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_owned_share_needs_the_opt_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("srv");
    std::fs::create_dir(&dir).unwrap();
    let e = export("/srv", &dir, false);
    let err = NfsServer::start(config(vec![e.clone()], LOCAL))
        .await
        .err()
        .expect("a root-owned share was served without the opt-in");
    assert!(err.to_string().contains("owned by root"), "{err}");
    assert!(err.hint().unwrap().contains("--allow-root-share"));

    // Allowed: the guest acts as root there, but still plants no set-ID file.
    let e = Export {
        allow_root: true,
        ..e
    };
    let server = NfsServer::start(config(vec![e], LOCAL)).await.unwrap();
    let mut c = Client::connect(server.local_addr(), LOCAL.parse().unwrap())
        .await
        .unwrap();
    let root = c.mnt("/srv").await.unwrap();
    c.create(&root, b"tool", 0o6755).await.unwrap();
    let m = std::fs::metadata(dir.join("tool")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o755));
}

// ---- devbox's own directories ------------------------------------------------------------

/// A forged handle for the host object at `path` (kind from its type).
fn forged_handle(template: &[u8], path: &Path) -> Vec<u8> {
    let m = std::fs::symlink_metadata(path).unwrap();
    let mut h = template.to_vec();
    h[3] = if m.is_dir() { 2 } else { 1 };
    h[8..16].copy_from_slice(&m.dev().to_be_bytes());
    h[16..24].copy_from_slice(&m.ino().to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devbox_state_is_invisible_in_a_share() {
    let f = fixture();
    // A home share holding devbox's state and image cache (`~/.devbox`, `~/.cache/devbox`).
    let state = f.export.join(".devbox");
    let key = state.join("machines/dev/id_ed25519");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, b"-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    let cache = f.export.join(".cache/devbox");
    std::fs::create_dir_all(cache.join("images/v")).unwrap();
    std::fs::write(cache.join("images/v/vmlinuz"), b"kernel").unwrap();
    std::fs::write(f.export.join(".cache/other"), b"x").unwrap();
    give_to_owner(&f.export);
    let mut cfg = config(vec![export("/home", &f.export, false)], LOCAL);
    cfg.hidden = vec![state.canonicalize().unwrap(), cache.canonicalize().unwrap()];
    let server = NfsServer::start(cfg.clone()).await.unwrap();
    let mut c = Client::connect(server.local_addr(), LOCAL.parse().unwrap())
        .await
        .unwrap();
    let root = c.mnt("/home").await.unwrap();

    assert_eq!(c.lookup(&root, b".devbox").await, Err(NOENT));
    let dot_cache = c.lookup(&root, b".cache").await.unwrap();
    assert_eq!(c.lookup(&dot_cache, b"devbox").await, Err(NOENT));
    assert!(c.lookup(&dot_cache, b"other").await.is_ok());
    for plus in [false, true] {
        let (names, _) = c.list(&root, plus, 10).await;
        assert!(!names.iter().any(|n| n == b".devbox"), "plus={plus}");
        assert!(names.iter().any(|n| n == b".cache"), "plus={plus}");
        let (names, _) = c.list(&dot_cache, plus, 10).await;
        assert_eq!(names, vec![b"other".to_vec()], "plus={plus}");
    }
    // Handles made up from the state's inode numbers lead nowhere.
    for p in [&state, &key, &cache, &cache.join("images/v/vmlinuz")] {
        let forged = forged_handle(&root, p);
        assert_eq!(
            c.getattr(&forged).await.err(),
            Some(STALE),
            "{}",
            p.display()
        );
        assert_eq!(c.lookup(&forged, b"machines").await, Err(STALE));
    }
    assert_eq!(
        c.read(&forged_handle(&root, &key), 0, 100).await,
        Err(STALE)
    );
    // Neither the state nor a directory leading to it can be moved, replaced or removed.
    let rename = |from: &[u8], to: &[u8]| {
        Enc::default()
            .opaque(&root)
            .opaque(from)
            .opaque(&root)
            .opaque(to)
    };
    assert_eq!(
        c.call(NFS, 14, rename(b".devbox", b"x")).await.status(),
        NOENT
    );
    assert_eq!(
        c.call(NFS, 14, rename(b".cache", b"x")).await.status(),
        ACCES
    );
    c.mkdir(&root, b"empty").await.unwrap();
    assert_eq!(
        c.call(NFS, 14, rename(b"empty", b".cache")).await.status(),
        ACCES
    );
    let args = Enc::default().opaque(&root).opaque(b".devbox");
    assert_eq!(c.call(NFS, 13, args).await.status(), NOENT);
    assert_eq!(c.mkdir(&root, b".devbox").await, Err(EXIST));
    assert_eq!(
        std::fs::read(&key).unwrap(),
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
    );
    assert!(cache.join("images/v/vmlinuz").is_file());
    drop(c);
    server.shutdown().await;

    // An export that is devbox's state, or inside it: not served at all.
    for dir in [&state, &state.join("machines/dev"), &cache] {
        let mut inside = cfg.clone();
        inside.exports = vec![export("/x", dir, false)];
        let err = NfsServer::start(inside)
            .await
            .err()
            .unwrap_or_else(|| panic!("{} was served", dir.display()));
        assert!(err.to_string().contains("devbox's own directory"), "{err}");
    }
}

// ---- shares changed on the host ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_replaced_on_the_host_is_refused_at_start() {
    let f = fixture();
    let data = f.export.join("work/data");
    std::fs::create_dir_all(&data).unwrap();
    give_to_owner(&f.export);
    let e = export("/data", &data, true);
    // Through another share, or on the host: the directory is moved away and a symlink to
    // something else is put in its place.
    let old = f.export.join("work/data.old");
    std::fs::rename(&data, &old).unwrap();
    std::os::unix::fs::symlink(&f.outside, &data).unwrap();
    let err = NfsServer::start(config(vec![e.clone()], LOCAL))
        .await
        .err()
        .expect("a share replaced by a symlink was served");
    assert!(
        format!("{err}: {}", std::error::Error::source(&err).unwrap()).contains("symlink"),
        "{err}"
    );
    // Another directory at the same path: not the one recorded.
    std::fs::remove_file(&data).unwrap();
    std::fs::create_dir(&data).unwrap();
    give_to_owner(&data);
    let err = NfsServer::start(config(vec![e.clone()], LOCAL))
        .await
        .err()
        .expect("another directory was served");
    assert!(err.to_string().contains("not the directory"), "{err}");
    // The recorded directory back in place: served.
    std::fs::remove_dir(&data).unwrap();
    std::fs::rename(&old, &data).unwrap();
    NfsServer::start(config(vec![e], LOCAL)).await.unwrap();
}

// ---- handles across host-side renames, forged handles ------------------------------------

/// Retries a call answered JUKEBOX, as the kernel client does (after a pause).
macro_rules! patiently {
    ($call:expr) => {{
        let mut tries = 0;
        loop {
            match $call {
                Err(JUKEBOX) if tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => break other,
            }
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_survive_host_side_renames() {
    let f = fixture();
    let src = f.export.join("src");
    std::fs::create_dir_all(src.join("proj/sub")).unwrap();
    std::fs::write(src.join("proj/sub/file.txt"), b"content").unwrap();
    std::fs::create_dir(f.export.join("other")).unwrap();
    give_to_owner(&f.export);
    let (_server, mut c, root) = serve(&f, false).await;
    let src_fh = c.lookup(&root, b"src").await.unwrap();
    let proj = c.lookup(&src_fh, b"proj").await.unwrap();
    let sub = c.lookup(&proj, b"sub").await.unwrap();
    let file = c.lookup(&sub, b"file.txt").await.unwrap();
    // A handle of nothing in the export first: the server has looked through all of it.
    let forged = forged_handle(&root, &f.outside.join("secret"));
    assert_eq!(patiently!(c.getattr(&forged).await).err(), Some(STALE));

    // The host renames the project, twice (`mv ~/src/proj ~/src/proj2`), then moves it to
    // another directory: the guest's handles (a shell's cwd, an open file) keep working.
    let moves = [
        (src.join("proj"), src.join("proj2")),
        (src.join("proj2"), src.join("proj3")),
        (src.join("proj3"), f.export.join("other/proj")),
    ];
    for (from, to) in moves {
        std::fs::rename(&from, &to).unwrap();
        let read = patiently!(c.read(&file, 0, 100).await);
        assert_eq!(
            read.as_deref(),
            Ok(&b"content"[..]),
            "after mv {}",
            to.display()
        );
        let a = patiently!(c.getattr(&sub).await).unwrap();
        assert_eq!(a.ftype, 2);
        assert_eq!(c.lookup(&sub, b"file.txt").await.unwrap(), file);
        assert_eq!(patiently!(c.getattr(&proj).await).unwrap().ftype, 2);
    }
    let created = c.create(&sub, b"new.txt", 0o644).await.unwrap();
    assert_eq!(c.write(&created, 0, 2, b"ok").await, Ok(2));
    assert_eq!(
        std::fs::read(f.export.join("other/proj/sub/new.txt")).unwrap(),
        b"ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_handle_does_not_stall_other_requests() {
    let f = fixture();
    // Enough files that looking through all of them takes a while (100,000).
    for d in 0..200 {
        let dir = f.export.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for i in 0..500 {
            std::fs::write(dir.join(format!("f{i}")), b"").unwrap();
        }
    }
    give_to_owner(&f.export);
    let (server, mut a, root) = serve(&f, false).await;
    let mut b = Client::connect(server.local_addr(), LOCAL.parse().unwrap())
        .await
        .unwrap();
    let forged = forged_handle(&root, &f.outside.join("secret"));
    let asked = Instant::now();
    let forged_call = tokio::spawn(async move {
        let r = a.getattr(&forged).await.err();
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Meanwhile, another connection's requests are answered, each needing the index.
    for i in 0..20 {
        let d = b.lookup(&root, format!("d{i}").as_bytes()).await.unwrap();
        b.lookup(&d, b"f1").await.unwrap();
    }
    let others_done = Instant::now();
    let (status, forged_done) = forged_call.await.unwrap();
    assert!(
        matches!(status, Some(STALE) | Some(JUKEBOX)),
        "forged handle: {status:?}"
    );
    assert!(
        others_done < forged_done,
        "40 requests on another connection waited for the forged handle's search: they \
         ended {:?} after it was asked, the search {:?}",
        others_done - asked,
        forged_done - asked
    );
}

// ---- idle connections -----------------------------------------------------------------------

/// Whether the server closed the client's connection (EOF or reset) within `wait`.
async fn closed_within(c: &mut Client, wait: Duration) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, c.sock.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_give_way_and_time_out() {
    let f = fixture();
    let server = NfsServer::start(config(vec![export("/proj", &f.export, false)], LOCAL))
        .await
        .unwrap();
    // Sixteen connections (the cap) opened and left silent.
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(
            Client::connect(server.local_addr(), LOCAL.parse().unwrap())
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The guest's kernel reconnects: served, and the oldest silent connection made way.
    let mut guest = Client::connect(server.local_addr(), LOCAL.parse().unwrap())
        .await
        .unwrap();
    let root = guest
        .mnt("/proj")
        .await
        .expect("a new client after 16 idle ones");
    assert_alive(&mut guest, &root).await;
    assert!(closed_within(&mut silent[0], Duration::from_secs(10)).await);
    assert!(!closed_within(&mut silent[1], Duration::from_millis(300)).await);
    drop(silent);
    server.shutdown().await;

    // Silent for the idle timeout: closed. Speaking in time: kept.
    let mut cfg = config(vec![export("/proj", &f.export, false)], LOCAL);
    cfg.idle_timeout = Duration::from_secs(1);
    let server = NfsServer::start(cfg).await.unwrap();
    let mut quiet = Client::connect(server.local_addr(), LOCAL.parse().unwrap())
        .await
        .unwrap();
    let mut busy = Client::connect(server.local_addr(), LOCAL.parse().unwrap())
        .await
        .unwrap();
    let root = busy.mnt("/proj").await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_alive(&mut busy, &root).await;
    }
    assert!(closed_within(&mut quiet, Duration::from_secs(5)).await);
    assert!(!closed_within(&mut busy, Duration::from_millis(200)).await);
}

// ---- the share link ---------------------------------------------------------------------

/// `ip ARGS` in the calling thread's network namespace (a child inherits its creator's).
fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "ip {args:?}");
}

/// A network namespace made for one test, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// Moves the calling thread into this namespace.
    fn enter(&self) {
        let f = std::fs::File::open(format!("/run/netns/{}", self.0)).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// A server bound to its link's device answers only what arrives on that device, even for
/// its own address (Linux accepts a packet for any of its addresses, whatever the device it
/// came in on): in devbox, nothing that comes through the guest's main NIC reaches the file
/// server, not even frames made by hand. Two namespaces this test makes: the server's, with
/// its link (`shr0`, 10.9.0.1) and another device (`lnk0`, 10.8.0.1), and a client's behind
/// `lnk0` with a route to 10.9.0.1 through it. Needs root.
#[test]
fn a_server_bound_to_its_link_answers_nothing_else() {
    let server_ns = Netns::new(format!("dbx-nfs-s-{}", std::process::id()));
    let client_ns = Netns::new(format!("dbx-nfs-c-{}", std::process::id()));
    let (s, c) = (&server_ns.0, &client_ns.0);
    ip(&[
        "-n", s, "link", "add", "shr0", "type", "veth", "peer", "name", "shr1",
    ]);
    ip(&["-n", s, "addr", "add", "10.9.0.1/30", "dev", "shr0"]);
    ip(&[
        "-n", s, "link", "add", "lnk0", "type", "veth", "peer", "name", "lnk1", "netns", c,
    ]);
    ip(&["-n", s, "addr", "add", "10.8.0.1/30", "dev", "lnk0"]);
    ip(&["-n", c, "addr", "add", "10.8.0.2/30", "dev", "lnk1"]);
    for (ns, dev) in [(s, "shr0"), (s, "shr1"), (s, "lnk0"), (c, "lnk1")] {
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    ip(&["-n", c, "route", "add", "10.9.0.0/30", "via", "10.8.0.1"]);
    let f = fixture();

    let (server_ns, client_ns) = (&server_ns, &client_ns);
    for device in [None, Some("shr0")] {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let export = export("/proj", &f.export, false);
        let server = std::thread::scope(|scope| {
            scope.spawn(move || {
                server_ns.enter();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut cfg = config(vec![export], "10.8.0.2");
                    cfg.bind = "10.9.0.1".parse().unwrap();
                    cfg.bind_device = device.map(str::to_owned);
                    let server = NfsServer::start(cfg).await.unwrap();
                    addr_tx.send(server.local_addr()).unwrap();
                    tokio::task::spawn_blocking(move || done_rx.recv())
                        .await
                        .unwrap()
                        .unwrap();
                    server.shutdown().await;
                });
            });
            scope
                .spawn(move || {
                    client_ns.enter();
                    let addr = addr_rx.recv().unwrap();
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let answered = rt.block_on(async {
                        match Client::connect(addr, "10.8.0.2".parse().unwrap()).await {
                            Ok(mut c) => c
                                .call_or_denied(MOUNT, 1, Enc::default().opaque(b"/proj"))
                                .await
                                .is_ok(),
                            Err(e) => {
                                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
                                false
                            }
                        }
                    });
                    done_tx.send(()).unwrap();
                    answered
                })
                .join()
                .unwrap()
        });
        assert_eq!(
            server,
            device.is_none(),
            "bound to {device:?}: a client behind another device was answered: {server}"
        );
    }
}
