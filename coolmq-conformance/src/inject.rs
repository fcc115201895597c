//! Faults injected into an in-process broker, which has no connection a
//! [`crate::FaultProxy`] could cut. Kept in the suite, not in the backend contract: only tests
//! reach them.

use std::sync::Arc;

use coolmq_core::Config;

/// Deterministic faults a target without a network can offer (the memory broker does).
pub trait Injector: Send + Sync {
    /// The next publish is answered with a negative confirm.
    fn nack_next_publish(&self);
    /// The next publish is stored but its confirm never arrives (the sender times out).
    fn lose_next_confirm(&self);
    /// Every consumer's connection drops: unsettled deliveries are requeued, their handles go
    /// stale, and consumers reconnect.
    fn drop_consumer_connections(&self);
}

/// Finds the injector for one case's configuration, if the target has one.
pub type InjectorFn = Arc<dyn Fn(&Config) -> Option<Arc<dyn Injector>> + Send + Sync>;

impl Injector for coolmq_memory::Faults {
    fn nack_next_publish(&self) {
        coolmq_memory::Faults::nack_next_publish(self);
    }

    fn lose_next_confirm(&self) {
        coolmq_memory::Faults::lose_next_confirm(self);
    }

    fn drop_consumer_connections(&self) {
        coolmq_memory::Faults::drop_consumer_connections(self);
    }
}

/// The memory broker's hooks for a `memory://` configuration, `None` for any other URL: give
/// it to [`crate::Target::with_injector`].
pub fn memory_faults(config: &Config) -> Option<Arc<dyn Injector>> {
    let faults = coolmq_memory::Faults::of(config).ok()?;
    Some(Arc::new(faults))
}
