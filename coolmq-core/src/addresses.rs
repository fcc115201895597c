//! Several addresses for one broker (a cluster's nodes, a live/backup pair), in the two
//! spellings users know: a host list in one URL, as RabbitMQ's clients and Spring AMQP's
//! `addresses` take it (`amqp://user:pass@h1:5672,h2:5673/vhost`), and ActiveMQ's
//! `failover:(amqp1://h1:5673,amqp1://h2:5683)`. Each address becomes a complete URL of its
//! own (the credentials, vhost and options of the list apply to every host), and connecting
//! tries them in turn ([`Addresses::connect`]), in order or shuffled ([`AddressOrder`]).

use std::fmt;
use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::config::redact_url;
use crate::{Error, ErrorKind, Result};

/// In which order connecting tries a broker's addresses (Spring AMQP's `AddressShuffleMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AddressOrder {
    /// The first address first, every time (Spring's `NONE`): the others are standbys.
    #[default]
    InOrder,
    /// A new random order for every connection (Spring's `RANDOM`, ActiveMQ's
    /// `randomize=true`): connections spread over the nodes.
    Shuffle,
}

/// A broker's addresses, each with what the backend made of it.
#[derive(Debug, Clone)]
pub struct Addresses<T> {
    entries: Vec<(String, T)>,
    order: AddressOrder,
}

impl Addresses<String> {
    /// Split `url` into one URL per address, tried in `order`; a `failover:(…)` list's order
    /// is its own `randomize` option instead (shuffled unless `randomize=false`, ActiveMQ's
    /// default).
    ///
    /// ```
    /// use coolmq_core::raw::{AddressOrder, Addresses};
    /// let a = Addresses::parse("amqp://u:p@h1:5672,h2/vh?heartbeat=5", AddressOrder::InOrder).unwrap();
    /// assert_eq!(a.urls(), ["amqp://u:p@h1:5672/vh?heartbeat=5", "amqp://u:p@h2/vh?heartbeat=5"]);
    /// let f = Addresses::parse("failover:(amqp1://a:5673,amqp1://b:5683)?randomize=false", AddressOrder::Shuffle).unwrap();
    /// assert_eq!(f.urls(), ["amqp1://a:5673", "amqp1://b:5683"]);
    /// assert_eq!(f.order(), AddressOrder::InOrder);
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::ConfigInvalid`] for an empty list, an empty host, a malformed `failover:`
    /// URL or an unknown `failover:` option.
    pub fn parse(url: &str, order: AddressOrder) -> Result<Self> {
        let (urls, order) = match url.strip_prefix("failover:") {
            Some(rest) => failover(rest)?,
            None => (host_list(url)?, order),
        };
        Ok(Addresses {
            entries: urls.into_iter().map(|u| (u.clone(), u)).collect(),
            order,
        })
    }
}

impl<T> Addresses<T> {
    /// Make each address's URL into what the backend connects with (its options).
    ///
    /// # Errors
    /// The first error of `f`.
    pub fn map<U>(self, mut f: impl FnMut(&str) -> Result<U>) -> Result<Addresses<U>> {
        let entries = self
            .entries
            .into_iter()
            .map(|(url, _)| f(&url).map(|u| (url, u)))
            .collect::<Result<_>>()?;
        Ok(Addresses {
            entries,
            order: self.order,
        })
    }

    /// The URLs, in the configured order (before any shuffle).
    pub fn urls(&self) -> Vec<&str> {
        self.entries.iter().map(|(u, _)| u.as_str()).collect()
    }

    /// What the backend made of each address, in the configured order.
    pub fn targets(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, t)| t)
    }

    /// What the backend made of the first address: the options all addresses share.
    pub fn first(&self) -> &T {
        &self.entries[0].1
    }

    /// How many addresses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true: parsing refuses an empty list.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The order connecting tries them in.
    pub fn order(&self) -> AddressOrder {
        self.order
    }

    /// Every address with its password redacted, comma-separated: for logs and errors.
    pub fn endpoint(&self) -> String {
        let redacted: Vec<String> = self.entries.iter().map(|(u, _)| redact_url(u)).collect();
        redacted.join(",")
    }

    /// Connect to the first address that answers, in this list's order. Each attempt is
    /// awaited to its end: `connect` bounds it (the connect timeout) and names its address
    /// in its error. Returns the connection and the index of its address.
    ///
    /// # Errors
    /// With one address, its error unchanged. With several, when none answered: an error
    /// naming each address (redacted) and what it said, of the kind they all share, else
    /// [`ErrorKind::Unreachable`]; temporary unless every address refused for good (bad
    /// credentials, say).
    pub async fn connect<'a, C, F, Fut>(&'a self, mut connect: F) -> Result<(C, usize)>
    where
        F: FnMut(&'a T) -> Fut,
        Fut: Future<Output = Result<C>>,
    {
        let mut failures: Vec<(usize, Error)> = Vec::new();
        for i in self.attempt_order() {
            let (url, target) = &self.entries[i];
            match connect(target).await {
                Ok(c) => {
                    if !failures.is_empty() {
                        tracing::info!(
                            endpoint = %redact_url(url),
                            failed = failures.len(),
                            "connected to a later address"
                        );
                    }
                    return Ok((c, i));
                }
                Err(e) => failures.push((i, e)),
            }
        }
        Err(self.none_answered(failures))
    }

    fn attempt_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.entries.len()).collect();
        if self.order == AddressOrder::Shuffle {
            fastrand::shuffle(&mut order);
        }
        order
    }

    #[cold]
    fn none_answered(&self, mut failures: Vec<(usize, Error)>) -> Error {
        if failures.len() == 1 {
            return failures.pop().expect("one").1;
        }
        let first = failures[0].1.kind();
        let kind = if failures.iter().all(|(_, e)| e.kind() == first) {
            first
        } else {
            ErrorKind::Unreachable
        };
        let temporary = failures.iter().any(|(_, e)| e.is_temporary());
        let each: Vec<String> = failures
            .iter()
            .map(|(i, e)| format!("{}: {e}", redact_url(&self.entries[*i].0)))
            .collect();
        let mut error = Error::new(
            kind,
            format!(
                "none of the {} broker addresses answered: {}",
                failures.len(),
                each.join("; ")
            ),
        )
        .with_context("endpoint", self.endpoint())
        .set_temporary(temporary);
        if let Some((_, last)) = failures.pop() {
            error = error.with_source(last);
        }
        error
    }
}

impl<T> fmt::Display for Addresses<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.endpoint())
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::config("url", message)
}

/// `scheme://[userinfo@]h1[:p1],h2[:p2][/path][?query][#fragment]` → one URL per host.
fn host_list(url: &str) -> Result<Vec<String>> {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not hierarchical (`memory:`): one address, for the backend to judge.
        return Ok(vec![url.to_string()]);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // The password may hold a ',' (but not an unescaped '@'): split the hosts after it.
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    if !hosts.contains(',') {
        return Ok(vec![url.to_string()]);
    }
    hosts
        .split(',')
        .map(|host| {
            let host = host.trim();
            if host.is_empty() {
                return Err(invalid(format!(
                    "empty host in the address list {scheme}://{}{hosts}{tail}",
                    redact_userinfo(userinfo)
                )));
            }
            Ok(format!("{scheme}://{userinfo}{host}{tail}"))
        })
        .collect()
}

/// `user:password@` → `user:***@`.
fn redact_userinfo(userinfo: &str) -> String {
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***@"),
        None => userinfo.to_string(),
    }
}

/// `(u1,u2,…)[?randomize=true|false]` after `failover:`: shuffled unless `randomize=false`,
/// as ActiveMQ's failover transport does.
fn failover(rest: &str) -> Result<(Vec<String>, AddressOrder)> {
    let malformed = || {
        invalid(
            "a failover URL is failover:(url1,url2,…) with an optional ?randomize=true|false"
                .to_string(),
        )
    };
    let inner = rest.strip_prefix('(').ok_or_else(malformed)?;
    let close = inner.rfind(')').ok_or_else(malformed)?;
    let (list, options) = (&inner[..close], &inner[close + 1..]);
    let mut order = AddressOrder::Shuffle;
    if !options.is_empty() {
        let query = options.strip_prefix('?').ok_or_else(malformed)?;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("randomize", "true")) => order = AddressOrder::Shuffle,
                Some(("randomize", "false")) => order = AddressOrder::InOrder,
                _ => {
                    return Err(invalid(format!(
                        "unknown failover option {pair:?}; coolmq knows randomize=true|false (reconnecting is coolmq's own)"
                    )))
                }
            }
        }
    }
    let urls: Vec<String> = list
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(invalid("a failover URL lists no address"));
    }
    if let Some(nested) = urls.iter().find(|u| u.starts_with("failover:")) {
        return Err(invalid(format!(
            "failover URLs do not nest: {}",
            redact_url(nested)
        )));
    }
    Ok((urls, order))
}

/// A URL that may hold a host list, redacted (the list is split first, since a list does
/// not parse as one URL).
pub(crate) fn redact_url_list(url: &str) -> String {
    match Addresses::parse(url, AddressOrder::InOrder) {
        Ok(a) if a.len() > 1 => a.endpoint(),
        _ => redact_url(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(url: &str) -> Vec<String> {
        Addresses::parse(url, AddressOrder::InOrder)
            .unwrap()
            .urls()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn one_address_is_left_as_it_is() {
        assert_eq!(
            urls("amqp://u:p@h:5672/%2f?x=1"),
            ["amqp://u:p@h:5672/%2f?x=1"]
        );
        assert_eq!(urls("memory://"), ["memory://"]);
        assert_eq!(urls("memory:"), ["memory:"]);
    }

    #[test]
    fn a_host_list_shares_credentials_path_and_options() {
        assert_eq!(
            urls("amqps://u:p,w@h1:5671, h2:5681 ,[::1]:5691/vh?heartbeat=5"),
            [
                "amqps://u:p,w@h1:5671/vh?heartbeat=5",
                "amqps://u:p,w@h2:5681/vh?heartbeat=5",
                "amqps://u:p,w@[::1]:5691/vh?heartbeat=5",
            ]
        );
        assert_eq!(urls("amqp1://a,b"), ["amqp1://a", "amqp1://b"]);
        let e = Addresses::parse("amqp://u:secret@h1,,h2/", AddressOrder::InOrder).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn failover_lists_follow_activemq() {
        let a = Addresses::parse(
            "failover:(amqp1://u:p@a:5673?broker=classic, amqp1://u:p@b:5683)",
            AddressOrder::InOrder,
        )
        .unwrap();
        assert_eq!(
            a.urls(),
            ["amqp1://u:p@a:5673?broker=classic", "amqp1://u:p@b:5683"]
        );
        assert_eq!(a.order(), AddressOrder::Shuffle, "ActiveMQ's default");
        assert_eq!(
            a.endpoint(),
            "amqp1://u:***@a:5673?broker=classic,amqp1://u:***@b:5683"
        );
        for bad in [
            "failover:amqp1://a",
            "failover:()",
            "failover:(amqp1://a",
            "failover:(amqp1://a)?maxReconnectAttempts=3",
            "failover:(failover:(amqp1://a))",
        ] {
            let e = Addresses::parse(bad, AddressOrder::InOrder).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{bad}");
        }
    }

    use std::time::Duration;

    #[tokio::test]
    async fn connecting_tries_each_address_and_names_every_failure() {
        let a = Addresses::parse("amqp://u:secret@h1,h2,h3/", AddressOrder::InOrder)
            .unwrap()
            .map(|u| Ok(u.to_string()))
            .unwrap();
        let (got, i) = a
            .connect(|u| {
                let u = u.clone();
                async move {
                    if u.contains("h3") {
                        Ok(u)
                    } else {
                        Err(Error::new(ErrorKind::Unreachable, "refused").set_temporary(true))
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!((got.as_str(), i), ("amqp://u:secret@h3/", 2));

        let e = a
            .connect(|u| {
                let u = u.clone();
                async move {
                    if u.contains("h2") {
                        let never = std::future::pending::<()>();
                        if tokio::time::timeout(Duration::from_millis(50), never)
                            .await
                            .is_err()
                        {
                            return Err(Error::new(
                                ErrorKind::Unreachable,
                                "no answer within 50ms",
                            ));
                        }
                    }
                    Err::<(), _>(Error::new(
                        ErrorKind::AuthenticationFailed,
                        "bad credentials",
                    ))
                }
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unreachable, "mixed kinds");
        let text = e.to_string();
        for part in [
            "h1/: ",
            "h2/: ",
            "no answer within",
            "h3/: ",
            "bad credentials",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
        assert!(!text.contains("secret"), "{text}");

        let e = a
            .connect(|_| async {
                Err::<(), _>(Error::new(
                    ErrorKind::AuthenticationFailed,
                    "bad credentials",
                ))
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::AuthenticationFailed,
            "the kind all share"
        );
        assert!(!e.is_temporary());
    }

    #[test]
    fn shuffle_visits_every_address_once() {
        let a = Addresses::parse("amqp://h1,h2,h3,h4/", AddressOrder::Shuffle).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let order = a.attempt_order();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3]);
            seen.insert(order);
        }
        assert!(seen.len() > 1, "never shuffled");
    }
}
