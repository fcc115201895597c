//! Publisher confirms for amqprs, which has no per-publish confirm: each publish on the
//! confirm channel takes the next delivery tag, and the channel's callback settles the tags
//! an `ack` / `nack` covers (`multiple` included). A `basic.return` comes before the ack of
//! the message it returns, so a tag whose message was returned settles as unroutable. When
//! the channel ends, however it ends, every pending confirm resolves at once as lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::Channel;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;

use super::error::ClientResult;
use tokio::sync::oneshot;

use super::error::Closed;

/// How the broker settled one publish.
#[derive(Debug)]
pub(crate) enum Confirm {
    /// Taken (and, for a persistent message on a durable queue, written).
    Ack,
    /// Refused (a full queue that rejects publishes, an internal error).
    Nack,
    /// No queue to route it to: the `basic.return`'s reply code and text.
    Returned(u16, String),
    /// The channel ended first; the broker's close, if it sent one. The message may or may
    /// not have been taken.
    Lost(Option<Closed>),
    /// Never written: no channel could be opened, or the connection refused the write.
    NotSent(coolmq_core::Error),
}

struct Waiter {
    message_id: String,
    settle: oneshot::Sender<Confirm>,
}

#[derive(Default)]
struct State {
    /// The tag the next publish takes (tags start at 1 after `confirm.select`).
    next: u64,
    pending: BTreeMap<u64, Waiter>,
    /// Returned messages by message id, awaiting the ack that follows each.
    returned: HashMap<String, Vec<(u16, String)>>,
    /// Set once the channel ended: nothing more will be settled.
    ended: Option<Option<Closed>>,
}

/// The confirm state of one channel, shared by its publishers and its callback.
pub(crate) struct Tracker(Mutex<State>);

impl Tracker {
    pub fn new() -> Arc<Self> {
        Arc::new(Tracker(Mutex::new(State {
            next: 1,
            ..State::default()
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the channel ended (then a new one is needed).
    pub fn ended(&self) -> bool {
        self.state().ended.is_some()
    }

    /// Take the next tag for a publish about to be written, to be settled through `settle`;
    /// the sender back if the channel ended. Only the channel's writer calls this, so tags
    /// follow the order on the wire.
    pub fn register(
        &self,
        message_id: String,
        settle: oneshot::Sender<Confirm>,
    ) -> Result<u64, oneshot::Sender<Confirm>> {
        let mut s = self.state();
        if s.ended.is_some() {
            return Err(settle);
        }
        let tag = s.next;
        s.next += 1;
        s.pending.insert(tag, Waiter { message_id, settle });
        Ok(tag)
    }

    /// Take back the sender of a tag whose write failed.
    pub fn take(&self, tag: u64) -> Option<oneshot::Sender<Confirm>> {
        self.state().pending.remove(&tag).map(|w| w.settle)
    }

    fn settle(&self, tag: u64, multiple: bool, nack: bool) {
        let mut s = self.state();
        let tags: Vec<u64> = if multiple {
            s.pending.range(..=tag).map(|(t, _)| *t).collect()
        } else {
            vec![tag]
        };
        for t in tags {
            let Some(w) = s.pending.remove(&t) else {
                continue;
            };
            let returned = s
                .returned
                .get_mut(&w.message_id)
                .and_then(|r| (!r.is_empty()).then(|| r.remove(0)));
            let outcome = match returned {
                Some((code, text)) => Confirm::Returned(code, text),
                None if nack => Confirm::Nack,
                None => Confirm::Ack,
            };
            let _ = w.settle.send(outcome);
        }
        s.returned.retain(|_, r| !r.is_empty());
        if s.pending.is_empty() {
            s.returned.clear();
        }
    }

    /// The channel ended: every pending confirm resolves as lost.
    pub fn end(&self, closed: Option<Closed>) {
        let mut s = self.state();
        if s.ended.is_none() {
            s.ended = Some(closed.clone());
        }
        for (_, w) in std::mem::take(&mut s.pending) {
            let _ = w.settle.send(Confirm::Lost(closed.clone()));
        }
        s.returned.clear();
    }
}

/// The confirm channel's callback. amqprs drops it when the channel's dispatcher ends (a
/// close, a dead connection, even a panic there), and dropping it ends the tracker.
pub(crate) struct ConfirmEvents(pub Arc<Tracker>);

impl Drop for ConfirmEvents {
    fn drop(&mut self) {
        self.0.end(None);
    }
}

#[async_trait]
impl ChannelCallback for ConfirmEvents {
    async fn close(&mut self, _: &Channel, close: CloseChannel) -> ClientResult<()> {
        self.0
            .end(Some((close.reply_code(), close.reply_text().clone())));
        Ok(())
    }

    async fn cancel(&mut self, _: &Channel, _: Cancel) -> ClientResult<()> {
        Ok(())
    }

    async fn flow(&mut self, _: &Channel, _active: bool) -> ClientResult<bool> {
        Ok(true)
    }

    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        self.0.settle(ack.delivery_tag(), ack.mutiple(), false);
    }

    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        self.0.settle(nack.delivery_tag(), nack.multiple(), true);
    }

    async fn publish_return(
        &mut self,
        _: &Channel,
        ret: Return,
        properties: BasicProperties,
        _body: Vec<u8>,
    ) {
        let id = properties.message_id().cloned().unwrap_or_default();
        self.0
            .state()
            .returned
            .entry(id)
            .or_default()
            .push((ret.reply_code(), ret.reply_text().clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(rx: &mut oneshot::Receiver<Confirm>) -> Option<String> {
        rx.try_recv().ok().map(|c| format!("{c:?}"))
    }

    fn register(t: &Tracker, id: &str) -> Option<(u64, oneshot::Receiver<Confirm>)> {
        let (settle, settled) = oneshot::channel();
        t.register(id.to_string(), settle)
            .ok()
            .map(|tag| (tag, settled))
    }

    #[test]
    fn multiple_acks_settle_every_tag_up_to_theirs() {
        let t = Tracker::new();
        let mut rxs: Vec<_> = (0..4)
            .map(|i| register(&t, &format!("m{i}")).unwrap())
            .collect();
        assert_eq!(rxs.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        t.settle(3, true, false);
        for (_, rx) in &mut rxs[..3] {
            assert_eq!(outcome(rx), Some("Ack".to_string()));
        }
        assert_eq!(outcome(&mut rxs[3].1), None);
        t.settle(4, false, true);
        assert_eq!(outcome(&mut rxs[3].1), Some("Nack".to_string()));
    }

    #[test]
    fn a_return_before_the_ack_makes_that_message_unroutable_only() {
        let t = Tracker::new();
        let (_, mut a) = register(&t, "a").unwrap();
        let (_, mut b) = register(&t, "b").unwrap();
        t.state()
            .returned
            .entry("b".into())
            .or_default()
            .push((312, "NO_ROUTE".into()));
        t.settle(2, true, false);
        assert_eq!(outcome(&mut a), Some("Ack".to_string()));
        assert_eq!(
            outcome(&mut b),
            Some(r#"Returned(312, "NO_ROUTE")"#.to_string())
        );
        assert!(t.state().returned.is_empty());
    }

    #[test]
    fn the_channel_ending_resolves_every_pending_confirm_and_refuses_new_ones() {
        let t = Tracker::new();
        let (_, mut a) = register(&t, "a").unwrap();
        let events = ConfirmEvents(t.clone());
        drop(events);
        assert_eq!(outcome(&mut a), Some("Lost(None)".to_string()));
        assert!(register(&t, "b").is_none());
        assert!(t.ended());
    }
}
