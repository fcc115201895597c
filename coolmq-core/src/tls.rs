//! TLS settings shared by every backend: which CAs to trust (a private CA's PEM files, the
//! system's roots or both), a client certificate for mutual TLS, and the name the server's
//! certificate must carry. The same keys in `Config::tls` and in the URL (`tls_ca_file`,
//! `tls_cert_file`, `tls_key_file`, `tls_server_name`, `tls_system_roots`), so a broker swap
//! keeps its TLS settings. A TLS failure is [`ErrorKind::Tls`]: permanent, saying which check
//! failed, never showing a key.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// TLS settings for `amqps://` and `amqp1s://` connections.
///
/// ```
/// use coolmq_core::Config;
/// let c = Config::from_toml_str(r#"
///     url = "amqps://app:secret@broker.internal:5671/%2f"
///     [tls]
///     ca_files = ["/etc/coolmq/ca.pem"]
///     cert_file = "/etc/coolmq/client.pem"
///     key_file = "/etc/coolmq/client.key"
/// "#).unwrap();
/// assert_eq!(c.tls.ca_files.len(), 1);
/// assert!(!c.tls.trusts_system_roots(), "a private CA replaces the system roots unless asked");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM files of the certificate authorities to trust (a private CA).
    pub ca_files: Vec<PathBuf>,
    /// PEM file of the client certificate (and its chain) for mutual TLS; with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it differs from the host connected
    /// to (an IP address, a load balancer, a tunnel).
    pub server_name: Option<String>,
    /// Whether the system's roots are trusted too. Default: only when no `ca_files` are given.
    pub system_roots: Option<bool>,
}

impl fmt::Debug for TlsConfig {
    /// Paths and names only: a key file's path is shown, never its contents (which are never
    /// read into this value).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_files", &self.ca_files)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file.as_ref().map(|_| "<set>"))
            .field("server_name", &self.server_name)
            .field("system_roots", &self.system_roots)
            .finish()
    }
}

/// The URL options [`TlsConfig::apply_url_option`] takes.
pub const TLS_URL_OPTIONS: &[&str] = &[
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_server_name",
    "tls_system_roots",
];

impl TlsConfig {
    /// Whether the system's roots are trusted (see [`TlsConfig::system_roots`]).
    pub fn trusts_system_roots(&self) -> bool {
        self.system_roots.unwrap_or(self.ca_files.is_empty())
    }

    /// Apply one URL query option if it is a TLS option (`tls_ca_file` may repeat); `false`
    /// when `key` is not one.
    ///
    /// # Errors
    /// [`crate::ErrorKind::ConfigInvalid`] for a malformed value.
    pub fn apply_url_option(&mut self, key: &str, value: &str) -> Result<bool> {
        match key {
            "tls_ca_file" => self.ca_files.push(value.into()),
            "tls_cert_file" => self.cert_file = Some(value.into()),
            "tls_key_file" => self.key_file = Some(value.into()),
            "tls_server_name" => self.server_name = Some(value.to_string()),
            "tls_system_roots" => {
                self.system_roots = Some(match value {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(Error::config(
                            "url.tls_system_roots",
                            format!("tls_system_roots must be true or false, not {other:?}"),
                        ))
                    }
                })
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Check the settings hang together (a certificate needs its key).
    ///
    /// # Errors
    /// [`crate::ErrorKind::ConfigInvalid`] naming the field.
    pub fn validate(&self) -> Result<()> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(Error::config(
                "tls.key_file",
                "tls.cert_file is set without tls.key_file: a client certificate needs its key",
            )),
            (None, Some(_)) => Err(Error::config(
                "tls.cert_file",
                "tls.key_file is set without tls.cert_file",
            )),
            _ => Ok(()),
        }
    }

    /// Whether any setting differs from the defaults (a plain-text URL with TLS settings is
    /// refused: they would silently do nothing).
    pub fn is_set(&self) -> bool {
        self != &TlsConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_options_add_to_the_configured_ones() {
        let mut tls = TlsConfig {
            ca_files: vec!["/etc/a.pem".into()],
            ..TlsConfig::default()
        };
        assert!(tls.apply_url_option("tls_ca_file", "/etc/b.pem").unwrap());
        assert!(tls.apply_url_option("tls_server_name", "broker").unwrap());
        assert!(tls.apply_url_option("tls_system_roots", "true").unwrap());
        assert!(
            !tls.apply_url_option("heartbeat", "5").unwrap(),
            "not a TLS option"
        );
        assert_eq!(tls.ca_files.len(), 2);
        assert!(tls.trusts_system_roots());
        let e = tls.apply_url_option("tls_system_roots", "yes").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ConfigInvalid);
    }

    #[test]
    fn system_roots_only_without_a_private_ca_unless_asked() {
        assert!(TlsConfig::default().trusts_system_roots());
        let private = TlsConfig {
            ca_files: vec!["/ca.pem".into()],
            ..TlsConfig::default()
        };
        assert!(!private.trusts_system_roots());
    }

    #[test]
    fn a_certificate_needs_its_key_and_debug_hides_the_key_path() {
        let half = TlsConfig {
            cert_file: Some("/client.pem".into()),
            ..TlsConfig::default()
        };
        assert_eq!(
            half.validate().unwrap_err().kind(),
            crate::ErrorKind::ConfigInvalid
        );
        let whole = TlsConfig {
            key_file: Some("/secret/dir/client.key".into()),
            ..half
        };
        whole.validate().unwrap();
        assert!(!format!("{whole:?}").contains("/secret/dir"));
    }
}
