//! # coolmq-core
//!
//! The contract of coolmq: the portable [`Message`], [`Destination`] and [`QueueSpec`]; the
//! [`Broker`] handle applications hold, with its [`Publisher`] (confirmed sends that hand the
//! message back on failure), [`Transaction`], [`Consumer`] and [`Delivery`] (settled exactly
//! once, requeued when dropped); the ActiveMQ-style [`RedeliveryPolicy`]; the [`Worker`] that
//! applies it and dead-letters to `DLQ.<queue>`; and the one [`Error`] type. The traits each
//! broker implements are apart, in [`raw`].
//!
//! Applications depend on the `coolmq` facade crate; backends depend on this one.
//!
//! ## Cargo features
#![doc = document_features::document_features!()]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod address;
mod addresses;
mod broker;
mod capability;
mod codec;
mod config;
mod confirm;
mod consumer;
pub mod dead_letter;
mod delivery;
mod driver;
mod duration_serde;
mod error;
mod headers;
mod message;
pub mod observe;
#[cfg(feature = "opentelemetry")]
mod otel;
mod publisher;
pub mod raw;
mod redelivery;
pub mod semconv;
mod send;
mod tls;
#[cfg(feature = "tls")]
mod tls_client;
mod topology;
mod trace;
mod transaction;
mod worker;

pub use address::{topic_matches, Destination};
pub use addresses::AddressOrder;
/// Implementing [`DeadLetterObserver`] (an async trait) needs this attribute; re-exported so
/// its version is always the one coolmq's traits were made with.
pub use async_trait::async_trait;
pub use broker::Broker;
/// Message bodies are [`bytes::Bytes`]; re-exported for applications that build them.
pub use bytes;
pub use capability::Capabilities;
pub use codec::{Codec, Json, TypedPublisher};
pub use config::{parse_url, redact_url, Config, ENV_CONFIG_FILE, ENV_PREFIX};
pub use confirm::PendingConfirm;
pub use consumer::{Consumer, ConsumerOptions, DEFAULT_PREFETCH};
pub use dead_letter::{DeadLetterEvent, DeadLetterObserver, LogObserver};
pub use delivery::{Delivery, Nack};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use headers::{HeaderValue, Headers};
pub use message::{new_message_id, truncate_to_millis, Message, JSON_CONTENT_TYPE};
pub use publisher::{Publisher, Receipt, SendError, SendOptions};
pub use redelivery::{Decision, PolicyOverride, RedeliveryPolicy, RedeliveryPolicyMap};
pub use send::{PipelinedSendFuture, SendFuture};
pub use tls::{TlsConfig, TLS_URL_OPTIONS};
pub use topology::{
    dead_letter_queue_name, Overflow, QueueKind, QueueSpec, DEFAULT_DEAD_LETTER_PREFIX,
};
pub use trace::{TraceContext, TraceId, TRACEPARENT_HEADER};
pub use transaction::Transaction;
pub use worker::{
    HandlerError, Incoming, ShutdownReport, Worker, WorkerBuilder, WorkerCounts, WorkerStats,
};
