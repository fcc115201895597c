//! What a backend can do, as plain flags, so callers and the conformance suite can ask
//! instead of finding out by failure.

/// The capabilities a backend reports. A call that needs a capability the backend lacks
/// returns [`crate::ErrorKind::Unsupported`]; the conformance suite checks both directions.
///
/// Backends build it as `Capabilities { confirms: true, ..Default::default() }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// `send` resolves on the broker's confirm (0-9-1 confirm, 1.0 `Accepted`).
    pub confirms: bool,
    /// Unroutable sends come back as [`crate::ErrorKind::Unroutable`] with the message.
    pub unroutable_returns: bool,
    /// Broker transactions for sends (`Publisher::begin`).
    pub transactions: bool,
    /// Acknowledgements can join a send transaction (`Transaction::ack`).
    pub transactional_ack: bool,
    /// Sends can be delayed on the broker (`SendOptions::delay`, `Nack::RetryAfter`).
    pub delayed_delivery: bool,
    /// The broker counts redeliveries of a message (not just a redelivered flag).
    pub delivery_count: bool,
    /// Queues can have a dead-letter queue.
    pub dead_letter: bool,
    /// Publish/subscribe topics with pattern bindings.
    pub topics: bool,
    /// Queues can be limited in length, with reject-publish → nack.
    pub max_length: bool,
    /// Per-message time to live is honoured.
    pub message_ttl: bool,
    /// Header values may be lists and maps.
    pub nested_headers: bool,
    /// The backend reaches its broker over TCP, so network faults apply (an unreachable or
    /// silent address, a cut connection); false for an in-process broker.
    pub network: bool,
    /// The largest message body the backend accepts, if it enforces one.
    pub max_message_size: Option<usize>,
}
