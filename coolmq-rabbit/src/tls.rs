//! `amqps://` with coolmq's TLS settings. lapin's own TLS takes one CA chain and always
//! checks the URL's host, so coolmq hands lapin a transport it opens itself, with the rustls
//! configuration every backend shares (private CAs, system roots or not, a client
//! certificate, a server-name override), and reports a failed handshake as a TLS error.

use std::net::SocketAddr;

use coolmq_core::raw::{probe_handshake, tls_failure, TlsClient};
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
    let (host, port) = (uri.authority.host.clone(), uri.authority.port);
    let probe_name = server_name.clone();
    let runtime = lapin::runtime::default_runtime().map_err(|e| map_connect(e, endpoint))?;
    let connected = Connection::connector(
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
    .await;
    let e = match connected {
        Ok(connection) => return Ok(connection),
        Err(e) => e,
    };
    if let Some(tls) = tls_failure(&e, endpoint) {
        return Err(tls);
    }
    // Dropped after the handshake: the server's alert (a client certificate it demands or
    // refuses) may have been lost with the connection; a probe that writes nothing reads it.
    let probe_endpoint = endpoint.to_string();
    let probed = tokio::task::spawn_blocking(move || {
        probe_handshake(
            &client,
            &host,
            port,
            &probe_name,
            &probe_endpoint,
            std::time::Duration::from_secs(3),
        )
    })
    .await
    .ok()
    .flatten();
    Err(probed.unwrap_or_else(|| map_connect(e, endpoint)))
}
