//! The reliable-messaging story on the embedded default (memory broker, SQLite): the order
//! service's outbox, the payment service's inbox, a lost confirm, transient failures
//! recovered by redelivery and a poison order dead-lettered with an alert. The story itself
//! is the `coolmq demo` command's (one source file).
//!
//! Run: `cargo run --example demo --features outbox-sqlite`. Swap the broker by setting
//! `COOLMQ_URL` (or `COOLMQ_CONFIG=coolmq.toml`); the code stays the same.

#[path = "../coolmq-cli/src/story.rs"]
mod story;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COOLMQ_LOG")
                .unwrap_or_else(|_| "warn,coolmq_core::worker=off".into()),
        )
        .init();
    story::story(&story::demo_config()?).await
}
