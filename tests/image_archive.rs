//! The Debian archive client of `devbox image build` (`devbox::image::debian`) against a
//! small fake archive served on loopback and signed with a key this test generates: the good
//! path, and every way the archive can lie or fail — a tampered or foreign-signed InRelease, a
//! Packages or .deb whose hash does not match (refused, naming the file, nothing kept), a
//! package missing for the arch, an unreachable mirror (bounded retries), and downloads that
//! break off halfway (resumed with a Range request, in the same run and in the next one).
//!
//! The HTTP server is written here on std's TcpListener: it must cut a response off halfway
//! on purpose, honour `Range`, and log each request, which no mock-server crate models.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use devbox::image::debian::deb::{self, DebError};
use devbox::image::debian::fetch::{FetchError, Fetcher, Retry};
use devbox::image::debian::keys::{Keyring, SignatureError};
use devbox::image::debian::resolve::ResolveError;
use devbox::image::debian::{self as debian, Archive, ArchiveOptions, DebianError, Source};
use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, KeyType, SecretKeyParamsBuilder, SignedPublicKey,
    SignedSecretKey,
};
use pgp::types::Password;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- the archive

/// One package of the fake archive: name, version, Depends, files (path, contents, mode).
struct Pkg {
    name: &'static str,
    version: &'static str,
    depends: &'static str,
    files: Vec<(&'static str, Vec<u8>, u32)>,
}

fn packages() -> Vec<Pkg> {
    // Incompressible filler, so the big package is really big on the wire.
    let mut x: u32 = 1;
    let noise: Vec<u8> = (0..400_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    vec![
        Pkg {
            name: "app",
            version: "1.0-1",
            depends: "libfoo (>= 2), base | alt",
            files: vec![("./usr/bin/app", b"#!/bin/sh\necho app\n".to_vec(), 0o755)],
        },
        Pkg {
            name: "libfoo",
            version: "2.1-1",
            depends: "",
            files: vec![("./usr/lib/libfoo.so.2", b"ELF".to_vec(), 0o644)],
        },
        Pkg {
            name: "base",
            version: "1:3-1",
            depends: "big",
            files: vec![("./etc/base.conf", b"x=1\n".to_vec(), 0o600)],
        },
        Pkg {
            name: "alt",
            version: "9",
            depends: "",
            files: vec![],
        },
        Pkg {
            name: "big",
            version: "1",
            depends: "",
            files: vec![("./usr/share/big", noise, 0o644)],
        },
    ]
}

fn deb(p: &Pkg) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data, mode) in &p.files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        tar.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    let data = zstd::encode_all(tar.into_inner().unwrap().as_slice(), 1).unwrap();
    let mut ar = ar::Builder::new(Vec::new());
    for (name, body) in [
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.zst", Vec::new()),
        ("data.tar.zst", data),
    ] {
        ar.append(
            &ar::Header::new(name.into(), body.len() as u64),
            body.as_slice(),
        )
        .unwrap();
    }
    ar.into_inner().unwrap()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn key() -> SignedSecretKey {
    SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id("devbox test archive <test@example.org>".into())
        .build()
        .unwrap()
        .generate(rand::thread_rng())
        .unwrap()
}

fn public(key: &SignedSecretKey) -> String {
    SignedPublicKey::from(key.clone())
        .to_armored_string(ArmorOptions::default())
        .unwrap()
}

fn sign(key: &SignedSecretKey, text: &str) -> String {
    CleartextSignedMessage::sign(
        rand::thread_rng(),
        text,
        &key.primary_key,
        &Password::empty(),
    )
    .unwrap()
    .to_armored_string(ArmorOptions::default())
    .unwrap()
}

/// The files of an archive with suite `test`: amd64 has every package (Packages.xz, by
/// hash), arm64 all but `app` (Packages.gz). Returns the files and the Release text.
fn archive_files(key: &SignedSecretKey) -> (BTreeMap<String, Vec<u8>>, String) {
    let mut files = BTreeMap::new();
    let mut indexes = BTreeMap::new();
    for arch in ["amd64", "arm64"] {
        let mut text = String::new();
        for p in packages() {
            if arch == "arm64" && p.name == "app" {
                continue;
            }
            let body = deb(&p);
            let path = format!("pool/main/{0}_{arch}.deb", p.name);
            text.push_str(&format!(
                "Package: {}\nVersion: {}\nArchitecture: {arch}\nPriority: optional\n",
                p.name, p.version
            ));
            if !p.depends.is_empty() {
                text.push_str(&format!("Depends: {}\n", p.depends));
            }
            text.push_str(&format!(
                "Filename: {path}\nSize: {}\nSHA256: {}\n\n",
                body.len(),
                sha(&body)
            ));
            files.insert(path, body);
        }
        indexes.insert(format!("main/binary-{arch}/Packages"), text.into_bytes());
    }
    let plain_amd = indexes["main/binary-amd64/Packages"].clone();
    let plain_arm = indexes["main/binary-arm64/Packages"].clone();
    indexes.insert("main/binary-amd64/Packages.xz".into(), xz(&plain_amd));
    indexes.insert("main/binary-arm64/Packages.gz".into(), gz(&plain_arm));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let date = chrono::DateTime::from_timestamp(now.as_secs() as i64, 0)
        .unwrap()
        .format("%a, %d %b %Y %H:%M:%S UTC");
    let mut release = format!(
        "Origin: devbox test\nSuite: testing\nCodename: test\nDate: {date}\n\
         Acquire-By-Hash: yes\nArchitectures: amd64 arm64\nComponents: main\nSHA256:\n"
    );
    for (path, data) in &indexes {
        release.push_str(&format!(" {} {} {path}\n", sha(data), data.len()));
        files.insert(format!("dists/test/{path}"), data.clone());
    }
    // by-hash copies for amd64 (the xz one is what a client asks for first).
    let amd_xz = &indexes["main/binary-amd64/Packages.xz"];
    files.insert(
        format!(
            "dists/test/main/binary-amd64/by-hash/SHA256/{}",
            sha(amd_xz)
        ),
        amd_xz.clone(),
    );
    files.insert(
        "dists/test/InRelease".into(),
        sign(key, &release).into_bytes(),
    );
    (files, release)
}

// ---------------------------------------------------------------- the server

#[derive(Default)]
struct State {
    files: BTreeMap<String, Vec<u8>>,
    /// Paths whose next full response is cut off halfway.
    cut_once: BTreeSet<String>,
    /// Paths whose every response is cut off halfway.
    cut_always: BTreeSet<String>,
    /// (path, Range header) of every request.
    log: Vec<(String, Option<String>)>,
}

struct Server {
    state: Arc<Mutex<State>>,
    url: String,
}

impl Server {
    fn start(files: BTreeMap<String, Vec<u8>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/debian/", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            files,
            ..State::default()
        }));
        let s = state.clone();
        // Serves until the test process ends; each connection gets one response.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Server { state, url }
    }

    fn source(&self) -> Source {
        Source::new(&debian::mirror_url(&self.url).unwrap(), "test")
    }

    fn log(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().unwrap().log.clone()
    }

    fn set(&self, path: &str, data: Vec<u8>) {
        self.state.lock().unwrap().files.insert(path.into(), data);
    }
}

fn serve(mut conn: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_owned());
        }
    }
    let path = path.trim_start_matches("/debian/").to_owned();
    let (body, cut) = {
        let mut s = state.lock().unwrap();
        s.log.push((path.clone(), range.clone()));
        let cut = s.cut_always.contains(&path) || (range.is_none() && s.cut_once.remove(&path));
        (s.files.get(&path).cloned(), cut)
    };
    let Some(body) = body else {
        let _ = conn
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let start: usize = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let head = if range.is_some() {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\n",
            body.len() - 1,
            body.len()
        )
    } else {
        "HTTP/1.1 200 OK\r\n".to_owned()
    };
    let rest = &body[start.min(body.len())..];
    let _ = conn.write_all(
        format!(
            "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
            rest.len()
        )
        .as_bytes(),
    );
    let send = if cut { &rest[..rest.len() / 2] } else { rest };
    let _ = conn.write_all(send);
    // Dropping the connection here, short of Content-Length, is the broken transfer.
}

// ---------------------------------------------------------------- helpers

fn quick() -> Retry {
    Retry {
        attempts: 3,
        first_pause: Duration::from_millis(20),
    }
}

fn open(
    server: &Server,
    keyring: &Keyring,
    lists: &Path,
    arch: &str,
) -> Result<Archive, DebianError> {
    let fetcher = Fetcher::new(quick(), false).unwrap();
    let sources = [server.source()];
    Archive::open(
        &fetcher,
        &ArchiveOptions {
            sources: &sources,
            keyring,
            arch,
            lists,
            refresh: false,
            now: SystemTime::now(),
        },
    )
}

/// Every file below `dir` (relative paths), to show what was kept.
fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = fs_err::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(
                    files_in(&p)
                        .into_iter()
                        .map(|f| format!("{}/{f}", e.file_name().to_string_lossy())),
                );
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------- tests

#[test]
fn a_signed_archive_is_read_resolved_downloaded_and_unpacked() {
    let key = key();
    let (files, _) = archive_files(&key);
    let server = Server::start(files);
    let keyring = Keyring::from_armored(&[&public(&key)]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let lists = tmp.path().join("lists");

    let archive = open(&server, &keyring, &lists, "amd64").unwrap();
    let pkgs = archive.resolve(&["app"]).unwrap();
    let chosen: Vec<String> = pkgs
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect();
    assert_eq!(chosen, ["app=1.0-1", "base=1:3-1", "big=1", "libfoo=2.1-1"]);
    // The index came by hash, as the Release offers.
    assert!(
        server
            .log()
            .iter()
            .any(|(p, _)| p.contains("/by-hash/SHA256/"))
    );

    let debs = tmp.path().join("debs");
    let fetcher = Fetcher::new(quick(), false).unwrap();
    let refs: Vec<&debian::Package> = pkgs.iter().collect();
    debian::download(&fetcher, &refs, &debs).unwrap();
    let root = tmp.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    for p in &pkgs {
        let cached = p.cached(&debs);
        assert_eq!(
            cached.file_name().unwrap().to_string_lossy(),
            format!("{}.deb", p.sha256)
        );
        deb::unpack(&cached, &root, &p.sha256).unwrap();
    }
    assert_eq!(
        fs_err::read(root.join("usr/bin/app")).unwrap(),
        b"#!/bin/sh\necho app\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs_err::metadata(root.join("etc/base.conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    assert!(files_in(&debs.join("partial")).is_empty());

    // A second run reads the verified lists from the cache and downloads nothing.
    let before = server.log().len();
    let again = open(&server, &keyring, &lists, "amd64").unwrap();
    assert_eq!(again.resolve(&["app"]).unwrap(), pkgs);
    debian::download(&fetcher, &refs, &debs).unwrap();
    assert_eq!(server.log().len(), before, "{:?}", &server.log()[before..]);
}

#[test]
fn a_tampered_inrelease_is_refused_and_not_kept() {
    let key = key();
    let (files, _) = archive_files(&key);
    let server = Server::start(files.clone());
    let keyring = Keyring::from_armored(&[&public(&key)]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let lists = tmp.path().join("lists");
    // Change one signed byte: the origin of the suite.
    let signed = String::from_utf8(files["dists/test/InRelease"].clone()).unwrap();
    server.set(
        "dists/test/InRelease",
        signed
            .replace("Origin: devbox test", "Origin: devbox tesT")
            .into_bytes(),
    );
    let e = open(&server, &keyring, &lists, "amd64").err().unwrap();
    assert!(
        matches!(&e, DebianError::Signature { source: SignatureError::Bad { .. }, url } if url.ends_with("dists/test/InRelease")),
        "{e}"
    );
    assert!(e.to_string().contains("dists/test/InRelease"), "{e}");
    assert!(e.hint().unwrap().contains("--mirror"));
    assert!(files_in(&lists).is_empty(), "{:?}", files_in(&lists));

    // Signed by a key devbox does not trust: refused too.
    let other = key_pair_signing(&files);
    server.set("dists/test/InRelease", other.into_bytes());
    let e = open(&server, &keyring, &lists, "amd64").err().unwrap();
    assert!(
        matches!(
            &e,
            DebianError::Signature {
                source: SignatureError::Untrusted { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(files_in(&lists).is_empty());
}

/// The fake archive's Release signed by a fresh key nobody trusts.
fn key_pair_signing(files: &BTreeMap<String, Vec<u8>>) -> String {
    let text = String::from_utf8(files["dists/test/InRelease"].clone()).unwrap();
    let (msg, _) = CleartextSignedMessage::from_string(&text).unwrap();
    sign(&key(), &msg.signed_text().replace("\r\n", "\n"))
}

#[test]
fn a_packages_file_that_does_not_match_is_refused_and_not_kept() {
    let key = key();
    let (mut files, _) = archive_files(&key);
    // Other bytes under the names the signed Release vouches for: one changed byte in the
    // compressed index (by hash and by name), and a shorter file for arm64.
    for (path, data) in files.iter_mut() {
        if path.starts_with("dists/test/main/binary-amd64/") && !path.ends_with("/Packages") {
            data[40] ^= 1;
        }
        if path.ends_with("binary-arm64/Packages.gz") {
            data.truncate(data.len() - 10);
        }
    }
    let server = Server::start(files);
    let keyring = Keyring::from_armored(&[&public(&key)]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let lists = tmp.path().join("lists");
    let e = open(&server, &keyring, &lists, "amd64").err().unwrap();
    assert!(
        matches!(&e, DebianError::Fetch(FetchError::Hash { file, .. }) if file.contains("binary-amd64")),
        "{e}"
    );
    assert!(e.to_string().contains(&server.url), "names the mirror: {e}");
    // Only the verified InRelease is kept; no index, no partial file.
    let kept = files_in(&lists);
    assert!(
        kept.len() == 1 && kept[0].ends_with("_debian_dists_test_InRelease"),
        "{kept:?}"
    );

    let e = open(&server, &keyring, &lists, "arm64").err().unwrap();
    assert!(
        matches!(&e, DebianError::Fetch(FetchError::Short { file, .. }) if file.ends_with("binary-arm64/Packages.gz")),
        "{e}"
    );
    assert_eq!(files_in(&lists).len(), 1, "{:?}", files_in(&lists));
}

#[test]
fn a_deb_that_does_not_match_is_refused_and_not_kept() {
    let key = key();
    let (mut files, _) = archive_files(&key);
    let tampered = files["pool/main/libfoo_amd64.deb"]
        .iter()
        .map(|b| b ^ 1)
        .collect();
    files.insert("pool/main/libfoo_amd64.deb".into(), tampered);
    let server = Server::start(files);
    let keyring = Keyring::from_armored(&[&public(&key)]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let archive = open(&server, &keyring, &tmp.path().join("lists"), "amd64").unwrap();
    let pkgs = archive.resolve(&["app"]).unwrap();
    let refs: Vec<&debian::Package> = pkgs.iter().collect();
    let debs = tmp.path().join("debs");
    let fetcher = Fetcher::new(quick(), false).unwrap();
    let e = debian::download(&fetcher, &refs, &debs).unwrap_err();
    assert!(
        matches!(&e, DebianError::Fetch(FetchError::Hash { file, .. }) if file == "pool/main/libfoo_amd64.deb"),
        "{e}"
    );
    assert!(e.to_string().contains("pool/main/libfoo_amd64.deb"), "{e}");
    let kept = files_in(&debs);
    let libfoo = pkgs.iter().find(|p| p.name == "libfoo").unwrap();
    assert!(!kept.iter().any(|f| f.contains(&libfoo.sha256)), "{kept:?}");

    // A cached .deb damaged later is refused when unpacked, and removed.
    let app = pkgs.iter().find(|p| p.name == "app").unwrap();
    debian::download(&fetcher, &[app], &debs).unwrap();
    let cached = app.cached(&debs);
    let mut bytes = fs_err::read(&cached).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs_err::write(&cached, bytes).unwrap();
    let root = tmp.path().join("root");
    fs_err::create_dir_all(&root).unwrap();
    let e = deb::unpack(&cached, &root, &app.sha256).unwrap_err();
    assert!(matches!(e, DebError::Damaged { .. }), "{e}");
    assert!(!cached.exists());
}

#[test]
fn a_package_missing_for_the_arch_is_named() {
    let key = key();
    let (files, _) = archive_files(&key);
    let server = Server::start(files);
    let keyring = Keyring::from_armored(&[&public(&key)]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // arm64's index comes as Packages.gz, and lacks `app`.
    let archive = open(&server, &keyring, &tmp.path().join("lists"), "arm64").unwrap();
    assert_eq!(archive.resolve(&["base"]).unwrap().len(), 2);
    let e = archive.resolve(&["base", "app"]).unwrap_err();
    assert!(
        matches!(&e, DebianError::Resolve(ResolveError::Missing { .. })),
        "{e}"
    );
    assert_eq!(e.to_string(), "package app is not in the archive for arm64");
    // An architecture the Release does not list at all.
    let e = open(&server, &keyring, &tmp.path().join("lists"), "riscv64")
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{}dists/test/InRelease lists no main/binary-riscv64/Packages: the suite has no packages for riscv64",
            server.url
        )
    );
}

#[test]
fn an_unreachable_mirror_fails_after_bounded_retries() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mirror = debian::mirror_url(&format!("http://127.0.0.1:{port}/debian")).unwrap();
    let keyring = Keyring::from_armored(&[&public(&key())]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(quick(), false).unwrap();
    let sources = [Source::new(&mirror, "test")];
    let t0 = Instant::now();
    let e = Archive::open(
        &fetcher,
        &ArchiveOptions {
            sources: &sources,
            keyring: &keyring,
            arch: "amd64",
            lists: &tmp.path().join("lists"),
            refresh: false,
            now: SystemTime::now(),
        },
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            &e,
            DebianError::Fetch(FetchError::Unreachable { attempts: 3, .. })
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("cannot download dists/test/InRelease from mirror {mirror} (3 attempts)")
    );
    assert!(e.hint().unwrap().contains("--mirror"));
    // Pauses of 20 and 40 ms: bounded, not a hang.
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

#[test]
fn a_broken_download_resumes_where_it_stopped() {
    let key = key();
    let (files, _) = archive_files(&key);
    let server = Server::start(files.clone());
    let keyring = Keyring::from_armored(&[&public(&key)]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let archive = open(&server, &keyring, &tmp.path().join("lists"), "amd64").unwrap();
    let pkgs = archive.resolve(&["app"]).unwrap();
    let big = pkgs.iter().find(|p| p.name == "big").unwrap();
    let path = "pool/main/big_amd64.deb".to_owned();
    let half = (files[&path].len() / 2).to_string();
    let debs = tmp.path().join("debs");

    // In one run: the first response stops halfway, the retry asks for the rest.
    server.state.lock().unwrap().cut_once.insert(path.clone());
    let fetcher = Fetcher::new(quick(), false).unwrap();
    debian::download(&fetcher, &[big], &debs).unwrap();
    assert_eq!(fs_err::read(big.cached(&debs)).unwrap(), files[&path]);
    let asked: Vec<Option<String>> = server
        .log()
        .into_iter()
        .filter(|(p, _)| *p == path)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(asked, [None, Some(format!("bytes={half}-"))]);

    // Across runs: every response breaks off; the error says so and the part is kept...
    fs_err::remove_file(big.cached(&debs)).unwrap();
    server.state.lock().unwrap().cut_always.insert(path.clone());
    let e = debian::download(&fetcher, &[big], &debs).unwrap_err();
    assert!(
        matches!(
            &e,
            DebianError::Fetch(FetchError::Broken { attempts: 3, .. })
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains(&path) && e.to_string().contains(&server.url),
        "{e}"
    );
    let part = debs.join("partial").join(format!("{}.part", big.sha256));
    assert!(fs_err::metadata(&part).unwrap().len() > 0);
    // ...and the next run, with the mirror well again, continues from it.
    let have = fs_err::metadata(&part).unwrap().len();
    server.state.lock().unwrap().cut_always.clear();
    let before = server.log().len();
    debian::download(&fetcher, &[big], &debs).unwrap();
    assert_eq!(fs_err::read(big.cached(&debs)).unwrap(), files[&path]);
    assert_eq!(
        server.log()[before..],
        [(path, Some(format!("bytes={have}-")))]
    );
    assert!(!part.exists());
}

#[test]
fn the_cli_names_a_bad_or_unreachable_mirror_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |mirror: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_devbox"))
            .args(["image", "build", "--mirror", mirror])
            .env("DEVBOX_CACHE", tmp.path().join("cache"))
            .env("DEVBOX_HOME", tmp.path().join("home"))
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run("ftp://example.org/debian");
    assert!(
        err.contains("invalid mirror URL \"ftp://example.org/debian\""),
        "{err}"
    );
    assert!(err.contains("hint: give the archive's base URL"), "{err}");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = run(&format!("http://127.0.0.1:{port}/debian"));
    assert!(
        err.contains(&format!(
            "cannot download dists/{}/InRelease from mirror http://127.0.0.1:{port}/debian/ (4 attempts)",
            devbox::image::debian::Suite::default().name()
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: check the network and the mirror URL"),
        "{err}"
    );
}
