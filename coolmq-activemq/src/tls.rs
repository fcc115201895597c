//! `amqp1s://`: TLS first, then AMQP on the encrypted stream (what Artemis's and Classic's
//! TLS acceptors and Qpid JMS's `amqps://` do), with the rustls configuration every backend
//! shares (private CAs, system roots or not, a client certificate, a server-name override).

use coolmq_core::raw::{tls_failure, TlsClient};
use coolmq_core::{Error, ErrorKind, Result, TlsConfig};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A TCP connection to `host:port` with the TLS handshake done as `tls` says.
pub(crate) async fn handshake(
    host: &str,
    port: u16,
    tls: &TlsConfig,
    endpoint: &str,
) -> Result<TlsStream<TcpStream>> {
    let client = TlsClient::new(tls)?;
    let server_name = client.server_name(host)?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| unreachable(e, endpoint))?;
    tokio_rustls::TlsConnector::from(client.config())
        .connect(server_name, tcp)
        .await
        .map_err(|e| match tls_failure(&e, endpoint) {
            Some(tls) => tls,
            None => unreachable(e, endpoint),
        })
}

fn unreachable(e: std::io::Error, endpoint: &str) -> Error {
    Error::new(
        ErrorKind::Unreachable,
        format!("cannot connect to ActiveMQ at {endpoint}: {e}"),
    )
    .set_temporary(true)
    .with_context("endpoint", endpoint)
    .with_source(e)
}
