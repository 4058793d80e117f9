//! `devbox image pull` against a tiny HTTP/1.1 server on 127.0.0.1 that serves a fake image
//! directory, and misbehaves on request (wrong bytes, 404, connection dropped mid-body).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use devbox::image::pull::{PullError, pull};
use devbox::image::{self, INITRD, Image, KERNEL, MANIFEST, Manifest, ROOT_IMAGE};
use sha2::{Digest, Sha256};

const VERSION: &str = "0123456789abcdef";

#[derive(Clone)]
enum Reply {
    Body(Vec<u8>),
    /// Announces the full length, sends only the first half, then closes the connection.
    DropMidBody(Vec<u8>),
}

struct Server {
    base: String,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Serves `routes` (path → reply, anything else is a 404) until the test process exits.
    fn start(routes: HashMap<String, Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let routes = routes.clone();
                let seen = seen.clone();
                std::thread::spawn(move || answer(stream, &routes, &seen));
            }
        });
        Server { base, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

fn answer(stream: TcpStream, routes: &HashMap<String, Reply>, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    seen.lock().unwrap().push(path.clone());
    let mut out = stream;
    let head = |status: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let _ = match routes.get(&path) {
        Some(Reply::Body(body)) => out
            .write_all(head("200 OK", body.len()).as_bytes())
            .and_then(|_| out.write_all(body)),
        Some(Reply::DropMidBody(body)) => out
            .write_all(head("200 OK", body.len()).as_bytes())
            .and_then(|_| out.write_all(&body[..body.len() / 2])),
        None => out.write_all(head("404 Not Found", 0).as_bytes()),
    };
    let _ = out.flush();
}

struct Fixture {
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    root: Vec<u8>,
    manifest: Vec<u8>,
}

fn fixture() -> Fixture {
    // Large enough to take several reads, small enough to be instant.
    let kernel: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let initrd: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
    let root: Vec<u8> = (0..900_000u32).map(|i| (i % 239) as u8).collect();
    let manifest = Manifest {
        version: VERSION.into(),
        arch: "x86_64".into(),
        kernel_version: "6.1.0-1-cloud-amd64".into(),
        created: "2025-01-01T00:00:00Z".into(),
        packages: [("busybox".to_owned(), "1:1.36.1-9".to_owned())].into(),
        files: [
            (KERNEL.to_owned(), sha256(&kernel)),
            (INITRD.to_owned(), sha256(&initrd)),
            (ROOT_IMAGE.to_owned(), sha256(&root)),
        ]
        .into(),
        file_events: false,
        engine_ca: false,
    };
    let manifest = serde_json::to_vec_pretty(&manifest).unwrap();
    Fixture {
        kernel,
        initrd,
        root,
        manifest,
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn routes(f: &Fixture) -> HashMap<String, Reply> {
    [
        (format!("/img/{MANIFEST}"), Reply::Body(f.manifest.clone())),
        (format!("/img/{KERNEL}"), Reply::Body(f.kernel.clone())),
        (format!("/img/{INITRD}"), Reply::Body(f.initrd.clone())),
        (format!("/img/{ROOT_IMAGE}"), Reply::Body(f.root.clone())),
    ]
    .into()
}

/// Every entry of `<cache>/images`, dot-dirs included.
fn entries(cache: &Path) -> Vec<String> {
    match fs_err::read_dir(image::images_dir(cache)) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn pulls_verifies_and_installs_an_image() {
    let f = fixture();
    let server = Server::start(routes(&f));
    let cache = tempfile::tempdir().unwrap();

    let img = pull(cache.path(), &server.url("/img/manifest.json"), None, false).unwrap();
    assert_eq!(img.dir, image::images_dir(cache.path()).join(VERSION));
    assert_eq!(fs_err::read(img.kernel()).unwrap(), f.kernel);
    assert_eq!(fs_err::read(img.initrd()).unwrap(), f.initrd);
    // The current layout's root image comes along, checked like the rest.
    let root = img
        .root_image()
        .expect("the pulled image has its root image");
    assert_eq!(fs_err::read(root).unwrap(), f.root);
    assert_eq!(
        fs_err::read(img.dir.join(MANIFEST)).unwrap(),
        f.manifest,
        "manifest kept byte for byte"
    );
    let opened = Image::open(&img.dir).unwrap();
    opened.verify().unwrap();
    assert_eq!(
        image::find(cache.path(), None).unwrap().manifest.version,
        VERSION
    );
    assert_eq!(entries(cache.path()), vec![VERSION.to_owned()]);

    // Pulling again finds the verified copy and does not download the payload again.
    let again = pull(cache.path(), &server.url("/img/"), None, false).unwrap();
    assert_eq!(again.dir, img.dir);
    assert_eq!(server.hits("/img/initrd.img"), 1);
    assert_eq!(server.hits("/img/manifest.json"), 2);
}

#[test]
fn pinned_manifest_hash_is_enforced() {
    let f = fixture();
    let server = Server::start(routes(&f));
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/img/manifest.json");

    let wrong = "0".repeat(64);
    let err = pull(cache.path(), &url, Some(&wrong), false).unwrap_err();
    match &err {
        PullError::ManifestChecksum {
            url: u,
            expected,
            actual,
        } => {
            assert_eq!(u, &url);
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha256(&f.manifest));
        }
        other => panic!("expected ManifestChecksum, got {other:?}"),
    }
    assert!(err.hint().is_some());
    assert_eq!(
        server.hits("/img/vmlinuz"),
        0,
        "nothing fetched after a bad manifest"
    );
    assert!(entries(cache.path()).is_empty());

    let right = sha256(&f.manifest).to_uppercase();
    pull(cache.path(), &url, Some(&right), false).unwrap();
}

#[test]
fn corrupted_file_is_rejected_and_nothing_is_left() {
    let f = fixture();
    let mut bad = f.initrd.clone();
    bad[12345] ^= 0xff;
    let mut r = routes(&f);
    r.insert(format!("/img/{INITRD}"), Reply::Body(bad.clone()));
    let server = Server::start(r);
    let cache = tempfile::tempdir().unwrap();

    let err = pull(cache.path(), &server.url("/img/manifest.json"), None, false).unwrap_err();
    match &err {
        PullError::Checksum {
            file,
            expected,
            actual,
            ..
        } => {
            assert_eq!(file, INITRD);
            assert_eq!(expected, &sha256(&f.initrd));
            assert_eq!(actual, &sha256(&bad));
        }
        other => panic!("expected Checksum, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(INITRD) && msg.contains(&sha256(&bad)), "{msg}");
    assert!(
        entries(cache.path()).is_empty(),
        "{:?}",
        entries(cache.path())
    );
    assert!(image::find(cache.path(), None).is_err());
}

#[test]
fn not_found_names_the_url() {
    let f = fixture();
    let server = Server::start(routes(&f));
    let cache = tempfile::tempdir().unwrap();

    let url = server.url("/nope/manifest.json");
    let err = pull(cache.path(), &url, None, false).unwrap_err();
    assert!(
        matches!(err, PullError::Status { status: 404, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&url), "{err}");
    assert!(err.hint().unwrap().contains("manifest.json"));

    // A payload file missing behind a good manifest: same error, and no partial directory.
    let mut r = routes(&f);
    r.remove(&format!("/img/{KERNEL}"));
    let server = Server::start(r);
    let err = pull(cache.path(), &server.url("/img/manifest.json"), None, false).unwrap_err();
    assert!(err.to_string().contains("/img/vmlinuz"), "{err}");
    assert!(
        entries(cache.path()).is_empty(),
        "{:?}",
        entries(cache.path())
    );
}

#[test]
fn connection_refused_names_the_url() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cache = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/img/manifest.json");
    let err = pull(cache.path(), &url, None, false).unwrap_err();
    assert!(matches!(err, PullError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
    assert!(entries(cache.path()).is_empty());
}

#[test]
fn connection_dropped_mid_body_leaves_nothing() {
    let f = fixture();
    let mut r = routes(&f);
    r.insert(
        format!("/img/{INITRD}"),
        Reply::DropMidBody(f.initrd.clone()),
    );
    let server = Server::start(r);
    let cache = tempfile::tempdir().unwrap();

    let url = server.url("/img/manifest.json");
    let err = pull(cache.path(), &url, None, false).unwrap_err();
    assert!(matches!(err, PullError::Transfer { .. }), "{err:?}");
    assert!(err.to_string().contains("/img/initrd.img"), "{err}");
    assert!(
        entries(cache.path()).is_empty(),
        "{:?}",
        entries(cache.path())
    );
}

#[test]
fn damaged_installed_copy_is_replaced() {
    let f = fixture();
    let server = Server::start(routes(&f));
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/img/manifest.json");

    let img = pull(cache.path(), &url, None, false).unwrap();
    fs_err::write(img.kernel(), b"truncated").unwrap();
    assert!(img.verify().is_err());

    let again = pull(cache.path(), &url, None, false).unwrap();
    again.verify().unwrap();
    assert_eq!(server.hits("/img/vmlinuz"), 2);
    assert_eq!(entries(cache.path()), vec![VERSION.to_owned()]);
}

#[test]
fn manifest_with_path_tricks_is_refused() {
    let f = fixture();
    let mut m: serde_json::Value = serde_json::from_slice(&f.manifest).unwrap();
    m["files"]["../../escape"] = serde_json::Value::from(sha256(b"x"));
    let mut r = routes(&f);
    r.insert(
        format!("/img/{MANIFEST}"),
        Reply::Body(serde_json::to_vec(&m).unwrap()),
    );
    let server = Server::start(r);
    let cache = tempfile::tempdir().unwrap();

    let err = pull(cache.path(), &server.url("/img/manifest.json"), None, false).unwrap_err();
    assert!(matches!(err, PullError::BadManifest { .. }), "{err:?}");
    assert!(err.to_string().contains("../../escape"), "{err}");
    assert!(entries(cache.path()).is_empty());
    assert!(!cache.path().join("escape").exists());
}
