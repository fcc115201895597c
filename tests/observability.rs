//! Observability: coolmq's counters through the `metrics` facade and its tracing spans, on
//! the memory broker (one process-wide recorder and subscriber, so one test function).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coolmq::{Destination, HandlerError, Message, QueueSpec, RedeliveryPolicy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Records every span's name and `message_id` field.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, String)>>>);

struct IdVisitor(String);

impl Visit for IdVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message_id" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let mut v = IdVisitor(String::new());
        attrs.record(&mut v);
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_string(), v.0));
    }
}

fn counter(snapshot: &[(String, u64)], name: &str) -> u64 {
    snapshot
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_and_spans_follow_a_message() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder");
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(
        spans
            .clone()
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let mut config = coolmq::Config::from_url("memory://observability").unwrap();
    config.redelivery.default = RedeliveryPolicy {
        maximum_redeliveries: 1,
        initial_redelivery_delay: Duration::from_millis(10),
        ..Default::default()
    };
    let broker = coolmq::connect(&config).await.unwrap();
    broker.declare_queue(&QueueSpec::new("obs")).await.unwrap();
    let publisher = broker.publisher().await.unwrap();
    let dest = Destination::queue("obs");
    publisher
        .send(&dest, Message::new("ok").with_id("good"))
        .await
        .unwrap();
    publisher
        .send(&dest, Message::new("bad").with_id("poison"))
        .await
        .unwrap();
    let unroutable = publisher
        .send(
            &Destination::queue("nowhere"),
            Message::new("x").with_id("lost"),
        )
        .await;
    assert!(unroutable.is_err());
    let worker = broker
        .worker("obs")
        .start(|incoming| async move {
            if incoming.message.id == "poison" {
                Err(HandlerError::msg("always fails"))
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
    for _ in 0..500 {
        let c = worker.counts();
        if c.acked == 1 && c.dead_lettered == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown(Duration::from_secs(5)).await.unwrap();

    let snapshot: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => Some((key.key().name().to_string(), n)),
            _ => None,
        })
        .collect();
    // The test sends 3; the delayed retry and the dead-letter copy are the delivery's forwards,
    // counted as redelivered and dead-lettered.
    let expect = [
        ("coolmq_published_total", 3),
        ("coolmq_confirmed_total", 2),
        ("coolmq_returned_total", 1),
        ("coolmq_acked_total", 1),
        ("coolmq_redelivered_total", 1),
        ("coolmq_dead_lettered_total", 1),
    ];
    for (name, want) in expect {
        assert_eq!(counter(&snapshot, name), want, "{name} in {snapshot:?}");
    }
    let gauge_zero = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .all(|(k, _, _, v)| {
            k.key().name() != "coolmq_in_flight" || matches!(v, DebugValue::Gauge(g) if g.0 == 0.0)
        });
    assert!(gauge_zero, "no send left in flight");

    let spans = spans.0.lock().unwrap().clone();
    let has = |name: &str, id: &str| spans.iter().any(|(n, m)| n == name && m == id);
    for (name, id) in [
        ("coolmq.publish", "good"),
        ("coolmq.publish", "lost"),
        ("coolmq.handle", "good"),
        ("coolmq.settle", "good"),
        ("coolmq.consume", "poison"),
        ("coolmq.redelivery", "poison"),
        ("coolmq.settle", "poison"),
    ] {
        assert!(has(name, id), "span {name} for {id} in {spans:?}");
    }
}
