//! A poison message that kills its consumer process: a child worker process aborts
//! (`std::process::abort`) whenever it receives the poison message, and a supervisor restarts
//! it. With `maximum_redeliveries` 3 the poison message must reach `DLQ.<queue>` after exactly
//! 4 deliveries (the child records each one before aborting), the observer must fire once, and
//! the 100 ordinary messages queued behind it must each be processed once.
//!
//! Runs on RabbitMQ, Artemis (with its default address settings) and Classic through real
//! child processes (this test binary re-executed in child mode), and on the memory broker,
//! which lives inside one process, with the child as a task whose connection is closed under
//! it (the same thing the broker sees when a process dies).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use coolmq::dead_letter::ATTEMPTS_HEADER;
use coolmq::{
    Config, DeadLetterEvent, DeadLetterObserver, Destination, HandlerError, HeaderValue, Message,
    RedeliveryPolicy,
};
use libtest_mimic::{Arguments, Failed, Trial};

#[path = "common/broker_var.rs"]
mod broker_var;
#[path = "common/rabbit_drivers.rs"]
mod rabbit_drivers;

const POISON: &str = "poison";
const ORDINARY: usize = 100;
const MAX_REDELIVERIES: i32 = 3;
/// The whole run (5 child processes, 101 messages) must finish within this.
const DEADLINE: Duration = Duration::from_secs(120);

const CHILD_ENV: &str = "COOLMQ_POISON_CHILD";

/// Where a child writes what it saw.
#[derive(Clone)]
struct Files {
    /// One line per handler call: `<id> <attempt>`.
    calls: PathBuf,
    /// One line per dead-letter event: `<id> <attempts>`.
    dead: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Self {
        Files {
            calls: dir.join("calls"),
            dead: dir.join("dead"),
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Append a line and make it durable before anything else happens (the caller may abort).
fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open record");
    writeln!(f, "{line}").expect("write record");
    f.sync_data().expect("sync record");
}

struct FileObserver(PathBuf);

#[async_trait]
impl DeadLetterObserver for FileObserver {
    async fn on_dead_letter(&self, event: &DeadLetterEvent) {
        append(&self.0, &format!("{} {}", event.message.id, event.attempts));
    }
}

fn policy() -> RedeliveryPolicy {
    RedeliveryPolicy {
        maximum_redeliveries: MAX_REDELIVERIES,
        initial_redelivery_delay: Duration::from_millis(100),
        redelivery_delay: Duration::from_millis(100),
        ..Default::default()
    }
}

/// The child's worker: records every call, and `die`s on the poison message.
async fn start_worker<D, F>(
    broker: &coolmq::Broker,
    queue: &str,
    files: &Files,
    die: D,
) -> coolmq::Result<coolmq::Worker>
where
    D: Fn() -> F + Send + Sync + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let calls = files.calls.clone();
    broker
        .worker(queue)
        .prefetch(1)
        .policy(policy())
        .observer(Arc::new(FileObserver(files.dead.clone())))
        .start(move |incoming| {
            append(
                &calls,
                &format!("{} {}", incoming.message.id, incoming.attempt),
            );
            let dying = (incoming.message.id == POISON).then(&die);
            async move {
                if let Some(death) = dying {
                    death.await;
                }
                Ok::<(), HandlerError>(())
            }
        })
        .await
}

/// Child mode: consume until killed; abort the process on the poison message.
fn child(url: String, queue: String, dir: PathBuf) -> ExitCode {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let broker = coolmq::connect_url(&url).await.expect("child connects");
        let _worker = start_worker(&broker, &queue, &Files::new(&dir), || async {
            std::process::abort()
        })
        .await
        .expect("child worker starts");
        futures::future::pending::<()>().await;
    });
    ExitCode::SUCCESS
}

/// One generation of the consumer: a child process, or (memory) a task with its connection.
enum Generation {
    Process(std::process::Child),
    Task {
        broker: coolmq::Broker,
        worker: coolmq::Worker,
        died: tokio::sync::mpsc::Receiver<()>,
    },
}

enum Ended {
    Died,
    StillRunning,
}

impl Generation {
    async fn start(url: &str, queue: &str, dir: &Path) -> Result<Self, Failed> {
        if url.starts_with("memory://") {
            let broker = coolmq::connect_url(url).await?;
            let (tx, died) = tokio::sync::mpsc::channel(1);
            let worker = start_worker(&broker, queue, &Files::new(dir), move || {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(()).await;
                    futures::future::pending::<()>().await;
                }
            })
            .await?;
            return Ok(Generation::Task {
                broker,
                worker,
                died,
            });
        }
        let child = std::process::Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, "1")
            .env("COOLMQ_POISON_URL", url)
            .env("COOLMQ_POISON_QUEUE", queue)
            .env("COOLMQ_POISON_DIR", dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Generation::Process(child))
    }

    /// Whether this generation died (on the poison message); a process that exited any
    /// other way fails the test.
    fn poll(&mut self) -> Result<Ended, Failed> {
        match self {
            Generation::Process(child) => match child.try_wait()? {
                None => Ok(Ended::StillRunning),
                Some(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    if status.signal() == Some(6) {
                        Ok(Ended::Died)
                    } else {
                        Err(format!("the child exited with {status}, not by aborting").into())
                    }
                }
            },
            Generation::Task { died, .. } => Ok(match died.try_recv() {
                Ok(()) => Ended::Died,
                Err(_) => Ended::StillRunning,
            }),
        }
    }

    /// End it: a process is killed, a task's connection is closed under its unsettled
    /// delivery and its worker dropped (its tasks aborted), as a dying process leaves them.
    async fn end(self) {
        match self {
            Generation::Process(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Generation::Task { broker, worker, .. } => {
                let _ = broker.close().await;
                drop(worker);
            }
        }
    }
}

async fn poison_kills_its_consumer(url: String) -> Result<(), Failed> {
    let broker = coolmq::connect(&Config::from_url(url.clone())?).await?;
    let queue = format!("coolmq.test.poison-abort.{}", coolmq::new_message_id());
    let spec = broker.queue_spec(&queue);
    let dlq = spec
        .dead_letter_queue
        .clone()
        .ok_or("the queue spec has a dead-letter queue")?;
    broker.declare_queue(&spec).await?;
    let publisher = broker.publisher().await?;
    let dest = Destination::queue(&queue);
    publisher
        .send(&dest, Message::new("kills").with_id(POISON))
        .await?;
    for i in 0..ORDINARY {
        publisher
            .send(&dest, Message::new("fine").with_id(format!("ok-{i}")))
            .await?;
    }
    let dir = std::env::temp_dir().join(format!("coolmq-poison-{}", coolmq::new_message_id()));
    std::fs::create_dir_all(&dir)?;
    let files = Files::new(&dir);
    let ordinary_done = || {
        Files::lines(&files.calls)
            .iter()
            .filter(|l| l.starts_with("ok-"))
            .count()
            >= ORDINARY
    };
    let start = Instant::now();
    let mut deaths = 0;
    'generations: loop {
        let mut generation = Generation::start(&url, &queue, &dir).await?;
        loop {
            if let Ended::Died = generation.poll()? {
                deaths += 1;
                generation.end().await;
                break;
            }
            if !Files::lines(&files.dead).is_empty() && ordinary_done() {
                // Anything still to come (a duplicate, another call) shows within this pause.
                tokio::time::sleep(Duration::from_millis(500)).await;
                generation.end().await;
                break 'generations;
            }
            if start.elapsed() > DEADLINE {
                generation.end().await;
                return Err(format!(
                    "not done within {DEADLINE:?}: {deaths} deaths, calls {:?}, dead-lettered {:?}",
                    Files::lines(&files.calls).len(),
                    Files::lines(&files.dead)
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut attempts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for line in Files::lines(&files.calls) {
        let (id, attempt) = line.split_once(' ').ok_or("malformed record")?;
        attempts
            .entry(id.to_string())
            .or_default()
            .push(attempt.parse().map_err(|_| "malformed attempt")?);
    }
    let dead = Files::lines(&files.dead);
    let poison_attempts = attempts.remove(POISON).unwrap_or_default();
    println!(
        "{}: poison attempts {poison_attempts:?}, deaths {deaths}, dead-letter events {dead:?}, ordinary ids {}",
        coolmq::redact_url(&url),
        attempts.len()
    );
    let expected: Vec<u32> = (1..=MAX_REDELIVERIES as u32 + 1).collect();
    if url.starts_with("amqp1://") && !url.contains("broker=classic") {
        // Artemis over AMQP counts a delivery whose consumer died only when its connection
        // failure is handled before the link's close (docs/DESIGN.md, "Counting deliveries"):
        // the attempts never go back, every one up to the limit is seen, and the message
        // still ends in DLQ.<queue>, but a death may go uncounted.
        let mut seen = poison_attempts.clone();
        seen.dedup();
        if seen != expected || !poison_attempts.is_sorted() {
            return Err(format!("poison deliveries to the handler: {poison_attempts:?}, expected each of {expected:?} in order").into());
        }
        if deaths != poison_attempts.len() {
            return Err(format!(
                "{deaths} consumer deaths for {} poison deliveries",
                poison_attempts.len()
            )
            .into());
        }
    } else {
        if poison_attempts != expected {
            return Err(format!(
                "poison deliveries to the handler: {poison_attempts:?}, expected {expected:?}"
            )
            .into());
        }
        if deaths != expected.len() {
            return Err(format!("{deaths} consumer deaths, expected {}", expected.len()).into());
        }
    }
    let want_dead = vec![format!("{POISON} {}", MAX_REDELIVERIES + 2)];
    if dead != want_dead {
        return Err(format!("dead-letter events {dead:?}, expected {want_dead:?}").into());
    }
    if attempts.len() != ORDINARY {
        return Err(format!(
            "{} ordinary ids handled, expected {ORDINARY}",
            attempts.len()
        )
        .into());
    }
    if let Some((id, a)) = attempts.iter().find(|(_, a)| a.as_slice() != [1]) {
        return Err(format!("{id} was handled with attempts {a:?}, expected exactly once").into());
    }
    // The broker side: the poison message in DLQ.<queue> with its attempts, nothing left.
    let mut in_dlq = Vec::new();
    let mut consumer = broker.consumer_with_prefetch(&dlq, 10).await?;
    while let Ok(Ok(Some(d))) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await
    {
        in_dlq.push((
            d.message().id.clone(),
            d.message().headers.get(ATTEMPTS_HEADER).cloned(),
        ));
        d.ack().await?;
    }
    consumer.close().await?;
    let want = vec![(
        POISON.to_string(),
        Some(HeaderValue::I32(MAX_REDELIVERIES + 2)),
    )];
    if in_dlq != want {
        return Err(format!("{dlq} holds {in_dlq:?}, expected {want:?}").into());
    }
    let left = broker.queue_depth(&queue).await?;
    if left != 0 {
        return Err(format!("{left} messages left in {queue}").into());
    }
    let _ = broker.delete_queue(&queue).await;
    let _ = broker.delete_queue(&dlq).await;
    broker.close().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> ExitCode {
    if std::env::var_os(CHILD_ENV).is_some() {
        let var = |name: &str| std::env::var(name).expect("child environment");
        return child(
            var("COOLMQ_POISON_URL"),
            var("COOLMQ_POISON_QUEUE"),
            PathBuf::from(var("COOLMQ_POISON_DIR")),
        );
    }
    let args = Arguments::from_args();
    let rt = Arc::new(tokio::runtime::Runtime::new().expect("runtime"));
    let mut targets = vec![
        ("memory", None),
        ("rabbit-lapin", Some("COOLMQ_TEST_RABBIT_URL")),
        ("artemis", Some("COOLMQ_TEST_ARTEMIS_URL")),
        ("activemq", Some("COOLMQ_TEST_ACTIVEMQ_URL")),
    ];
    if cfg!(feature = "rabbit-amqprs") {
        targets.insert(2, ("rabbit-amqprs", Some("COOLMQ_TEST_RABBIT_URL")));
    }
    let trials = targets
        .into_iter()
        .map(|(name, var)| {
            let test = format!("{name}::poison::abort_on_poison_dead_letters_after_max_plus_one");
            let url = match var {
                None => Some(format!("memory://poison-{}", coolmq::new_message_id())),
                Some(var) => std::env::var(var)
                    .ok()
                    .filter(|u| !u.is_empty())
                    .map(|u| rabbit_drivers::on_driver(name, u)),
            };
            match url {
                Some(url) => {
                    let rt = rt.clone();
                    Trial::test(test, move || rt.block_on(poison_kills_its_consumer(url)))
                }
                None => broker_var::missing(test, var.unwrap_or_default()),
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
