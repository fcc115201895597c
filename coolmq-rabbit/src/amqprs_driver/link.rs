//! One amqprs connection, reopened on demand after it dies, handing out channels. amqprs
//! has no recovery of its own; coolmq's is the same as on lapin: operations in flight when
//! the connection dies fail promptly with a temporary error and the next one reconnects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::Channel;
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::tls::TlsAdaptor;
use coolmq_core::raw::{Addresses, TlsClient};
use coolmq_core::{Error, ErrorKind, Result};
use lapin::uri::AMQPUri;
use tokio::sync::{oneshot, Mutex};

use super::error::{check_short, map, map_connect};
use super::events::{ChannelEvents, ConnectionEvents, ConnectionWatch, Events};
pub(crate) use crate::consumer::bounded;
use crate::RabbitOptions;

/// A connection and what its broker told it.
#[derive(Clone)]
pub(crate) struct Live {
    pub connection: Connection,
    pub events: Arc<ConnectionEvents>,
}

impl Live {
    /// Whether the connection still carries traffic.
    pub fn alive(&self) -> bool {
        self.connection.is_open() && !self.events.ended.load(Ordering::SeqCst)
    }
}

/// The live connection and the sender whose drop stops its watcher.
type Current = Option<(Live, oneshot::Sender<()>)>;

pub(crate) struct AmqprsLink {
    /// The options all addresses share (the first address's), with the whole list as its
    /// endpoint.
    pub options: RabbitOptions,
    addresses: Addresses<RabbitOptions>,
    connect_timeout: Duration,
    current: Mutex<Current>,
    closed: AtomicBool,
}

impl AmqprsLink {
    pub fn new(addresses: Addresses<RabbitOptions>, connect_timeout: Duration) -> Self {
        let mut options = addresses.first().clone();
        options.endpoint = addresses.endpoint();
        AmqprsLink {
            options,
            addresses,
            connect_timeout,
            current: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    /// The connect timeout, which also bounds waits for the broker on a live connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The live connection, reconnecting (to the first address that answers) if it died.
    pub async fn live(&self) -> Result<Live> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(coolmq_core::raw::closed());
        }
        let mut current = self.current.lock().await;
        if let Some((live, _)) = current.as_ref().filter(|(l, _)| l.alive()) {
            return Ok(live.clone());
        }
        let (live, _) = self.addresses.connect(|o| self.connect_to(o)).await?;
        let (stop, stopped) = oneshot::channel();
        watch(live.clone(), stopped);
        *current = Some((live.clone(), stop));
        Ok(live)
    }

    /// One address, within the connect timeout.
    async fn connect_to(&self, address: &RabbitOptions) -> Result<Live> {
        let endpoint = &address.endpoint;
        let args = open_arguments(address, &self.options.connection_name)?;
        let opened = tokio::time::timeout(self.connect_timeout, Connection::open(&args))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Unreachable,
                    format!(
                        "connecting to RabbitMQ at {endpoint} timed out after {:?}",
                        self.connect_timeout
                    ),
                )
                .with_context("endpoint", endpoint.clone())
            })?;
        let connection = match opened {
            Ok(c) => c,
            Err(e) => {
                return Err(diagnose(
                    e,
                    address,
                    &self.options.connection_name,
                    self.connect_timeout,
                )
                .await)
            }
        };
        let events = Arc::new(ConnectionEvents::default());
        connection
            .register_callback(ConnectionWatch(events.clone()))
            .await
            .map_err(|e| map_connect(e, endpoint))?;
        Ok(Live { connection, events })
    }

    /// A new channel reporting to `callback`, within the connect timeout: an amqprs request
    /// ends only when the broker answers or the connection reports its end, so a
    /// connection that dies without reporting it must not hang the caller.
    pub async fn channel_with(
        &self,
        callback: impl ChannelCallback + Send + 'static,
    ) -> Result<(Channel, Live)> {
        let live = self.live().await?;
        let lost = |e: amqprs::error::Error| map(e, "channel.open", live.events.closed());
        let channel = bounded(
            self.connect_timeout,
            "channel.open-ok",
            live.connection.open_channel(None),
        )
        .await?
        .map_err(lost)?;
        channel.register_callback(callback).await.map_err(lost)?;
        Ok((channel, live))
    }

    /// A new channel whose closes and cancels are recorded in the returned events.
    pub async fn channel(&self) -> Result<(Channel, Arc<ChannelEvents>)> {
        let (channel, events, _) = self.channel_on_live().await?;
        Ok((channel, events))
    }

    /// [`AmqprsLink::channel`] with the connection it is on.
    pub async fn channel_on_live(&self) -> Result<(Channel, Arc<ChannelEvents>, Live)> {
        let events = Arc::new(ChannelEvents::default());
        let (channel, live) = self.channel_with(Events(events.clone())).await?;
        Ok((channel, events, live))
    }

    /// Close the connection, waiting for the broker's close-ok at most the connect timeout.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some((live, _stop)) = self.current.lock().await.take() {
            let _ = tokio::time::timeout(self.connect_timeout, live.connection.close()).await;
        }
    }
}

/// Mark the connection ended as soon as amqprs reports its I/O failed (a reset, missed
/// heartbeats); stops, dropping its handle, when the link replaces or closes it.
fn watch(live: Live, stopped: oneshot::Receiver<()>) {
    tokio::spawn(async move {
        tokio::select! {
            _ = live.connection.listen_network_io_failure() => {
                live.events.ended.store(true, Ordering::SeqCst);
            }
            _ = stopped => {}
        }
    });
}

/// [`bounded`] for an operation that is usually done at its first poll (a frame handed to
/// amqprs's writer queue): no timer unless it has to wait.
pub(crate) async fn bounded_quick<T>(
    wait: Duration,
    waiting_for: &str,
    operation: impl std::future::Future<Output = T>,
) -> Result<T> {
    use futures::FutureExt;
    let mut operation = std::pin::pin!(operation);
    match (&mut operation).now_or_never() {
        Some(done) => Ok(done),
        None => bounded(wait, waiting_for, operation).await,
    }
}

/// amqprs's connection arguments for one address.
fn open_arguments(
    address: &RabbitOptions,
    connection_name: &str,
) -> Result<OpenConnectionArguments> {
    let uri: AMQPUri = address
        .amqp_url
        .parse()
        .map_err(|e: String| Error::config("url", e))?;
    if uri.query.frame_max.is_some()
        || uri.query.channel_max.is_some()
        || uri.query.auth_mechanism.is_some()
    {
        return Err(Error::config(
            "url",
            "the amqprs driver takes only the heartbeat option of lapin's (no frame_max, channel_max, auth_mechanism)",
        ));
    }
    check_short("vhost", &uri.vhost)
        .map_err(|_| Error::config("url", "the vhost is longer than 255 bytes"))?;
    // A short string on the wire: cut at a character boundary within 255 bytes.
    let mut cut = connection_name.len().min(255);
    while !connection_name.is_char_boundary(cut) {
        cut -= 1;
    }
    let name = &connection_name[..cut];
    let host = &uri.authority.host;
    let mut args = OpenConnectionArguments::new(
        host,
        uri.authority.port,
        &uri.authority.userinfo.username,
        &uri.authority.userinfo.password,
    );
    args.virtual_host(&uri.vhost).connection_name(name);
    if let Some(h) = uri.query.heartbeat {
        args.heartbeat(h);
    }
    if let Some(tls) = &address.tls {
        let client = TlsClient::new(tls)?;
        let server_name = match &tls.server_name {
            Some(n) => n.clone(),
            None => {
                client.server_name(host)?;
                host.clone()
            }
        };
        let connector = tokio_rustls::TlsConnector::from(client.config());
        args.tls_adaptor(TlsAdaptor::new(connector, server_name));
    }
    Ok(args.finish())
}

/// The error of a failed amqprs connect. amqprs does not announce
/// `authentication_failure_close`, so RabbitMQ answers a refused login by closing the socket,
/// and it reports a failed TLS check as text: one lapin connect to the same address names
/// either (and is closed at once if it succeeds).
async fn diagnose(
    e: amqprs::error::Error,
    address: &RabbitOptions,
    connection_name: &str,
    wait: Duration,
) -> Error {
    let endpoint = &address.endpoint;
    let ours = map_connect(e, endpoint);
    if ours.kind() != ErrorKind::Unreachable {
        return ours;
    }
    match crate::connection::open(address, connection_name, wait).await {
        Ok(connection) => {
            let _ = tokio::time::timeout(wait, connection.close(200, "diagnosis".into())).await;
            ours
        }
        Err(lapin) if lapin.kind() == ErrorKind::Unreachable => ours,
        Err(lapin) => lapin.with_source(ours),
    }
}
