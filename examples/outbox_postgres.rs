//! The outbox and the inbox on PostgreSQL: the order and its message commit in one database
//! transaction (no two-phase commit), a relay publishes committed rows with confirms, and the
//! consumer's inbox records each message id in the same transaction as its effect, so a
//! redelivered duplicate is applied once.
//!
//! Run: `COOLMQ_POSTGRES_URL=postgres://user:pass@localhost/db cargo run --example
//! outbox_postgres --features outbox-postgres` (`scripts/brokers postgres` starts one;
//! `COOLMQ_URL` picks the broker, memory by default).

use std::time::Duration;

use coolmq::outbox::sqlx::{self, postgres::PgPoolOptions};
use coolmq::outbox::{Inbox, Outbox, Received};
use coolmq::{Destination, Message};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(database) = std::env::var("COOLMQ_POSTGRES_URL") else {
        eprintln!(
            "set COOLMQ_POSTGRES_URL (e.g. postgres://coolmq:coolmq@127.0.0.1:5432/coolmq_test)"
        );
        std::process::exit(2);
    };
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&database)
        .await?;
    let suffix = coolmq::new_message_id().replace('-', "");
    let (orders, payments, queue) = (
        format!("example_orders_{suffix}"),
        format!("example_payments_{suffix}"),
        format!("example.orders.{suffix}"),
    );
    sqlx::query(&format!("CREATE TABLE {orders} (id TEXT PRIMARY KEY)"))
        .execute(&pool)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE {payments} (order_id TEXT PRIMARY KEY)"
    ))
    .execute(&pool)
    .await?;

    let broker = coolmq::connect_from_env().await?;
    broker.declare_queue(&broker.queue_spec(&queue)).await?;
    let outbox = Outbox::new(pool.clone()).await?; // creates coolmq_outbox, coolmq_inbox
    let relay = outbox.relay(broker.publisher().await?).spawn();

    // The order service: the row and its message commit together, or not at all.
    for id in ["o-1", "o-2"] {
        let mut tx = pool.begin().await?;
        sqlx::query(&format!("INSERT INTO {orders} (id) VALUES ($1)"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let message = Message::new(id).with_id(format!("{queue}-{id}"));
        outbox
            .enqueue(&mut tx, &Destination::queue(&queue), &message)
            .await?;
        outbox.commit(tx).await?;
    }

    // The payment service: effect and inbox record in one transaction. The message of o-1 is
    // delivered twice (as after a lost confirm's resend) and paid once.
    let inbox = Inbox::new(pool.clone(), "payments").await?;
    let mut consumer = broker.consumer(&queue).await?;
    let mut handled = 0;
    while handled < 3 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await??
            .expect("the consumer is open");
        let order = String::from_utf8_lossy(&delivery.message().body).into_owned();
        match inbox.begin(&delivery.message().id).await? {
            Received::New(mut tx) => {
                sqlx::query(&format!("INSERT INTO {payments} (order_id) VALUES ($1)"))
                    .bind(&order)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                println!("paid {order}");
            }
            Received::Duplicate => println!("{order} already paid: duplicate dropped"),
        }
        if handled == 0 {
            // Simulate the redelivery of the first message.
            broker
                .publisher()
                .await?
                .send(&Destination::queue(&queue), delivery.message().clone())
                .await?;
        }
        delivery.ack().await?;
        handled += 1;
    }
    consumer.close().await?;
    let stats = relay.shutdown().await?;
    let paid: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {payments}"))
        .fetch_one(&pool)
        .await?;
    println!("relay published {}, payments {paid}", stats.published);
    for table in [&orders, &payments] {
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(&pool)
            .await?;
    }
    broker.delete_queue(&queue).await?;
    broker.close().await?;
    Ok(())
}
