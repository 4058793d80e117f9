//! The TLS terminator on loopback, against backends written here and real clients: `curl`
//! (HTTP/1.1 and HTTP/2, chain verified against the devbox root), `openssl s_client`, and a
//! WebSocket client (tungstenite over rustls). What the proxy does with a real guest is the
//! e2e suite's business; this is the protocol and resource behaviour.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use devbox::tls::ca::Ca;
use devbox::tls::proxy;
use devbox::tls::resolver::{Backends, SniResolver};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Names → backend, as a machine's zone would answer.
struct Map(HashMap<String, SocketAddr>);

impl Backends for Map {
    fn backend(&self, name: &str) -> Option<SocketAddr> {
        self.0.get(name).copied()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    ca_pem: PathBuf,
    port: u16,
    resolver: Arc<SniResolver>,
}

/// A root, a machine `box.dev` allowed `synbioz.dev`, and a proxy on loopback whose names
/// lead to `backends`.
async fn fixture(backends: &[(&str, SocketAddr)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate(&[]).unwrap();
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.cert_pem()).unwrap();
    let issuer = ca
        .machine_issuer("box", "dev", &["synbioz.dev".into()])
        .unwrap();
    let map: Arc<dyn Backends> = Arc::new(Map(backends
        .iter()
        .map(|(n, a)| (n.to_string(), *a))
        .collect()));
    let resolver = Arc::new(SniResolver::new(issuer, map.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(proxy::serve(listener, resolver.clone(), map));
    Fixture {
        _dir: dir,
        ca_pem,
        port,
        resolver,
    }
}

/// A plain HTTP/1.1 backend: answers every request with `Host` and the request line echoed,
/// or with `size` bytes of `x` for `GET /big`. One request per connection.
async fn http_backend(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let line = head.lines().next().unwrap_or("").to_string();
                let host = head
                    .lines()
                    .find_map(|l| l.strip_prefix("host: ").or(l.strip_prefix("Host: ")))
                    .unwrap_or("")
                    .to_string();
                if line.starts_with("GET /big ") {
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
                            )
                            .as_bytes(),
                        )
                        .await;
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut left = size;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if s.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        left -= n;
                    }
                } else {
                    let body = format!("backend saw: {line} host={host}\n");
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// `curl` for `https://<name>:<port><path>` resolved to loopback, verifying against the root.
fn curl(f: &Fixture, name: &str, path: &str, extra: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(&f.ca_pem)
        .arg("--resolve")
        .arg(format!("{name}:{}:127.0.0.1", f.port))
        .args(extra)
        .arg(format!("https://{name}:{}{path}", f.port))
        .output()
        .expect("curl (package curl) runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_reach_the_backend_with_a_verified_chain() {
    let backend = http_backend(0).await;
    let f = fixture(&[("www.synbioz.dev", backend), ("web.box.dev", backend)]).await;
    for (name, version, flag) in [
        ("www.synbioz.dev", "1.1", "--http1.1"),
        ("www.synbioz.dev", "2", "--http2"),
        ("web.box.dev", "2", "--http2"),
    ] {
        let out = tokio::task::block_in_place(|| {
            curl(&f, name, "/page?q=1", &[flag, "-w", "%{http_version}"])
        });
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name} {flag}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.starts_with(&format!("backend saw: GET /page?q=1 HTTP/1.1 host={name}")),
            "{name} {flag}: {text}"
        );
        assert!(text.ends_with(version), "{name} {flag}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_machine_does_not_serve_gets_no_certificate_at_all() {
    let backend = http_backend(0).await;
    let f = fixture(&[("www.synbioz.dev", backend)]).await;
    // Unknown names, a name inside the machine's domains that nothing serves, and no SNI.
    for name in ["pkg.go.dev", "nothing.box.dev", "localhost"] {
        let out = tokio::task::block_in_place(|| curl(&f, name, "/", &["-k"]));
        assert!(!out.status.success(), "{name} was served");
        assert_eq!(
            out.status.code(),
            Some(35),
            "{name}: a TLS handshake failure"
        );
    }
    let out = tokio::task::block_in_place(|| {
        Command::new("openssl")
            .args(["s_client", "-noservername", "-connect"])
            .arg(format!("127.0.0.1:{}", f.port))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl runs")
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no peer certificate available"), "{text}");
    assert_eq!(
        f.resolver.leaf_count(),
        0,
        "no leaf was issued for any of them"
    );
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_download_streams_through_in_little_memory() {
    const SIZE: usize = 256 << 20;
    let backend = http_backend(SIZE).await;
    let f = fixture(&[("www.synbioz.dev", backend)]).await;
    // Warm up: first handshake, leaf issued, buffers allocated.
    let out = tokio::task::block_in_place(|| curl(&f, "www.synbioz.dev", "/", &[]));
    assert!(out.status.success());
    for flag in ["--http1.1", "--http2"] {
        let before = rss_kib();
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            })
        };
        let out = tokio::task::block_in_place(|| {
            curl(
                &f,
                "www.synbioz.dev",
                "/big",
                &[flag, "-o", "/dev/null", "-w", "%{size_download}"],
            )
        });
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        sampler.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), SIZE.to_string());
        let growth = peak.load(std::sync::atomic::Ordering::Relaxed) - before;
        eprintln!("{flag}: 256 MiB through the proxy, RSS growth {growth} KiB");
        assert!(growth < 16 * 1024, "{flag}: RSS grew by {growth} KiB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_passes_through_and_echoes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                ws.send(msg).await.unwrap();
            }
        }
    });
    let f = fixture(&[("ws.box.dev", backend)]).await;

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&f.ca_pem).unwrap();
    let der = x509_parser::pem::parse_x509_pem(&pem).unwrap().1.contents;
    roots.add(der.into()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", f.port)).await.unwrap();
    let tls = connector
        .connect("ws.box.dev".try_into().unwrap(), tcp)
        .await
        .expect("the chain verifies against the devbox root");
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://ws.box.dev/echo", tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["hello", "through the devbox proxy"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
}

/// The backend closes its connection after each response (`Connection: close`, as busybox
/// httpd does); the client's HTTP/1.1 connection, and its TLS session, stay open for the next
/// request all the same: one handshake for three requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_backend_does_not_close_the_clients_connection() {
    let backend = http_backend(0).await;
    let f = fixture(&[("www.synbioz.dev", backend)]).await;
    let url = |p: &str| format!("https://www.synbioz.dev:{}{p}", f.port);
    let out = tokio::task::block_in_place(|| {
        Command::new("curl")
            .args(["-sS", "-v", "--http1.1", "--max-time", "60", "--cacert"])
            .arg(&f.ca_pem)
            .arg("--resolve")
            .arg(format!("www.synbioz.dev:{}:127.0.0.1", f.port))
            .args([url("/a"), url("/b"), url("/c")])
            .output()
            .unwrap()
    });
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    for p in ["/a", "/b", "/c"] {
        assert!(
            stdout.contains(&format!("backend saw: GET {p} HTTP/1.1")),
            "{stdout}"
        );
    }
    assert_eq!(
        stderr.matches("SSL connection using").count(),
        1,
        "one TLS handshake: {stderr}"
    );
    assert_eq!(
        stderr.matches("Re-using existing connection").count(),
        2,
        "{stderr}"
    );
}
