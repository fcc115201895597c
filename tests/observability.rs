//! Observability: coolmq's counters and histograms through the `metrics` facade and its
//! tracing spans by the OpenTelemetry messaging conventions, on the memory broker (one
//! process-wide recorder and subscriber, so one test function).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coolmq::{Destination, HandlerError, Message, QueueSpec, RedeliveryPolicy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// A span as a subscriber saw it: name and every field it was made with.
#[derive(Debug, Clone)]
struct SeenSpan {
    name: String,
    fields: BTreeMap<String, String>,
}

/// Records every span it is given, with its fields.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<SeenSpan>>>);

struct FieldVisitor<'a>(&'a mut BTreeMap<String, String>);

impl Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        self.0.lock().unwrap().push(SeenSpan {
            name: attrs.metadata().name().to_string(),
            fields,
        });
    }
}

impl Spans {
    fn find(&self, name: &str, message_id: &str) -> Option<SeenSpan> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|s| {
                s.name == name
                    && s.fields.get("messaging.message.id").map(String::as_str) == Some(message_id)
            })
            .cloned()
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
    // An application's default `info` filter, and a `debug` one beside it.
    let (info, debug) = (Spans::default(), Spans::default());
    let subscriber = tracing_subscriber::registry()
        .with(
            info.clone()
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .with(
            debug
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
        .send(
            &dest,
            Message::new("ok")
                .with_id("good")
                .with_correlation_id("conv-1"),
        )
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

    let all = snapshotter.snapshot().into_vec();
    let snapshot: Vec<(String, u64)> = all
        .iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => Some((key.key().name().to_string(), *n)),
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
    let gauge_zero = all.iter().all(|(k, _, _, v)| {
        k.key().name() != "coolmq_in_flight" || matches!(v, DebugValue::Gauge(g) if g.0 == 0.0)
    });
    assert!(gauge_zero, "no send left in flight");

    // Labels: sends by destination, deliveries by queue, both by backend (of the counters
    // that counted something; every handle is registered when first needed).
    let label = |name: &str, key: &str| -> Vec<String> {
        let mut values: Vec<String> = all
            .iter()
            .filter(|(k, _, _, v)| {
                k.key().name() == name && matches!(v, DebugValue::Counter(n) if *n > 0)
            })
            .flat_map(|(k, _, _, _)| {
                k.key()
                    .labels()
                    .filter(|l| l.key() == key)
                    .map(|l| l.value().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        values.sort();
        values.dedup();
        values
    };
    assert_eq!(label("coolmq_confirmed_total", "destination"), ["obs"]);
    assert_eq!(label("coolmq_returned_total", "destination"), ["nowhere"]);
    assert_eq!(label("coolmq_acked_total", "queue"), ["obs"]);
    assert_eq!(label("coolmq_acked_total", "backend"), ["memory"]);

    // Histograms: a confirm latency per send (3), a handler duration per handler run (the
    // good message once, the poison one twice: first delivery and one redelivery), an age
    // per delivery.
    let samples = |name: &str| -> usize {
        all.iter()
            .filter(|(k, _, _, _)| k.key().name() == name)
            .map(|(_, _, _, v)| match v {
                DebugValue::Histogram(h) => h.len(),
                _ => 0,
            })
            .sum()
    };
    assert_eq!(samples("coolmq_confirm_duration_seconds"), 3);
    assert_eq!(samples("coolmq_process_duration_seconds"), 3);
    assert!(samples("coolmq_message_age_seconds") >= 3);

    // Spans by the OpenTelemetry messaging conventions; send and process kept by `info`.
    let send = info.find("send", "good").expect("a send span at info");
    for (key, want) in [
        ("otel.name", "send obs"),
        ("otel.kind", "producer"),
        ("messaging.system", "memory"),
        ("messaging.operation.type", "send"),
        ("messaging.operation.name", "send"),
        ("messaging.destination.name", "obs"),
        ("messaging.message.id", "good"),
        ("messaging.message.body.size", "2"),
        ("messaging.message.conversation_id", "conv-1"),
    ] {
        assert_eq!(
            send.fields.get(key).map(String::as_str),
            Some(want),
            "{key} in {send:?}"
        );
    }
    let lost = info
        .find("send", "lost")
        .expect("the unroutable send's span");
    assert_eq!(
        lost.fields
            .get("messaging.destination.name")
            .map(String::as_str),
        Some("nowhere")
    );
    let process = info
        .find("process", "good")
        .expect("a process span at info");
    for (key, want) in [
        ("otel.name", "process obs"),
        ("otel.kind", "consumer"),
        ("messaging.system", "memory"),
        ("messaging.operation.type", "process"),
        ("messaging.operation.name", "process"),
        ("messaging.destination.name", "obs"),
        ("messaging.message.id", "good"),
        ("coolmq.attempt", "1"),
    ] {
        assert_eq!(
            process.fields.get(key).map(String::as_str),
            Some(want),
            "{key} in {process:?}"
        );
    }
    assert!(info.find("process", "poison").is_some());
    // Receive and settle spans are per delivery on top of process: debug only.
    for name in ["receive", "settle"] {
        assert!(info.find(name, "good").is_none(), "{name} at info");
    }
    let receive = debug
        .find("receive", "good")
        .expect("a receive span at debug");
    assert_eq!(
        receive
            .fields
            .get("messaging.operation.type")
            .map(String::as_str),
        Some("receive")
    );
    let settle = debug
        .find("settle", "good")
        .expect("a settle span at debug");
    assert_eq!(
        settle
            .fields
            .get("messaging.operation.type")
            .map(String::as_str),
        Some("settle")
    );
    assert_eq!(
        settle
            .fields
            .get("messaging.operation.name")
            .map(String::as_str),
        Some("ack")
    );
    let settled_poison = debug
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|s| {
            s.name == "settle"
                && s.fields.get("messaging.message.id").map(String::as_str) == Some("poison")
        })
        .filter_map(|s| s.fields.get("messaging.operation.name").cloned())
        .collect::<Vec<_>>();
    assert_eq!(settled_poison, ["retry-after", "dead-letter"]);
}
