//! Configuration: the broker URL plus the reliability knobs, from TOML, environment variables
//! or code — so swapping brokers is a configuration change, never a code change.

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::addresses::{AddressOrder, Addresses};
use crate::tls::TlsConfig;
use crate::{
    duration_serde, Error, ErrorKind, QueueKind, RedeliveryPolicyMap, Result, DEFAULT_PREFETCH,
};

/// Environment variable prefix: `COOLMQ_URL`, `COOLMQ_PREFETCH`,
/// `COOLMQ_REDELIVERY__DEFAULT__MAXIMUM_REDELIVERIES`…
pub const ENV_PREFIX: &str = "COOLMQ_";
/// Environment variable naming a TOML file to read before the other variables.
pub const ENV_CONFIG_FILE: &str = "COOLMQ_CONFIG";

/// Everything needed to connect and to behave reliably.
///
/// ```
/// use coolmq_core::Config;
/// let c = Config::from_toml_str(r#"
///     url = "memory://orders"
///     prefetch = 50
///     [redelivery.default]
///     maximum_redeliveries = 3
///     initial_redelivery_delay = "250ms"
///     [redelivery.queues."payments"]
///     maximum_redeliveries = 10
/// "#).unwrap();
/// assert_eq!(c.prefetch, 50);
/// assert_eq!(c.redelivery.policy_for("payments").maximum_redeliveries, 10);
/// assert_eq!(c.redelivery.policy_for("other").maximum_redeliveries, 3);
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The broker: `memory://[name]`, `amqp://user:pass@host:5672/vhost`, `amqp1://…`. A
    /// cluster's or a live/backup pair's nodes as a host list
    /// (`amqp://user:pass@h1:5672,h2:5672/vhost`) or ActiveMQ's `failover:(url1,url2)`.
    pub url: String,
    /// In which order connecting tries the URL's addresses: `in_order` (default) or
    /// `shuffle` (a `failover:` URL's own `randomize` wins).
    pub address_order: AddressOrder,
    /// Deliveries a consumer may hold unsettled. Default 200.
    pub prefetch: u16,
    /// Sends a publisher keeps in flight (awaited sends until their confirm, pipelined ones
    /// until the hand-over); a send waits for room at most `confirm_timeout`. Default 256.
    pub publisher_window: usize,
    /// How long a send waits for its confirm before failing with `Timeout`, and for room in
    /// the publisher window. Default 30 s. (ActiveMQ checks the deadlines every 1/32 of it,
    /// so a send may wait up to that longer.)
    #[serde(with = "duration_serde")]
    pub confirm_timeout: Duration,
    /// How long connecting may take before failing with `Unreachable`. Default 10 s.
    #[serde(with = "duration_serde")]
    pub connect_timeout: Duration,
    /// How soon a connection that stops answering without closing (a dead peer, a
    /// half-open TCP connection) is noticed: RabbitMQ's heartbeat (Spring's
    /// `requestedHeartbeat`), ActiveMQ's AMQP idle timeout (Qpid JMS's `amqp.idleTimeout`).
    /// Default 60 s, both clients' default. A URL's own `heartbeat` / `idle_timeout` wins.
    #[serde(with = "duration_serde")]
    pub heartbeat: Duration,
    /// Prefix of dead-letter queue names. Default `DLQ.`.
    pub dead_letter_prefix: String,
    /// The kind of the queues `Broker::queue_spec` makes: `classic` (default) or `quorum`
    /// (RabbitMQ's replicated queues: use them on a cluster; see the README).
    pub queue_kind: QueueKind,
    /// Redelivery policy: a default entry and per-queue overrides.
    pub redelivery: RedeliveryPolicyMap,
    /// TLS for `amqps://` and `amqp1s://`: CA files, a client certificate, a server-name
    /// override (README, "TLS"). A URL's `tls_*` options add to these.
    pub tls: TlsConfig,
}

impl std::fmt::Debug for Config {
    /// With the URL's passwords (and secret query values) redacted: configurations end up
    /// in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.redacted_url())
            .field("address_order", &self.address_order)
            .field("prefetch", &self.prefetch)
            .field("publisher_window", &self.publisher_window)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("heartbeat", &self.heartbeat)
            .field("dead_letter_prefix", &self.dead_letter_prefix)
            .field("queue_kind", &self.queue_kind)
            .field("redelivery", &self.redelivery)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "memory://".to_string(),
            address_order: AddressOrder::InOrder,
            prefetch: DEFAULT_PREFETCH,
            publisher_window: 256,
            confirm_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(60),
            dead_letter_prefix: crate::DEFAULT_DEAD_LETTER_PREFIX.to_string(),
            queue_kind: QueueKind::Classic,
            redelivery: RedeliveryPolicyMap::default(),
            tls: TlsConfig::default(),
        }
    }
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "url",
    "address_order",
    "prefetch",
    "publisher_window",
    "confirm_timeout",
    "connect_timeout",
    "heartbeat",
    "dead_letter_prefix",
    "queue_kind",
    "redelivery",
    "tls",
];

impl Config {
    /// Defaults with this URL.
    pub fn from_url(url: impl Into<String>) -> Result<Self> {
        let c = Config {
            url: url.into(),
            ..Config::default()
        };
        c.validate()?;
        Ok(c)
    }

    /// Parse TOML text (absent fields take their defaults).
    pub fn from_toml_str(toml: &str) -> Result<Self> {
        Self::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)),
        )
    }

    /// Read a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(
                "config",
                format!("cannot read config file {}", path.display()),
            )
            .with_source(e)
        })?;
        Self::from_toml_str(&text)
    }

    /// Defaults, then the TOML file named by `COOLMQ_CONFIG` if set, then `COOLMQ_*`
    /// variables (nested keys separated by `__`).
    pub fn from_env() -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Ok(path) = std::env::var(ENV_CONFIG_FILE) {
            if !Path::new(&path).exists() {
                return Err(Error::config(
                    ENV_CONFIG_FILE,
                    format!("{ENV_CONFIG_FILE} names {path}, which does not exist"),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        let env = Env::prefixed(ENV_PREFIX).split("__").filter(|key| {
            let top = key.as_str().split('.').next().unwrap_or_default();
            TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
        });
        Self::extract(figment.merge(env))
    }

    fn extract(figment: Figment) -> Result<Self> {
        let config: Config = figment.extract().map_err(from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// Check every value; the error names the bad field.
    pub fn validate(&self) -> Result<()> {
        for url in self.addresses()?.urls() {
            parse_url(url)?;
        }
        self.tls.validate()?;
        if self.prefetch == 0 {
            return Err(Error::config(
                "prefetch",
                "prefetch must be at least 1 (0 would mean unbounded)",
            ));
        }
        if self.publisher_window == 0 {
            return Err(Error::config(
                "publisher_window",
                "publisher_window must be at least 1",
            ));
        }
        if self.confirm_timeout.is_zero() {
            return Err(Error::config(
                "confirm_timeout",
                "confirm_timeout must be positive",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::config(
                "connect_timeout",
                "connect_timeout must be positive",
            ));
        }
        if self.dead_letter_prefix.is_empty() {
            return Err(Error::config(
                "dead_letter_prefix",
                "dead_letter_prefix must not be empty (the DLQ would be the queue itself)",
            ));
        }
        self.redelivery.validate()
    }

    /// The dead-letter queue name of `queue`.
    pub fn dead_letter_queue(&self, queue: &str) -> String {
        format!("{}{queue}", self.dead_letter_prefix)
    }

    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        crate::addresses::redact_url_list(&self.url)
    }

    /// The broker's addresses, one URL each, in `address_order`: what a backend connects to.
    ///
    /// # Errors
    /// [`ErrorKind::ConfigInvalid`] for a malformed address list.
    pub fn addresses(&self) -> Result<Addresses<String>> {
        Addresses::parse(&self.url, self.address_order)
    }
}

fn from_figment(e: figment::Error) -> Error {
    let field = if e.path.is_empty() {
        "config".to_string()
    } else {
        e.path.join(".")
    };
    let message = format!("invalid configuration: {}", e.kind);
    Error::new(ErrorKind::ConfigInvalid, message)
        .with_context("field", field)
        .with_source(e)
}

/// Parse a broker URL, with a typed error naming `url` on failure.
pub fn parse_url(url: &str) -> Result<url::Url> {
    url::Url::parse(url).map_err(|e| {
        Error::config(
            "url",
            format!("malformed broker URL {:?}: {e}", redact_url(url)),
        )
        .with_source(e)
    })
}

/// Parse a backend's URL and check its scheme is one `backend` serves.
pub fn parse_backend_url(url: &str, backend: &str, schemes: &[&str]) -> Result<url::Url> {
    let u = parse_url(url)?;
    if !schemes.contains(&u.scheme()) {
        let served: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        return Err(Error::config(
            "url",
            format!(
                "the {backend} backend serves {} URLs, not {}://",
                served.join(" and "),
                u.scheme()
            ),
        ));
    }
    Ok(u)
}

/// Parse a URL query option, with an error naming `url.<key>`.
pub fn parse_url_option<T: std::str::FromStr>(key: &str, value: &str, expected: &str) -> Result<T> {
    value.parse().map_err(|_| {
        Error::config(
            &format!("url.{key}"),
            format!("{key} must be {expected}, not {value:?}"),
        )
    })
}

/// Replace the password of a URL with `***` (unparseable URLs are cut after the scheme).
///
/// ```
/// assert_eq!(coolmq_core::redact_url("amqp://guest:secret@h:5672/%2f"), "amqp://guest:***@h:5672/%2f");
/// ```
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query_pairs().any(|(k, _)| is_secret_key(&k)) {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_key(&k) {
                            "***".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://…"),
            None => "<unparseable url>".to_string(),
        },
    }
}

/// Whether a URL query option's value is a secret (redacted in logs and errors).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "passphrase",
        "credential",
    ]
    .iter()
    .any(|s| key.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_redaction_never_show_secrets() {
        let c = Config::from_url(
            "amqps://app:s3cr%2Bet@h1:5671,h2:5671/%2f?tls_ca_file=/ca.pem&access_token=t0ken&auth_password=pw9",
        )
        .unwrap();
        let shown = format!("{c:?}");
        for secret in ["s3cr", "t0ken", "pw9"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("tls_ca_file=%2Fca.pem") || shown.contains("tls_ca_file=/ca.pem"),
            "{shown}"
        );
        assert_eq!(
            redact_url("amqp1://u:p@h?access_token=abc&broker=classic"),
            "amqp1://u:***@h?access_token=***&broker=classic"
        );
    }

    #[test]
    fn address_lists_are_validated_and_ordered() {
        let c = Config::from_toml_str(
            "url = \"amqp://u:secret@h1:5672,h2:5673/%2f\"\naddress_order = \"shuffle\"",
        )
        .unwrap();
        assert_eq!(c.address_order, AddressOrder::Shuffle);
        assert_eq!(
            c.redacted_url(),
            "amqp://u:***@h1:5672/%2f,amqp://u:***@h2:5673/%2f"
        );
        assert_eq!(c.addresses().unwrap().len(), 2);
        let e = Config::from_url("amqp://u:secret@h1,,h2/").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = Config::from_toml_str("address_order = \"random\"").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    }

    #[test]
    fn defaults_are_the_embedded_broker() {
        let c = Config::default();
        assert_eq!(c.url, "memory://");
        assert_eq!(c.prefetch, 200);
        c.validate().unwrap();
    }

    #[test]
    fn bad_field_is_named() {
        let e = Config::from_toml_str("prefetch = \"lots\"").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert_eq!(e.context("field"), Some("prefetch"));

        let e =
            Config::from_toml_str("[redelivery.default]\nmaximum_redeliveries = -5").unwrap_err();
        assert_eq!(
            e.context("field"),
            Some("redelivery.default.maximum_redeliveries")
        );

        let e = Config::from_toml_str("prefetsh = 3").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(e.to_string().contains("prefetsh"), "{e}");

        let e = Config::from_toml_str("[redelivery.default]\ninitial_redelivery_delay = \"soon\"")
            .unwrap_err();
        assert_eq!(
            e.context("field"),
            Some("redelivery.default.initial_redelivery_delay")
        );

        let e = Config::from_toml_str("url = \"not a url\"").unwrap_err();
        assert_eq!(e.context("field"), Some("url"));

        let e = Config::from_toml_str("prefetch = 0").unwrap_err();
        assert_eq!(e.context("field"), Some("prefetch"));
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(redact_url("memory://x"), "memory://x");
        assert_eq!(redact_url("amqp1://u:p@h:5673"), "amqp1://u:***@h:5673");
        assert_eq!(redact_url("amqp://u:p@@bad url"), "amqp://…");
    }
}
