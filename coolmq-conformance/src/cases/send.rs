//! Round-trip fidelity: bodies, headers and properties arrive exactly as sent.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use coolmq_core::{Destination, HeaderValue, Message, TraceContext, TRACEPARENT_HEADER};

use super::case;
use crate::case::req::*;
use crate::{check, check_eq, Case, Ctx, TestResult};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!("send", roundtrip_empty_body, [CONFIRMS]),
        case!("send", roundtrip_binary_body, [CONFIRMS]),
        case!("send", roundtrip_one_mib_body, [CONFIRMS, ONE_MIB]),
        case!("send", roundtrip_every_scalar_header_type, [CONFIRMS]),
        case!("send", roundtrip_nested_headers, [CONFIRMS, NESTED]),
        case!("send", roundtrip_every_property, [CONFIRMS, TTL]),
        case!("send", roundtrip_transient_message, [CONFIRMS]),
        case!("send", roundtrip_unicode_ids_and_headers, [CONFIRMS]),
        case!("send", json_helpers_roundtrip, [CONFIRMS]),
        case!("send", trace_context_crosses_the_broker, [CONFIRMS]),
        case!(
            "send",
            oversize_message_is_refused_and_handed_back,
            [MAX_SIZE]
        ),
    ]
}

/// Send `message` to a fresh queue and return what a consumer receives.
async fn roundtrip(ctx: &Ctx, message: Message) -> Result<Message, crate::Failed> {
    let q = ctx.queue("rt").await?;
    ctx.send(&q, message).await?;
    let mut consumer = ctx.broker.consumer(&q).await?;
    let d = ctx.recv(&mut consumer).await?;
    let got = d.message().clone();
    d.ack().await?;
    Ok(got)
}

fn check_same(sent: &Message, got: &Message) -> TestResult {
    check_eq!(got.id, sent.id, "message id");
    check_eq!(got.body, sent.body, "body");
    check_eq!(got.content_type, sent.content_type, "content type");
    let mut headers = got.headers.clone();
    // coolmq adds the W3C trace context to a message that has none (send::trace_context_*).
    if !sent.headers.contains_key(TRACEPARENT_HEADER) {
        check!(
            TraceContext::of(got).is_some(),
            "a valid traceparent header was added: {:?}",
            got.headers.get(TRACEPARENT_HEADER)
        );
        headers.remove(TRACEPARENT_HEADER);
    }
    check_eq!(headers, sent.headers, "headers");
    check_eq!(got.correlation_id, sent.correlation_id, "correlation id");
    check_eq!(got.reply_to, sent.reply_to, "reply-to");
    check_eq!(got.kind, sent.kind, "message type");
    check_eq!(got.priority, sent.priority, "priority");
    check_eq!(got.persistent, sent.persistent, "persistent");
    check_eq!(got.ttl, sent.ttl, "ttl");
    check_eq!(got.timestamp, sent.timestamp, "timestamp");
    Ok(())
}

async fn roundtrip_empty_body(ctx: Ctx) -> TestResult {
    let sent = Message::new(Vec::new());
    let got = roundtrip(&ctx, sent.clone()).await?;
    check!(
        got.body.is_empty(),
        "empty body arrived as {} bytes",
        got.body.len()
    );
    check_same(&sent, &got)
}

async fn roundtrip_binary_body(ctx: Ctx) -> TestResult {
    let mut body: Vec<u8> = (0..=255u8).collect();
    body.extend_from_slice(&[0xff, 0xfe, 0x00, 0xc3, 0x28]); // not UTF-8
    let sent = Message::new(body).with_content_type("application/octet-stream");
    let got = roundtrip(&ctx, sent.clone()).await?;
    check_same(&sent, &got)
}

async fn roundtrip_one_mib_body(ctx: Ctx) -> TestResult {
    let body: Vec<u8> = (0..1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sent = Message::new(body);
    let got = roundtrip(&ctx, sent.clone()).await?;
    check_eq!(got.body.len(), 1024 * 1024, "1 MiB body length");
    check_same(&sent, &got)
}

async fn roundtrip_every_scalar_header_type(ctx: Ctx) -> TestResult {
    let sent = Message::new("h")
        .with_header("bool", true)
        .with_header("i8", -8i8)
        .with_header("i16", -1600i16)
        .with_header("i32", -3_200_000i32)
        .with_header("i64", -6_400_000_000_000i64)
        .with_header("u8", 200u8)
        .with_header("u16", 60_000u16)
        .with_header("u32", 4_000_000_000u32)
        .with_header("f32", 1.5f32)
        .with_header("f64", -2.25e10f64)
        .with_header("string", "value")
        .with_header("empty_string", "")
        .with_header("bytes", vec![0u8, 159, 146, 150]);
    let got = roundtrip(&ctx, sent.clone()).await?;
    for (k, v) in &sent.headers {
        check_eq!(got.headers.get(k), Some(v), "header {k}");
    }
    check_same(&sent, &got)
}

async fn roundtrip_nested_headers(ctx: Ctx) -> TestResult {
    let mut map = BTreeMap::new();
    map.insert("inner".to_string(), HeaderValue::I32(1));
    map.insert(
        "list".to_string(),
        HeaderValue::List(vec!["a".into(), HeaderValue::Bool(false)]),
    );
    let sent = Message::new("n").with_header("map", map).with_header(
        "list",
        vec![HeaderValue::I64(1), HeaderValue::String("two".into())],
    );
    let got = roundtrip(&ctx, sent.clone()).await?;
    check_same(&sent, &got)
}

async fn roundtrip_every_property(ctx: Ctx) -> TestResult {
    let mut sent = Message::new("props")
        .with_id("order-42")
        .with_content_type("text/plain")
        .with_correlation_id("corr-1")
        .with_reply_to("replies")
        .with_kind("OrderPlaced")
        .with_priority(7)
        .with_ttl(Duration::from_secs(600));
    sent.timestamp = Some(coolmq_core::truncate_to_millis(
        SystemTime::now() - Duration::from_secs(5),
    ));
    let got = roundtrip(&ctx, sent.clone()).await?;
    check_same(&sent, &got)
}

async fn roundtrip_transient_message(ctx: Ctx) -> TestResult {
    let sent = Message::new("fleeting").transient();
    let got = roundtrip(&ctx, sent.clone()).await?;
    check!(!got.persistent, "transient message arrived as persistent");
    check_same(&sent, &got)
}

async fn roundtrip_unicode_ids_and_headers(ctx: Ctx) -> TestResult {
    let sent = Message::new("ünïcödé ✓".as_bytes().to_vec())
        .with_id("commande-№-ß-✓")
        .with_correlation_id("相关-1")
        .with_header("città", "Zürich → 東京 🚀");
    let got = roundtrip(&ctx, sent.clone()).await?;
    check_same(&sent, &got)
}

async fn json_helpers_roundtrip(ctx: Ctx) -> TestResult {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Order {
        id: u64,
        items: Vec<String>,
    }
    let order = Order {
        id: 9,
        items: vec!["book".into(), "pen".into()],
    };
    let sent = Message::json(&order)?;
    let got = roundtrip(&ctx, sent.clone()).await?;
    check_eq!(
        got.content_type.as_deref(),
        Some(coolmq_core::JSON_CONTENT_TYPE),
        "content type"
    );
    check_eq!(got.body_json::<Order>()?, order, "decoded order");
    let bad = Message::new("{not json").body_json::<Order>();
    check!(
        bad.is_err(),
        "undecodable JSON must be an error, got {bad:?}"
    );
    Ok(())
}

async fn oversize_message_is_refused_and_handed_back(ctx: Ctx) -> TestResult {
    let max = ctx
        .broker
        .capabilities()
        .max_message_size
        .expect("required");
    let q = ctx.queue("big").await?;
    let publisher = ctx.publisher().await?;
    let dest = Destination::queue(&q);
    let sent = Message::new(vec![7u8; max + 1]);
    let refused = [
        publisher.send(&dest, sent.clone()).await.err(),
        // A pipelined send is refused before it leaves.
        publisher.send_pipelined(&dest, sent.clone()).await.err(),
    ];
    for (err, how) in refused.into_iter().zip(["send", "send_pipelined"]) {
        let err =
            err.ok_or_else(|| crate::Failed(format!("{how}: an oversize message was accepted")))?;
        check_eq!(
            err.kind(),
            coolmq_core::ErrorKind::MessageTooLarge,
            "{how}: error kind"
        );
        check_eq!(err.message().id, sent.id, "{how}: message handed back");
    }
    check_eq!(ctx.broker.queue_depth(&q).await?, 0, "queue depth");
    Ok(())
}

/// W3C trace context crosses the broker: a send inside a trace carries a child of it, a send
/// outside any trace starts one, and a `traceparent` the sender set is kept as is.
async fn trace_context_crosses_the_broker(ctx: Ctx) -> TestResult {
    let q = ctx.queue("trace").await?;
    let publisher = ctx.publisher().await?;
    let dest = Destination::queue(&q);
    let root = TraceContext::new_root();
    root.scope(publisher.send(&dest, Message::new("in").with_id("in-trace")))
        .await?;
    publisher
        .send(&dest, Message::new("out").with_id("no-trace"))
        .await?;
    let explicit = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    publisher
        .send(
            &dest,
            Message::new("set")
                .with_id("explicit")
                .with_header(TRACEPARENT_HEADER, explicit),
        )
        .await?;
    let got = ctx.drain(&q, Duration::from_millis(400)).await?;
    check_eq!(got.len(), 3, "messages");
    let by_id = |id: &str| got.iter().find(|m| m.id == id).and_then(TraceContext::of);
    let inside = by_id("in-trace");
    check!(
        inside.is_some_and(|t| t.trace_id == root.trace_id && t.parent_id != root.parent_id),
        "in a trace: the same trace id, a new parent span ({inside:?} vs {root:?})"
    );
    let outside = by_id("no-trace");
    check!(
        outside.is_some_and(|t| t.trace_id != root.trace_id),
        "outside any trace: a new trace ({outside:?})"
    );
    check_eq!(
        by_id("explicit").map(|t| t.to_string()),
        Some(explicit.to_string()),
        "a traceparent the sender set is kept"
    );
    Ok(())
}
