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
mod cpu;
mod outbox;
mod rabbit;
mod rabbit_drivers;
mod stats;

use clap::{Parser, Subcommand};

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
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().backend {
        Backend::Rabbit(args) => rabbit::run(args).await,
        Backend::RabbitDrivers(args) => rabbit_drivers::run(args).await,
        Backend::Activemq(args) => activemq::run(args).await,
        Backend::Outbox(args) => outbox::run(args).await,
    }
}
