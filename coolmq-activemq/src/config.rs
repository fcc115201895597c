//! `amqp1://` / `amqp1s://` URL options. Both AMQP protocols use `amqp://` natively, so coolmq
//! gives AMQP 1.0 its own scheme and rewrites it for fe2o3; credentials select SASL PLAIN,
//! none select ANONYMOUS.

use coolmq_core::raw::{parse_backend_url, parse_url_option};
use coolmq_core::{redact_url, Result};

/// Artemis' default largest AMQP frame-assembled message is far larger; coolmq caps at 100 MiB,
/// Classic's `wireFormat.maxFrameSize` in the project's configuration.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 100 * 1024 * 1024;

/// Options parsed from the broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveMqOptions {
    /// The URL handed to fe2o3 (`amqp://host:port` or `amqps://…`, no credentials).
    pub amqp_url: String,
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

/// The default AMQP 1.0 idle timeout: Qpid JMS's.
pub const DEFAULT_IDLE_TIMEOUT_MS: u32 = 60_000;

impl ActiveMqOptions {
    /// Parse an `amqp1://` or `amqp1s://` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let u = parse_backend_url(url, "activemq", crate::SCHEMES)?;
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
                other => {
                    return Err(coolmq_core::Error::config(
                        "url",
                        format!(
                            "unknown amqp1:// option {other:?}; known: broker, idle_timeout, max_message_size"
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
        let credentials = (!u.username().is_empty()).then(|| {
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            (
                decode(u.username()),
                decode(u.password().unwrap_or_default()),
            )
        });
        Ok(ActiveMqOptions {
            amqp_url: format!("{scheme}://{host}:{port}"),
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
}
