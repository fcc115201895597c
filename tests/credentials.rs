//! Credentials with every reserved URL character: `scripts/brokers` creates a user whose name
//! and password hold `+ / @ : % ? # &` and spaces on RabbitMQ, Artemis and Classic
//! (`COOLMQ_TEST_ODD_USER`, `COOLMQ_TEST_ODD_PASSWORD`). Percent-encoded in the URL as RFC 3986
//! says, they must authenticate and carry a message; a wrong password must be
//! `AuthenticationFailed`; and no `Debug` or `Display` of the configuration, the broker or the
//! error may show the password.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use coolmq::{Config, ErrorKind, Message};
use libtest_mimic::{Arguments, Failed, Trial};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

#[path = "common/broker_var.rs"]
mod broker_var;
#[path = "common/rabbit_drivers.rs"]
mod rabbit_drivers;

type TestResult = Result<(), Failed>;

/// `base` with its user and password replaced by `user` and `password`, percent-encoded
/// (every character but letters and digits).
fn with_credentials(base: &str, user: &str, password: &str) -> String {
    let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let (scheme, rest) = base.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{}:{}@{host}", encode(user), encode(password))
}

fn odd() -> Option<(String, String)> {
    let user = std::env::var("COOLMQ_TEST_ODD_USER").ok()?;
    let password = std::env::var("COOLMQ_TEST_ODD_PASSWORD").ok()?;
    Some((user, password))
}

/// No rendering of `what` may show the password, raw or percent-encoded.
fn hides(password: &str, what: &str, rendered: &str) -> TestResult {
    let encoded = utf8_percent_encode(password, NON_ALPHANUMERIC).to_string();
    if rendered.contains(password) || rendered.contains(&encoded) {
        return Err(format!("{what} shows the password: {rendered}").into());
    }
    Ok(())
}

async fn authenticates(base: String) -> TestResult {
    let (user, password) = odd().ok_or("COOLMQ_TEST_ODD_USER / _PASSWORD not set")?;
    let url = with_credentials(&base, &user, &password);
    let config = Config::from_url(url.as_str())?;
    hides(&password, "Config's Debug", &format!("{config:?}"))?;
    let broker = coolmq::connect(&config)
        .await
        .map_err(|e| format!("the reserved-character user did not get in: {e}"))?;
    hides(&password, "Broker's Debug", &format!("{broker:?}"))?;
    let queue = format!("coolmq.test.credentials.{}", coolmq::new_message_id());
    broker.declare_queue(&broker.queue_spec(&queue)).await?;
    let publisher = broker.publisher().await?;
    publisher
        .send(&coolmq::Destination::queue(&queue), Message::new("odd"))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut consumer = broker.consumer(&queue).await?;
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
        .await
        .map_err(|_| "no delivery within 10 s")??
        .ok_or("the consumer ended")?;
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

async fn wrong_password_is_refused(base: String) -> TestResult {
    let (user, password) = odd().ok_or("COOLMQ_TEST_ODD_USER / _PASSWORD not set")?;
    let wrong = format!("{password}+wrong");
    let url = with_credentials(&base, &user, &wrong);
    let e = match coolmq::connect_url(&url).await {
        Ok(b) => {
            let _ = b.close().await;
            return Err("a wrong password got in".into());
        }
        Err(e) => e,
    };
    if e.kind() != ErrorKind::AuthenticationFailed {
        return Err(format!("expected AuthenticationFailed, got {:?}: {e}", e.kind()).into());
    }
    hides(&wrong, "the error's Display", &e.to_string())?;
    hides(&wrong, "the error's Debug", &format!("{e:?}"))?;
    Ok(())
}

type Case = fn(String) -> futures::future::BoxFuture<'static, TestResult>;

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let rt = Arc::new(tokio::runtime::Runtime::new().expect("runtime"));
    let mut trials = Vec::new();
    // RabbitMQ once per driver; the target name says which.
    let mut targets = vec![("rabbit-lapin", "COOLMQ_TEST_RABBIT_URL")];
    if cfg!(feature = "rabbit-amqprs") {
        targets.push(("rabbit-amqprs", "COOLMQ_TEST_RABBIT_URL"));
    }
    targets.push(("artemis", "COOLMQ_TEST_ARTEMIS_URL"));
    targets.push(("activemq", "COOLMQ_TEST_ACTIVEMQ_URL"));
    for (target, var) in targets {
        let base = std::env::var(var)
            .ok()
            .filter(|u| !u.is_empty())
            .map(|u| rabbit_drivers::on_driver(target, u));
        let cases: [(&str, Case); 2] = [
            (
                "reserved_characters_in_user_and_password_authenticate",
                |b| Box::pin(authenticates(b)),
            ),
            ("wrong_password_is_refused_without_showing_it", |b| {
                Box::pin(wrong_password_is_refused(b))
            }),
        ];
        for (name, case) in cases {
            let test = format!("{target}::credentials::{name}");
            match &base {
                None => trials.push(broker_var::missing(test, var)),
                Some(base) => {
                    let (rt, base) = (rt.clone(), base.clone());
                    trials.push(Trial::test(test, move || rt.block_on(case(base))));
                }
            }
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}
