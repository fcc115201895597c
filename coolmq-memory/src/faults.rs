//! Deterministic faults for tests: the in-process broker's hooks, kept outside the backend
//! contract so production code cannot reach them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use coolmq_core::{Config, Result};

use crate::engine::Engine;
use crate::MemoryOptions;

/// The fault hooks of one named in-process broker. A networked broker gets the same faults
/// from `coolmq_conformance::FaultProxy`; these exist because an in-process broker has no
/// connection to cut.
#[derive(Debug, Clone)]
pub struct Faults(Arc<Engine>);

impl Faults {
    /// The hooks of the broker `config.url` names (created if no connection made it yet).
    ///
    /// # Errors
    /// `ConfigInvalid` for a URL that is not `memory://…`.
    pub fn of(config: &Config) -> Result<Self> {
        let options = MemoryOptions::from_url(&config.url)?;
        Ok(Faults(crate::engine_named(&options.name)))
    }

    /// The next publish is answered with a negative confirm.
    pub fn nack_next_publish(&self) {
        self.0
            .faults
            .nack_next_publish
            .store(true, Ordering::SeqCst);
    }

    /// The next publish is stored but its confirm never arrives (the sender times out).
    pub fn lose_next_confirm(&self) {
        self.0
            .faults
            .lose_next_confirm
            .store(true, Ordering::SeqCst);
    }

    /// Every consumer's connection drops: unsettled deliveries are requeued, their handles go
    /// stale, and consumers reconnect.
    pub fn drop_consumer_connections(&self) {
        self.0.drop_consumer_connections();
    }
}
