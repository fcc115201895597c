//! One AMQP connection, reopened on demand after it dies (with the connect timeout), handing
//! out channels. coolmq does its own recovery instead of lapin's auto-recover, so every
//! operation in flight when the connection dies fails promptly with a temporary error and the
//! next one reconnects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coolmq_core::raw::Addresses;
use coolmq_core::{Error, ErrorKind, Result};
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::error::{map, map_connect};
use crate::RabbitOptions;

pub(crate) struct Link {
    /// The options all addresses share (the first address's), with the whole list as its
    /// endpoint.
    pub options: RabbitOptions,
    /// The broker's addresses (a cluster's nodes), tried in turn at each (re)connect.
    addresses: Addresses<RabbitOptions>,
    connect_timeout: Duration,
    current: Mutex<Option<Arc<Connection>>>,
    closed: AtomicBool,
}

/// Open one lapin connection to `address` within `connect_timeout`. Also the amqprs driver's
/// diagnosis of a failed connect: lapin announces `authentication_failure_close` and names
/// a failed TLS check, so its error says what amqprs's cannot.
pub(crate) async fn open(
    address: &RabbitOptions,
    connection_name: &str,
    connect_timeout: Duration,
) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(connection_name.into());
    let endpoint = &address.endpoint;
    let connecting = async {
        match &address.tls {
            Some(tls) => crate::tls::connect(&address.amqp_url, endpoint, tls, props).await,
            None => Connection::connect(&address.amqp_url, props)
                .await
                .map_err(|e| map_connect(e, endpoint)),
        }
    };
    tokio::time::timeout(connect_timeout, connecting)
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Unreachable,
                format!("connecting to RabbitMQ at {endpoint} timed out after {connect_timeout:?}"),
            )
            .with_context("endpoint", endpoint.clone())
        })?
}

impl Link {
    pub fn new(addresses: Addresses<RabbitOptions>, connect_timeout: Duration) -> Self {
        let mut options = addresses.first().clone();
        options.endpoint = addresses.endpoint();
        Link {
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

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(coolmq_core::raw::closed());
        }
        Ok(())
    }

    /// The live connection, reconnecting (to the first address that answers) if it died.
    pub async fn connection(&self) -> Result<Arc<Connection>> {
        self.check_open()?;
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref().filter(|c| c.status().connected()) {
            return Ok(c.clone());
        }
        let (connection, _) = self.addresses.connect(|o| self.connect_to(o)).await?;
        let connection = Arc::new(connection);
        *current = Some(connection.clone());
        Ok(connection)
    }

    /// One address, within the connect timeout.
    async fn connect_to(&self, address: &RabbitOptions) -> Result<Connection> {
        open(address, &self.options.connection_name, self.connect_timeout).await
    }

    /// A new channel on the live connection, within the connect timeout: lapin resolves an
    /// RPC only when the broker answers or the connection reports its end, so a connection
    /// that dies without reporting it must not hang the caller.
    pub async fn channel(&self) -> Result<Channel> {
        Ok(self.channel_and_status().await?.0)
    }

    /// [`Link::channel`] with its connection's status, whose `blocked()` says whether
    /// RabbitMQ blocked publishing on it (`connection.blocked`, sent under a memory or disk
    /// alarm): publishes would then sit unread in the socket.
    pub async fn channel_and_status(&self) -> Result<(Channel, lapin::ConnectionStatus)> {
        let connection = self.connection().await?;
        let channel = tokio::time::timeout(self.connect_timeout, connection.create_channel())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::ConnectionLost,
                    format!("no channel.open-ok within {:?}", self.connect_timeout),
                )
                .set_temporary(true)
            })?
            .map_err(|e| map(e, "channel.open"))?;
        Ok((channel, connection.status().clone()))
    }

    /// Close the connection, waiting for the broker's close-ok at most the connect timeout
    /// (closing must never hang; the socket goes with the connection either way).
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(c) = self.current.lock().await.take() {
            let closing = c.close(200, "coolmq closing".into());
            let _ = tokio::time::timeout(self.connect_timeout, closing).await;
        }
    }
}
