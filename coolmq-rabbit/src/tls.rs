//! `amqps://` with coolmq's TLS settings. lapin's own TLS takes one CA chain and always
//! checks the URL's host, so coolmq hands lapin a transport it opens itself, with the rustls
//! configuration every backend shares (private CAs, system roots or not, a client
//! certificate, a server-name override), and reports a failed handshake as a TLS error.

use std::net::SocketAddr;

use coolmq_core::raw::{tls_failure, TlsClient};
use coolmq_core::{Error, Result, TlsConfig};
use lapin::tcp::RustlsConnector;
use lapin::uri::AMQPUri;
use lapin::{AsyncTcpStream, Connection, ConnectionProperties};

use crate::error::map_connect;

/// Connect to `amqp_url` (an `amqps://` URL) over TLS as `tls` says.
pub(crate) async fn connect(
    amqp_url: &str,
    endpoint: &str,
    tls: &TlsConfig,
    props: ConnectionProperties,
) -> Result<Connection> {
    let client = TlsClient::new(tls)?;
    let uri: AMQPUri = amqp_url
        .parse()
        .map_err(|e: String| Error::config("url", e))?;
    let server_name = match &tls.server_name {
        Some(name) => name.clone(),
        None => {
            client.server_name(&uri.authority.host)?;
            uri.authority.host.clone()
        }
    };
    let connector = RustlsConnector::from(client.config());
    let runtime = lapin::runtime::default_runtime().map_err(|e| map_connect(e, endpoint))?;
    Connection::connector(
        uri,
        runtime,
        async move |uri, runtime| {
            let host = (uri.authority.host.as_str(), uri.authority.port);
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host(host).await?.collect();
            let stream = AsyncTcpStream::connect(&runtime, addresses).await?;
            Ok(stream.into_rustls(&connector, &server_name).await?)
        },
        props,
    )
    .await
    .map_err(|e| match tls_failure(&e, endpoint) {
        Some(tls) => tls,
        None => map_connect(e, endpoint),
    })
}
