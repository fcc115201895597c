//! Queue statistics and deletion, which AMQP 1.0 itself lacks, through each broker's
//! management-over-messaging: Artemis answers requests sent to `activemq.management`;
//! Classic's `statisticsBrokerPlugin` answers messages sent to
//! `ActiveMQ.Statistics.Destination.<queue>`. Replies come back on a dynamic (temporary)
//! queue.

use std::time::Duration;

use coolmq_core::{topic_matches, Destination, Error, ErrorKind, Result};
use fe2o3_amqp::types::messaging::{message::Body, AmqpValue, ApplicationProperties, Properties};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Value};

use crate::connection::Link;
use crate::convert::AmqpMessage;
use crate::error::map;

/// Which ActiveMQ speaks on the other end (`?broker=artemis|classic`, default artemis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// ActiveMQ Artemis.
    Artemis,
    /// ActiveMQ Classic (5.x).
    Classic,
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A management request and its reply, bounded as a whole: every step (attaching the reply
/// receiver and the sender, the request's outcome, the reply, closing both links) waits on
/// the broker, and a broker that stalls one of them must not hang the caller (a conformance
/// run once hung 60 s in a queue deletion's cleanup).
async fn request(
    link: &Link,
    address: &str,
    props: Vec<(&str, SimpleValue)>,
    body: Value,
) -> Result<AmqpMessage> {
    let whole = REPLY_TIMEOUT * 2;
    tokio::time::timeout(whole, request_unbounded(link, address, props, body))
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!("management request to {address} unanswered within {whole:?}"),
            )
            .set_temporary(true)
        })?
}

async fn request_unbounded(
    link: &Link,
    address: &str,
    props: Vec<(&str, SimpleValue)>,
    body: Value,
) -> Result<AmqpMessage> {
    let mut receiver = link.reply_receiver().await?;
    let reply_to = receiver
        .source()
        .as_ref()
        .and_then(|s| s.address.clone())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "the broker assigned no reply address",
            )
        })?;
    let mut sender = link.plain_sender(address).await?;
    let mut app = OrderedMap::new();
    for (k, v) in props {
        app.insert(k.to_string(), v);
    }
    let message = AmqpMessage {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            reply_to: Some(reply_to),
            ..Default::default()
        }),
        application_properties: Some(ApplicationProperties(app)),
        body: Body::Value(AmqpValue(body)),
        footer: None,
    };
    let sent = sender
        .send(message)
        .await
        .map_err(|e| map(e, "management request"));
    let _ = sender.close().await;
    sent?;
    receiver.set_credit(1).await.map_err(|e| map(e, "credit"))?;
    let reply = tokio::time::timeout(REPLY_TIMEOUT, receiver.recv::<Body<Value>>())
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!("no management reply from {address}"),
            )
        })?
        .map_err(|e| map(e, "management reply"))?;
    let _ = receiver.accept(&reply).await;
    let _ = receiver.close().await;
    Ok(reply.into_message())
}

fn body_text(m: &AmqpMessage) -> String {
    match &m.body {
        Body::Value(AmqpValue(Value::String(s))) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn artemis_succeeded(m: &AmqpMessage) -> bool {
    m.application_properties
        .as_ref()
        .and_then(|p| p.0.get("_AMQ_OperationSucceeded"))
        .is_some_and(|v| matches!(v, SimpleValue::Bool(true)))
}

/// Messages in `queue`.
pub(crate) async fn queue_depth(link: &Link, flavor: Flavor, queue: &str) -> Result<u64> {
    match flavor {
        Flavor::Artemis => {
            let text = match artemis_attribute(link, &format!("queue.{queue}"), "messageCount")
                .await?
            {
                Ok(text) => text,
                Err(text) => {
                    return Err(
                        Error::new(ErrorKind::NotFound, format!("queue {queue:?}: {text}"))
                            .with_context("queue", queue),
                    )
                }
            };
            text.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .parse()
                .map_err(|_| {
                    Error::new(
                        ErrorKind::Unexpected,
                        format!("unexpected management reply {text:?}"),
                    )
                })
        }
        Flavor::Classic => {
            // The statistics plugin answers for every destination that exists and stays
            // silent for one that does not.
            let reply = request(
                link,
                &format!("ActiveMQ.Statistics.Destination.{queue}"),
                vec![],
                Value::Null,
            )
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Timeout => Error::new(
                    ErrorKind::NotFound,
                    format!("queue {queue:?} does not exist (ActiveMQ Classic's statistics plugin, which answers for every existing queue, did not answer within {REPLY_TIMEOUT:?})"),
                )
                .with_context("queue", queue)
                .with_source(e),
                _ => e,
            })?;
            let size = match &reply.body {
                Body::Value(AmqpValue(Value::Map(map))) => {
                    map.iter().find_map(|(k, v)| match (k, v) {
                        (Value::String(k), Value::Long(n)) if k == "size" => Some(*n),
                        (Value::String(k), Value::Int(n)) if k == "size" => Some(i64::from(*n)),
                        _ => None,
                    })
                }
                _ => None,
            };
            size.map(|n| n.max(0) as u64).ok_or_else(|| {
                Error::new(
                    ErrorKind::Unexpected,
                    format!("unexpected statistics reply {:?}", reply.body),
                )
            })
        }
    }
}

/// Read `attribute` of the Artemis resource `resource` (`queue.<name>`, `address.<name>`):
/// the reply's text, `Ok` when it succeeded, `Err` with Artemis's message when not (no such
/// resource).
async fn artemis_attribute(
    link: &Link,
    resource: &str,
    attribute: &str,
) -> Result<std::result::Result<String, String>> {
    let reply = request(
        link,
        "activemq.management",
        vec![
            ("_AMQ_ResourceName", SimpleValue::String(resource.into())),
            ("_AMQ_Attribute", SimpleValue::String(attribute.into())),
        ],
        Value::String("[]".into()),
    )
    .await?;
    let text = body_text(&reply);
    Ok(if artemis_succeeded(&reply) {
        Ok(text)
    } else {
        Err(text)
    })
}

/// Call an operation of Artemis's broker control (`_AMQ_ResourceName = broker`) with JSON
/// arguments; the reply's text when it succeeded.
async fn artemis_broker_op(link: &Link, operation: &str, args: String) -> Result<String> {
    let reply = request(
        link,
        "activemq.management",
        vec![
            ("_AMQ_ResourceName", SimpleValue::String("broker".into())),
            (
                "_AMQ_OperationName",
                SimpleValue::String(operation.to_string()),
            ),
        ],
        Value::String(args),
    )
    .await?;
    let text = body_text(&reply);
    if artemis_succeeded(&reply) {
        Ok(text)
    } else {
        Err(Error::new(
            ErrorKind::Unexpected,
            format!("Artemis {operation} failed: {text}"),
        ))
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The prefix of every divert binding `queue`; the name's length makes it exact, so
/// deleting `orders` leaves the bindings of `orders.eu` alone.
fn divert_prefix(queue: &str) -> String {
    format!("coolmq.bind.{}.{queue}.", queue.len())
}

/// The divert name that binds `queue` to `pattern`: one per binding.
fn divert_name(queue: &str, pattern: &str) -> String {
    format!("{}{pattern}", divert_prefix(queue))
}

/// Bind `queue` to the topic `pattern` on Artemis: a non-exclusive divert from the
/// (wildcard) multicast address `pattern` to the queue's anycast address, so every message
/// published to a matching topic gets a copy in `queue`. Idempotent.
pub(crate) async fn artemis_bind(link: &Link, queue: &str, pattern: &str) -> Result<()> {
    let name = divert_name(queue, pattern);
    let args = format!(
        "[{}, {}, {}, {}, false, null, null, \"ANYCAST\"]",
        json_str(&name),
        json_str(&name),
        json_str(pattern),
        json_str(queue)
    );
    match artemis_broker_op(link, "createDivert", args).await {
        Ok(_) => Ok(()),
        // AMQ229019: a binding of that name exists already — the same binding.
        Err(e) if e.to_string().contains("AMQ229019") => Ok(()),
        Err(e) => Err(e
            .with_context("queue", queue)
            .with_context("pattern", pattern)),
    }
}

/// Make sure Artemis never moves a message of `queue` out of it on its own: its default
/// `max-delivery-attempts` (10) would divert a message to the broker's dead-letter address
/// (`DLQ`) after ten deliveries, before coolmq's redelivery policy dead-letters it to the
/// queue's own dead-letter queue with the failure metadata. Sets `max-delivery-attempts = -1`
/// for the queue's address through management unless it already is; refuses with a clear
/// error when that cannot be done.
pub(crate) async fn artemis_keep_deliveries(link: &Link, queue: &str) -> Result<()> {
    let reply = artemis_broker_op(
        link,
        "getAddressSettingsAsJSON",
        format!("[{}]", json_str(queue)),
    )
    .await;
    if let Ok(text) = &reply {
        if max_delivery_attempts(text) == Some(-1) {
            return Ok(());
        }
    }
    artemis_queue_settings(link, queue, None).await
}

/// Write the address settings of a queue declared by coolmq: deliveries kept (see
/// [`artemis_keep_deliveries`]) and, for a `max_length`, Artemis's address-full policy `FAIL`
/// at `max-size-messages`, so a send to a full queue is refused (reject-publish) instead of
/// paged. The settings of one address are replaced as a whole, so a queue declared again
/// without a limit loses it.
pub(crate) async fn artemis_queue_settings(
    link: &Link,
    queue: &str,
    max_length: Option<u64>,
) -> Result<()> {
    let settings = match max_length {
        None => r#"{"maxDeliveryAttempts":-1}"#.to_string(),
        Some(n) => format!(
            r#"{{"maxDeliveryAttempts":-1,"maxSizeMessages":{n},"addressFullMessagePolicy":"FAIL"}}"#
        ),
    };
    artemis_broker_op(
        link,
        "addAddressSettings",
        format!("[{}, {}]", json_str(queue), json_str(&settings)),
    )
    .await
    .map(drop)
    .map_err(|e| {
        Error::new(
            ErrorKind::ConfigInvalid,
            format!(
                "coolmq could not set the address settings of {queue:?} on Artemis (without them Artemis would move messages to its own dead-letter address after `max-delivery-attempts` deliveries, and could not limit the queue's length): set <max-delivery-attempts>-1</max-delivery-attempts> in an <address-setting> matching {queue:?} in broker.xml, or give coolmq's user the `manage` permission"
            ),
        )
        .with_context("queue", queue)
        .with_source(e)
        .set_temporary(false)
    })
}

/// `maxDeliveryAttempts` of a `getAddressSettingsAsJSON` reply: a JSON list holding the
/// settings as a JSON text.
fn max_delivery_attempts(reply: &str) -> Option<i64> {
    let outer: serde_json::Value = serde_json::from_str(reply).ok()?;
    let inner = match &outer {
        serde_json::Value::Array(items) => items.first()?.clone(),
        other => other.clone(),
    };
    let settings: serde_json::Value = match inner {
        serde_json::Value::String(text) => serde_json::from_str(&text).ok()?,
        other => other,
    };
    settings.get("maxDeliveryAttempts")?.as_i64()
}

/// Refuse a send that Artemis would not route, before a sender link is attached (attaching to
/// a queue address creates the queue): a queue that does not exist, or a topic that no queue
/// is bound to (through a coolmq divert, or directly to its address as a JMS subscriber
/// is). Artemis would confirm both and park the message in an auto-created queue, or drop it.
/// Classic cannot be asked: it creates a queue on first reference and keeps the message there.
pub(crate) async fn ensure_routable(link: &Link, destination: &Destination) -> Result<()> {
    if link.options.flavor != Flavor::Artemis || artemis_routable(link, destination).await? {
        return Ok(());
    }
    let what = match destination {
        Destination::Queue(q) => format!("no queue named {q:?}"),
        Destination::Topic(t) => format!("no queue is bound to topic {t:?}"),
    };
    Err(Error::new(ErrorKind::Unroutable, what)
        .with_context("destination", destination.to_string())
        .set_temporary(false))
}

async fn artemis_routable(link: &Link, destination: &Destination) -> Result<bool> {
    match destination {
        Destination::Queue(q) => match queue_depth(link, Flavor::Artemis, q).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        },
        Destination::Topic(t) => {
            let diverts = artemis_divert_names(link).await?;
            if diverts
                .iter()
                .filter_map(|name| divert_pattern(name))
                .any(|pattern| topic_matches(pattern, t))
            {
                return Ok(true);
            }
            artemis_address_has_queues(link, t).await
        }
    }
}

/// The topic pattern of a coolmq divert name (`coolmq.bind.<len>.<queue>.<pattern>`).
fn divert_pattern(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("coolmq.bind.")?;
    let (len, rest) = rest.split_once('.')?;
    let len: usize = len.parse().ok()?;
    rest.get(len..)?.strip_prefix('.')
}

/// Whether queues are bound to `address` itself (false when there is no such address).
async fn artemis_address_has_queues(link: &Link, address: &str) -> Result<bool> {
    let Ok(text) = artemis_attribute(link, &format!("address.{address}"), "queueNames").await?
    else {
        return Ok(false);
    };
    // The reply is the JSON list of the attribute's value: `[["q1", "q2"]]`.
    let names: Vec<Vec<String>> = serde_json::from_str(&text).map_err(|e| {
        Error::new(
            ErrorKind::Unexpected,
            format!("unexpected queueNames reply {text:?}: {e}"),
        )
    })?;
    Ok(names.iter().any(|n| !n.is_empty()))
}

async fn artemis_divert_names(link: &Link) -> Result<Vec<String>> {
    let names = artemis_broker_op(link, "getDivertNames", "[]".into()).await?;
    // The reply is the JSON list of return values: `[["divert-a", "divert-b"]]`.
    let names: Vec<Vec<String>> = serde_json::from_str(&names).map_err(|e| {
        Error::new(
            ErrorKind::Unexpected,
            format!("unexpected getDivertNames reply {names:?}: {e}"),
        )
    })?;
    Ok(names.into_iter().flatten().collect())
}

/// Remove every topic binding of `queue` on Artemis.
async fn artemis_unbind_all(link: &Link, queue: &str) -> Result<()> {
    let prefix = divert_prefix(queue);
    for name in artemis_divert_names(link).await? {
        if name.starts_with(&prefix) {
            artemis_broker_op(link, "destroyDivert", format!("[{}]", json_str(&name))).await?;
        }
    }
    Ok(())
}

/// Delete `queue` (absent queues are fine).
pub(crate) async fn delete_queue(link: &Link, flavor: Flavor, queue: &str) -> Result<()> {
    match flavor {
        Flavor::Artemis => {
            artemis_unbind_all(link, queue).await?;
            let args = format!("[{}, true, true]", json_str(queue));
            match artemis_broker_op(link, "destroyQueue", args).await {
                Ok(_) => Ok(()),
                // AMQ229017: no such queue — already gone.
                Err(e)
                    if e.to_string().contains("AMQ229017")
                        || e.to_string().contains("does not exist") =>
                {
                    Ok(())
                }
                Err(e) => Err(e.with_context("queue", queue)),
            }
        }
        // Classic has no management over AMQP; its destinations are garbage-collected when
        // inactive (gcInactiveDestinations in the project's broker configuration).
        Flavor::Classic => Err(Error::unsupported("queue deletion", "activemq (Classic)")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn divert_names_give_back_their_pattern() {
        let name = super::divert_name("orders.eu", "orders.#");
        assert_eq!(super::divert_pattern(&name), Some("orders.#"));
        assert_eq!(super::divert_pattern("coolmq.bind.3.a.b.x.*"), Some("x.*"));
        assert_eq!(super::divert_pattern("other"), None);
        assert_eq!(super::divert_pattern("coolmq.bind.99.a.b"), None);
    }

    #[test]
    fn max_delivery_attempts_of_a_reply() {
        let reply = r#"["{\"maxDeliveryAttempts\":-1,\"deadLetterAddress\":\"DLQ\"}"]"#;
        assert_eq!(super::max_delivery_attempts(reply), Some(-1));
        assert_eq!(
            super::max_delivery_attempts(r#"[{"maxDeliveryAttempts":10}]"#),
            Some(10)
        );
        assert_eq!(super::max_delivery_attempts("not json"), None);
    }
}
