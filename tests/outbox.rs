//! The outbox and the inbox on real databases: SQLite (a file per test) and PostgreSQL
//! (`COOLMQ_TEST_POSTGRES_URL`, a schema per test, started by `scripts/brokers`). Every case
//! runs on both. The crash case SIGKILLs a child process (this same test binary) in the middle
//! of relaying into RabbitMQ (`COOLMQ_TEST_RABBIT_URL`).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use coolmq::outbox::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use coolmq::outbox::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use coolmq::outbox::sqlx::{self, Pool, Postgres, Sqlite};
use coolmq::outbox::{Inbox, Outbox, OutboxDatabase, Received};
use coolmq::{
    Broker, DeadLetterEvent, DeadLetterObserver, Destination, Message, QueueSpec, RedeliveryPolicy,
};
use libtest_mimic::{Arguments, Failed, Trial};

#[path = "common/broker_var.rs"]
mod broker_var;

type TestResult = Result<(), Failed>;

fn fail(msg: impl Into<String>) -> Failed {
    msg.into().into()
}

/// A test database: the pool, plus how to run the application's own SQL on it.
#[async_trait]
trait TestDb: OutboxDatabase {
    /// A fresh, empty database (SQLite file / PostgreSQL schema) and its connection text.
    async fn fresh() -> Result<(Pool<Self>, String), Failed>;
    /// Connect to a database made by `fresh` (the crash test's child and restart).
    async fn open(conn: &str) -> Result<Pool<Self>, Failed>;
    /// Run `sql` (no parameters) in the caller's transaction.
    async fn exec(tx: &mut sqlx::Transaction<'static, Self>, sql: &str) -> Result<(), Failed>;
    /// One integer from `sql`.
    async fn scalar(pool: &Pool<Self>, sql: &str) -> Result<i64, Failed>;
    /// Remove the database.
    async fn drop_db(pool: Pool<Self>, conn: &str);
}

#[async_trait]
impl TestDb for Sqlite {
    async fn fresh() -> Result<(Pool<Self>, String), Failed> {
        let path = std::env::temp_dir().join(format!(
            "coolmq-outbox-{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let conn = path.display().to_string();
        Ok((Self::open(&conn).await?, conn))
    }

    async fn open(conn: &str) -> Result<Pool<Self>, Failed> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{conn}"))
            .map_err(|e| fail(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
        SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(|e| fail(format!("SQLite {conn}: {e}")))
    }

    async fn exec(tx: &mut sqlx::Transaction<'static, Self>, sql: &str) -> Result<(), Failed> {
        sqlx::query(sql)
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(|e| fail(format!("{sql}: {e}")))
    }

    async fn scalar(pool: &Pool<Self>, sql: &str) -> Result<i64, Failed> {
        sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await
            .map_err(|e| fail(format!("{sql}: {e}")))
    }

    async fn drop_db(pool: Pool<Self>, conn: &str) {
        pool.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{conn}{suffix}"));
        }
    }
}

fn postgres_url() -> Option<String> {
    std::env::var("COOLMQ_TEST_POSTGRES_URL").ok()
}

#[async_trait]
impl TestDb for Postgres {
    async fn fresh() -> Result<(Pool<Self>, String), Failed> {
        let url = postgres_url().ok_or_else(|| fail("COOLMQ_TEST_POSTGRES_URL is not set"))?;
        let schema = format!("coolmq_t_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&url).await.map_err(|e| {
            fail(format!(
                "PostgreSQL at {url} is unreachable ({e}); start it with `scripts/brokers postgres`"
            ))
        })?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .map_err(|e| fail(e.to_string()))?;
        admin.close().await;
        let conn = format!("{url}#{schema}");
        Ok((Self::open(&conn).await?, conn))
    }

    async fn open(conn: &str) -> Result<Pool<Self>, Failed> {
        let (url, schema) = conn.split_once('#').ok_or_else(|| fail("bad test conn"))?;
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| fail(e.to_string()))?
            .options([("search_path", schema)]);
        PgPoolOptions::new()
            .max_connections(12)
            .connect_with(options)
            .await
            .map_err(|e| {
                fail(format!(
                    "PostgreSQL: {e}; start it with `scripts/brokers postgres`"
                ))
            })
    }

    async fn exec(tx: &mut sqlx::Transaction<'static, Self>, sql: &str) -> Result<(), Failed> {
        sqlx::query(sql)
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(|e| fail(format!("{sql}: {e}")))
    }

    async fn scalar(pool: &Pool<Self>, sql: &str) -> Result<i64, Failed> {
        sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await
            .map_err(|e| fail(format!("{sql}: {e}")))
    }

    async fn drop_db(pool: Pool<Self>, conn: &str) {
        pool.close().await;
        if let Some((url, schema)) = conn.split_once('#') {
            if let Ok(admin) = sqlx::PgPool::connect(url).await {
                let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&admin)
                    .await;
                admin.close().await;
            }
        }
    }
}

/// A quick retry schedule for tests: every 50 ms, `max` redeliveries.
fn quick_retries(max: i32) -> RedeliveryPolicy {
    RedeliveryPolicy {
        maximum_redeliveries: max,
        initial_redelivery_delay: Duration::from_millis(50),
        redelivery_delay: Duration::from_millis(50),
        ..Default::default()
    }
}

/// A private in-process broker (memory brokers are shared by name within a process).
async fn memory() -> Result<Broker, Failed> {
    let name = uuid::Uuid::new_v4().simple().to_string();
    let mut config = coolmq::Config::from_url(format!("memory://t{name}"))?;
    config.confirm_timeout = Duration::from_millis(500);
    Ok(coolmq::connect(&config).await?)
}

fn unique(prefix: &str) -> String {
    format!("coolmq.test.{prefix}.{}", uuid::Uuid::new_v4().simple())
}

/// Receive every message of `queue` until it stays quiet for `quiet`; ids in arrival order.
async fn drain_ids(broker: &Broker, queue: &str, quiet: Duration) -> Result<Vec<String>, Failed> {
    let mut consumer = broker.consumer_with_prefetch(queue, 500).await?;
    let mut ids = Vec::new();
    while let Ok(Ok(Some(d))) = tokio::time::timeout(quiet, consumer.recv()).await {
        ids.push(d.message().id.clone());
        d.ack().await?;
    }
    consumer.close().await?;
    Ok(ids)
}

/// Wait until the outbox has no pending rows.
async fn until_drained<DB: OutboxDatabase>(outbox: &Outbox<DB>, limit: Duration) -> TestResult {
    let start = Instant::now();
    loop {
        let counts = outbox.counts().await?;
        if counts.pending == 0 {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(fail(format!("outbox still has {counts:?} after {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const ORDERS: &str = "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY)";

/// The caller's commit delivers its message; its rollback (explicit or by drop) never does.
async fn commit_delivers_rollback_never<DB: TestDb>() -> TestResult {
    let (pool, conn) = DB::fresh().await?;
    let broker = memory().await?;
    let queue = unique("commit");
    broker.declare_queue(&QueueSpec::new(&queue)).await?;
    let outbox = Outbox::new(pool.clone()).await?;
    let mut tx = pool.begin().await.map_err(|e| fail(e.to_string()))?;
    DB::exec(&mut tx, ORDERS).await?;
    tx.commit().await.map_err(|e| fail(e.to_string()))?;
    let dest = Destination::queue(&queue);
    for (i, outcome) in ["commit", "rollback", "drop", "commit"].iter().enumerate() {
        let mut tx = pool.begin().await.map_err(|e| fail(e.to_string()))?;
        DB::exec(
            &mut tx,
            &format!("INSERT INTO orders (id) VALUES ('o-{i}')"),
        )
        .await?;
        let m = Message::new(format!("order {i}")).with_id(format!("{outcome}-{i}"));
        let id = outbox.enqueue(&mut tx, &dest, &m).await?;
        if id != m.id {
            return Err(fail("enqueue changed the message id"));
        }
        match *outcome {
            "commit" => outbox.commit(tx).await?,
            "rollback" => tx.rollback().await.map_err(|e| fail(e.to_string()))?,
            _ => drop(tx),
        }
    }
    let relay = outbox
        .relay(broker.publisher().await?)
        .poll_interval(Duration::from_millis(100))
        .spawn();
    until_drained(&outbox, Duration::from_secs(10)).await?;
    let stats = relay.shutdown().await?;
    let ids = drain_ids(&broker, &queue, Duration::from_millis(300)).await?;
    let orders = DB::scalar(&pool, "SELECT COUNT(*) FROM orders").await?;
    DB::drop_db(pool, &conn).await;
    if ids != ["commit-0", "commit-3"] {
        return Err(fail(format!(
            "delivered {ids:?}, want the two committed, in order"
        )));
    }
    if orders != 2 || stats.published != 2 {
        return Err(fail(format!("orders={orders} stats={stats:?}")));
    }
    Ok(())
}

/// A destination that does not exist yet: the row stays and is retried (attempts counted)
/// until the queue is declared, then delivered once with its id.
async fn unroutable_retried_until_the_queue_exists<DB: TestDb>() -> TestResult {
    let (pool, conn) = DB::fresh().await?;
    let broker = memory().await?;
    let queue = unique("later");
    let outbox = Outbox::new(pool.clone()).await?;
    let mut tx = pool.begin().await.map_err(|e| fail(e.to_string()))?;
    outbox
        .enqueue(
            &mut tx,
            &Destination::queue(&queue),
            &Message::new("x").with_id("late-1"),
        )
        .await?;
    outbox.commit(tx).await?;
    let relay = outbox
        .relay(broker.publisher().await?)
        .retry_policy(quick_retries(1000))
        .spawn();
    let start = Instant::now();
    while relay.stats().failed_attempts < 3 {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(fail(format!("no retries: {:?}", relay.stats())));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let attempts = DB::scalar(&pool, "SELECT CAST(attempts AS BIGINT) FROM coolmq_outbox").await?;
    if attempts < 3 {
        return Err(fail(format!("attempts column {attempts}, want ≥ 3")));
    }
    broker.declare_queue(&QueueSpec::new(&queue)).await?;
    until_drained(&outbox, Duration::from_secs(10)).await?;
    let stats = relay.shutdown().await?;
    let ids = drain_ids(&broker, &queue, Duration::from_millis(300)).await?;
    DB::drop_db(pool, &conn).await;
    if ids != ["late-1"] || stats.published != 1 || stats.parked != 0 {
        return Err(fail(format!("ids={ids:?} stats={stats:?}")));
    }
    Ok(())
}

/// A negative confirm leaves the row; the retry delivers it.
async fn nack_is_retried<DB: TestDb>() -> TestResult {
    let (pool, conn) = DB::fresh().await?;
    let broker = memory().await?;
    let queue = unique("nack");
    broker.declare_queue(&QueueSpec::new(&queue)).await?;
    let faults = coolmq::memory::Faults::of(broker.config())?;
    let outbox = Outbox::new(pool.clone()).await?;
    let mut tx = pool.begin().await.map_err(|e| fail(e.to_string()))?;
    outbox
        .enqueue(
            &mut tx,
            &Destination::queue(&queue),
            &Message::new("x").with_id("nacked-1"),
        )
        .await?;
    outbox.commit(tx).await?;
    faults.nack_next_publish();
    let relay = outbox
        .relay(broker.publisher().await?)
        .retry_policy(quick_retries(10))
        .spawn();
    until_drained(&outbox, Duration::from_secs(10)).await?;
    let stats = relay.shutdown().await?;
    let ids = drain_ids(&broker, &queue, Duration::from_millis(300)).await?;
    DB::drop_db(pool, &conn).await;
    if ids != ["nacked-1"] || stats.failed_attempts != 1 || stats.published != 1 {
        return Err(fail(format!("ids={ids:?} stats={stats:?}")));
    }
    Ok(())
}

#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<DeadLetterEvent>>);

#[async_trait]
impl DeadLetterObserver for Recorder {
    async fn on_dead_letter(&self, event: &DeadLetterEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

/// Past the maximum attempts the row is parked (kept, not retried) and the observer fires
/// once; the other rows are unaffected.
async fn parked_after_max_attempts_fires_the_observer<DB: TestDb>() -> TestResult {
    let (pool, conn) = DB::fresh().await?;
    let broker = memory().await?;
    let good = unique("good");
    let missing = unique("missing");
    broker.declare_queue(&QueueSpec::new(&good)).await?;
    let outbox = Outbox::new(pool.clone()).await?;
    let mut tx = pool.begin().await.map_err(|e| fail(e.to_string()))?;
    outbox
        .enqueue(
            &mut tx,
            &Destination::queue(&missing),
            &Message::new("p").with_id("poison"),
        )
        .await?;
    outbox
        .enqueue(
            &mut tx,
            &Destination::queue(&good),
            &Message::new("g").with_id("fine"),
        )
        .await?;
    outbox.commit(tx).await?;
    let recorder = Arc::new(Recorder::default());
    let relay = outbox
        .relay(broker.publisher().await?)
        .retry_policy(quick_retries(2))
        .observer(recorder.clone())
        .spawn();
    until_drained(&outbox, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await; // a parked row must stay parked
    let stats = relay.shutdown().await?;
    let counts = outbox.counts().await?;
    let attempts = DB::scalar(
        &pool,
        "SELECT CAST(attempts AS BIGINT) FROM coolmq_outbox WHERE id = 'poison'",
    )
    .await?;
    let ids = drain_ids(&broker, &good, Duration::from_millis(300)).await?;
    DB::drop_db(pool, &conn).await;
    let events = recorder.0.lock().unwrap().clone();
    if counts.parked != 1 || attempts != 3 || stats.parked != 1 || ids != ["fine"] {
        return Err(fail(format!(
            "counts={counts:?} attempts={attempts} stats={stats:?} ids={ids:?}"
        )));
    }
    match events.as_slice() {
        [e] if e.message.id == "poison" && e.attempts == 3 && e.queue == missing => Ok(()),
        other => Err(fail(format!("observer events {other:?}"))),
    }
}

/// 4 relays drain 20,000 rows: every row delivered exactly once — no row published by two
/// relays — and the work is shared.
async fn four_relays_20000_rows<DB: TestDb>() -> TestResult {
    const ROWS: usize = 20_000;
    let (pool, conn) = DB::fresh().await?;
    let broker = memory().await?;
    let queue = unique("four");
    broker
        .declare_queue(&QueueSpec::new(&queue).dead_letter_queue(None))
        .await?;
    let outbox = Outbox::new(pool.clone()).await?;
    let dest = Destination::queue(&queue);
    for chunk in 0..ROWS / 500 {
        let mut tx = pool.begin().await.map_err(|e| fail(e.to_string()))?;
        for i in chunk * 500..(chunk + 1) * 500 {
            outbox
                .enqueue(
                    &mut tx,
                    &dest,
                    &Message::new("r").with_id(format!("row-{i}")),
                )
                .await?;
        }
        tx.commit().await.map_err(|e| fail(e.to_string()))?;
    }
    let start = Instant::now();
    let relays: Vec<_> = (0..4)
        .map(|n| {
            let outbox = outbox.clone();
            let broker = broker.clone();
            async move {
                Ok::<_, Failed>(
                    outbox
                        .relay(broker.publisher().await?)
                        .name(format!("relay-{n}"))
                        .batch_size(200)
                        .poll_interval(Duration::from_millis(50))
                        .spawn(),
                )
            }
        })
        .collect();
    let relays = futures::future::try_join_all(relays).await?;
    until_drained(&outbox, Duration::from_secs(120)).await?;
    let elapsed = start.elapsed();
    let mut per_relay = Vec::new();
    for r in relays {
        per_relay.push(r.shutdown().await?.published);
    }
    let ids = drain_ids(&broker, &queue, Duration::from_millis(500)).await?;
    DB::drop_db(pool, &conn).await;
    let distinct: HashSet<&String> = ids.iter().collect();
    let total: u64 = per_relay.iter().sum();
    println!(
        "{} four relays: rows={ROWS} received={} distinct={} per_relay={per_relay:?} in {elapsed:?}",
        <DB as OutboxDatabase>::NAME,
        ids.len(),
        distinct.len()
    );
    if ids.len() != ROWS || distinct.len() != ROWS || total != ROWS as u64 {
        return Err(fail(format!(
            "received {} ({} distinct), relays published {total}, want {ROWS} once each",
            ids.len(),
            distinct.len()
        )));
    }
    if per_relay.iter().filter(|n| **n > 0).count() < 2 {
        return Err(fail(format!("one relay did all the work: {per_relay:?}")));
    }
    Ok(())
}

/// A lost confirm makes the relay resend (same id): two copies reach the queue, and the
/// inbox applies the handler's effect once.
async fn lost_confirm_duplicate_applied_once<DB: TestDb>() -> TestResult {
    let (pool, conn) = DB::fresh().await?;
    let broker = memory().await?;
    let queue = unique("dup");
    broker.declare_queue(&QueueSpec::new(&queue)).await?;
    let faults = coolmq::memory::Faults::of(broker.config())?;
    let outbox = Outbox::new(pool.clone()).await?;
    let inbox = Inbox::new(pool.clone(), "payments").await?;
    let mut tx = pool.begin().await.map_err(|e| fail(e.to_string()))?;
    DB::exec(
        &mut tx,
        "CREATE TABLE IF NOT EXISTS payments (order_id TEXT, amount BIGINT)",
    )
    .await?;
    outbox
        .enqueue(
            &mut tx,
            &Destination::queue(&queue),
            &Message::new("42").with_id("order-7"),
        )
        .await?;
    faults.lose_next_confirm();
    outbox.commit(tx).await?;
    let relay = outbox
        .relay(broker.publisher().await?)
        .retry_policy(quick_retries(10))
        .spawn();
    until_drained(&outbox, Duration::from_secs(10)).await?;
    let stats = relay.shutdown().await?;
    let mut consumer = broker.consumer(&queue).await?;
    let (mut new, mut duplicate) = (0, 0);
    while let Ok(Ok(Some(d))) =
        tokio::time::timeout(Duration::from_millis(300), consumer.recv()).await
    {
        match inbox.begin(&d.message().id).await? {
            Received::New(mut tx) => {
                let body = String::from_utf8_lossy(&d.message().body).into_owned();
                DB::exec(
                    &mut tx,
                    &format!("INSERT INTO payments VALUES ('{}', {body})", d.message().id),
                )
                .await?;
                tx.commit().await.map_err(|e| fail(e.to_string()))?;
                new += 1;
            }
            Received::Duplicate => duplicate += 1,
        }
        d.ack().await?;
    }
    consumer.close().await?;
    let rows = DB::scalar(&pool, "SELECT COUNT(*) FROM payments").await?;
    DB::drop_db(pool, &conn).await;
    if stats.failed_attempts < 1 || new != 1 || duplicate != 1 || rows != 1 {
        return Err(fail(format!(
            "stats={stats:?} new={new} duplicate={duplicate} payments={rows} (want 1 resend, 1 new, 1 duplicate, 1 row)"
        )));
    }
    Ok(())
}

/// A handler whose transaction rolls back leaves no record: the redelivery runs it again.
/// Expiry forgets old ids only.
async fn rollback_forgets_and_expiry_removes_old_ids<DB: TestDb>() -> TestResult {
    let (pool, conn) = DB::fresh().await?;
    let inbox = Inbox::new(pool.clone(), "billing").await?;
    let other = Inbox::new(pool.clone(), "shipping").await?;
    match inbox.begin("m-1").await? {
        Received::New(tx) => tx.rollback().await.map_err(|e| fail(e.to_string()))?,
        Received::Duplicate => return Err(fail("first sight was a duplicate")),
    }
    let Received::New(tx) = inbox.begin("m-1").await? else {
        return Err(fail("a rolled-back id was remembered"));
    };
    tx.commit().await.map_err(|e| fail(e.to_string()))?;
    if !matches!(inbox.begin("m-1").await?, Received::Duplicate) {
        return Err(fail("a committed id was not remembered"));
    }
    let Received::New(tx) = other.begin("m-1").await? else {
        return Err(fail("another consumer's record deduplicated this one"));
    };
    tx.commit().await.map_err(|e| fail(e.to_string()))?;
    let kept = inbox.expire(Duration::from_secs(3600)).await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let removed = inbox.expire(Duration::from_millis(1)).await?;
    let fresh_again = matches!(inbox.begin("m-1").await?, Received::New(_));
    DB::drop_db(pool, &conn).await;
    if kept != 0 || removed != 2 || !fresh_again {
        return Err(fail(format!(
            "expire(1h) removed {kept}, expire(1ms) removed {removed}, new after expiry {fresh_again}"
        )));
    }
    Ok(())
}

/// The relay wakes when a transaction commits, not by polling (its poll interval is a minute):
/// SQLite through `Outbox::commit` in this process; PostgreSQL through NOTIFY, from a plain
/// `commit` on another pool, as another process would.
async fn commit_wakes_the_relay_without_polling<DB: TestDb>() -> TestResult {
    let (pool, conn) = DB::fresh().await?;
    let broker = memory().await?;
    let queue = unique("wake");
    broker.declare_queue(&QueueSpec::new(&queue)).await?;
    let outbox = Outbox::new(pool.clone()).await?;
    let relay = outbox
        .relay(broker.publisher().await?)
        .poll_interval(Duration::from_secs(60))
        .spawn();
    tokio::time::sleep(Duration::from_millis(300)).await; // the relay is idle, waiting
    let start = Instant::now();
    if <DB as OutboxDatabase>::NAME == "postgres" {
        let other = Outbox::new(DB::open(&conn).await?).await?;
        let mut tx = other
            .pool()
            .begin()
            .await
            .map_err(|e| fail(e.to_string()))?;
        other
            .enqueue(
                &mut tx,
                &Destination::queue(&queue),
                &Message::new("w").with_id("woken"),
            )
            .await?;
        tx.commit().await.map_err(|e| fail(e.to_string()))?;
    } else {
        let mut tx = pool.begin().await.map_err(|e| fail(e.to_string()))?;
        outbox
            .enqueue(
                &mut tx,
                &Destination::queue(&queue),
                &Message::new("w").with_id("woken"),
            )
            .await?;
        outbox.commit(tx).await?;
    }
    until_drained(&outbox, Duration::from_secs(10)).await?;
    let took = start.elapsed();
    relay.shutdown().await?;
    DB::drop_db(pool, &conn).await;
    if took > Duration::from_secs(5) {
        return Err(fail(format!(
            "the relay took {took:?}: it polled instead of waking"
        )));
    }
    Ok(())
}

// ---- the crash test ------------------------------------------------------------------------

const CHILD_ENV: &str = "COOLMQ_OUTBOX_CRASH_CHILD";
const COMMITTED: usize = 5_000;
const ROLLED_BACK: usize = 500;

/// The child: commit `COMMITTED` rows (and roll back `ROLLED_BACK` others), say so, then relay
/// into RabbitMQ until killed.
async fn crash_child<DB: TestDb>(conn: String, queue: String, rabbit: String) -> TestResult {
    let pool = DB::open(&conn).await?;
    let outbox = Outbox::new(pool.clone()).await?;
    let dest = Destination::queue(&queue);
    for chunk in 0..COMMITTED / 50 {
        let mut tx = pool.begin().await.map_err(|e| fail(e.to_string()))?;
        for i in chunk * 50..(chunk + 1) * 50 {
            outbox
                .enqueue(&mut tx, &dest, &Message::new("c").with_id(format!("c-{i}")))
                .await?;
        }
        tx.commit().await.map_err(|e| fail(e.to_string()))?;
        if chunk < ROLLED_BACK / 50 {
            let mut tx = pool.begin().await.map_err(|e| fail(e.to_string()))?;
            for i in chunk * 50..(chunk + 1) * 50 {
                outbox
                    .enqueue(&mut tx, &dest, &Message::new("r").with_id(format!("r-{i}")))
                    .await?;
            }
            tx.rollback().await.map_err(|e| fail(e.to_string()))?;
        }
    }
    println!("committed");
    let broker = coolmq::connect_url(&rabbit).await?;
    let _relay = outbox
        .relay(broker.publisher().await?)
        .batch_size(50)
        .lease(Duration::from_secs(2))
        .spawn();
    std::future::pending::<()>().await;
    Ok(())
}

/// SIGKILL the relaying child mid-run; a restarted relay delivers every committed row and
/// none of the rolled-back ones.
async fn sigkill_mid_relay_delivers_every_committed_row<DB: TestDb>() -> TestResult {
    let rabbit = std::env::var("COOLMQ_TEST_RABBIT_URL").map_err(|_| {
        fail("COOLMQ_TEST_RABBIT_URL is not set; start RabbitMQ with `scripts/brokers start`")
    })?;
    let (pool, conn) = DB::fresh().await?;
    let broker = coolmq::connect_url(&rabbit).await?;
    let queue = unique("crash");
    broker.declare_queue(&QueueSpec::new(&queue)).await?;
    let mut child = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, <DB as OutboxDatabase>::NAME)
        .env("COOLMQ_OUTBOX_CRASH_CONN", &conn)
        .env("COOLMQ_OUTBOX_CRASH_QUEUE", &queue)
        .env("COOLMQ_OUTBOX_CRASH_RABBIT", &rabbit)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    if line.trim() != "committed" {
        let _ = child.kill();
        return Err(fail(format!("the child said {line:?}")));
    }
    let start = Instant::now();
    let at_kill = loop {
        let depth = broker.queue_depth(&queue).await?;
        if depth >= 1_000 {
            break depth;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            return Err(fail(format!(
                "the child's relay published only {depth} in 60 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    child.kill()?; // SIGKILL
    child.wait()?;
    let outbox = Outbox::new(DB::open(&conn).await?).await?;
    let left = outbox.counts().await?.pending;
    if left == 0 {
        return Err(fail(
            "the child relayed everything before the kill; the test proved nothing",
        ));
    }
    let relay = outbox
        .relay(broker.publisher().await?)
        .poll_interval(Duration::from_millis(200))
        .spawn();
    until_drained(&outbox, Duration::from_secs(60)).await?;
    let stats = relay.shutdown().await?;
    let ids = drain_ids(&broker, &queue, Duration::from_secs(1)).await?;
    broker.delete_queue(&queue).await?;
    broker.delete_queue(&format!("DLQ.{queue}")).await?;
    DB::drop_db(pool, &conn).await;
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *copies.entry(id.as_str()).or_default() += 1;
    }
    let lost = (0..COMMITTED)
        .filter(|i| !copies.contains_key(format!("c-{i}").as_str()))
        .count();
    let rolled_back = copies.keys().filter(|id| id.starts_with("r-")).count();
    let duplicates = ids.len() - copies.len();
    println!(
        "{} crash test: committed={COMMITTED} rolled_back_sent={rolled_back} in_queue_at_kill={at_kill} \
         pending_after_kill={left} republished_after_restart={} received={} lost={lost} duplicates={duplicates}",
        <DB as OutboxDatabase>::NAME,
        stats.published,
        ids.len()
    );
    if lost > 0 || rolled_back > 0 {
        return Err(fail(format!(
            "lost={lost} rolled_back_delivered={rolled_back}"
        )));
    }
    // The restarted relay publishes each row left pending once; a second copy can come only
    // from the child's batch in flight at the kill (published, not yet deleted).
    if stats.published != left {
        return Err(fail(format!(
            "the restarted relay published {} for {left} pending rows",
            stats.published
        )));
    }
    if duplicates > 50 {
        return Err(fail(format!(
            "{duplicates} duplicates, more than the child's batch of 50"
        )));
    }
    if ids.len() != COMMITTED + duplicates {
        return Err(fail(format!(
            "received {} for {COMMITTED} rows and {duplicates} duplicates",
            ids.len()
        )));
    }
    Ok(())
}

fn run_child() -> ExitCode {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (conn, queue, rabbit) = (
        var("COOLMQ_OUTBOX_CRASH_CONN"),
        var("COOLMQ_OUTBOX_CRASH_QUEUE"),
        var("COOLMQ_OUTBOX_CRASH_RABBIT"),
    );
    let r = match var(CHILD_ENV).as_str() {
        "sqlite" => rt.block_on(crash_child::<Sqlite>(conn, queue, rabbit)),
        _ => rt.block_on(crash_child::<Postgres>(conn, queue, rabbit)),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash child: {e:?}");
            ExitCode::FAILURE
        }
    }
}

type CaseFn = fn() -> futures::future::BoxFuture<'static, TestResult>;

macro_rules! both {
    ($name:literal, $f:ident) => {
        [
            (
                concat!("sqlite::", $name),
                (|| Box::pin($f::<Sqlite>())) as CaseFn,
            ),
            (
                concat!("postgres::", $name),
                (|| Box::pin($f::<Postgres>())) as CaseFn,
            ),
        ]
    };
}

fn main() -> ExitCode {
    if std::env::var_os(CHILD_ENV).is_some() {
        return run_child();
    }
    let args = Arguments::from_args();
    let rt = Arc::new(tokio::runtime::Runtime::new().expect("runtime"));
    let cases: Vec<(&'static str, CaseFn)> = [
        both!(
            "outbox::commit_delivers_rollback_never",
            commit_delivers_rollback_never
        ),
        both!(
            "outbox::unroutable_retried_until_the_queue_exists",
            unroutable_retried_until_the_queue_exists
        ),
        both!("outbox::nack_is_retried", nack_is_retried),
        both!(
            "outbox::commit_wakes_the_relay_without_polling",
            commit_wakes_the_relay_without_polling
        ),
        both!(
            "outbox::parked_after_max_attempts_fires_the_observer",
            parked_after_max_attempts_fires_the_observer
        ),
        both!("outbox::four_relays_20000_rows", four_relays_20000_rows),
        both!(
            "outbox::sigkill_mid_relay_delivers_every_committed_row",
            sigkill_mid_relay_delivers_every_committed_row
        ),
        both!(
            "inbox::lost_confirm_duplicate_applied_once",
            lost_confirm_duplicate_applied_once
        ),
        both!(
            "inbox::rollback_forgets_and_expiry_removes_old_ids",
            rollback_forgets_and_expiry_removes_old_ids
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let trials = cases
        .into_iter()
        .map(|(name, f)| {
            if name.starts_with("postgres::") && postgres_url().is_none() {
                return broker_var::missing(name, "COOLMQ_TEST_POSTGRES_URL");
            }
            if name.contains("sigkill") && std::env::var_os("COOLMQ_TEST_RABBIT_URL").is_none() {
                return broker_var::missing(name, "COOLMQ_TEST_RABBIT_URL");
            }
            let rt = rt.clone();
            Trial::test(name, move || rt.block_on(f()))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
