//! `coolmq send`: confirmed sends from the command line.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::{parse_header, CliError, Target};
use coolmq::{Destination, Message};

#[derive(Debug, Args)]
pub struct Opts {
    #[command(flatten)]
    target: Target,
    /// The queue to send to (declared, with its dead-letter queue, if missing).
    #[arg(long, short)]
    queue: String,
    /// How many messages to send (ids `<id-prefix>-<n>` when --id-prefix is given).
    #[arg(long, short = 'n', default_value_t = 1)]
    count: u64,
    /// The message body as text.
    #[arg(long, conflicts_with = "file")]
    body: Option<String>,
    /// Read the message body from a file (any bytes).
    #[arg(long)]
    file: Option<PathBuf>,
    /// A header NAME=VALUE (a string); repeat for more.
    #[arg(long = "header", short = 'H', value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Message ids `<prefix>-<n>` instead of generated ones (stable ids make resends
    /// recognisable).
    #[arg(long)]
    id_prefix: Option<String>,
    /// Send as non-persistent (may be lost when the broker restarts).
    #[arg(long)]
    transient: bool,
}

pub async fn run(o: Opts, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let body: Vec<u8> = match (&o.body, &o.file) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(path)) => std::fs::read(path)
            .map_err(|e| CliError::msg(format!("cannot read {}: {e}", path.display())))?,
        (None, None) => Vec::new(),
    };
    let broker = o.target.connect().await?;
    broker.declare_queue(&broker.queue_spec(&o.queue)).await?;
    let publisher = broker.publisher().await?;
    let dest = Destination::queue(&o.queue);
    for n in 0..o.count {
        let mut m = match &o.id_prefix {
            Some(p) => Message::new_with_id(format!("{p}-{n}"), body.clone()),
            None => Message::new(body.clone()),
        };
        for (k, v) in &o.headers {
            m = m.with_header(k.clone(), v.clone());
        }
        if o.transient {
            m = m.transient();
        }
        let receipt = publisher
            .send(&dest, m)
            .await
            .map_err(coolmq::Error::from)?;
        writeln!(out, "confirmed {}", receipt.message_id)
            .map_err(|e| CliError::msg(e.to_string()))?;
    }
    broker.close().await?;
    Ok(())
}
