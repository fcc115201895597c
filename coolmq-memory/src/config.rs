//! `memory://` URL options.

use coolmq_core::raw::{parse_backend_url, parse_url_option};
use coolmq_core::{Error, Result};

/// Default largest message: 16 MiB (RabbitMQ 4's default `max_message_size`).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Options of a `memory://name?max_message_size=N` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryOptions {
    /// The broker's name (host part); empty for the default broker.
    pub name: String,
    /// Largest message body accepted.
    pub max_message_size: usize,
}

impl MemoryOptions {
    /// Parse a `memory://` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let u = parse_backend_url(url, "memory", crate::SCHEMES)?;
        let mut options = MemoryOptions {
            name: u.host_str().unwrap_or_default().to_string(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        };
        for (k, v) in u.query_pairs() {
            match &*k {
                "max_message_size" => {
                    options.max_message_size =
                        parse_url_option("max_message_size", &v, "a number of bytes")?;
                }
                other => {
                    return Err(Error::config(
                        "url",
                        format!("unknown memory:// option {other:?}; known: max_message_size"),
                    ))
                }
            }
        }
        Ok(options)
    }
}
