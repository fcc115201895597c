//! `amqp://` / `amqps://` URL options: everything lapin understands passes through
//! (vhost, `heartbeat`, `frame_max`, `channel_max`, TLS by scheme); coolmq's own options
//! (the `driver` among them) are taken out first.

use coolmq_core::raw::{parse_backend_url, parse_url_option};
use coolmq_core::{redact_url, Error, Result, TlsConfig};

use crate::Driver;

/// RabbitMQ's default largest message (3.8–3.13): 128 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;
/// The exchange topics are published to: RabbitMQ's predeclared durable topic exchange.
pub const DEFAULT_TOPIC_EXCHANGE: &str = "amq.topic";

/// Options parsed from the broker URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RabbitOptions {
    /// The URL handed to lapin (coolmq's own query options removed).
    pub amqp_url: String,
    /// The URL with its password redacted, for logs.
    pub endpoint: String,
    /// Largest message body accepted (`?max_message_size=`).
    pub max_message_size: usize,
    /// Exchange for topics (`?topic_exchange=`, default `amq.topic`).
    pub topic_exchange: String,
    /// Connection name shown in the management UI (`?connection_name=`).
    pub connection_name: String,
    /// TLS settings for an `amqps://` URL (the configuration's, plus the URL's `tls_*`
    /// options); `None` for `amqp://`.
    pub tls: Option<TlsConfig>,
    /// The AMQP 0-9-1 client library carrying the connection (`?driver=`, default lapin).
    pub driver: Driver,
}

impl std::fmt::Debug for RabbitOptions {
    /// Without the password: `amqp_url` carries it for lapin, so the redacted endpoint shows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitOptions")
            .field("endpoint", &self.endpoint)
            .field("max_message_size", &self.max_message_size)
            .field("topic_exchange", &self.topic_exchange)
            .field("connection_name", &self.connection_name)
            .field("tls", &self.tls)
            .field("driver", &self.driver)
            .finish()
    }
}

impl RabbitOptions {
    /// Parse an `amqp://` or `amqps://` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with(url, &TlsConfig::default())
    }

    /// Parse an `amqp://` or `amqps://` URL, starting from the configured TLS settings.
    ///
    /// # Errors
    /// `ConfigInvalid` for a malformed option, or TLS settings with a plain `amqp://` URL
    /// (they would silently do nothing).
    pub fn from_url_with(url: &str, tls: &TlsConfig) -> Result<Self> {
        let mut u = parse_backend_url(url, "rabbit", crate::SCHEMES)?;
        let mut tls = tls.clone();
        let mut options = RabbitOptions {
            amqp_url: String::new(),
            endpoint: redact_url(url),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            topic_exchange: DEFAULT_TOPIC_EXCHANGE.to_string(),
            connection_name: format!("coolmq pid {}", std::process::id()),
            tls: None,
            driver: Driver::default(),
        };
        let mut passthrough = Vec::new();
        for (k, v) in u.query_pairs() {
            match &*k {
                "max_message_size" => {
                    options.max_message_size =
                        parse_url_option("max_message_size", &v, "a number of bytes")?
                }
                "topic_exchange" => options.topic_exchange = v.into_owned(),
                "connection_name" => options.connection_name = v.into_owned(),
                "driver" => options.driver = Driver::parse(&v)?,
                key if tls.apply_url_option(key, &v)? => {}
                _ => passthrough.push((k.into_owned(), v.into_owned())),
            }
        }
        if passthrough.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(passthrough);
        }
        if u.scheme() == "amqps" {
            tls.validate()?;
            options.tls = Some(tls);
        } else if tls.is_set() {
            return Err(Error::config(
                "tls",
                "TLS settings with a plain amqp:// URL would do nothing: use amqps://",
            ));
        }
        options.amqp_url = u.to_string();
        Ok(options)
    }

    /// Ask for `heartbeat` (whole seconds, at least 1; zero: none) unless the URL asks for
    /// its own: a silent connection then fails after two missed heartbeats instead of
    /// hanging.
    pub fn with_heartbeat(mut self, heartbeat: std::time::Duration) -> Self {
        let Ok(mut u) = url::Url::parse(&self.amqp_url) else {
            return self;
        };
        if u.query_pairs().any(|(k, _)| k == "heartbeat") {
            return self;
        }
        let secs = if heartbeat.is_zero() {
            0
        } else {
            heartbeat.as_secs_f64().ceil().max(1.0) as u64
        };
        u.query_pairs_mut()
            .append_pair("heartbeat", &secs.to_string());
        self.amqp_url = u.to_string();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_is_asked_for_unless_the_url_does() {
        let o = RabbitOptions::from_url("amqp://h/%2f")
            .unwrap()
            .with_heartbeat(std::time::Duration::from_millis(1500));
        assert_eq!(o.amqp_url, "amqp://h/%2f?heartbeat=2");
        let o = RabbitOptions::from_url("amqp://h/%2f?heartbeat=10")
            .unwrap()
            .with_heartbeat(std::time::Duration::from_secs(60));
        assert_eq!(o.amqp_url, "amqp://h/%2f?heartbeat=10");
    }

    #[test]
    fn own_options_are_removed_and_others_kept() {
        let o = RabbitOptions::from_url(
            "amqp://u:p@h:5672/%2f?heartbeat=10&max_message_size=1000&topic_exchange=events",
        )
        .unwrap();
        assert_eq!(o.amqp_url, "amqp://u:p@h:5672/%2f?heartbeat=10");
        assert_eq!(o.max_message_size, 1000);
        assert_eq!(o.topic_exchange, "events");
        assert_eq!(
            o.endpoint,
            "amqp://u:***@h:5672/%2f?heartbeat=10&max_message_size=1000&topic_exchange=events"
        );
        assert!(RabbitOptions::from_url("amqp://h/?max_message_size=x").is_err());
    }

    #[test]
    fn the_driver_is_chosen_by_the_url_and_lapin_by_default() {
        assert_eq!(
            RabbitOptions::from_url("amqp://h/%2f").unwrap().driver,
            Driver::Lapin
        );
        let o = RabbitOptions::from_url("amqp://h/%2f?driver=amqprs&heartbeat=5").unwrap();
        assert_eq!(o.driver, Driver::Amqprs);
        assert_eq!(o.amqp_url, "amqp://h/%2f?heartbeat=5");
        let e = RabbitOptions::from_url("amqp://h/?driver=pika").unwrap_err();
        assert_eq!(e.kind(), coolmq_core::ErrorKind::ConfigInvalid);
    }

    #[test]
    fn tls_options_are_coolmqs_and_the_password_never_shows() {
        let o = RabbitOptions::from_url(
            "amqps://u:s3cret@h:5671/%2f?tls_ca_file=/ca.pem&tls_cert_file=/c.pem&tls_key_file=/c.key&heartbeat=5",
        )
        .unwrap();
        assert_eq!(o.amqp_url, "amqps://u:s3cret@h:5671/%2f?heartbeat=5");
        let tls = o.tls.as_ref().expect("amqps has TLS settings");
        assert_eq!(
            tls.cert_file.as_deref(),
            Some(std::path::Path::new("/c.pem"))
        );
        assert!(!format!("{o:?}").contains("s3cret"));
        let e = RabbitOptions::from_url("amqp://h/?tls_ca_file=/ca.pem").unwrap_err();
        assert_eq!(e.kind(), coolmq_core::ErrorKind::ConfigInvalid);
    }
}
