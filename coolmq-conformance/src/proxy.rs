//! A loopback TCP proxy that injects the network faults production has, in front of any
//! broker: cut every connection now, black-hole traffic (connections stay open, nothing gets
//! through, as behind a dead router), add latency. A backend gets the fault cases by routing
//! its URL through it; no fault hooks in the backend itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to traffic now.
#[derive(Debug, Default)]
struct Faults {
    /// Held: bytes are read but not passed on, and new connections are accepted but never
    /// connected upstream.
    black_hole: AtomicBool,
    /// Only the broker's replies are held (confirms, deliveries, heartbeats): what the
    /// client sends still arrives, as when the return path of a connection fails.
    hold_replies: AtomicBool,
    /// Added before each chunk is passed on, in microseconds.
    latency_us: AtomicU64,
    /// Open connections that a cut closed, so a test can tell a cut that hit nothing.
    severed: AtomicU64,
}

/// A running fault proxy on `127.0.0.1`; stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<Faults>,
    /// Bumped to cut every open connection.
    cuts: watch::Sender<u64>,
    /// Bumped whenever the black hole opens or closes, to wake held traffic.
    changes: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(Faults::default());
        let (cuts, _) = watch::channel(0u64);
        let (changes, _) = watch::channel(0u64);
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            faults.clone(),
            cuts.clone(),
            changes.clone(),
        ));
        Ok(FaultProxy {
            addr,
            faults,
            cuts,
            changes,
            accept,
        })
    }

    /// Where clients connect instead of the broker.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many open connections [`FaultProxy::cut`] has closed so far.
    pub fn connections_cut(&self) -> u64 {
        self.faults.severed.load(Ordering::SeqCst)
    }

    /// Close every open connection now (both sides see the socket close).
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Start or end a black hole: while on, connections stay open but nothing passes in
    /// either direction, and new connections are accepted but get no answer.
    pub fn black_hole(&self, on: bool) {
        self.faults.black_hole.store(on, Ordering::SeqCst);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Hold (or release) only what the broker sends back: a send reaches the broker, its
    /// confirm does not reach the client. Held bytes pass once released.
    pub fn hold_replies(&self, on: bool) {
        self.faults.hold_replies.store(on, Ordering::SeqCst);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Delay every chunk of traffic by `latency` (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        self.faults
            .latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: Arc<Faults>,
    cuts: watch::Sender<u64>,
    changes: watch::Sender<u64>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let (faults, mut cut, changes) = (faults.clone(), cuts.subscribe(), changes.subscribe());
        cut.mark_unchanged();
        tokio::spawn(async move {
            tokio::select! {
                _ = cut.changed() => {
                    faults.severed.fetch_add(1, Ordering::SeqCst);
                }
                _ = connection(client, upstream, faults.clone(), changes) => {}
            }
        });
    }
}

/// One proxied connection: held while the black hole is on, then connected upstream and
/// pumped both ways until either side closes (or the connection is cut by the caller).
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    faults: Arc<Faults>,
    mut changes: watch::Receiver<u64>,
) {
    wait_while_black_holed(&faults, &mut changes).await;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(
        client_read,
        server_write,
        faults.clone(),
        changes.clone(),
        false,
    );
    let down = pump(server_read, client_write, faults, changes, true);
    // Either direction closing ends the connection, as a real socket would.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn wait_while_black_holed(faults: &Faults, changes: &mut watch::Receiver<u64>) {
    wait_while(faults, changes, false).await
}

/// Wait while traffic in this direction is held (`replies`: the broker-to-client direction).
async fn wait_while(faults: &Faults, changes: &mut watch::Receiver<u64>, replies: bool) {
    while faults.black_hole.load(Ordering::SeqCst)
        || (replies && faults.hold_replies.load(Ordering::SeqCst))
    {
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Faults>,
    mut changes: watch::Receiver<u64>,
    replies: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Held, not dropped: what was read goes on once the black hole ends, as TCP would
        // after a stalled path recovers.
        wait_while(&faults, &mut changes, replies).await;
        let latency = faults.latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf.to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn passes_holds_and_cuts() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let second = Duration::from_secs(1);
        assert_eq!(
            round_trip(&mut s, second).await.as_deref(),
            Some(&b"ping"[..])
        );
        // Black hole: open, silent; what was sent arrives after it ends.
        proxy.black_hole(true);
        assert_eq!(round_trip(&mut s, Duration::from_millis(300)).await, None);
        proxy.black_hole(false);
        let mut buf = [0u8; 4];
        tokio::time::timeout(second, s.read_exact(&mut buf))
            .await
            .expect("held bytes pass once the black hole ends")
            .unwrap();
        assert_eq!(&buf, b"ping");
        // A new connection during a black hole is accepted but never answered.
        proxy.black_hole(true);
        let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            round_trip(&mut held, Duration::from_millis(300)).await,
            None
        );
        proxy.black_hole(false);
        // Held replies: the request arrives, its answer only once released.
        proxy.hold_replies(true);
        assert_eq!(round_trip(&mut s, Duration::from_millis(300)).await, None);
        proxy.hold_replies(false);
        tokio::time::timeout(second, s.read_exact(&mut buf))
            .await
            .expect("held replies pass once released")
            .unwrap();
        assert_eq!(&buf, b"ping");
        // Cut: the client sees its connection close.
        proxy.cut();
        let mut one = [0u8; 1];
        let read = tokio::time::timeout(second, s.read(&mut one))
            .await
            .unwrap();
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "cut connection still open: {read:?}"
        );
        // Latency delays, and new connections work after the cut.
        proxy.set_latency(Duration::from_millis(200));
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let start = std::time::Instant::now();
        assert_eq!(
            round_trip(&mut s, second).await.as_deref(),
            Some(&b"ping"[..])
        );
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
    }
}
