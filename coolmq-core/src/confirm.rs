//! A confirm still to come: what a pipelined send returns once its message is on its way to
//! the broker, so one task keeps many sends in flight, in order, and awaits their confirms
//! as they come (what lapin's `PublisherConfirm`, Spring AMQP's `CorrelationData` future and
//! fe2o3's `DeliveryFut` give their users).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::observe::Handles;
use crate::{ErrorKind, Receipt, SendError};

/// A backend's confirm future, from
/// [`PublisherBackend::start`](crate::raw::PublisherBackend::start). `Sync` too,
/// so a task that pushes to a `FuturesUnordered` of confirms (`push` takes `&self`) while it
/// awaits the next send stays `Send`.
pub type BackendConfirm =
    Pin<Box<dyn Future<Output = Result<Receipt, SendError>> + Send + Sync + 'static>>;

/// The broker's answer to one pipelined send (from [`crate::Publisher::send_pipelined`]):
/// resolves exactly like [`crate::Publisher::send`] (`Ok` once the broker took the message,
/// every failure with the message handed back, never later than the confirm timeout).
///
/// The caller bounds how many of these it holds (as with lapin's and fe2o3's): the publisher
/// window counts a pipelined send only until its message is handed to the connection, so a
/// task holding unpolled confirms never blocks its own next send. Dropping one gives up the
/// answer, not the send: the broker may still take the message.
#[must_use = "a confirm that is never awaited cannot report a refused message"]
pub struct PendingConfirm {
    confirm: BackendConfirm,
    observed: Observed,
}

impl PendingConfirm {
    pub(crate) fn new(confirm: BackendConfirm, observed: Observed) -> Self {
        PendingConfirm { confirm, observed }
    }
}

impl fmt::Debug for PendingConfirm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingConfirm").finish_non_exhaustive()
    }
}

impl Future for PendingConfirm {
    type Output = Result<Receipt, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = {
            let _entered = this.observed.span.enter();
            std::task::ready!(this.confirm.as_mut().poll(cx))
        };
        this.observed.finish(&result);
        Poll::Ready(result)
    }
}

/// One send's span and metrics: counted in flight from its start until it is finished or
/// dropped, its outcome recorded once.
pub(crate) struct Observed {
    pub span: tracing::Span,
    metrics: Arc<Handles>,
    in_flight: bool,
    started: std::time::Instant,
}

impl Observed {
    pub fn start(span: tracing::Span, metrics: &Arc<Handles>) -> Self {
        metrics.published.increment(1);
        metrics.in_flight.increment(1.0);
        Observed {
            span,
            metrics: metrics.clone(),
            in_flight: true,
            started: std::time::Instant::now(),
        }
    }

    /// Record the outcome on the span and in the metrics.
    pub fn finish(&mut self, result: &Result<Receipt, SendError>) {
        self.outcome(result.as_ref().err().map(SendError::error));
    }

    /// Record a send that failed (in the backend or before it).
    pub fn failed(&mut self, error: &crate::Error) {
        self.outcome(Some(error));
    }

    fn outcome(&mut self, error: Option<&crate::Error>) {
        if !std::mem::replace(&mut self.in_flight, false) {
            return;
        }
        self.metrics.in_flight.decrement(1.0);
        let m = &self.metrics;
        let (outcome, metric) = match error {
            None => ("confirmed", &m.confirmed),
            Some(e) => match e.kind() {
                ErrorKind::Nacked | ErrorKind::Rejected => (e.kind().as_str(), &m.nacked),
                ErrorKind::Unroutable => ("returned", &m.returned),
                other => (other.as_str(), &m.send_failed),
            },
        };
        metric.increment(1);
        m.confirm_duration
            .record(self.started.elapsed().as_secs_f64());
        self.span.record("coolmq.outcome", outcome);
        if let Some(e) = error {
            self.span.record("error.type", e.kind().as_str());
        }
        match error {
            None => tracing::debug!(parent: &self.span, "coolmq.confirm"),
            Some(e) => {
                tracing::debug!(parent: &self.span, error = %e, "send not confirmed")
            }
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if self.in_flight {
            self.metrics.in_flight.decrement(1.0);
        }
    }
}
