//! ActiveMQ-only tests against the real brokers named by `COOLMQ_TEST_ARTEMIS_URL` and
//! `COOLMQ_TEST_ACTIVEMQ_URL` (Classic):
//! - a restart test per broker: 5,000 persistent sends while the broker is restarted
//!   (`scripts/brokers restart …`); every send resolves within 30 s, resending the failures
//!   loses nothing (fe2o3 has no reconnect: coolmq's own reconnection is what is tested);
//! - wrong credentials are a typed `AuthenticationFailed`, never a hang.
//!
//! Trials run one at a time (a restart disturbs everything on that broker). Without the URLs
//! they are listed as ignored with the reason, never silently absent.

use std::collections::HashSet;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coolmq::{Config, Destination, ErrorKind, Message};
use futures::stream::{self, StreamExt};
use libtest_mimic::{Arguments, Failed, Trial};

type TestResult = Result<(), Failed>;
type CaseFn = Box<dyn Fn(String) -> futures::future::BoxFuture<'static, TestResult> + Send + Sync>;

fn url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|u| !u.is_empty())
}

fn restart_broker(which: &str) -> Result<(), Failed> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/brokers");
    let out = Command::new(script)
        .args(["restart", which])
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "restart {which} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

async fn restart_loses_nothing(url: String, which: &'static str) -> TestResult {
    const N: usize = 5_000;
    let mut config = Config::from_url(url)?;
    config.confirm_timeout = Duration::from_secs(10);
    config.connect_timeout = Duration::from_secs(5);
    let broker = coolmq::connect(&config).await.map_err(|e| {
        format!("cannot reach ActiveMQ ({e}); start it with `scripts/brokers start`")
    })?;
    let queue = format!("coolmq.test.restart.{}", coolmq::new_message_id());
    broker
        .declare_queue(&broker.queue_spec(&queue).dead_letter_queue(None))
        .await?;
    let publisher = broker.publisher().await?;
    let done = Arc::new(AtomicUsize::new(0));
    let restarter = {
        let done = done.clone();
        tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < N / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let at = done.load(Ordering::SeqCst);
            let r = tokio::task::spawn_blocking(move || restart_broker(which))
                .await
                .expect("join");
            (at, Instant::now(), r)
        })
    };
    let start = Instant::now();
    let dest = Destination::queue(&queue);
    let results: Vec<_> = stream::iter(0..N)
        .map(|i| {
            let (p, dest, done) = (publisher.clone(), dest.clone(), done.clone());
            async move {
                tokio::time::sleep_until((start + Duration::from_millis(i as u64)).into()).await;
                let m = Message::new(vec![b'r'; 512]).with_id(format!("restart-{i}"));
                let r = tokio::time::timeout(Duration::from_secs(30), p.send(&dest, m)).await;
                done.fetch_add(1, Ordering::SeqCst);
                r
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let finished = Instant::now();
    let (restarted_at, restart_done, restart) =
        restarter.await.map_err(|e| format!("restarter: {e}"))?;
    restart?;
    let hangs = results.iter().filter(|r| r.is_err()).count();
    let failed: Vec<Message> = results
        .into_iter()
        .flatten()
        .filter_map(|r| r.err())
        .map(|e| e.into_message())
        .collect();
    let errors = failed.len();
    let mut resent = 0;
    for mut m in failed {
        let mut tries = 0;
        loop {
            match publisher.send(&dest, m).await {
                Ok(_) => break,
                Err(e) if tries < 100 => {
                    tries += 1;
                    m = e.into_message();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("resend kept failing: {e}").into()),
            }
        }
        resent += 1;
    }
    let mut consumer = broker.consumer_with_prefetch(&queue, 500).await?;
    let mut seen = HashSet::new();
    let mut received = 0usize;
    while let Ok(Ok(Some(d))) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await
    {
        received += 1;
        seen.insert(d.message().id.clone());
        d.ack().await?;
    }
    consumer.close().await?;
    let _ = broker.delete_queue(&queue).await;
    let lost = (0..N)
        .filter(|i| !seen.contains(&format!("restart-{i}")))
        .count();
    println!(
        "{which} restart test: sent={N} errors={errors} resent={resent} lost={lost} duplicates={} \
         hangs={hangs} restart_at_send={restarted_at} run={:?}",
        received - seen.len(),
        finished - start
    );
    if restart_done < start || restarted_at >= N {
        return Err("the restart did not happen during the run".into());
    }
    if hangs > 0 {
        return Err(format!("{hangs} sends did not resolve within 30 s").into());
    }
    if lost > 0 {
        return Err(format!("{lost} messages lost").into());
    }
    Ok(())
}

async fn wrong_credentials_are_typed(url: String) -> TestResult {
    let mut u = url::Url::parse(&url).map_err(|e| e.to_string())?;
    u.set_password(Some("not-the-password"))
        .map_err(|_| "cannot set password")?;
    let mut config = Config::from_url(u.to_string())?;
    config.connect_timeout = Duration::from_secs(10);
    match tokio::time::timeout(Duration::from_secs(20), coolmq::connect(&config)).await {
        Err(_) => Err("connecting with wrong credentials hung".into()),
        Ok(Ok(_)) => Err("wrong credentials were accepted".into()),
        Ok(Err(e)) if e.kind() == ErrorKind::AuthenticationFailed => {
            if e.to_string().contains("not-the-password") {
                return Err(format!("the password leaked into the error: {e}").into());
            }
            Ok(())
        }
        Ok(Err(e)) => Err(format!("expected AuthenticationFailed, got {e}").into()),
    }
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let rt = Arc::new(tokio::runtime::Runtime::new().expect("runtime"));
    let mut trials = Vec::new();
    for (name, var, which) in [
        ("artemis", "COOLMQ_TEST_ARTEMIS_URL", "artemis"),
        ("activemq", "COOLMQ_TEST_ACTIVEMQ_URL", "classic"),
    ] {
        let tests: [(&str, CaseFn); 2] = [
            (
                "credentials::wrong_password_is_authentication_failed",
                Box::new(|u| Box::pin(wrong_credentials_are_typed(u))),
            ),
            (
                "fault::broker_restart_loses_nothing",
                Box::new(move |u| Box::pin(restart_loses_nothing(u, which))),
            ),
        ];
        for (case, f) in tests {
            let full = format!("{name}::{case}");
            match url(var) {
                None => trials.push(
                    Trial::test(full, || Ok(()))
                        .with_kind(format!("needs {var} (scripts/test sets it)"))
                        .with_ignored_flag(true),
                ),
                Some(u) => {
                    let rt = rt.clone();
                    trials.push(Trial::test(full, move || rt.block_on(f(u))));
                }
            }
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}
