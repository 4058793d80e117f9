//! The host side of published ports: listeners on `127.0.0.1` and `::1`, and one task per
//! connection (TCP) or per client address (UDP), so a slow or stalled peer holds up nobody
//! else. All on the supervisor's I/O runtime.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::plan::{Proto, Published};

/// Bound on reaching the guest for a new connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A UDP flow with no packet either way for this long is forgotten.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// Concurrent UDP flows per port; more clients than that are not answered.
const UDP_FLOWS_MAX: usize = 256;
/// Buffer per direction of a TCP connection.
const TCP_BUF: usize = 64 * 1024;

/// A port whose guest side cannot be reached any more: the watcher closes it.
#[derive(Debug)]
pub struct Unreachable {
    pub proto: Proto,
    pub port: u16,
    pub why: String,
}

/// The listeners of one host port; dropping it closes them (connections already carried go
/// on until either side closes).
pub struct Listening {
    tasks: Vec<AbortHandle>,
    /// Why `::1` is not served while `127.0.0.1` is (another program holds it there).
    pub partial: Option<String>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens `p` on the host's loopback addresses. `127.0.0.1` must work; `::1` is served when the
/// host has it (a host without IPv6 just does not get it). `down` hears of a guest that does
/// not answer.
pub async fn open(
    p: &Published,
    down: mpsc::UnboundedSender<Unreachable>,
) -> io::Result<Listening> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, p.port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, p.port));
    let mut tasks = Vec::new();
    tasks.push(spawn(p, bind(p.proto, v4).await?, down.clone()));
    let partial = match bind(p.proto, v6).await {
        Ok(l) => {
            tasks.push(spawn(p, l, down));
            None
        }
        Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => None,
        Err(e) => Some(format!("not on [::1]:{}: {}", p.port, describe(&e, p.port))),
    };
    Ok(Listening { tasks, partial })
}

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// The one place devbox binds a published port (D1: binding below 1024 is a privileged step:
/// an ordinary user's supervisor holds CAP_NET_BIND_SERVICE only in its permitted set, so the
/// bind itself runs with it raised in this thread, through the door, and nothing else does).
async fn bind(proto: Proto, addr: SocketAddr) -> io::Result<Bound> {
    let bind_std = || -> io::Result<Bound> {
        Ok(match proto {
            Proto::Tcp => {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Bound::Tcp(TcpListener::from_std(l)?)
            }
            Proto::Udp => {
                let u = std::net::UdpSocket::bind(addr)?;
                u.set_nonblocking(true)?;
                Bound::Udp(UdpSocket::from_std(u)?)
            }
        })
    };
    if addr.port() < 1024 {
        crate::host::privileged::with_bind_service(bind_std)
    } else {
        bind_std()
    }
}

fn spawn(p: &Published, bound: Bound, down: mpsc::UnboundedSender<Unreachable>) -> AbortHandle {
    match bound {
        Bound::Tcp(l) => tokio::spawn(accept_loop(l, p.target, p.port, down)).abort_handle(),
        Bound::Udp(s) => tokio::spawn(udp_loop(Arc::new(s), p.target, p.port, down)).abort_handle(),
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    port: u16,
    down: mpsc::UnboundedSender<Unreachable>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // EMFILE and the like: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let down = down.clone();
        tokio::spawn(async move {
            if let Err(why) = carry(client, target).await {
                let _ = down.send(Unreachable {
                    proto: Proto::Tcp,
                    port,
                    why,
                });
            }
        });
    }
}

/// Carries one connection. `Err` only when the guest itself cannot be reached (no answer,
/// no route); a refused connection (nothing listens in the container yet) just closes the
/// client's, as Docker's own proxy does.
async fn carry(mut client: TcpStream, target: SocketAddr) -> Result<(), String> {
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(()),
        Ok(Err(e)) => return Err(format!("{target}: {e}")),
        Err(_) => {
            return Err(format!(
                "{target} did not answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ));
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, TCP_BUF, TCP_BUF)
        .await;
    Ok(())
}

/// One socket towards the target per client address, each with a task relaying the replies.
async fn udp_loop(
    sock: Arc<UdpSocket>,
    target: SocketAddr,
    port: u16,
    down: mpsc::UnboundedSender<Unreachable>,
) {
    let mut flows: HashMap<SocketAddr, (Arc<UdpSocket>, AbortHandle)> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        flows.retain(|_, (_, task)| !task.is_finished());
        let upstream = match flows.get(&client) {
            Some((u, _)) => u.clone(),
            None if flows.len() >= UDP_FLOWS_MAX => continue,
            None => {
                let bind: SocketAddr = if target.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let u = match UdpSocket::bind(bind).await {
                    Ok(u) => Arc::new(u),
                    Err(_) => continue,
                };
                if let Err(e) = u.connect(target).await {
                    let _ = down.send(Unreachable {
                        proto: Proto::Udp,
                        port,
                        why: format!("{target}: {e}"),
                    });
                    continue;
                }
                let task =
                    tokio::spawn(udp_replies(u.clone(), sock.clone(), client)).abort_handle();
                flows.insert(client, (u.clone(), task));
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

/// Relays the target's replies to `client` until the flow has been idle for [`UDP_IDLE`].
async fn udp_replies(upstream: Arc<UdpSocket>, local: Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)).await {
        let _ = local.send_to(&buf[..n], client).await;
    }
}

/// A bind failure in the words a user needs: the port is taken, or privileged.
pub fn describe(e: &io::Error, port: u16) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => format!(
            "the host's port {port} is taken (by another program, or another machine that \
             publishes it)"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "port {port} is below 1024 and devbox lacks CAP_NET_BIND_SERVICE: set devbox \
             up once with `sudo devbox system install` and run /usr/local/bin/devbox, or \
             publish a port from 1024 up"
        ),
        _ => format!("cannot listen on port {port}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A free port on 127.0.0.1 (and very likely on ::1).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn echo_tcp() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    fn published(proto: Proto, port: u16, target: SocketAddr) -> Published {
        Published {
            proto,
            port,
            target,
            container: "web".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_is_carried_and_a_stalled_client_holds_up_no_other() {
        let target = echo_tcp().await;
        let port = free_port();
        let (tx, _rx) = mpsc::unbounded_channel();
        let _l = open(&published(Proto::Tcp, port, target), tx)
            .await
            .unwrap();
        // A client that sends a lot and never reads: its relay stalls on the echo.
        let mut stalled = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let junk = vec![7u8; 4 << 20];
        tokio::spawn(async move {
            let _ = stalled.write_all(&junk).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..3 {
            let mut c = tokio::time::timeout(
                Duration::from_secs(5),
                TcpStream::connect(("127.0.0.1", port)),
            )
            .await
            .unwrap()
            .unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
                .await
                .expect("another client is served while one stalls")
                .unwrap();
            assert_eq!(&buf, b"ping");
        }
    }

    #[tokio::test]
    async fn a_taken_port_says_so_and_closing_frees_it() {
        let target = echo_tcp().await;
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let (tx, _rx) = mpsc::unbounded_channel();
        let err = open(&published(Proto::Tcp, port, target), tx.clone())
            .await
            .err()
            .unwrap();
        assert!(describe(&err, port).contains("is taken"), "{err}");
        drop(holder);
        let l = open(&published(Proto::Tcp, port, target), tx)
            .await
            .unwrap();
        drop(l);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "closed with its listener"
        );
        assert!(
            describe(&io::Error::from(io::ErrorKind::PermissionDenied), 80)
                .contains("CAP_NET_BIND_SERVICE")
        );
    }

    #[tokio::test]
    async fn udp_datagrams_go_there_and_back() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let port = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (tx, _rx) = mpsc::unbounded_channel();
        let _l = open(&published(Proto::Udp, port, target), tx)
            .await
            .unwrap();
        for client in 0..2 {
            let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            c.connect(("127.0.0.1", port)).await.unwrap();
            let msg = format!("query {client}");
            c.send(msg.as_bytes()).await.unwrap();
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), c.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], msg.as_bytes());
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_an_unreachable_guest() {
        // Nothing listens there: the container is not ready yet.
        let port = free_port();
        let gone: SocketAddr = ("127.0.0.1".parse::<Ipv4Addr>().unwrap(), free_port()).into();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _l = open(&published(Proto::Tcp, port, gone), tx).await.unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(c.read(&mut buf).await.unwrap_or(0), 0, "closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.try_recv().is_err(), "the port stays open");
    }
}
