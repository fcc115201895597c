//! The `coolmq` command line: run the conformance suite against your broker,
//! send and receive, benchmark, and inspect / replay / purge dead-letter queues. Every
//! backend is compiled in; the broker comes from `--url`, `--config coolmq.toml` or the
//! environment (`COOLMQ_URL`, `COOLMQ_CONFIG`), and credentials are never printed.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bench;
mod completions;
mod conformance;
mod demo;
mod dlq;
mod exit;
mod json;
mod recv;
mod send;
mod story;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use coolmq::{Broker, Config, Error};
pub use exit::Exit;

/// Reliable, broker-agnostic messaging: check, use and repair your broker with coolmq.
#[derive(Debug, Parser)]
#[command(name = "coolmq", version, about, long_about = None, after_help = exit::HELP)]
pub struct Cli {
    /// Print results as JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Where the broker is. `--url` wins over `--config`, which wins over the environment.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Broker URL: memory://[name], amqp://user:pass@host:5672/vhost, amqp1://… (ActiveMQ;
    /// add ?broker=classic for ActiveMQ Classic). Also read from COOLMQ_URL.
    #[arg(long, env = "COOLMQ_URL", hide_env_values = true)]
    url: Option<String>,
    /// A coolmq.toml configuration file (url, prefetch, redelivery policy…). Also read from
    /// COOLMQ_CONFIG.
    #[arg(long, env = "COOLMQ_CONFIG")]
    config: Option<PathBuf>,
}

impl Target {
    /// The configuration the options name.
    ///
    /// # Errors
    /// `ConfigInvalid` when none is given or the file is bad.
    pub fn config(&self) -> coolmq::Result<Config> {
        match (&self.url, &self.config) {
            (Some(url), _) => Config::from_url(url.clone()),
            (None, Some(path)) => Config::from_file(path),
            (None, None) => Err(Error::config(
                "url",
                "no broker given: pass --url URL or --config coolmq.toml (or set COOLMQ_URL)",
            )),
        }
    }

    async fn connect(&self) -> coolmq::Result<Broker> {
        coolmq::connect(&self.config()?).await
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The reliable-messaging story on the embedded default (memory broker, SQLite): orders
    /// sent through the outbox, payments through the inbox, redelivery, dead letter, alert.
    Demo,
    /// Run coolmq's conformance suite against your broker and print a table (pass / fail /
    /// unsupported by capability). Exits non-zero if any case fails.
    Conformance(conformance::Opts),
    /// Send messages with confirms (each send waits for the broker's confirm).
    Send(send::Opts),
    /// Receive messages (acknowledged unless --no-ack).
    Recv(recv::Opts),
    /// Measure publish-with-confirm and consume throughput, and confirm latency.
    Bench(bench::Opts),
    /// Inspect and repair a queue's dead-letter queue (DLQ.<queue>).
    Dlq(dlq::Opts),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(completions::Opts),
}

/// A command's failure: printed as `error: …`, with the exit code that says what kind.
#[derive(Debug)]
pub struct CliError {
    /// What to print (credentials are redacted before printing).
    pub message: String,
    /// Why: decides the exit code.
    pub exit: Exit,
}

impl<E: Into<Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        let e = e.into();
        // coolmq's errors redact credentials themselves; `{:#}` adds the causes.
        CliError {
            message: format!("{e:#}"),
            exit: Exit::of(&e),
        }
    }
}

impl CliError {
    fn msg(m: impl Into<String>) -> Self {
        CliError::new(Exit::Failure, m)
    }

    fn new(exit: Exit, m: impl Into<String>) -> Self {
        CliError {
            message: m.into(),
            exit,
        }
    }

    fn usage(m: impl Into<String>) -> Self {
        CliError::new(Exit::Usage, m)
    }

    fn io(e: std::io::Error) -> Self {
        CliError::msg(e.to_string())
    }
}

/// Run `cli`, writing results to `out` (stdout in the binary; a buffer in tests).
///
/// # Errors
/// The command's failure, credentials redacted.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let json = cli.json;
    match cli.command {
        Command::Demo => demo::run(out).await,
        Command::Conformance(o) => conformance::run(o, json, out).await,
        Command::Send(o) => send::run(o, json, out).await,
        Command::Recv(o) => recv::run(o, json, out).await,
        Command::Bench(o) => bench::run(o, json, out).await,
        Command::Dlq(o) => dlq::run(o, json, out).await,
        Command::Completions(o) => completions::run(o, out),
    }
}

/// Parse `args` (the first is the program name) and run; for tests and embedding.
///
/// # Errors
/// Bad arguments (clap's message) or the command's failure.
pub async fn run_args<I, T>(args: I, out: &mut (dyn Write + Send)) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|e| CliError::usage(e.to_string()))?;
    run(cli, out).await
}

/// The binary's entry point: parse the command line, run, print errors, set the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colours_on_stderr())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COOLMQ_LOG")
                // coolmq's own error says what failed; the client libraries' logs would repeat it.
                .unwrap_or_else(|_| "warn,lapin=off,fe2o3_amqp=off,coolmq_core::worker=off".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(run(cli, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = stdout.flush();
            eprintln!("error: {}", redact_urls(&e.message));
            e.exit.into()
        }
    }
}

/// Colours only for a person: stderr is a terminal and `NO_COLOR` (no-color.org) is unset
/// or empty.
fn colours_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Replace any `scheme://user:password@` in `text` by `scheme://user:***@` — the last guard
/// before anything reaches the terminal.
pub fn redact_urls(text: &str) -> String {
    let separator = |c: char| c.is_whitespace() || c == '"' || c == '\'';
    let mut out = String::with_capacity(text.len());
    for word in text.split_inclusive(separator) {
        let (body, sep) = match word.char_indices().last() {
            Some((i, c)) if separator(c) => (&word[..i], &word[i..]),
            _ => (word, ""),
        };
        // A URL ending a clause keeps its punctuation outside the redaction.
        let url = body.trim_end_matches([',', ';', ')', '.']);
        if url.contains("://") && (url.contains('@') || url.contains('?')) {
            out.push_str(&coolmq::redact_url(url));
            out.push_str(&body[url.len()..]);
        } else {
            out.push_str(body);
        }
        out.push_str(sep);
    }
    out
}

/// Receive up to `limit` deliveries from `queue` (stopping after `timeout` of quiet), show
/// each to `each`, and acknowledge it — or, with `keep`, requeue them all once read (so none
/// is read twice). Returns how many were received.
async fn take(
    broker: &Broker,
    queue: &str,
    limit: u64,
    timeout: std::time::Duration,
    keep: bool,
    mut each: impl FnMut(&coolmq::Delivery) -> Result<(), CliError>,
) -> Result<u64, CliError> {
    require_queue(broker, queue).await?;
    let prefetch = limit.clamp(1, 1000) as u16;
    let mut consumer = broker.consumer_with_prefetch(queue, prefetch).await?;
    let mut held = Vec::new();
    let mut got = 0u64;
    while got < limit {
        let Ok(next) = tokio::time::timeout(timeout, consumer.recv()).await else {
            break;
        };
        let Some(d) = next? else { break };
        got += 1;
        each(&d)?;
        if keep {
            held.push(d);
        } else {
            d.ack().await?;
        }
    }
    // Last first: a broker that requeues at the head (the memory broker) keeps the order.
    for d in held.into_iter().rev() {
        d.nack(coolmq::Nack::Requeue).await?;
    }
    consumer.close().await?;
    Ok(got)
}

/// Fail unless `queue` exists, without declaring it (a passive check): the command line
/// works with topology other applications made, whatever arguments they gave it.
async fn require_queue(broker: &Broker, queue: &str) -> Result<(), CliError> {
    match broker.queue_depth(queue).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == coolmq::ErrorKind::NotFound => Err(CliError::new(
            Exit::Refused,
            format!("queue {queue:?} does not exist on {} (coolmq never declares a queue it did not create; declare it, or pass --declare to `send`)", broker.endpoint()),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Parse `k=v` header arguments.
fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_urls_hides_passwords_and_secret_query_values() {
        let shown = super::redact_urls(
            "cannot connect to amqp://u:pw9@h:5672/%2f?access_token=abc7, giving up (\"amqp1://x?password=zz1\")",
        );
        for secret in ["pw9", "abc7", "zz1"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.ends_with(", giving up (\"amqp1://x?password=***\")"),
            "{shown}"
        );
    }
}
