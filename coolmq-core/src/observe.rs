//! Metrics through the `metrics` facade: install any recorder (Prometheus exporter, StatsD…)
//! and coolmq's counters and histograms appear; without one they cost next to nothing. Every
//! metric carries a `backend` label (`memory`, `rabbit`, `activemq`) and the queue or
//! destination it concerns: sends a `destination` label, deliveries a `queue` label.
//! Durations are in seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

/// The label of send metrics: the queue or topic sent to.
pub const DESTINATION_LABEL: &str = "destination";
/// The label of delivery metrics: the queue consumed.
pub const QUEUE_LABEL: &str = "queue";

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
/// Histogram: from a send's start to the broker's confirm (or its failure), in seconds.
pub const CONFIRM_DURATION: &str = "coolmq_confirm_duration_seconds";
/// Histogram: how long a worker's handler ran, in seconds (successes and failures).
pub const PROCESS_DURATION: &str = "coolmq_process_duration_seconds";
/// Histogram: a delivered message's age (from its timestamp to its delivery), in seconds.
pub const MESSAGE_AGE: &str = "coolmq_message_age_seconds";

/// Describe coolmq's metrics to the installed recorder (units and help texts).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
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
    describe_histogram!(
        CONFIRM_DURATION,
        Unit::Seconds,
        "From a send's start to the broker's confirm or the send's failure"
    );
    describe_histogram!(
        PROCESS_DURATION,
        Unit::Seconds,
        "How long a worker's handler ran"
    );
    describe_histogram!(
        MESSAGE_AGE,
        Unit::Seconds,
        "A delivered message's age, from its timestamp"
    );
}

/// The metric handles of one backend and one queue or destination, registered once (the
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
    pub confirm_duration: Histogram,
    pub acked: Counter,
    pub redelivered: Counter,
    pub dead_lettered: Counter,
    pub process_duration: Histogram,
    pub message_age: Histogram,
}

impl Handles {
    /// The handles of sends to `destination`.
    pub fn for_destination(backend: &'static str, destination: &str) -> Self {
        Self::new(backend, DESTINATION_LABEL, destination)
    }

    /// The handles of deliveries from `queue`.
    pub fn for_queue(backend: &'static str, queue: &str) -> Self {
        Self::new(backend, QUEUE_LABEL, queue)
    }

    fn new(backend: &'static str, label: &'static str, value: &str) -> Self {
        let labels = [("backend", backend.to_string()), (label, value.to_string())];
        Handles {
            published: counter!(PUBLISHED, &labels),
            confirmed: counter!(CONFIRMED, &labels),
            nacked: counter!(NACKED, &labels),
            returned: counter!(RETURNED, &labels),
            send_failed: counter!(SEND_FAILED, &labels),
            in_flight: gauge!(IN_FLIGHT, &labels),
            confirm_duration: histogram!(CONFIRM_DURATION, &labels),
            acked: counter!(ACKED, &labels),
            redelivered: counter!(REDELIVERED, &labels),
            dead_lettered: counter!(DEAD_LETTERED, &labels),
            process_duration: histogram!(PROCESS_DURATION, &labels),
            message_age: histogram!(MESSAGE_AGE, &labels),
        }
    }
}

/// A publisher's handles per destination, made on the first send to each.
pub(crate) struct PublisherHandles {
    backend: &'static str,
    by_destination: Mutex<HashMap<String, Arc<Handles>>>,
}

impl PublisherHandles {
    pub fn new(backend: &'static str) -> Self {
        PublisherHandles {
            backend,
            by_destination: Mutex::new(HashMap::new()),
        }
    }

    /// The handles of sends to `destination`.
    pub fn get(&self, destination: &str) -> Arc<Handles> {
        let mut map = self
            .by_destination
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = map.get(destination) {
            return h.clone();
        }
        let h = Arc::new(Handles::for_destination(self.backend, destination));
        map.insert(destination.to_string(), h.clone());
        h
    }
}

impl std::fmt::Debug for PublisherHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublisherHandles")
    }
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handles")
    }
}
