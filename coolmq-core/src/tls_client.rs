//! [`TlsConfig`] made into a rustls client configuration, and TLS failures made into typed
//! errors. Both RabbitMQ's client (lapin) and ActiveMQ's (fe2o3-amqp) run over rustls, so one
//! configuration and one classification serve every backend.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use crate::tls::TlsConfig;
use crate::{Error, ErrorKind, Result};

/// A rustls client configuration and the server name to check, ready for each connection.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Read the CA, certificate and key files `tls` names and build the client side.
    ///
    /// # Errors
    /// [`ErrorKind::ConfigInvalid`] naming the file that cannot be read or holds no usable
    /// PEM (its path only), or a server name that is not a DNS name or IP address.
    pub fn new(tls: &TlsConfig) -> Result<Self> {
        tls.validate()?;
        let mut roots = RootCertStore::empty();
        for file in &tls.ca_files {
            let certs = read_certs(file, "tls.ca_files")?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::config(
                    "tls.ca_files",
                    format!("{} holds no usable CA certificate", file.display()),
                ));
            }
        }
        if tls.trusts_system_roots() {
            // Certificates the system store cannot parse are skipped, as every client does.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
        if roots.is_empty() {
            return Err(Error::config(
                "tls",
                "no CA to trust: give tls.ca_files, or allow tls.system_roots (none found on this system)",
            ));
        }
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config("tls", format!("no usable TLS version: {e}")))?
            .with_root_certificates(roots);
        let config = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "tls.cert_file")?;
                let key = read_key(key)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    Error::config(
                        "tls.key_file",
                        format!("the client certificate and key do not go together: {e}"),
                    )
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        let server_name = tls
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_string()).map_err(|_| {
                    Error::config(
                        "tls.server_name",
                        format!("{name:?} is not a DNS name or IP address"),
                    )
                })
            })
            .transpose()?;
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
        })
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The name to check the server's certificate against: the override, else `host`.
    ///
    /// # Errors
    /// [`ErrorKind::ConfigInvalid`] when `host` is neither a DNS name nor an IP address.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string()).map_err(|_| {
            Error::config(
                "url",
                format!(
                    "{host:?} is not a DNS name or IP address to check the certificate against"
                ),
            )
        })
    }
}

fn read_certs(file: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::config(
                field,
                format!(
                    "cannot read PEM certificates from {}: {}",
                    file.display(),
                    pem_problem(&e)
                ),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::config(
            field,
            format!("{} holds no PEM certificate", file.display()),
        ));
    }
    Ok(certs)
}

fn read_key(file: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(file).map_err(|e| {
        Error::config(
            "tls.key_file",
            format!(
                "cannot read a PEM private key from {}: {}",
                file.display(),
                pem_problem(&e)
            ),
        )
    })
}

/// What is wrong with a PEM file, without quoting it: the parser's own message can carry a
/// line of the file, and a key file's lines are secret.
fn pem_problem(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as Pem;
    match e {
        Pem::Io(io) => io.to_string(),
        Pem::NoItemsFound => "no PEM section of the expected type".into(),
        Pem::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        Pem::IllegalSectionStart { .. } => "a malformed BEGIN line".into(),
        Pem::Base64Decode(_) => "a PEM section is not valid base64".into(),
        _ => "not a valid PEM file".into(),
    }
}

/// The TLS failure in `error`'s chain, as a typed, permanent [`ErrorKind::Tls`] error saying
/// which check failed; `None` when the chain holds no TLS failure. `endpoint` is the
/// (redacted) address it happened at.
pub fn tls_failure(error: &(dyn std::error::Error + 'static), endpoint: &str) -> Option<Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = as_rustls(e) {
            return Some(
                Error::new(
                    ErrorKind::Tls,
                    format!("TLS with {endpoint}: {}", describe(tls)),
                )
                .with_context("endpoint", endpoint.to_string()),
            );
        }
        next = e.source();
    }
    None
}

/// Why a TLS server dropped a connection, found by a handshake that sends nothing after it.
///
/// A TLS 1.3 server checks the client's certificate after the client has finished its side
/// of the handshake, then sends an alert and closes. A client that has already written its
/// first bytes (an AMQP protocol header) often sees the connection reset instead, and the
/// alert is lost with the unread data. This probe connects to `host:port`, completes the
/// handshake, writes nothing and reads: the alert, if the server sends one, arrives intact.
/// Blocking (run it with `spawn_blocking`); every step is bounded by `timeout`. `None` when
/// the server raised no TLS complaint.
pub fn probe_handshake(
    client: &TlsClient,
    host: &str,
    port: u16,
    server_name: &str,
    endpoint: &str,
    timeout: std::time::Duration,
) -> Option<Error> {
    use std::io::Read;
    use std::net::ToSocketAddrs;
    let name = client.server_name(server_name).ok()?;
    let address = (host, port).to_socket_addrs().ok()?.next()?;
    let tcp = std::net::TcpStream::connect_timeout(&address, timeout).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    tcp.set_write_timeout(Some(timeout)).ok()?;
    let connection = rustls::ClientConnection::new(client.config(), name).ok()?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let mut byte = [0u8; 1];
    // The first read drives the handshake, then waits for the server's first record: an
    // alert when it refuses the client, nothing (a timeout) when it waits for the client.
    match tls.read_exact(&mut byte) {
        Err(e) => tls_failure(&e, endpoint),
        Ok(()) => None,
    }
}

/// `e` as a rustls error, directly or inside an `io::Error` (whose `source()` skips it).
fn as_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    e.downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "the server's certificate is not signed by a trusted CA (check tls.ca_files)".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate is not valid for the host name (connect by the name it carries, or set tls.server_name)".into()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet".into()
            }
            CertificateError::Revoked => "the server's certificate is revoked".into(),
            other => format!("the server's certificate was refused: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure => format!(
                "the server refused the handshake ({alert:?}): it may demand a client certificate (tls.cert_file, tls.key_file)"
            ),
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired => {
                format!("the server refused the client certificate ({alert:?})")
            }
            other => format!("the server ended the handshake ({other:?})"),
        },
        other => format!("the handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, contents: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("coolmq-tls-{}", crate::new_message_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let tls = TlsConfig {
            ca_files: vec!["/nonexistent/coolmq-ca.pem".into()],
            ..TlsConfig::default()
        };
        let e = TlsClient::new(&tls).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(e.to_string().contains("/nonexistent/coolmq-ca.pem"), "{e}");
    }

    #[test]
    fn a_malformed_key_file_is_named_never_quoted() {
        for contents in [
            "-----BEGIN PRIVATE KEY SECRETLINE\nc2VjcmV0\n",
            "-----BEGIN PRIVATE KEY-----\nc2Vj!!cmV0 SECRETLINE\n-----END PRIVATE KEY-----\n",
            "SECRETLINE c2VjcmV0\n",
        ] {
            let key = temp("client.key", contents);
            let e = read_key(&key).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
            assert!(shown.contains("client.key"), "{shown}");
            assert!(
                !shown.contains("SECRETLINE") && !shown.contains("c2Vj"),
                "{shown}"
            );
        }
    }

    #[test]
    fn tls_failures_are_found_inside_io_errors_and_say_which_check() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let e = tls_failure(&io, "amqps://u:***@h").expect("a TLS failure");
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert!(!e.is_temporary());
        assert!(e.to_string().contains("not signed by a trusted CA"), "{e}");
        for (failure, says) in [
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                "not valid for the host name",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "has expired",
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                "client certificate",
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::BadCertificate),
                "refused the client certificate",
            ),
        ] {
            let io = std::io::Error::other(failure);
            let e = tls_failure(&io, "h").expect("a TLS failure");
            assert!(e.to_string().contains(says), "{e}");
        }
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(tls_failure(&plain, "h").is_none());
    }
}
