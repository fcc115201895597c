//! `amqp1://` / `amqp1s://` URL options. Both AMQP protocols use `amqp://` natively, so coolmq
//! gives AMQP 1.0 its own scheme and rewrites it for fe2o3; credentials select SASL PLAIN,
//! none select ANONYMOUS.

use coolmq_core::raw::{parse_backend_url, parse_url_option};
use coolmq_core::{redact_url, Error, Result, TlsConfig};

/// Artemis' default largest AMQP frame-assembled message is far larger; coolmq caps at 100 MiB,
/// Classic's `wireFormat.maxFrameSize` in the project's configuration.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 100 * 1024 * 1024;

/// Options parsed from the broker URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ActiveMqOptions {
    /// The URL handed to fe2o3 (`amqp://host:port` or `amqps://…`, no credentials).
    pub amqp_url: String,
    /// The broker's host, for TLS (the name its certificate is checked against).
    pub host: String,
    /// The broker's port.
    pub port: u16,
    /// TLS settings for an `amqp1s://` URL (the configuration's, plus the URL's `tls_*`
    /// options); `None` for `amqp1://`.
    pub tls: Option<TlsConfig>,
    /// The URL with its password redacted.
    pub endpoint: String,
    /// SASL PLAIN credentials, if any.
    pub credentials: Option<(String, String)>,
    /// Largest message body accepted (`?max_message_size=`).
    pub max_message_size: usize,
    /// Artemis or Classic (`?broker=artemis|classic`, default artemis): they differ in
    /// management.
    pub flavor: crate::Flavor,
    /// The AMQP 1.0 idle timeout this side announces and enforces, in milliseconds
    /// (`?idle_timeout=`, Qpid JMS's `amqp.idleTimeout`; default 60,000; 0 = none): a
    /// connection that stops answering without closing is noticed within it, and every
    /// operation on it fails instead of hanging.
    pub idle_timeout_ms: u32,
    /// Whether the URL set `idle_timeout` (then it wins over the configured heartbeat).
    idle_timeout_in_url: bool,
}

impl std::fmt::Debug for ActiveMqOptions {
    /// Without the password: the user name shows, the password never.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveMqOptions")
            .field("endpoint", &self.endpoint)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("max_message_size", &self.max_message_size)
            .field("flavor", &self.flavor)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The default AMQP 1.0 idle timeout: Qpid JMS's.
pub const DEFAULT_IDLE_TIMEOUT_MS: u32 = 60_000;

impl ActiveMqOptions {
    /// Parse an `amqp1://` or `amqp1s://` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with(url, &TlsConfig::default())
    }

    /// Parse an `amqp1://` or `amqp1s://` URL, starting from the configured TLS settings.
    ///
    /// # Errors
    /// `ConfigInvalid` for a malformed option, or TLS settings with a plain `amqp1://` URL
    /// (they would silently do nothing).
    pub fn from_url_with(url: &str, tls: &TlsConfig) -> Result<Self> {
        let u = parse_backend_url(url, "activemq", crate::SCHEMES)?;
        let mut tls = tls.clone();
        let mut max_message_size = DEFAULT_MAX_MESSAGE_SIZE;
        let mut flavor = crate::Flavor::Artemis;
        let mut idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
        let mut idle_timeout_in_url = false;
        for (k, v) in u.query_pairs() {
            match &*k {
                "idle_timeout" => {
                    idle_timeout_ms =
                        parse_url_option("idle_timeout", &v, "a number of milliseconds")?;
                    idle_timeout_in_url = true;
                }
                "max_message_size" => {
                    max_message_size =
                        parse_url_option("max_message_size", &v, "a number of bytes")?
                }
                "broker" => {
                    flavor = match &*v {
                        "artemis" => crate::Flavor::Artemis,
                        "classic" => crate::Flavor::Classic,
                        other => {
                            return Err(coolmq_core::Error::config(
                                "url.broker",
                                format!("broker must be artemis or classic, not {other:?}"),
                            ))
                        }
                    }
                }
                key if tls.apply_url_option(key, &v)? => {}
                other => {
                    return Err(coolmq_core::Error::config(
                        "url",
                        format!(
                            "unknown amqp1:// option {other:?}; known: broker, idle_timeout, max_message_size, {}",
                            coolmq_core::TLS_URL_OPTIONS.join(", ")
                        ),
                    ))
                }
            }
        }
        let scheme = if u.scheme() == "amqp1s" {
            "amqps"
        } else {
            "amqp"
        };
        let host = u.host_str().unwrap_or("localhost");
        let port = u
            .port()
            .unwrap_or(if scheme == "amqps" { 5671 } else { 5672 });
        let tls = if scheme == "amqps" {
            tls.validate()?;
            Some(tls)
        } else if tls.is_set() {
            return Err(Error::config(
                "tls",
                "TLS settings with a plain amqp1:// URL would do nothing: use amqp1s://",
            ));
        } else {
            None
        };
        let credentials = (!u.username().is_empty()).then(|| {
            // Percent-decoding as RFC 3986 says (a `+` is a plus, not a space).
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (
                decode(u.username()),
                decode(u.password().unwrap_or_default()),
            )
        });
        Ok(ActiveMqOptions {
            amqp_url: format!("{scheme}://{host}:{port}"),
            host: host.to_string(),
            port,
            tls,
            endpoint: redact_url(url),
            credentials,
            max_message_size,
            flavor,
            idle_timeout_ms,
            idle_timeout_in_url,
        })
    }

    /// Use `heartbeat` (the configured one) as the idle timeout unless the URL set its own.
    pub fn with_heartbeat(mut self, heartbeat: std::time::Duration) -> Self {
        if !self.idle_timeout_in_url {
            self.idle_timeout_ms = heartbeat.as_millis().min(u128::from(u32::MAX)) as u32;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_is_rewritten_and_credentials_split() {
        let o = ActiveMqOptions::from_url("amqp1://u:p%40ss@h:5673").unwrap();
        assert_eq!(o.amqp_url, "amqp://h:5673");
        assert_eq!(o.credentials, Some(("u".into(), "p@ss".into())));
        assert_eq!(o.endpoint, "amqp1://u:***@h:5673");
        let o = ActiveMqOptions::from_url("amqp1s://h").unwrap();
        assert_eq!(o.amqp_url, "amqps://h:5671");
        assert_eq!(o.credentials, None);
        assert!(ActiveMqOptions::from_url("amqp://h").is_err());
    }

    #[test]
    fn idle_timeout_defaults_to_qpid_jms_and_can_be_set() {
        let o = ActiveMqOptions::from_url("amqp1://h").unwrap();
        assert_eq!(o.idle_timeout_ms, DEFAULT_IDLE_TIMEOUT_MS);
        let o = ActiveMqOptions::from_url("amqp1://h?idle_timeout=5000").unwrap();
        assert_eq!(o.idle_timeout_ms, 5000);
        assert_eq!(o.amqp_url, "amqp://h:5672");
        let o = o.with_heartbeat(std::time::Duration::from_secs(2));
        assert_eq!(o.idle_timeout_ms, 5000, "the URL's own wins");
        let o = ActiveMqOptions::from_url("amqp1://h")
            .unwrap()
            .with_heartbeat(std::time::Duration::from_secs(2));
        assert_eq!(o.idle_timeout_ms, 2000);
        let e = ActiveMqOptions::from_url("amqp1://h?idle_timeout=soon").unwrap_err();
        assert_eq!(e.kind(), coolmq_core::ErrorKind::ConfigInvalid);
    }

    #[test]
    fn credentials_are_percent_decoded_and_never_shown() {
        let o = ActiveMqOptions::from_url("amqp1://a%20b%2Bc:p+ss%2F%40%3A%25%3F%23%26w@h:5673")
            .unwrap();
        assert_eq!(
            o.credentials,
            Some(("a b+c".into(), "p+ss/@:%?#&w".into())),
            "a + is a plus (RFC 3986), not a space"
        );
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("p+ss") && !shown.contains("%2F%40"),
            "{shown}"
        );
    }

    #[test]
    fn tls_options_come_from_the_url_and_need_amqp1s() {
        let o = ActiveMqOptions::from_url(
            "amqp1s://h:5691?tls_ca_file=/ca.pem&tls_server_name=broker&broker=classic",
        )
        .unwrap();
        let tls = o.tls.expect("amqp1s has TLS settings");
        assert_eq!(tls.ca_files, [std::path::PathBuf::from("/ca.pem")]);
        assert_eq!(tls.server_name.as_deref(), Some("broker"));
        assert_eq!((o.host.as_str(), o.port), ("h", 5691));
        let e = ActiveMqOptions::from_url("amqp1://h?tls_ca_file=/ca.pem").unwrap_err();
        assert_eq!(e.kind(), coolmq_core::ErrorKind::ConfigInvalid);
    }
}
