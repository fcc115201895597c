//! Metrics through the `metrics` facade: install any recorder (Prometheus exporter, StatsD…)
//! and coolmq's counters appear; without one they cost next to nothing. Every metric carries
//! a `backend` label (`memory`, `rabbit`, `activemq`).

use metrics::{counter, gauge, Counter, Gauge};

/// Sends started.
pub const PUBLISHED: &str = "coolmq_published_total";
/// Sends the broker confirmed.
pub const CONFIRMED: &str = "coolmq_confirmed_total";
/// Sends the broker refused (nack, reject, release).
pub const NACKED: &str = "coolmq_nacked_total";
/// Sends returned as unroutable.
pub const RETURNED: &str = "coolmq_returned_total";
/// Sends that failed otherwise (timeout, connection lost, too large…).
pub const SEND_FAILED: &str = "coolmq_send_failed_total";
/// Sends awaiting their confirm.
pub const IN_FLIGHT: &str = "coolmq_in_flight";
/// Deliveries acknowledged.
pub const ACKED: &str = "coolmq_acked_total";
/// Deliveries sent back for redelivery (requeue or delayed retry).
pub const REDELIVERED: &str = "coolmq_redelivered_total";
/// Deliveries moved to their dead-letter queue.
pub const DEAD_LETTERED: &str = "coolmq_dead_lettered_total";

/// Describe coolmq's metrics to the installed recorder (units and help texts).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(PUBLISHED, "Sends started");
    describe_counter!(CONFIRMED, "Sends the broker confirmed");
    describe_counter!(NACKED, "Sends the broker refused (nack, reject, release)");
    describe_counter!(RETURNED, "Sends returned as unroutable");
    describe_counter!(
        SEND_FAILED,
        "Sends failed otherwise (timeout, connection lost…)"
    );
    describe_gauge!(IN_FLIGHT, "Sends awaiting their confirm");
    describe_counter!(ACKED, "Deliveries acknowledged");
    describe_counter!(REDELIVERED, "Deliveries sent back for redelivery");
    describe_counter!(DEAD_LETTERED, "Deliveries moved to their dead-letter queue");
}

/// One backend's metric handles, registered once when a publisher or consumer is made (the
/// `metrics` way: no key building or lookup per message). Install the recorder before
/// connecting.
#[derive(Clone)]
pub(crate) struct Handles {
    pub published: Counter,
    pub confirmed: Counter,
    pub nacked: Counter,
    pub returned: Counter,
    pub send_failed: Counter,
    pub in_flight: Gauge,
    pub acked: Counter,
    pub redelivered: Counter,
    pub dead_lettered: Counter,
}

impl Handles {
    pub fn new(backend: &'static str) -> Self {
        Handles {
            published: counter!(PUBLISHED, "backend" => backend),
            confirmed: counter!(CONFIRMED, "backend" => backend),
            nacked: counter!(NACKED, "backend" => backend),
            returned: counter!(RETURNED, "backend" => backend),
            send_failed: counter!(SEND_FAILED, "backend" => backend),
            in_flight: gauge!(IN_FLIGHT, "backend" => backend),
            acked: counter!(ACKED, "backend" => backend),
            redelivered: counter!(REDELIVERED, "backend" => backend),
            dead_lettered: counter!(DEAD_LETTERED, "backend" => backend),
        }
    }
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handles")
    }
}
