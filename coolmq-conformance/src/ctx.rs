//! What a case works with: a connected broker, unique names, helpers, and cleanup of
//! everything it declared.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coolmq_core::raw::ConnectFn;
use coolmq_core::{
    Broker, Config, Consumer, Delivery, Destination, Message, Publisher, QueueSpec, Result,
};

use crate::{Failed, FaultProxy, Injector, TestResult};

/// The faults a case can inject into a connection of its own: through a [`FaultProxy`] in
/// front of a networked broker, or the in-process broker's own hooks.
pub enum Faults {
    /// The target's [`Injector`] (an in-process broker).
    Injected(Arc<dyn Injector>),
    /// A proxy between the case's connection and the broker.
    Proxied(FaultProxy),
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Faults::Injected(_) => f.write_str("Faults::Injected"),
            Faults::Proxied(proxy) => f.debug_tuple("Faults::Proxied").field(proxy).finish(),
        }
    }
}

impl Faults {
    /// Drop the connection under its consumers: their unsettled deliveries return to the
    /// queue, settling them is a local `StaleDelivery`, and they reconnect.
    pub fn drop_connections(&self) {
        match self {
            Faults::Injected(f) => f.drop_consumer_connections(),
            Faults::Proxied(p) => p.cut(),
        }
    }

    /// Let sends reach the broker but not their confirms come back (until
    /// [`Faults::restore`]; the in-process broker loses only the next one).
    pub fn lose_confirms(&self) {
        match self {
            Faults::Injected(f) => f.lose_next_confirm(),
            Faults::Proxied(p) => p.hold_replies(true),
        }
    }

    /// End every fault that lasts.
    pub fn restore(&self) {
        if let Faults::Proxied(p) = self {
            p.hold_replies(false);
            p.black_hole(false);
        }
    }
}

/// How long a case waits for a message that should come.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(20);

/// A case's context. Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    /// The broker, connected for this case.
    pub broker: Broker,
    config: Config,
    connect: ConnectFn,
    id: String,
    queues: Arc<Mutex<Vec<String>>>,
    injector: Option<Arc<dyn Injector>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("broker", &self.broker)
            .field("injected_faults", &self.injector.is_some())
            .finish_non_exhaustive()
    }
}

impl Ctx {
    pub(crate) fn new(
        broker: Broker,
        config: Config,
        connect: ConnectFn,
        id: String,
        injector: Option<Arc<dyn Injector>>,
    ) -> Self {
        Ctx {
            broker,
            config,
            connect,
            id,
            queues: Arc::default(),
            injector,
        }
    }

    /// A name unique to this case (and run).
    pub fn name(&self, suffix: &str) -> String {
        format!("coolmq.test.{}.{suffix}", self.id)
    }

    /// A second, independent connection to the same broker (a "restarted process").
    pub async fn reconnect(&self) -> Result<Broker> {
        (self.connect)(self.config.clone()).await
    }

    /// The case's configuration (the target's, with the case's own memory broker where
    /// that is the target): start of a connection the case tunes.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The first of the broker's addresses (the only one, but on a cluster).
    fn first_url(&self) -> Option<url::Url> {
        let addresses = self.config.addresses().ok()?;
        url::Url::parse(addresses.urls().first()?).ok()
    }

    /// The case's configuration with the broker's host and port replaced by `addr` (a fault
    /// proxy, a closed port; on a cluster, one address instead of the list); `None` for a URL
    /// without a network address.
    pub fn config_at(&self, addr: std::net::SocketAddr) -> Option<Config> {
        let mut url = self.first_url()?;
        url.host_str()?;
        url.set_host(Some(&addr.ip().to_string())).ok()?;
        url.set_port(Some(addr.port())).ok()?;
        let mut config = self.config.clone();
        config.url = url.to_string();
        Some(config)
    }

    /// A connection of the case's own whose faults it controls (see [`Faults`]), with a
    /// confirm timeout of `confirm_timeout`: through a fault proxy where the backend is
    /// networked, else the same broker with its fault injector.
    pub async fn faulty(&self, confirm_timeout: Duration) -> Result<(Broker, Faults), Failed> {
        if let Some(faults) = &self.injector {
            return Ok((self.broker.clone(), Faults::Injected(faults.clone())));
        }
        let (broker, proxy) = self
            .proxied(|c| c.confirm_timeout = confirm_timeout)
            .await?;
        Ok((broker, Faults::Proxied(proxy)))
    }

    /// A connection of the case's own through a [`FaultProxy`] in front of the broker, with
    /// its configuration tuned by `tune` (timeouts, heartbeat); for networked backends.
    pub async fn proxied(
        &self,
        tune: impl FnOnce(&mut Config),
    ) -> Result<(Broker, FaultProxy), Failed> {
        let upstream = self
            .broker_addr()
            .await
            .ok_or_else(|| Failed("the backend's URL has no network address to proxy".into()))?;
        let proxy = FaultProxy::start(upstream)
            .await
            .map_err(|e| Failed(format!("fault proxy: {e}")))?;
        let mut config = self.config_at(proxy.addr()).expect("a networked URL");
        tune(&mut config);
        let broker = self.connect_with(config).await?;
        Ok((broker, proxy))
    }

    /// The address of the case's broker that accepts connections: of a live/backup pair only
    /// the serving member listens, so the first address that answers (host resolved, default
    /// port by scheme), else the first.
    async fn broker_addr(&self) -> Option<std::net::SocketAddr> {
        let addresses = self.config.addresses().ok()?;
        let mut resolved = Vec::new();
        for u in addresses.urls() {
            if let Some(addr) = url::Url::parse(u).ok().as_ref().and_then(socket_addr) {
                resolved.push(addr);
            }
        }
        for addr in &resolved {
            let attempt = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
                return Some(*addr);
            }
        }
        resolved.first().copied()
    }

    /// Connect with `config` through this case's backend.
    pub async fn connect_with(&self, config: Config) -> Result<Broker> {
        (self.connect)(config).await
    }

    /// Declare a queue spec and remember it (and its dead-letter queue) for cleanup.
    pub async fn declare(&self, spec: &QueueSpec) -> Result<()> {
        {
            let mut q = self.queues.lock().expect("lock");
            q.push(spec.name.clone());
            q.extend(spec.dead_letter_queue.clone());
        }
        self.broker.declare_queue(spec).await
    }

    /// Declare a fresh queue (with its dead-letter queue if the backend has them) and
    /// return its name.
    pub async fn queue(&self, suffix: &str) -> Result<String> {
        let spec = self.spec(suffix);
        self.declare(&spec).await?;
        Ok(spec.name)
    }

    /// The spec of a fresh queue, before declaring it.
    pub fn spec(&self, suffix: &str) -> QueueSpec {
        let spec = self.broker.queue_spec(self.name(suffix));
        if self.broker.capabilities().dead_letter {
            spec
        } else {
            spec.dead_letter_queue(None)
        }
    }

    /// A publisher.
    pub async fn publisher(&self) -> Result<Publisher> {
        self.broker.publisher().await
    }

    /// The target's [`Injector`] (for cases that require injected faults).
    pub fn faults(&self) -> Result<Arc<dyn Injector>, Failed> {
        self.injector
            .clone()
            .ok_or_else(|| Failed("the target has no fault injector".into()))
    }

    /// Send one message to a queue and require the confirm.
    pub async fn send(&self, queue: &str, message: Message) -> TestResult {
        self.publisher()
            .await?
            .send(&Destination::queue(queue), message)
            .await?;
        Ok(())
    }

    /// The next delivery, failing the case if none comes within [`RECV_TIMEOUT`].
    pub async fn recv(&self, consumer: &mut Consumer) -> Result<Delivery, Failed> {
        match tokio::time::timeout(RECV_TIMEOUT, consumer.recv()).await {
            Ok(Ok(Some(d))) => Ok(d),
            Ok(Ok(None)) => Err(Failed(
                "consumer closed while a message was expected".into(),
            )),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Failed(format!(
                "no message on {} within {RECV_TIMEOUT:?}",
                consumer.queue()
            ))),
        }
    }

    /// Require that no delivery arrives within `wait`.
    pub async fn expect_nothing(&self, consumer: &mut Consumer, wait: Duration) -> TestResult {
        match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) | Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(d))) => Err(Failed(format!(
                "expected no message on {} but got {:?}",
                consumer.queue(),
                d
            ))),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Receive and ack every message of `queue` until it stays quiet for `quiet`.
    pub async fn drain(&self, queue: &str, quiet: Duration) -> Result<Vec<Message>, Failed> {
        let mut consumer = self.broker.consumer(queue).await?;
        let mut out = Vec::new();
        while let Ok(next) = tokio::time::timeout(quiet, consumer.recv()).await {
            match next? {
                Some(d) => {
                    out.push(d.message().clone());
                    d.ack().await?;
                }
                None => break,
            }
        }
        consumer.close().await?;
        Ok(out)
    }

    /// Delete every queue this case declared and close the connection.
    pub async fn cleanup(&self) {
        let queues = std::mem::take(&mut *self.queues.lock().expect("lock"));
        for q in queues {
            if let Err(e) = self.broker.delete_queue(&q).await {
                tracing::warn!(queue = %q, error = %e, "cleanup failed");
            }
        }
        let _ = self.broker.close().await;
    }
}

/// A broker URL's socket address (host resolved, default port by scheme).
fn socket_addr(url: &url::Url) -> Option<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let host = url.host_str()?;
    let port = url.port_or_known_default().or(match url.scheme() {
        "amqp" | "amqp1" => Some(5672),
        "amqps" | "amqp1s" => Some(5671),
        _ => None,
    })?;
    (host, port).to_socket_addrs().ok()?.next()
}
