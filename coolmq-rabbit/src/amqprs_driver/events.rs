//! What the broker tells a channel or connection on its own: closes (with the reply code
//! coolmq maps errors by), consumer cancels, `connection.blocked`. amqprs delivers these to
//! callbacks; these record them where the operations can read them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::Channel;
use amqprs::connection::Connection;
use amqprs::{Ack, BasicProperties, Cancel, Close, CloseChannel, Nack, Return};
use async_trait::async_trait;

use super::error::ClientResult;

use super::error::Closed;

/// What happened to one channel.
#[derive(Default)]
pub(crate) struct ChannelEvents {
    closed: Mutex<Option<Closed>>,
    cancelled: AtomicBool,
}

impl ChannelEvents {
    /// The broker's `channel.close`, if it sent one.
    pub fn closed(&self) -> Option<Closed> {
        self.closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn record_close(&self, close: &CloseChannel) {
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((close.reply_code(), close.reply_text().clone()));
    }

    /// Whether the broker cancelled the channel's consumer (its queue was deleted).
    pub fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// The callback of every channel but the confirm channel (see `confirms.rs`).
pub(crate) struct Events(pub Arc<ChannelEvents>);

#[async_trait]
impl ChannelCallback for Events {
    async fn close(&mut self, _: &Channel, close: CloseChannel) -> ClientResult<()> {
        self.0.record_close(&close);
        Ok(())
    }

    async fn cancel(&mut self, _: &Channel, _: Cancel) -> ClientResult<()> {
        self.0.cancelled.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn flow(&mut self, _: &Channel, _active: bool) -> ClientResult<bool> {
        Ok(true)
    }

    async fn publish_ack(&mut self, _: &Channel, _: Ack) {}

    async fn publish_nack(&mut self, _: &Channel, _: Nack) {}

    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

/// What happened to one connection.
#[derive(Default)]
pub(crate) struct ConnectionEvents {
    closed: Mutex<Option<Closed>>,
    blocked: AtomicBool,
    /// Set when the connection's I/O ended, however it ended.
    pub ended: AtomicBool,
}

impl ConnectionEvents {
    /// The broker's `connection.close`, if it sent one.
    pub fn closed(&self) -> Option<Closed> {
        self.closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether RabbitMQ blocked publishing on the connection.
    pub fn blocked(&self) -> bool {
        self.blocked.load(Ordering::SeqCst)
    }
}

/// The connection's callback.
pub(crate) struct ConnectionWatch(pub Arc<ConnectionEvents>);

#[async_trait]
impl ConnectionCallback for ConnectionWatch {
    async fn close(&mut self, _: &Connection, close: Close) -> ClientResult<()> {
        *self.0.closed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((close.reply_code(), close.reply_text().clone()));
        self.0.ended.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn blocked(&mut self, _: &Connection, _reason: String) {
        self.0.blocked.store(true, Ordering::SeqCst);
    }

    async fn unblocked(&mut self, _: &Connection) {
        self.0.blocked.store(false, Ordering::SeqCst);
    }

    async fn secret_updated(&mut self, _: &Connection) {}
}
