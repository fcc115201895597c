//! The outbox on PostgreSQL: how fast relays drain it into a broker (memory and RabbitMQ), and
//! what `enqueue` adds to the caller's transaction compared with a plain INSERT of the same
//! row size in the same transaction.

use std::str::FromStr;
use std::time::{Duration, Instant};

use coolmq::outbox::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use coolmq::outbox::sqlx::{self, PgPool};
use coolmq::outbox::Outbox;
use coolmq::{Destination, Message, QueueSpec};

use crate::stats::median;

type BoxError = Box<dyn std::error::Error>;

/// Options of the outbox benchmark.
#[derive(clap::Args)]
pub struct Args {
    /// PostgreSQL (a schema is created for the run and dropped after).
    #[arg(
        long,
        env = "COOLMQ_TEST_POSTGRES_URL",
        default_value = "postgres://coolmq:coolmq@127.0.0.1:5432/coolmq_test"
    )]
    postgres: String,
    /// RabbitMQ for the relay-into-RabbitMQ scenario.
    #[arg(
        long,
        env = "COOLMQ_TEST_RABBIT_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    rabbit: String,
    /// Rows relayed per scenario.
    #[arg(long, default_value_t = 50_000)]
    rows: usize,
    /// Rows claimed and published per relay pass.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Relay counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 8])]
    relays: Vec<usize>,
    /// Rows for the table-at-scale scenario (its size on disk, then drained into RabbitMQ);
    /// 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    table_rows: usize,
    /// Transactions timed for the enqueue-cost scenario (per side, per repetition).
    #[arg(long, default_value_t = 2_000)]
    transactions: usize,
    /// Repetitions of each scenario.
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

async fn schema_pool(url: &str) -> Result<(PgPool, String), BoxError> {
    let schema = format!("coolmq_bench_{}", std::process::id());
    let admin = PgPool::connect(url).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&admin)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    let options = PgConnectOptions::from_str(url)?.options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options)
        .await?;
    Ok((pool, schema))
}

async fn fill(
    outbox: &Outbox<sqlx::Postgres>,
    dest: &Destination,
    rows: usize,
    size: usize,
) -> Result<(), BoxError> {
    let pool = outbox.pool();
    for chunk in (0..rows).step_by(1000) {
        let mut tx = pool.begin().await?;
        for i in chunk..(chunk + 1000).min(rows) {
            let m = Message::new_with_id(format!("{}-{i}", dest.name()), vec![b'x'; size]);
            outbox.enqueue(&mut tx, dest, &m).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Fill the outbox, then time `relays` relays draining it into `broker`.
async fn relay_rate(
    outbox: &Outbox<sqlx::Postgres>,
    broker: &coolmq::Broker,
    queue: &str,
    args: &Args,
    relays: usize,
) -> Result<f64, BoxError> {
    let dest = Destination::queue(queue);
    fill(outbox, &dest, args.rows, args.size).await?;
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..relays {
        handles.push(
            outbox
                .relay(broker.publisher().await?)
                .batch_size(args.batch)
                .poll_interval(Duration::from_millis(20))
                .spawn(),
        );
    }
    while outbox.counts().await?.pending > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    for h in handles {
        h.shutdown().await?;
    }
    broker.delete_queue(queue).await?;
    broker
        .declare_queue(&QueueSpec::new(queue).dead_letter_queue(None))
        .await?;
    Ok(args.rows as f64 / elapsed.as_secs_f64())
}

/// Raw lapin publishing `rows` messages pipelined (window 256, each confirm checked) into a
/// fresh queue: messages per second.
async fn raw_rate(
    conn: &lapin::Connection,
    ch: &lapin::Channel,
    queue: &str,
    args: &Args,
) -> Result<f64, BoxError> {
    crate::rabbit::fresh_queue(conn, queue, "classic").await?;
    let t = crate::rabbit::raw_publish(ch, queue, args.rows, args.size, 256).await?;
    Ok(args.rows as f64 / t.as_secs_f64())
}

/// `table_rows` pending rows: the table's size on disk, then the time the largest relay
/// count takes to drain them into RabbitMQ.
async fn table_at_scale(
    outbox: &Outbox<sqlx::Postgres>,
    rabbit: &coolmq::Broker,
    queue: &str,
    args: &Args,
) -> Result<(), BoxError> {
    let dest = Destination::queue(queue);
    // The scenarios before left dead rows behind: compact the table so its size is the
    // pending rows'.
    sqlx::query("VACUUM FULL coolmq_outbox")
        .execute(outbox.pool())
        .await?;
    let start = Instant::now();
    fill(outbox, &dest, args.table_rows, args.size).await?;
    let filled = start.elapsed();
    let (table, total): (i64, i64) = sqlx::query_as(
        "SELECT pg_relation_size('coolmq_outbox'), pg_total_relation_size('coolmq_outbox')",
    )
    .fetch_one(outbox.pool())
    .await?;
    let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
    println!(
        "outbox table-at-scale      rows={} body={} B enqueued in {:.1} s ({:.0} rows/s, 1000 per transaction): table {:.0} MiB, with indexes and TOAST {:.0} MiB ({:.0} B per row)",
        args.table_rows,
        args.size,
        filled.as_secs_f64(),
        args.table_rows as f64 / filled.as_secs_f64(),
        mib(table),
        mib(total),
        total as f64 / args.table_rows as f64
    );
    let relays = args.relays.iter().copied().max().unwrap_or(1);
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..relays {
        handles.push(
            outbox
                .relay(rabbit.publisher().await?)
                .batch_size(args.batch)
                .poll_interval(Duration::from_millis(20))
                .spawn(),
        );
    }
    while outbox.counts().await?.pending > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed();
    for h in handles {
        h.shutdown().await?;
    }
    println!(
        "outbox table-at-scale      drained {} rows into RabbitMQ with {relays} relays in {:.1} s: {:.0} msg/s",
        args.table_rows,
        elapsed.as_secs_f64(),
        args.table_rows as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Transactions per second: INSERT a business row, optionally enqueue its message, commit.
async fn txn_rate(
    outbox: &Outbox<sqlx::Postgres>,
    n: usize,
    size: usize,
    with_outbox: bool,
    round: usize,
) -> Result<f64, BoxError> {
    let dest = Destination::queue("coolmq.bench.enqueue");
    let pool = outbox.pool();
    let start = Instant::now();
    for i in 0..n {
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO bench_orders (id, payload) VALUES ($1, $2)")
            .bind(format!("{round}-{with_outbox}-{i}"))
            .bind(vec![b'x'; size])
            .execute(&mut *tx)
            .await?;
        if with_outbox {
            let m = Message::new_with_id(format!("e-{round}-{i}"), vec![b'x'; size]);
            outbox.enqueue(&mut tx, &dest, &m).await?;
        }
        tx.commit().await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Run the scenarios and print their lines.
pub async fn run(args: Args) -> Result<(), BoxError> {
    let (pool, schema) = schema_pool(&args.postgres).await?;
    let outbox = Outbox::new(pool.clone()).await?;
    println!(
        "# outbox on PostgreSQL: {} rows of {} B per run, batch {}, {} reps; relay rates are rows relayed and confirmed per second",
        args.rows, args.size, args.batch, args.reps
    );
    let memory = coolmq::connect_url("memory://bench-outbox").await?;
    let rabbit = coolmq::connect_url(&args.rabbit).await?;
    let queue = format!("coolmq.bench.outbox.{}", std::process::id());
    for broker in [&memory, &rabbit] {
        broker
            .declare_queue(&QueueSpec::new(&queue).dead_letter_queue(None))
            .await?;
    }
    // Raw lapin's pipelined publish of the same rows' messages into the same broker, the
    // reference for the relay into RabbitMQ (its sides alternate with the relay's).
    let raw = crate::rabbit::raw_connection(&args.rabbit).await?;
    let raw_ch = raw.create_channel().await?;
    raw_ch
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let raw_q = format!("{queue}.raw");
    for (name, broker) in [("memory", &memory), ("rabbit", &rabbit)] {
        for &relays in &args.relays {
            let (mut rates, mut raw_rates) = (Vec::new(), Vec::new());
            for rep in 0..args.reps {
                let raw_first = name == "rabbit" && rep % 2 == 1;
                if raw_first {
                    raw_rates.push(raw_rate(&raw, &raw_ch, &raw_q, &args).await?);
                }
                rates.push(relay_rate(&outbox, broker, &queue, &args, relays).await?);
                if name == "rabbit" && !raw_first {
                    raw_rates.push(raw_rate(&raw, &raw_ch, &raw_q, &args).await?);
                }
            }
            let vs_raw = if raw_rates.is_empty() {
                String::new()
            } else {
                format!(
                    " raw-lapin-pipelined={:>8.0} msg/s ratio={:.3} (target ≥ 0.9)",
                    median(&raw_rates),
                    median(&rates) / median(&raw_rates)
                )
            };
            println!(
                "outbox relay-into-{name:<7} relays={relays} batch={} rows={} median={:>8.0} msg/s samples={:?}{vs_raw}",
                args.batch,
                args.rows,
                median(&rates),
                rates.iter().map(|r| r.round()).collect::<Vec<_>>()
            );
        }
    }
    if args.table_rows > 0 {
        table_at_scale(&outbox, &rabbit, &queue, &args).await?;
    }
    rabbit.delete_queue(&queue).await?;
    let ch = raw.create_channel().await?;
    ch.queue_delete(raw_q.as_str().into(), Default::default())
        .await?;

    sqlx::query("CREATE TABLE bench_orders (id TEXT PRIMARY KEY, payload BYTEA NOT NULL)")
        .execute(&pool)
        .await?;
    let (mut plain, mut with) = (Vec::new(), Vec::new());
    for round in 0..args.reps {
        // Alternate which side goes first.
        if round % 2 == 0 {
            plain.push(txn_rate(&outbox, args.transactions, args.size, false, round).await?);
            with.push(txn_rate(&outbox, args.transactions, args.size, true, round).await?);
        } else {
            with.push(txn_rate(&outbox, args.transactions, args.size, true, round).await?);
            plain.push(txn_rate(&outbox, args.transactions, args.size, false, round).await?);
        }
    }
    let (p, w) = (median(&plain), median(&with));
    println!(
        "outbox enqueue-cost        txns={} plain-insert={p:>7.0} txn/s insert+enqueue={w:>7.0} txn/s ratio={:.3} (+{:.0} µs per transaction)",
        args.transactions,
        w / p,
        (1e6 / w) - (1e6 / p)
    );
    pool.close().await;
    let admin = PgPool::connect(&args.postgres).await?;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await?;
    Ok(())
}
