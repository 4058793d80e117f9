//! The TLS terminator: accepts TLS on a machine's listener, picks the certificate by SNI
//! ([`super::resolver`]) and relays the decrypted stream to the container's HTTP port.
//!
//! - HTTP/1.1 (ALPN `http/1.1` or none): the decrypted bytes are relayed as they are, both
//!   ways, to the backend (`copy_bidirectional`): keep-alive, chunked or streamed bodies and
//!   WebSocket upgrades pass through with no parsing and no buffering beyond the copy buffers.
//! - HTTP/2 (ALPN `h2`): hyper's HTTP/2 server; each stream becomes one HTTP/1.1 request on a
//!   connection of its own to the backend (containers speak HTTP/1.1 on port 80), bodies
//!   streamed both ways as hyper frames them.
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
        let service = hyper::service::service_fn(move |req| forward(req, backend));
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tls), service)
            .await
            .map_err(std::io::Error::other)
    } else {
        let mut upstream = TcpStream::connect(backend).await?;
        let _ = upstream.set_nodelay(true);
        let mut tls = tls;
        tokio::io::copy_bidirectional(&mut tls, &mut upstream).await?;
        Ok(())
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

/// One HTTP/2 request, sent as HTTP/1.1 to `backend`. A backend that cannot be reached is a
/// 502 whose body says so.
async fn forward(
    req: Request<Incoming>,
    backend: SocketAddr,
) -> Result<Response<Body>, std::convert::Infallible> {
    match send(req, backend).await {
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

async fn send(
    req: Request<Incoming>,
    backend: SocketAddr,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(backend).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
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
    Ok(sender
        .send_request(Request::from_parts(parts, body))
        .await?)
}
