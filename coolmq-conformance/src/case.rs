//! A case: a named async check with the capabilities it needs.

use std::fmt;

use coolmq_core::{Capabilities, Error, SendError};
use futures::future::BoxFuture;

use crate::Ctx;

/// Why a case failed.
pub struct Failed(pub String);

impl fmt::Debug for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        Failed(format!("unexpected error: {e}"))
    }
}

impl From<SendError> for Failed {
    fn from(e: SendError) -> Self {
        Failed(format!("unexpected send error: {e}"))
    }
}

impl From<String> for Failed {
    fn from(s: String) -> Self {
        Failed(s)
    }
}

/// The result of a case.
pub type TestResult = Result<(), Failed>;

/// A case body.
pub type CaseFn = fn(Ctx) -> BoxFuture<'static, TestResult>;

/// What a target offers the suite: the backend's capabilities, and whether the suite can
/// inject faults into it without a network (an [`crate::Injector`]).
#[derive(Debug, Clone, Copy)]
pub struct Support {
    /// The capabilities the backend claims.
    pub capabilities: Capabilities,
    /// The target has an [`crate::Injector`].
    pub injected_faults: bool,
}

impl std::ops::Deref for Support {
    type Target = Capabilities;

    fn deref(&self) -> &Capabilities {
        &self.capabilities
    }
}

/// A capability a case needs: a name and the flag's reader.
pub type Requirement = (&'static str, fn(&Support) -> bool);

/// One conformance case.
#[derive(Clone)]
pub struct Case {
    /// Topic group (`send`, `confirm`, …).
    pub group: &'static str,
    /// Name within the group.
    pub name: &'static str,
    /// Capabilities it needs; missing ones make it ignored, with their names shown.
    pub requires: &'static [Requirement],
    /// The check.
    pub run: CaseFn,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.full_name())
            .field("requires", &self.requires)
            .finish_non_exhaustive()
    }
}

impl Case {
    /// `group::name`.
    pub fn full_name(&self) -> String {
        format!("{}::{}", self.group, self.name)
    }

    /// The names of the capabilities `caps` lacks for this case.
    pub fn missing(&self, caps: &Support) -> Vec<&'static str> {
        self.requires
            .iter()
            .filter(|(_, has)| !has(caps))
            .map(|(n, _)| *n)
            .collect()
    }
}

/// Fail the case unless the condition holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failed(format!($($fmt)+)));
        }
    };
}

/// Fail the case unless both sides are equal.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr, $($fmt:tt)+) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err($crate::Failed(format!("{}: left {:?} != right {:?}", format!($($fmt)+), l, r)));
        }
    }};
}

/// Capability requirements, for `Case::requires`.
pub mod req {
    use super::Requirement;
    /// `confirms`
    pub const CONFIRMS: Requirement = ("confirms", |c| c.confirms);
    /// `unroutable_returns`
    pub const UNROUTABLE: Requirement = ("unroutable_returns", |c| c.unroutable_returns);
    /// `unroutable_returns` is false: the broker makes a queue on first reference (a send to
    /// an undeclared queue is kept there, not refused)
    pub const QUEUES_MADE_ON_SEND: Requirement =
        ("no unroutable_returns (queues made on send)", |c| {
            !c.unroutable_returns
        });
    /// connection faults can be made: an injector, or `network` (through a
    /// [`crate::FaultProxy`])
    pub const CONNECTION_FAULTS: Requirement = ("injected faults or network", |c| {
        c.injected_faults || c.network
    });
    /// `network`: the broker is reached over TCP
    pub const NETWORK: Requirement = ("network", |c| c.network);
    /// `transactions`
    pub const TX: Requirement = ("transactions", |c| c.transactions);
    /// `transactional_ack`
    pub const TX_ACK: Requirement = ("transactional_ack", |c| c.transactional_ack);
    /// `delayed_delivery`
    pub const DELAY: Requirement = ("delayed_delivery", |c| c.delayed_delivery);
    /// `dead_letter`
    pub const DLQ: Requirement = ("dead_letter", |c| c.dead_letter);
    /// `topics`
    pub const TOPICS: Requirement = ("topics", |c| c.topics);
    /// `max_length`
    pub const MAX_LENGTH: Requirement = ("max_length", |c| c.max_length);
    /// `message_ttl`
    pub const TTL: Requirement = ("message_ttl", |c| c.message_ttl);
    /// `nested_headers`
    pub const NESTED: Requirement = ("nested_headers", |c| c.nested_headers);
    /// the target has an [`crate::Injector`] (a negative confirm on demand)
    pub const FAULTS: Requirement = ("injected faults", |c| c.injected_faults);
    /// a `max_message_size` is declared
    pub const MAX_SIZE: Requirement = ("max_message_size", |c| c.max_message_size.is_some());
    /// bodies of at least 1 MiB fit
    pub const ONE_MIB: Requirement = ("1 MiB messages", |c| {
        c.max_message_size.is_none_or(|m| m > 1024 * 1024 + 4096)
    });
}
