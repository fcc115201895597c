//! Choosing a backend by URL scheme (like sqlx's `AnyDriver`): each driver declares its
//! schemes and the cargo feature that compiles it in.

use futures::future::BoxFuture;

use crate::{config::parse_url, Broker, Config, Error, ErrorKind, Result};

/// Connects a [`Config`] to a backend.
pub type ConnectFn = fn(Config) -> BoxFuture<'static, Result<Broker>>;

/// One backend coolmq knows about, compiled in or not. Each backend crate exports its own
/// as `DRIVER`; the facade lists them.
#[derive(Debug, Clone, Copy)]
pub struct Driver {
    /// The backend's name.
    pub name: &'static str,
    /// URL schemes it serves.
    pub schemes: &'static [&'static str],
    /// The cargo feature of the `coolmq` crate that compiles it in.
    pub feature: &'static str,
    /// `Some` when compiled in.
    pub connect: Option<ConnectFn>,
}

impl Driver {
    /// A backend's driver, compiled in.
    pub const fn new(
        name: &'static str,
        schemes: &'static [&'static str],
        feature: &'static str,
        connect: ConnectFn,
    ) -> Self {
        Driver {
            name,
            schemes,
            feature,
            connect: Some(connect),
        }
    }

    /// A backend that is not compiled in: its crate cannot be asked, so the facade names its
    /// schemes to tell which feature to enable.
    pub const fn disabled(
        name: &'static str,
        schemes: &'static [&'static str],
        feature: &'static str,
    ) -> Self {
        Driver {
            name,
            schemes,
            feature,
            connect: None,
        }
    }
}

/// Connect using the first driver serving the URL's scheme.
///
/// # Errors
/// [`ErrorKind::ConfigInvalid`] for a malformed config or URL, [`ErrorKind::UnknownScheme`]
/// listing the schemes available, [`ErrorKind::FeatureDisabled`] naming the feature to enable.
pub async fn connect_with(drivers: &[Driver], config: &Config) -> Result<Broker> {
    config.validate()?;
    // Every address of a list is served by the first one's backend (each checks its own).
    let addresses = config.addresses()?;
    let url = parse_url(addresses.urls()[0])?;
    let scheme = url.scheme();
    let Some(driver) = drivers.iter().find(|d| d.schemes.contains(&scheme)) else {
        let known: Vec<String> = drivers
            .iter()
            .flat_map(|d| {
                d.schemes.iter().map(move |s| {
                    if d.connect.is_some() {
                        format!("{s}://")
                    } else {
                        format!("{s}:// (feature `{}`)", d.feature)
                    }
                })
            })
            .collect();
        return Err(Error::new(
            ErrorKind::UnknownScheme,
            format!(
                "unknown broker URL scheme {scheme:?}; available: {}",
                known.join(", ")
            ),
        )
        .with_context("field", "url")
        .with_context("scheme", scheme));
    };
    let Some(connect) = driver.connect else {
        return Err(Error::new(
            ErrorKind::FeatureDisabled,
            format!(
                "the {} backend for {scheme}:// is not compiled in; enable the `{}` feature of coolmq",
                driver.name, driver.feature
            ),
        )
        .with_context("feature", driver.feature)
        .with_context("scheme", scheme));
    };
    connect(config.clone()).await
}
