//! One AMQP 1.0 connection and session, reopened on demand: fe2o3 has no reconnect, so
//! coolmq notices a closed connection or ended session and opens new ones for the next link.
//! A task per connection waits for its end and says so ([`Lost`]): fe2o3 leaves a sender's
//! unsettled transfers pending when the connection dies under an idle link, and only the
//! links that hear of it can fail them at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use coolmq_core::raw::Addresses;
use coolmq_core::{Destination, Error, ErrorKind, Result};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{Source, Target};
use fe2o3_amqp::types::primitives::Symbol;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use tokio::sync::{oneshot, watch, Mutex};

use crate::error::{map, map_connect};
use crate::ActiveMqOptions;
use coolmq_core::raw::tls_failure;

/// Becomes `true` when the connection a link was attached on has ended (its socket closed,
/// the broker closed it, or coolmq did): nothing can arrive on its links any more.
pub(crate) type Lost = watch::Receiver<bool>;

struct Live {
    session: SessionHandle<()>,
    lost: Lost,
    /// Asks the connection's task to close it (dropped: the connection is dropped).
    close: Option<oneshot::Sender<()>>,
}

/// Hand `connection` to a task that waits for its end (or for `close`), then reports it lost.
fn watch_connection(
    mut connection: ConnectionHandle<()>,
    close_timeout: Duration,
) -> (Lost, oneshot::Sender<()>) {
    let (lost_tx, lost) = watch::channel(false);
    let (close, close_asked) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            _ = connection.on_close() => {}
            asked = close_asked => {
                if asked.is_ok() {
                    // A silent broker must not keep the task (the caller waits as long).
                    let _ = tokio::time::timeout(close_timeout, connection.close()).await;
                }
                // Not asked (the link replaced or dropped its connection): dropping the
                // handle closes it.
                drop(connection);
            }
        }
        let _ = lost_tx.send(true);
    });
    (lost, close)
}

pub(crate) struct Link {
    /// The options all addresses share (the first address's), with the whole list as its
    /// endpoint.
    pub options: ActiveMqOptions,
    /// The broker's addresses (a live/backup pair), tried in turn at each (re)connect.
    addresses: Addresses<ActiveMqOptions>,
    connect_timeout: Duration,
    live: Mutex<Option<Live>>,
    closed: AtomicBool,
    names: AtomicU64,
}

impl Link {
    pub fn new(addresses: Addresses<ActiveMqOptions>, connect_timeout: Duration) -> Self {
        let mut options = addresses.first().clone();
        options.endpoint = addresses.endpoint();
        Link {
            options,
            addresses,
            connect_timeout,
            live: Mutex::new(None),
            closed: AtomicBool::new(false),
            names: AtomicU64::new(0),
        }
    }

    fn link_name(&self, role: &str) -> String {
        format!(
            "coolmq-{role}-{}-{}",
            std::process::id(),
            self.names.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// A connection and session to the first address that answers.
    async fn open(&self) -> Result<Live> {
        Ok(self.addresses.connect(|o| self.open_at(o)).await?.0)
    }

    /// One address, within the connect timeout.
    async fn open_at(&self, address: &ActiveMqOptions) -> Result<Live> {
        let endpoint = &address.endpoint;
        let profile = match &address.credentials {
            Some((user, password)) => SaslProfile::Plain {
                username: user.clone(),
                password: password.clone(),
            },
            None => SaslProfile::Anonymous,
        };
        let open = async {
            let mut builder = Connection::builder()
                .container_id(format!(
                    "coolmq-{}-{}",
                    std::process::id(),
                    coolmq_core::new_message_id()
                ))
                .sasl_profile(profile);
            if address.idle_timeout_ms > 0 {
                builder = builder.idle_time_out(address.idle_timeout_ms);
            }
            let mut connection = match &address.tls {
                None => builder
                    .open(address.amqp_url.as_str())
                    .await
                    .map_err(|e| map_connect(e, endpoint))?,
                Some(tls) => {
                    let stream =
                        crate::tls::handshake(&address.host, address.port, tls, endpoint).await?;
                    builder
                        .hostname(address.host.as_str())
                        .sasl_hostname(address.host.as_str())
                        .open_with_stream(stream)
                        .await
                        // A refused client certificate shows in the first read after the
                        // handshake (TLS 1.3).
                        .map_err(|e| match tls_failure(&e, endpoint) {
                            Some(tls) => tls,
                            None => map_connect(e, endpoint),
                        })?
                }
            };
            let session = Session::begin(&mut connection)
                .await
                .map_err(|e| map(e, "session.begin"))?;
            let (lost, close) = watch_connection(connection, self.connect_timeout);
            Ok::<_, Error>(Live {
                session,
                lost,
                close: Some(close),
            })
        };
        tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Unreachable,
                    format!(
                        "connecting to ActiveMQ at {endpoint} timed out after {:?}",
                        self.connect_timeout
                    ),
                )
            })?
    }

    /// Run `f` with the live session, (re)connecting first if needed.
    async fn with_session<T>(
        &self,
        f: impl AsyncFnOnce(&mut SessionHandle<()>) -> Result<T>,
    ) -> Result<T> {
        Ok(self.with_session_watched(f).await?.0)
    }

    /// [`Link::with_session`], with what tells when that session's connection is lost.
    async fn with_session_watched<T>(
        &self,
        f: impl AsyncFnOnce(&mut SessionHandle<()>) -> Result<T>,
    ) -> Result<(T, Lost)> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(coolmq_core::raw::closed());
        }
        let mut live = self.live.lock().await;
        let dead = live
            .as_ref()
            .is_none_or(|l| *l.lost.borrow() || l.session.is_ended());
        if dead {
            *live = Some(self.open().await?);
        }
        let opened = live.as_mut().expect("opened");
        let lost = opened.lost.clone();
        let result = f(&mut opened.session).await;
        if matches!(&result, Err(e) if e.kind() == ErrorKind::ConnectionLost) {
            // The session or connection ended under the operation (fe2o3 does not always
            // say so beforehand): the next operation connects anew.
            *live = None;
        }
        result.map(|t| (t, lost))
    }

    /// Make sure the broker answers (connect now).
    pub async fn check(&self) -> Result<()> {
        self.with_session(async |_| Ok(())).await
    }

    /// A sender to a queue or a topic: the target capability tells ActiveMQ which routing
    /// type (anycast or multicast) to give an address it auto-creates.
    pub async fn sender(&self, destination: &Destination) -> Result<Sender> {
        Ok(self.sender_watched(destination).await?.0)
    }

    /// [`Link::sender`], with what tells when its connection is lost.
    async fn sender_watched(&self, destination: &Destination) -> Result<(Sender, Lost)> {
        let name = self.link_name("sender");
        let address = destination.name();
        let capability = match destination {
            Destination::Queue(_) => "queue",
            Destination::Topic(_) => "topic",
        };
        let target = Target::builder()
            .address(address.to_string())
            .capabilities(vec![Symbol::from(capability)])
            .build();
        self.with_session_watched(async |s| {
            Sender::builder()
                .name(name)
                .target(target)
                .attach(s)
                .await
                .map_err(|e| map(e, "attach sender").with_context("address", address.to_string()))
        })
        .await
    }

    /// A sender to `destination` for application sends: refused as `Unroutable` where the
    /// broker would not route the message (see [`crate::management::ensure_routable`]).
    pub async fn routed_sender(&self, destination: &Destination) -> Result<Sender> {
        Ok(self.routed_sender_watched(destination).await?.0)
    }

    /// [`Link::routed_sender`], with what tells when its connection is lost.
    pub async fn routed_sender_watched(&self, destination: &Destination) -> Result<(Sender, Lost)> {
        crate::management::ensure_routable(self, destination).await?;
        self.sender_watched(destination).await
    }

    /// A receiver of `address` with manual credit.
    pub async fn receiver(&self, address: &str) -> Result<Receiver> {
        let name = self.link_name("receiver");
        let source = Source::builder()
            .address(address.to_string())
            .capabilities(vec![Symbol::from("queue")])
            .build();
        self.with_session(async |s| {
            Receiver::builder()
                .name(name)
                .source(source)
                .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Manual)
                .auto_accept(false)
                .attach(s)
                .await
                .map_err(|e| map(e, "attach receiver").with_context("address", address.to_string()))
        })
        .await
    }

    /// A sender without target capabilities (management and statistics addresses).
    pub async fn plain_sender(&self, address: &str) -> Result<Sender> {
        let name = self.link_name("mgmt-sender");
        self.with_session(async |s| {
            Sender::attach(s, name, address.to_string())
                .await
                .map_err(|e| map(e, "attach sender").with_context("address", address.to_string()))
        })
        .await
    }

    /// A receiver of a dynamic (temporary) queue the broker names, for replies.
    pub async fn reply_receiver(&self) -> Result<Receiver> {
        let name = self.link_name("reply");
        self.with_session(async |s| {
            Receiver::builder()
                .name(name)
                .source(Source::builder().dynamic(true).build())
                .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Manual)
                .auto_accept(false)
                .attach(s)
                .await
                .map_err(|e| map(e, "attach reply receiver"))
        })
        .await
    }

    /// Declare a transaction on its own control link.
    pub async fn declare_transaction(&self) -> Result<fe2o3_amqp::transaction::OwnedTransaction> {
        let name = self.link_name("txn");
        self.with_session(async |s| {
            fe2o3_amqp::transaction::OwnedTransaction::declare(s, name, None)
                .await
                .map_err(|e| map(e, "declare transaction"))
        })
        .await
    }

    /// Close the session and the connection, each waiting at most the connect timeout for
    /// the broker's answer: a silent broker must not hang the caller.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let live = match tokio::time::timeout(self.connect_timeout, self.live.lock()).await {
            Ok(mut live) => live.take(),
            Err(_) => None,
        };
        if let Some(mut live) = live {
            let _ = tokio::time::timeout(self.connect_timeout, live.session.end()).await;
            if let Some(close) = live.close.take() {
                let _ = close.send(());
            }
            // The connection's task closes it within the connect timeout, then reports it.
            let _ = live.lost.wait_for(|lost| *lost).await;
        }
    }
}
