//! `coolmq send`: confirmed sends from the command line, from an argument, a file or a
//! pipeline (`--file -`, one message per line with `--lines`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args};

use crate::{parse_header, CliError, Exit, Target};
use coolmq::{Destination, Message};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("to").required(true).args(["queue", "topic"])))]
pub struct Opts {
    #[command(flatten)]
    target: Target,
    /// The queue to send to. It must exist (checked without declaring it) unless --declare.
    #[arg(long, short)]
    queue: Option<String>,
    /// The topic to send to (a routing key on RabbitMQ's topic exchange, an Artemis
    /// multicast address); a topic no queue subscribes to fails as unroutable.
    #[arg(long, short)]
    topic: Option<String>,
    /// Declare the queue, with its dead-letter queue, when it does not exist (an existing
    /// queue is never declared again, whatever its arguments).
    #[arg(long, requires = "queue")]
    declare: bool,
    /// How many times to send each message (ids `<id-prefix>-<n>` when --id-prefix is given).
    #[arg(long, short = 'n', default_value_t = 1)]
    count: u64,
    /// The message body as text.
    #[arg(long, conflicts_with = "file")]
    body: Option<String>,
    /// Read the body from a file, or from standard input with `-` (any bytes).
    #[arg(long)]
    file: Option<PathBuf>,
    /// One message per line of the input (--file or --body); empty lines are skipped.
    #[arg(long)]
    lines: bool,
    /// The content type (e.g. application/json).
    #[arg(long)]
    content_type: Option<String>,
    /// A header NAME=VALUE (a string); repeat for more.
    #[arg(long = "header", short = 'H', value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Time to live: the broker drops (or dead-letters) the message when it is older (e.g.
    /// 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Deliver after this delay (e.g. 10s), where the broker can delay deliveries.
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
    /// Message ids `<prefix>-<n>` instead of generated ones (stable ids make resends
    /// recognisable).
    #[arg(long)]
    id_prefix: Option<String>,
    /// Send as non-persistent (may be lost when the broker restarts).
    #[arg(long)]
    transient: bool,
}

impl Opts {
    /// The bodies to send, in order.
    fn bodies(&self) -> Result<Vec<Vec<u8>>, CliError> {
        let input: Vec<u8> = match (&self.body, &self.file) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(path)) if path.as_os_str() == "-" => {
                let mut all = Vec::new();
                std::io::stdin()
                    .lock()
                    .read_to_end(&mut all)
                    .map_err(|e| CliError::msg(format!("cannot read standard input: {e}")))?;
                all
            }
            (None, Some(path)) => std::fs::read(path)
                .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?,
            (None, None) => Vec::new(),
        };
        if !self.lines {
            return Ok(vec![input]);
        }
        Ok(input
            .split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

    fn message(&self, body: Vec<u8>, n: u64) -> Message {
        let mut m = match &self.id_prefix {
            Some(p) => Message::new_with_id(format!("{p}-{n}"), body),
            None => Message::new(body),
        };
        for (k, v) in &self.headers {
            m = m.with_header(k.clone(), v.clone());
        }
        if let Some(ct) = &self.content_type {
            m = m.with_content_type(ct.clone());
        }
        if let Some(ttl) = self.ttl {
            m = m.with_ttl(ttl);
        }
        if self.transient {
            m = m.transient();
        }
        m
    }
}

pub async fn run(o: Opts, json: bool, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let bodies = o.bodies()?;
    let broker = o.target.connect().await?;
    let dest = match (&o.queue, &o.topic) {
        (Some(q), _) => {
            match crate::require_queue(&broker, q).await {
                Ok(()) => {}
                Err(e) if o.declare && e.exit == Exit::Refused => {
                    broker.declare_queue(&broker.queue_spec(q)).await?;
                }
                Err(e) => return Err(e),
            }
            Destination::queue(q)
        }
        (None, Some(t)) => Destination::topic(t),
        (None, None) => return Err(CliError::usage("--queue or --topic is required")),
    };
    let publisher = broker.publisher().await?;
    let mut n = 0u64;
    for body in &bodies {
        for _ in 0..o.count {
            let send = publisher.send(&dest, o.message(body.clone(), n));
            let send = match o.delay {
                Some(d) => send.delay(d),
                None => send,
            };
            let receipt = send.await.map_err(coolmq::Error::from)?;
            let line = if json {
                serde_json::json!({
                    "id": receipt.message_id,
                    "destination": dest.name(),
                    "kind": if o.topic.is_some() { "topic" } else { "queue" },
                    "confirmed": true,
                })
                .to_string()
            } else {
                format!("confirmed {}", receipt.message_id)
            };
            writeln!(out, "{line}").map_err(CliError::io)?;
            n += 1;
        }
    }
    broker.close().await?;
    Ok(())
}
