//! TLS against the real brokers' TLS listeners (`scripts/brokers` makes a test CA and starts
//! them): RabbitMQ on 5671 requires client certificates; Artemis serves TLS on 5691, requires
//! client certificates on 5692 and presents a certificate for another host name on 5693;
//! Classic serves TLS on 5695. Each failure must be the typed, permanent `Tls` error naming
//! the check that failed, without a secret; each success must carry messages. The
//! conformance suite's `*-tls` targets run every case over these listeners too.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use coolmq::{Config, ErrorKind, Message};
use libtest_mimic::{Arguments, Failed, Trial};

#[path = "common/broker_var.rs"]
mod broker_var;
#[path = "common/rabbit_drivers.rs"]
mod rabbit_drivers;

type TestResult = Result<(), Failed>;

/// A URL's query with `tls_*` options replaced by `options`, on `port` (another listener of
/// the same broker).
fn variant(base: &str, port: u16, options: &[(&str, String)]) -> String {
    let mut u = url::Url::parse(base).expect("a TLS test URL");
    u.set_port(Some(port)).expect("port");
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| !k.starts_with("tls_"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .extend_pairs(options.iter().map(|(k, v)| (*k, v.as_str())));
    u.to_string()
}

fn tls_dir() -> String {
    std::env::var("COOLMQ_TEST_TLS_DIR").unwrap_or_default()
}

fn file(name: &str) -> String {
    format!("{}/{name}", tls_dir())
}

fn ca(name: &str) -> (&'static str, String) {
    ("tls_ca_file", file(name))
}

fn client_cert() -> [(&'static str, String); 2] {
    [
        ("tls_cert_file", file("client.pem")),
        ("tls_key_file", file("client.key")),
    ]
}

async fn connect(url: &str) -> coolmq::Result<coolmq::Broker> {
    let mut c = Config::from_url(url)?;
    c.connect_timeout = Duration::from_secs(10);
    coolmq::connect(&c).await
}

/// Connecting to `url` fails with a permanent `Tls` error whose text contains `says`, and
/// neither the text nor its debug form shows the password.
async fn refused(url: String, says: &'static str) -> TestResult {
    let e = match connect(&url).await {
        Ok(b) => {
            let _ = b.close().await;
            return Err(format!("connected to {url}: expected a TLS error saying {says:?}").into());
        }
        Err(e) => e,
    };
    let (text, debug) = (e.to_string(), format!("{e:?}"));
    println!("refused as expected: {text}");
    if e.kind() != ErrorKind::Tls {
        return Err(format!("expected a Tls error, got {:?}: {text}", e.kind()).into());
    }
    if e.is_temporary() {
        return Err(format!("a TLS failure must be permanent: {text}").into());
    }
    if !text.contains(says) {
        return Err(format!("the error should say {says:?}: {text}").into());
    }
    for secret in ["guest:guest", ":coolmq@", "BEGIN PRIVATE KEY"] {
        if text.contains(secret) || debug.contains(secret) {
            return Err(format!("the error shows a secret ({secret:?}): {debug}").into());
        }
    }
    Ok(())
}

/// Connecting to `url` works and a message makes the round trip.
async fn accepted(url: String) -> TestResult {
    let broker = connect(&url)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    let queue = format!("coolmq.test.tls.{}", coolmq::new_message_id());
    broker.declare_queue(&broker.queue_spec(&queue)).await?;
    let publisher = broker.publisher().await?;
    publisher
        .send(
            &coolmq::Destination::queue(&queue),
            Message::new("over tls"),
        )
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut consumer = broker.consumer(&queue).await?;
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
        .await
        .map_err(|_| "no delivery within 10 s")??
        .ok_or("the consumer ended")?;
    if &delivery.message().body[..] != b"over tls" {
        return Err("the body changed on the way".into());
    }
    delivery.ack().await?;
    consumer.close().await?;
    match broker.delete_queue(&queue).await {
        // Classic deletes idle queues itself (inactive-destination GC).
        Err(e) if e.kind() != ErrorKind::Unsupported => return Err(e.into()),
        _ => {}
    }
    broker.close().await?;
    Ok(())
}

type Case = Arc<dyn Fn(&str) -> futures::future::BoxFuture<'static, TestResult> + Send + Sync>;

fn case(
    f: impl Fn(String) -> futures::future::BoxFuture<'static, TestResult> + Send + Sync + 'static,
) -> Case {
    Arc::new(move |base: &str| f(base.to_string()))
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let rt = Arc::new(tokio::runtime::Runtime::new().expect("runtime"));
    // Ports as scripts/brokers sets them.
    let rabbit: Vec<(&str, Case)> = vec![
        (
            "client_certificate_and_private_ca_connect",
            case(|b| Box::pin(accepted(b))),
        ),
        (
            "wrong_ca_is_a_tls_error",
            case(|b| {
                let mut o = vec![ca("other-ca.pem")];
                o.extend(client_cert());
                Box::pin(refused(variant(&b, 5671, &o), "not signed by a trusted CA"))
            }),
        ),
        (
            "missing_client_certificate_is_refused",
            case(|b| {
                Box::pin(refused(
                    variant(&b, 5671, &[ca("ca.pem")]),
                    "client certificate",
                ))
            }),
        ),
        (
            "server_name_override_is_checked",
            case(|b| {
                let mut o = vec![
                    ca("ca.pem"),
                    ("tls_server_name", "broker.coolmq.test".to_string()),
                ];
                o.extend(client_cert());
                Box::pin(refused(
                    variant(&b, 5671, &o),
                    "not valid for the host name",
                ))
            }),
        ),
        (
            "ip_address_with_the_certificates_name_connects",
            case(|b| {
                let mut o = vec![ca("ca.pem"), ("tls_server_name", "localhost".to_string())];
                o.extend(client_cert());
                let mut u = url::Url::parse(&variant(&b, 5671, &o)).expect("url");
                u.set_host(Some("127.0.0.1")).expect("host");
                Box::pin(accepted(u.to_string()))
            }),
        ),
    ];
    let artemis: Vec<(&str, Case)> = vec![
        ("private_ca_connects", case(|b| Box::pin(accepted(b)))),
        (
            "wrong_ca_is_a_tls_error",
            case(|b| {
                Box::pin(refused(
                    variant(&b, 5691, &[ca("other-ca.pem")]),
                    "not signed by a trusted CA",
                ))
            }),
        ),
        (
            "missing_client_certificate_is_refused",
            case(|b| {
                Box::pin(refused(
                    variant(&b, 5692, &[ca("ca.pem")]),
                    "client certificate",
                ))
            }),
        ),
        (
            "client_certificate_connects",
            case(|b| {
                let mut o = vec![ca("ca.pem")];
                o.extend(client_cert());
                Box::pin(accepted(variant(&b, 5692, &o)))
            }),
        ),
        (
            "certificate_for_another_host_is_refused",
            case(|b| {
                Box::pin(refused(
                    variant(&b, 5693, &[ca("ca.pem")]),
                    "not valid for the host name",
                ))
            }),
        ),
        (
            "certificate_for_another_host_connects_with_the_override",
            case(|b| {
                let o = [
                    ca("ca.pem"),
                    ("tls_server_name", "broker.coolmq.test".to_string()),
                ];
                Box::pin(accepted(variant(&b, 5693, &o)))
            }),
        ),
    ];
    let classic: Vec<(&str, Case)> = vec![
        ("private_ca_connects", case(|b| Box::pin(accepted(b)))),
        (
            "wrong_ca_is_a_tls_error",
            case(|b| {
                Box::pin(refused(
                    variant(&b, 5695, &[ca("other-ca.pem")]),
                    "not signed by a trusted CA",
                ))
            }),
        ),
    ];
    let mut trials = Vec::new();
    // RabbitMQ once per driver; the target name says which.
    let mut targets = vec![("rabbit-lapin", "COOLMQ_TEST_RABBIT_TLS_URL", rabbit.clone())];
    if cfg!(feature = "rabbit-amqprs") {
        targets.push(("rabbit-amqprs", "COOLMQ_TEST_RABBIT_TLS_URL", rabbit));
    }
    targets.push(("artemis", "COOLMQ_TEST_ARTEMIS_TLS_URL", artemis));
    targets.push(("activemq", "COOLMQ_TEST_ACTIVEMQ_TLS_URL", classic));
    for (target, var, cases) in targets {
        let base = std::env::var(var)
            .ok()
            .filter(|u| !u.is_empty())
            .map(|u| rabbit_drivers::on_driver(target, u));
        for (name, case) in cases {
            let test = format!("{target}::tls::{name}");
            match &base {
                None => trials.push(broker_var::missing(test, var)),
                Some(base) => {
                    let (rt, base) = (rt.clone(), base.clone());
                    trials.push(Trial::test(test, move || rt.block_on(case(&base))));
                }
            }
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}
