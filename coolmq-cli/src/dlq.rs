//! `coolmq dlq`: where the human fallback begins. List and peek show why messages were
//! dead-lettered; replay moves them back to their origin queue (each confirmed there before
//! its dead-letter copy is acknowledged, so an interrupted replay loses nothing); purge
//! deletes them after asking.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::{json, CliError, Exit, Target};
use coolmq::dead_letter::{
    ATTEMPTS_HEADER, ATTEMPT_HEADER, FIRST_FAILURE_HEADER, LAST_ERROR_HEADER, LAST_FAILURE_HEADER,
    ORIGIN_QUEUE_HEADER,
};
use coolmq::{Broker, Destination, HeaderValue, Message};

#[derive(Debug, Args)]
pub struct Opts {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Args)]
struct Common {
    #[command(flatten)]
    target: Target,
    /// The queue whose dead-letter queue to work on (DLQ.<queue> by default; see --dlq).
    #[arg(long, short)]
    queue: String,
    /// The dead-letter queue's name, when it is not the configured prefix + queue.
    #[arg(long)]
    dlq: Option<String>,
    /// Stop when no message arrives for this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// One line per dead-lettered message: id, origin queue, attempts, first and last
    /// failure, last error. Messages stay in the dead-letter queue.
    List {
        #[command(flatten)]
        common: Common,
        /// At most this many messages.
        #[arg(long, short = 'n', default_value_t = 100)]
        limit: u64,
    },
    /// Show dead-lettered messages in full (headers, properties, body). They stay.
    Peek {
        #[command(flatten)]
        common: Common,
        /// How many.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u64,
    },
    /// Move messages back to their origin queue with their attempts reset: each is confirmed
    /// by the origin queue before its dead-letter copy is removed.
    Replay {
        #[command(flatten)]
        common: Common,
        /// At most this many (all by default).
        #[arg(long, short = 'n')]
        count: Option<u64>,
        /// At most this many messages per second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Delete every message in the dead-letter queue (asks first unless --yes).
    Purge {
        #[command(flatten)]
        common: Common,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
}

fn text(m: &Message, header: &str) -> String {
    match m.headers.get(header) {
        Some(HeaderValue::String(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => "-".to_string(),
    }
}

fn number(m: &Message, header: &str) -> String {
    match m.headers.get(header) {
        Some(HeaderValue::I32(n)) => n.to_string(),
        Some(HeaderValue::I64(n)) => n.to_string(),
        Some(other) => format!("{other:?}"),
        None => "-".to_string(),
    }
}

/// The copy replay sends: the failure history and attempt count removed, so the origin
/// queue's redelivery policy starts afresh.
fn fresh_copy(m: &Message) -> Message {
    let mut copy = m.clone();
    for h in [
        ATTEMPT_HEADER,
        ATTEMPTS_HEADER,
        FIRST_FAILURE_HEADER,
        LAST_FAILURE_HEADER,
        LAST_ERROR_HEADER,
        ORIGIN_QUEUE_HEADER,
    ] {
        copy.headers.remove(h);
    }
    copy
}

impl Common {
    fn dlq_name(&self, broker: &Broker) -> String {
        self.dlq
            .clone()
            .unwrap_or_else(|| broker.config().dead_letter_queue(&self.queue))
    }
}

/// With `--json`: `list` and `peek` print one object per message, `replay` and `purge` one
/// object with the count.
pub async fn run(o: Opts, as_json: bool, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let w = CliError::io;
    match o.action {
        Action::List { common, limit } => {
            let broker = common.target.connect().await?;
            let dlq = common.dlq_name(&broker);
            if !as_json {
                writeln!(
                    out,
                    "id\torigin\tattempts\tfirst_failure\tlast_failure\tlast_error"
                )
                .map_err(w)?;
            }
            let n = crate::take(&broker, &dlq, limit, common.timeout, true, |d| {
                let m = d.message();
                if as_json {
                    let summary = serde_json::json!({
                        "id": m.id,
                        "origin": m.headers.get(ORIGIN_QUEUE_HEADER).and_then(HeaderValue::as_str),
                        "attempts": m.headers.get(ATTEMPTS_HEADER).and_then(HeaderValue::as_i64),
                        "first_failure": m.headers.get(FIRST_FAILURE_HEADER).and_then(HeaderValue::as_str),
                        "last_failure": m.headers.get(LAST_FAILURE_HEADER).and_then(HeaderValue::as_str),
                        "last_error": m.headers.get(LAST_ERROR_HEADER).and_then(HeaderValue::as_str),
                    });
                    return writeln!(out, "{summary}").map_err(w);
                }
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    m.id,
                    text(m, ORIGIN_QUEUE_HEADER),
                    number(m, ATTEMPTS_HEADER),
                    text(m, FIRST_FAILURE_HEADER),
                    text(m, LAST_FAILURE_HEADER),
                    text(m, LAST_ERROR_HEADER),
                )
                .map_err(w)
            })
            .await?;
            if !as_json {
                writeln!(out, "{n} message(s) in {dlq}").map_err(w)?;
            }
            broker.close().await?;
        }
        Action::Peek { common, count } => {
            let broker = common.target.connect().await?;
            let dlq = common.dlq_name(&broker);
            let seen = crate::take(&broker, &dlq, count, common.timeout, true, |d| {
                let m = d.message();
                if as_json {
                    writeln!(out, "{}", json::message(m, d.attempt(), d.redelivered(), &dlq))
                        .map_err(w)
                } else {
                    writeln!(
                        out,
                        "id:            {}\norigin queue:  {}\nattempts:      {}\nfirst failure: {}\nlast failure:  {}\nlast error:    {}\nbody:          {}\n",
                        m.id,
                        text(m, ORIGIN_QUEUE_HEADER),
                        number(m, ATTEMPTS_HEADER),
                        text(m, FIRST_FAILURE_HEADER),
                        text(m, LAST_FAILURE_HEADER),
                        text(m, LAST_ERROR_HEADER),
                        String::from_utf8_lossy(&m.body)
                    )
                    .map_err(w)
                }
            })
            .await?;
            broker.close().await?;
            if seen == 0 {
                return Err(CliError::new(
                    Exit::NothingReceived,
                    format!("{dlq} holds no message (none within {:?})", common.timeout),
                ));
            }
        }
        Action::Replay {
            common,
            count,
            rate,
        } => {
            if rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
                return Err(CliError::usage(
                    "--rate must be a positive number of messages per second",
                ));
            }
            let broker = common.target.connect().await?;
            let dlq = common.dlq_name(&broker);
            crate::require_queue(&broker, &dlq).await?;
            let publisher = broker.publisher().await?;
            let mut consumer = broker.consumer_with_prefetch(&dlq, 1).await?;
            let limit = count.unwrap_or(u64::MAX);
            let pause = rate.map(|r| Duration::from_secs_f64(1.0 / r));
            let mut moved = 0u64;
            let total = broker.queue_depth(&dlq).await.ok().map(|n| n.min(limit));
            let progress = crate::bench::progress(total, "replay");
            while moved < limit {
                let Ok(next) = tokio::time::timeout(common.timeout, consumer.recv()).await else {
                    break;
                };
                let Some(d) = next? else { break };
                let origin = match d.message().headers.get(ORIGIN_QUEUE_HEADER) {
                    Some(HeaderValue::String(q)) => q.clone(),
                    _ => common.queue.clone(),
                };
                // Confirmed in the origin queue first; only then is the DLQ copy removed.
                // Interrupted in between, the message is in both: one duplicate, never a loss.
                publisher
                    .send(&Destination::queue(&origin), fresh_copy(d.message()))
                    .await
                    .map_err(coolmq::Error::from)?;
                d.ack().await?;
                moved += 1;
                progress.inc(1);
                if let Some(p) = pause {
                    tokio::time::sleep(p).await;
                }
            }
            progress.finish_and_clear();
            consumer.close().await?;
            if as_json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"replayed": moved, "dead_letter_queue": dlq})
                )
            } else {
                writeln!(out, "replayed {moved} message(s) from {dlq}")
            }
            .map_err(w)?;
            broker.close().await?;
        }
        Action::Purge { common, yes } => {
            let broker = common.target.connect().await?;
            let dlq = common.dlq_name(&broker);
            crate::require_queue(&broker, &dlq).await?;
            if !yes {
                let depth = broker
                    .queue_depth(&dlq)
                    .await
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| "all".to_string());
                if !std::io::stdin().is_terminal() {
                    return Err(CliError::usage(format!(
                        "refusing to purge {depth} message(s) from {dlq} without confirmation: pass --yes"
                    )));
                }
                eprint!("Delete {depth} message(s) from {dlq}? This cannot be undone. [y/N] ");
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer).map_err(w)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    writeln!(out, "not purged").map_err(w)?;
                    return Ok(());
                }
            }
            let progress = crate::bench::progress(broker.queue_depth(&dlq).await.ok(), "purge");
            let mut consumer = broker.consumer_with_prefetch(&dlq, 500).await?;
            let mut purged = 0u64;
            while let Ok(next) = tokio::time::timeout(common.timeout, consumer.recv()).await {
                let Some(d) = next? else { break };
                d.ack().await?;
                purged += 1;
                progress.inc(1);
            }
            progress.finish_and_clear();
            consumer.close().await?;
            if as_json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"purged": purged, "dead_letter_queue": dlq})
                )
            } else {
                writeln!(out, "purged {purged} message(s) from {dlq}")
            }
            .map_err(w)?;
            broker.close().await?;
        }
    }
    Ok(())
}
