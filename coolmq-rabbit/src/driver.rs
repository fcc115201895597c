//! Which AMQP 0-9-1 client library carries a RabbitMQ connection. Both run the same
//! topology, delay tiers, conversions and error kinds; only the client layer differs.

use coolmq_core::{Error, Result};

/// The client library under a RabbitMQ connection, chosen with the URL's `driver` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    /// lapin (the default): per-publish confirm futures, a long record in production.
    #[default]
    Lapin,
    /// amqprs (cargo feature `amqprs`): coolmq tracks its confirms and reconnects it.
    Amqprs,
}

impl Driver {
    /// The name the URL option takes (`?driver=lapin` / `?driver=amqprs`).
    pub fn name(self) -> &'static str {
        match self {
            Driver::Lapin => "lapin",
            Driver::Amqprs => "amqprs",
        }
    }

    /// Parse the URL option's value.
    ///
    /// # Errors
    /// `ConfigInvalid` for a name that is not a driver.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "lapin" => Ok(Driver::Lapin),
            "amqprs" => Ok(Driver::Amqprs),
            other => Err(Error::config(
                "driver",
                format!("unknown RabbitMQ driver {other:?}: use lapin or amqprs"),
            )),
        }
    }

    /// Whether this build carries the driver (amqprs needs the `amqprs` cargo feature).
    pub fn compiled(self) -> bool {
        match self {
            Driver::Lapin => true,
            Driver::Amqprs => cfg!(feature = "amqprs"),
        }
    }
}
