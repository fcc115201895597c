//! `coolmq recv`: receive (and acknowledge) messages from the command line.

use std::io::Write;
use std::time::Duration;

use clap::Args;

use crate::{json, CliError, Exit, Target};

#[derive(Debug, Args)]
pub struct Opts {
    #[command(flatten)]
    target: Target,
    /// The queue to receive from.
    #[arg(long, short)]
    queue: String,
    /// Stop after this many messages.
    #[arg(long, short = 'n', default_value_t = 1)]
    count: u64,
    /// Leave the messages in the queue (they are requeued and will be redelivered).
    #[arg(long)]
    no_ack: bool,
    /// Stop when no message arrives for this long (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// With `--json`: one object per message and line (id, headers, properties, body as UTF-8
/// or base64, attempt, redelivered).
pub async fn run(o: Opts, as_json: bool, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let broker = o.target.connect().await?;
    let got = crate::take(&broker, &o.queue, o.count, o.timeout, o.no_ack, |d| {
        let m = d.message();
        let line = if as_json {
            json::message(m, d.attempt(), d.redelivered(), d.queue()).to_string()
        } else {
            format!(
                "{}\tattempt={}\t{}",
                m.id,
                d.attempt(),
                String::from_utf8_lossy(&m.body)
            )
        };
        writeln!(out, "{line}").map_err(CliError::io)
    })
    .await?;
    broker.close().await?;
    if got == 0 {
        return Err(CliError::new(
            Exit::NothingReceived,
            format!("no message arrived on {} within {:?}", o.queue, o.timeout),
        ));
    }
    Ok(())
}
