//! coolmq vs the raw client library, on the same broker, in one run.
//!
//! Each scenario runs raw and coolmq alternately (A B A B …) for several repetitions and
//! prints one line ending in `ratio=<coolmq/raw>` (higher is better; 1.0 = no overhead):
//! RabbitMQ's from the median throughputs, ActiveMQ's from the median of the coolmq/raw
//! ratios of blocks run back to back (see `stats::report_paired`). Timings never go into
//! tests.
//!
//! ```text
//! cargo run --release -p coolmq-bench -- rabbit --url amqp://guest:guest@127.0.0.1:5672/%2f
//! cargo run --release -p coolmq-bench -- rabbit-drivers   # lapin and amqprs, raw and coolmq
//! cargo run --release -p coolmq-bench -- activemq --url amqp1://coolmq:coolmq@127.0.0.1:5673
//! cargo run --release -p coolmq-bench -- outbox     # PostgreSQL → memory and RabbitMQ
//! ```

mod activemq;
mod allocs;
mod backlog;
mod charts;
mod cpu;
mod curves;
mod embedded;
mod outbox;
mod peers;
mod rabbit;
mod rabbit_drivers;
mod rss;
mod stats;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: allocs::Counting = allocs::Counting;

/// Benchmarks coolmq against the raw client libraries.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    backend: Backend,
}

#[derive(Subcommand)]
enum Backend {
    /// RabbitMQ: coolmq-rabbit vs raw lapin.
    Rabbit(rabbit::Args),
    /// RabbitMQ's two drivers: raw lapin, raw amqprs, coolmq on each (four columns).
    RabbitDrivers(rabbit_drivers::Args),
    /// ActiveMQ (Artemis by default): coolmq-activemq vs raw fe2o3-amqp.
    Activemq(activemq::Args),
    /// The outbox on PostgreSQL: relay throughput and the cost of `enqueue`.
    Outbox(outbox::Args),
    /// The memory broker: round trips vs tokio mpsc + oneshot, footprint per stored message.
    Embedded(embedded::Args),
    /// Ratios over body sizes and concurrent clients, on RabbitMQ or Artemis.
    Curves(curves::Args),
    /// RSS of a publisher and a consumer process over a 1,000,000-message backlog.
    Backlog(backlog::Args),
    /// omniqueue and RustStream next to coolmq and raw lapin on the same RabbitMQ.
    Peers(peers::Args),
    /// Draw the PNG charts from the JSON the curves and backlog runs wrote.
    Charts(charts::Args),
    /// One role of `backlog`, in its own process.
    #[command(hide = true)]
    BacklogRole(backlog::RoleArgs),
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().backend {
        Backend::Rabbit(args) => rabbit::run(args).await,
        Backend::RabbitDrivers(args) => rabbit_drivers::run(args).await,
        Backend::Activemq(args) => activemq::run(args).await,
        Backend::Outbox(args) => outbox::run(args).await,
        Backend::Embedded(args) => embedded::run(args).await,
        Backend::Curves(args) => curves::run(args).await,
        Backend::Backlog(args) => backlog::run(args).await,
        Backend::Peers(args) => peers::run(args).await,
        Backend::Charts(args) => charts::run(args),
        Backend::BacklogRole(args) => backlog::role(args).await,
    }
}
