//! The `opentelemetry` feature: coolmq's spans, exported through `tracing-opentelemetry` to an
//! in-process OpenTelemetry SDK, join the application's trace across a message (one
//! process-wide subscriber and propagator, so one test function).

use std::time::Duration;

use coolmq::{Destination, HandlerError, Message};
use opentelemetry::trace::{SpanId, SpanKind, TraceId, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name:?} span in {:?}", names(spans));
    found[0]
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| s.name.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_carries_the_application_trace_from_send_to_process() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("otel-test")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let broker = coolmq::connect_url("memory://otel").await.unwrap();
    for q in ["otel", "otel.next"] {
        broker.declare_queue(&broker.queue_spec(q)).await.unwrap();
    }
    let publisher = broker.publisher().await.unwrap();

    // The application's own span, around the send.
    let checkout = tracing::info_span!("checkout");
    {
        let publisher = publisher.clone();
        async move {
            publisher
                .send(
                    &Destination::queue("otel"),
                    Message::new("order").with_id("m-1"),
                )
                .await
                .unwrap();
        }
        .instrument(checkout)
        .await;
    }
    // The handler sends on: that send continues the trace under the process span.
    let worker = {
        let publisher = publisher.clone();
        broker
            .worker("otel")
            .start(move |incoming| {
                let publisher = publisher.clone();
                async move {
                    let header = incoming.message.headers.get("traceparent").cloned();
                    publisher
                        .send(
                            &Destination::queue("otel.next"),
                            Message::new("next").with_id("m-2"),
                        )
                        .await?;
                    tracing::info!(?header, "handled");
                    Ok::<(), HandlerError>(())
                }
            })
            .await
            .unwrap()
    };
    for _ in 0..500 {
        if worker.counts().acked == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(worker.counts().acked, 1);
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    let mut consumer = broker.consumer("otel.next").await.unwrap();
    let next = consumer
        .recv()
        .await
        .unwrap()
        .expect("the handler's message");
    let next_traceparent = next
        .message()
        .headers
        .get("traceparent")
        .and_then(|v| v.as_str().map(str::to_string))
        .expect("a traceparent");
    next.ack().await.unwrap();
    consumer.close().await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let checkout = one(&spans, "checkout");
    let send = one(&spans, "send otel");
    let process = one(&spans, "process otel");
    let send_next = one(&spans, "send otel.next");
    let trace: TraceId = checkout.span_context.trace_id();

    // One trace: checkout → send → process → send on.
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(send.span_context.trace_id(), trace);
    assert_eq!(send.parent_span_id, checkout.span_context.span_id());
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(
        process.span_context.trace_id(),
        trace,
        "process joins the sender's trace"
    );
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    assert_eq!(send_next.span_context.trace_id(), trace);
    assert_eq!(send_next.parent_span_id, process.span_context.span_id());
    // What travelled is the W3C form of the send span's context.
    assert_eq!(
        next_traceparent,
        format!("00-{}-{}-01", trace, send_next.span_context.span_id())
    );
    assert_ne!(send_next.span_context.span_id(), SpanId::INVALID);

    // The conventions' attributes, as the exporter received them.
    for (span, want) in [
        (
            send,
            [
                ("messaging.operation.type", "send"),
                ("messaging.destination.name", "otel"),
            ],
        ),
        (
            process,
            [
                ("messaging.operation.type", "process"),
                ("messaging.destination.name", "otel"),
            ],
        ),
    ] {
        assert_eq!(
            attribute(span, "messaging.system"),
            Some(Value::from("memory"))
        );
        assert_eq!(
            attribute(span, "messaging.message.id"),
            Some(Value::from("m-1"))
        );
        for (key, value) in want {
            assert_eq!(
                attribute(span, key),
                Some(Value::from(value)),
                "{key} on {}",
                span.name
            );
        }
    }
}
