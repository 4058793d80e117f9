//! The TLS terminator: accepts TLS on a machine's listener, picks the certificate by SNI
//! ([`super::resolver`]) and relays the decrypted stream to the container's HTTP port.
//!
//! - HTTP/1.1 (ALPN `http/1.1` or none): hyper's HTTP/1.1 server, so the client's connection
//!   (and its TLS session) is kept alive across requests even when the backend closes its own
//!   after each response, as busybox httpd and many small servers do; a byte-for-byte relay
//!   ended the client's connection with the backend's, and every request paid a new TLS
//!   handshake. Bodies stream both ways as hyper frames them; a WebSocket (or any other)
//!   upgrade is forwarded, and once the backend answers 101 the two upgraded connections are
//!   relayed byte for byte.
//! - HTTP/2 (ALPN `h2`): hyper's HTTP/2 server, each stream handled the same way.
//!
//! Each request goes to the container over HTTP/1.1 (containers speak it on port 80), on a
//! backend connection kept for the client connection's next request while the backend keeps
//! it open.
//!
//! One task per connection, spawned on the caller's runtime by [`serve`], which runs until
//! dropped.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::resolver::{Backends, SniResolver};

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The rustls server configuration of a machine's listener: TLS 1.2 and 1.3, ALPN h2 then
/// http/1.1, certificates from `resolver` only.
pub fn server_config(resolver: Arc<SniResolver>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Accepts connections on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, resolver: Arc<SniResolver>, backends: Arc<dyn Backends>) {
    let acceptor = TlsAcceptor::from(server_config(resolver));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: wait instead of spinning.
                super::log(&format!("accept: {e}"));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let backends = backends.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(acceptor, tcp, backends).await {
                super::log(&format!("{peer}: {e}"));
            }
        });
    }
}

async fn connection(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    backends: Arc<dyn Backends>,
) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
    let (_, session) = tls.get_ref();
    // The resolver gave a certificate, so there is a served name; it may have stopped being
    // served since, which is a refusal like any other.
    let name = session
        .server_name()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let Some(backend) = backends.backend(&name) else {
        return Err(std::io::Error::other(format!("{name} is no longer served")));
    };
    if session.alpn_protocol() == Some(b"h2") {
        let service = hyper::service::service_fn(move |req| forward(req, backend, None));
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tls), service)
            .await
            .map_err(std::io::Error::other)
    } else {
        // HTTP/1.1 requests on one connection come one after the other: the backend
        // connection of the last one is reused while the backend keeps it open.
        let kept: Kept = Arc::new(tokio::sync::Mutex::new(None));
        let service =
            hyper::service::service_fn(move |req| forward(req, backend, Some(kept.clone())));
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), service)
            .with_upgrades()
            .await
            .map_err(std::io::Error::other)
    }
}

/// The backend connection an HTTP/1.1 client connection keeps between its requests.
type Kept = Arc<tokio::sync::Mutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>>>;

type Body = BoxBody<Bytes, hyper::Error>;

/// One request, sent as HTTP/1.1 to `backend`. A backend that cannot be reached is a 502
/// whose body says so.
async fn forward(
    req: Request<Incoming>,
    backend: SocketAddr,
    kept: Option<Kept>,
) -> Result<Response<Body>, std::convert::Infallible> {
    match send(req, backend, kept).await {
        Ok(resp) => Ok(resp.map(|b| b.boxed())),
        Err(e) => {
            let body = Full::new(Bytes::from(format!(
                "devbox: the container at {backend} did not answer: {e}\n"
            )))
            .map_err(|never| match never {})
            .boxed();
            let mut resp = Response::new(body);
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(resp)
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A new HTTP/1.1 connection to `backend` (upgrades allowed).
async fn connect(
    backend: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Incoming>, Error> {
    let stream = TcpStream::connect(backend).await?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn.with_upgrades());
    Ok(sender)
}

async fn send(
    mut req: Request<Incoming>,
    backend: SocketAddr,
    kept: Option<Kept>,
) -> Result<Response<Incoming>, Error> {
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let client_side = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // HTTP/2 carries the host in `:authority`; HTTP/1.1 wants a Host header and an
    // origin-form target.
    if let Some(authority) = parts.uri.authority()
        && !parts.headers.contains_key(header::HOST)
    {
        parts
            .headers
            .insert(header::HOST, authority.as_str().parse()?);
    }
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()?;
    parts.version = hyper::Version::HTTP_11;
    if !upgrade {
        strip_hop_by_hop(&mut parts.headers);
    }
    let req = Request::from_parts(parts, body);

    // The kept connection when it is still open and idle (an upgrade takes a fresh one:
    // it leaves HTTP for good).
    let mut slot = match &kept {
        Some(k) if !upgrade => Some(k.lock().await),
        _ => None,
    };
    let mut reused = None;
    if let Some(mut s) = slot
        .as_mut()
        .and_then(|s| s.take())
        .filter(|s| !s.is_closed())
        && s.ready().await.is_ok()
    {
        reused = Some(s);
    }
    let mut sender = match reused {
        Some(s) => s,
        None => connect(backend).await?,
    };
    let mut resp = sender.send_request(req).await?;
    if let Some(slot) = slot.as_mut() {
        **slot = Some(sender);
    }
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The backend's `Connection: close` ends its own connection, not the client's.
        strip_hop_by_hop(resp.headers_mut());
    }
    if let Some(client_side) = client_side
        && resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let backend_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(client), Ok(server)) = (client_side.await, backend_side.await) {
                let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
    Ok(resp)
}

/// Removes the headers that describe one hop's connection (RFC 9110, 7.6.1): `Connection`,
/// the headers it names, and the classic hop-by-hop ones. hyper frames each side's body and
/// connection itself.
fn strip_hop_by_hop(headers: &mut header::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
}
