//! The `coolmq` command line: every command against the memory broker (in-process, through
//! `coolmq_cli::run_args`, since a memory broker lives in one process) and against the local
//! RabbitMQ and ActiveMQ brokers through the real binary.

use std::collections::HashMap;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coolmq::dead_letter::{ATTEMPTS_HEADER, LAST_ERROR_HEADER, ORIGIN_QUEUE_HEADER};
use coolmq::{Broker, Destination, HeaderValue, Message, QueueSpec};
use libtest_mimic::{Arguments, Failed, Trial};

#[path = "../../tests/common/broker_var.rs"]
mod broker_var;

type TestResult = Result<(), Failed>;

fn fail(msg: impl Into<String>) -> Failed {
    msg.into().into()
}

fn unique(prefix: &str) -> String {
    format!("coolmq.test.cli.{prefix}.{}", uuid::Uuid::new_v4().simple())
}

/// Run the CLI in this process; its output, or its error.
async fn cli(args: &[&str]) -> Result<String, String> {
    let mut out = Vec::new();
    let argv = std::iter::once("coolmq").chain(args.iter().copied());
    let r = coolmq_cli::run_args(argv, &mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    match r {
        Ok(()) => Ok(text),
        Err(e) => Err(format!("{}\n(output: {text})", e.message)),
    }
}

async fn cli_ok(args: &[&str]) -> Result<String, Failed> {
    cli(args)
        .await
        .map_err(|e| fail(format!("coolmq {}: {e}", args.join(" "))))
}

/// Longest a run of the real binary may take (the conformance table runs up to 11 cases).
const BIN_TIMEOUT: Duration = Duration::from_secs(300);

/// Run the real binary; (exit success, stdout, stderr). Killed and failed past
/// [`BIN_TIMEOUT`], with what it printed, so a hung command fails the test instead of the run.
fn bin(args: &[&str]) -> Result<(bool, String, String), Failed> {
    let (code, out, err) = bin_with(args, None)?;
    Ok((code == Some(0), out, err))
}

/// Run the real binary with `input` on its standard input (none: /dev/null); (exit code,
/// stdout, stderr).
fn bin_with(args: &[&str], input: Option<&[u8]>) -> Result<(Option<i32>, String, String), Failed> {
    use std::io::{Read, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_coolmq"))
        .args(args)
        .env_remove("COOLMQ_URL")
        .env_remove("COOLMQ_CONFIG")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run coolmq: {e}")))?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(input)?;
    }
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + BIN_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (out, err) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    match status {
        Some(status) => Ok((status.code(), out, err)),
        None => Err(fail(format!(
            "coolmq {} did not finish within {BIN_TIMEOUT:?} (killed)\nstdout:\n{out}\nstderr:\n{err}",
            args.join(" ")
        ))),
    }
}

fn json_lines(text: &str) -> Result<Vec<serde_json::Value>, Failed> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| fail(format!("not JSON: {l}: {e}"))))
        .collect()
}

/// Put `n` dead-lettered messages (ids `<prefix>-<i>`) into `DLQ.<queue>`, as the worker
/// would: with origin, attempts and last error.
async fn fill_dlq(broker: &Broker, queue: &str, prefix: &str, n: usize) -> TestResult {
    broker.declare_queue(&QueueSpec::new(queue)).await?;
    let publisher = broker.publisher().await?;
    let dlq = Destination::queue(format!("DLQ.{queue}"));
    for i in 0..n {
        let m = Message::new(format!("body {i}"))
            .with_id(format!("{prefix}-{i}"))
            .with_header(ORIGIN_QUEUE_HEADER, queue)
            .with_header(ATTEMPTS_HEADER, HeaderValue::I32(7))
            .with_header(LAST_ERROR_HEADER, "card declined")
            .with_header("coolmq_attempt", HeaderValue::I32(7));
        publisher.send(&dlq, m).await?;
    }
    Ok(())
}

/// Receive everything in `queue` (acking), ids in order.
async fn drain(broker: &Broker, queue: &str) -> Result<Vec<Message>, Failed> {
    let mut c = broker.consumer_with_prefetch(queue, 500).await?;
    let mut got = Vec::new();
    while let Ok(Ok(Some(d))) = tokio::time::timeout(Duration::from_millis(500), c.recv()).await {
        got.push(d.message().clone());
        d.ack().await?;
    }
    c.close().await?;
    Ok(got)
}

// ---- memory, in-process --------------------------------------------------------------------

async fn memory_send_recv_json() -> TestResult {
    let url = format!("memory://{}", uuid::Uuid::new_v4().simple());
    let q = unique("sr");
    let out = cli_ok(&[
        "send",
        "--url",
        &url,
        "-q",
        &q,
        "--declare",
        "-n",
        "2",
        "--body",
        "hello",
        "-H",
        "tenant=eu",
        "--id-prefix",
        "m",
    ])
    .await?;
    if out.lines().collect::<Vec<_>>() != ["confirmed m-0", "confirmed m-1"] {
        return Err(fail(format!("send printed {out:?}")));
    }
    let file = std::env::temp_dir().join(format!("coolmq-cli-{}.bin", uuid::Uuid::new_v4()));
    std::fs::write(&file, [0u8, 159, 146, 150])?;
    cli_ok(&[
        "send",
        "--url",
        &url,
        "-q",
        &q,
        "--file",
        file.to_str().unwrap(),
        "--id-prefix",
        "b",
    ])
    .await?;
    std::fs::remove_file(&file)?;
    // --no-ack leaves them; a second recv sees the same ids, redelivered.
    let first = json_lines(
        &cli_ok(&[
            "recv", "--url", &url, "-q", &q, "-n", "3", "--json", "--no-ack",
        ])
        .await?,
    )?;
    let second =
        json_lines(&cli_ok(&["recv", "--url", &url, "-q", &q, "-n", "3", "--json"]).await?)?;
    let ids = |v: &[serde_json::Value]| {
        v.iter()
            .map(|j| j["id"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    if ids(&first) != ["m-0", "m-1", "b-0"] || ids(&second) != ids(&first) {
        return Err(fail(format!(
            "ids {:?} then {:?}",
            ids(&first),
            ids(&second)
        )));
    }
    let m0 = &first[0];
    let checks = [
        (m0["body"] == "hello", "utf-8 body"),
        (m0["body_encoding"] == "utf8", "utf-8 encoding"),
        (m0["headers"]["tenant"] == "eu", "header"),
        (
            m0["attempt"] == 1 && m0["redelivered"] == false,
            "first attempt",
        ),
        (m0["properties"]["persistent"] == true, "persistent"),
        (
            first[2]["body_encoding"] == "base64" && first[2]["body"] == "AJ+Slg==",
            "base64 body",
        ),
        (
            second[0]["redelivered"] == true,
            "redelivered after --no-ack",
        ),
    ];
    for (ok, what) in checks {
        if !ok {
            return Err(fail(format!("{what}: {m0} / {}", first[2])));
        }
    }
    match cli(&["recv", "--url", &url, "-q", &q, "--timeout", "200ms"]).await {
        Err(e) if e.contains("no message arrived") => Ok(()),
        other => Err(fail(format!("recv on an empty queue: {other:?}"))),
    }
}

async fn memory_bad_arguments_are_clear() -> TestResult {
    let cases: [(&[&str], &str); 5] = [
        (&["send", "-q", "x"], "no broker given"),
        (&["send", "--url", "nosuch://h", "-q", "x"], "unknown"),
        (
            &["send", "--url", "memory://", "-q", "x", "-H", "novalue"],
            "expected NAME=VALUE",
        ),
        (
            &[
                "send",
                "--url",
                "memory://",
                "-q",
                "x",
                "--file",
                "/nonexistent/file",
            ],
            "cannot read",
        ),
        (
            &["bench", "--url", "memory://", "--window", "0"],
            "at least 1",
        ),
    ];
    for (args, want) in cases {
        match cli(args).await {
            Err(e) if e.to_lowercase().contains(&want.to_lowercase()) => {}
            other => {
                return Err(fail(format!(
                    "coolmq {}: {other:?}, want an error with {want:?}",
                    args.join(" ")
                )))
            }
        }
    }
    Ok(())
}

async fn memory_bench_reports() -> TestResult {
    let url = format!("memory://{}", uuid::Uuid::new_v4().simple());
    let out = cli_ok(&[
        "bench",
        "--url",
        &url,
        "-n",
        "500",
        "--size",
        "64",
        "--window",
        "32",
        "--prefetch",
        "50",
    ])
    .await?;
    for want in [
        "publish",
        "confirm   p50",
        "p99",
        "consume",
        "(500 confirmed, 0 failed",
        "(500 acked",
    ] {
        if !out.contains(want) {
            return Err(fail(format!("bench output lacks {want:?}:\n{out}")));
        }
    }
    Ok(())
}

async fn memory_conformance_table() -> TestResult {
    // Through --config: the lost-confirm case waits for the configured confirm timeout.
    let path = std::env::temp_dir().join(format!("coolmq-cli-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, "url = \"memory://\"\nconfirm_timeout = \"300ms\"\n")?;
    let out = cli_ok(&[
        "conformance",
        "--config",
        path.to_str().unwrap(),
        "--filter",
        "confirm::",
    ])
    .await;
    std::fs::remove_file(&path)?;
    let out = out?;
    // Every `confirm::` case of the suite is a row, and the memory broker passes each one it
    // supports (one is for backends that make queues on send).
    let cases = coolmq_conformance::cases()
        .into_iter()
        .filter(|c| c.full_name().starts_with("confirm::"))
        .count();
    let summary = format!("{} passed, 0 failed, 1 unsupported", cases - 1);
    if !out.contains("confirm::unroutable_queue_returns_the_message") || !out.contains(&summary) {
        return Err(fail(format!("table:\n{out}")));
    }
    match cli(&[
        "conformance",
        "--url",
        "memory://",
        "--filter",
        "no-such-case",
    ])
    .await
    {
        Err(e) if e.contains("no case matches") => Ok(()),
        other => Err(fail(format!("empty filter: {other:?}"))),
    }
}

async fn memory_dlq_list_peek_replay_purge() -> TestResult {
    let name = uuid::Uuid::new_v4().simple().to_string();
    let url = format!("memory://{name}");
    let broker = coolmq::connect_url(&url).await?;
    let q = unique("dlq");
    fill_dlq(&broker, &q, "d", 5).await?;
    let list = cli_ok(&["dlq", "list", "--url", &url, "-q", &q, "--timeout", "200ms"]).await?;
    if !list.contains(&format!("d-0\t{q}\t7\t"))
        || !list.contains("card declined")
        || !list.contains("5 message(s)")
    {
        return Err(fail(format!("list:\n{list}")));
    }
    let peek = json_lines(
        &cli_ok(&[
            "dlq",
            "peek",
            "--url",
            &url,
            "-q",
            &q,
            "-n",
            "2",
            "--json",
            "--timeout",
            "200ms",
        ])
        .await?,
    )?;
    if peek.len() != 2 || peek[0]["headers"][LAST_ERROR_HEADER] != "card declined" {
        return Err(fail(format!("peek: {peek:?}")));
    }
    if broker.queue_depth(&format!("DLQ.{q}")).await? != 5 {
        return Err(fail("list/peek removed messages"));
    }
    let replay = cli_ok(&[
        "dlq",
        "replay",
        "--url",
        &url,
        "-q",
        &q,
        "-n",
        "3",
        "--timeout",
        "200ms",
    ])
    .await?;
    if !replay.contains("replayed 3") {
        return Err(fail(format!("replay: {replay}")));
    }
    let back = drain(&broker, &q).await?;
    let reset = back.iter().all(|m| {
        !m.headers.contains_key(ATTEMPTS_HEADER)
            && !m.headers.contains_key("coolmq_attempt")
            && !m.headers.contains_key(LAST_ERROR_HEADER)
    });
    if back.iter().map(|m| m.id.as_str()).collect::<Vec<_>>() != ["d-0", "d-1", "d-2"] || !reset {
        return Err(fail(format!("replayed into {q}: {back:?}")));
    }
    match cli(&[
        "dlq",
        "purge",
        "--url",
        &url,
        "-q",
        &q,
        "--timeout",
        "200ms",
    ])
    .await
    {
        Err(e) if e.contains("--yes") => {}
        other => {
            return Err(fail(format!(
                "purge without --yes on a non-terminal: {other:?}"
            )))
        }
    }
    let purge = cli_ok(&[
        "dlq",
        "purge",
        "--url",
        &url,
        "-q",
        &q,
        "--yes",
        "--timeout",
        "200ms",
    ])
    .await?;
    if !purge.contains("purged 2") || broker.queue_depth(&format!("DLQ.{q}")).await? != 0 {
        return Err(fail(format!("purge: {purge}")));
    }
    Ok(())
}

/// Interrupt a replay halfway (its future dropped mid-run, as a Ctrl-C would): every message is
/// in the origin queue or still in the DLQ; at most the one in flight is in both.
async fn memory_replay_interrupted_loses_nothing() -> TestResult {
    let url = format!("memory://{}", uuid::Uuid::new_v4().simple());
    let broker = coolmq::connect_url(&url).await?;
    let q = unique("interrupt");
    fill_dlq(&broker, &q, "i", 100).await?;
    let _ = tokio::time::timeout(
        Duration::from_millis(250),
        cli(&["dlq", "replay", "--url", &url, "-q", &q, "--rate", "200"]),
    )
    .await;
    tally(&broker, &q, "i", 100).await
}

/// Every `<prefix>-<i>` is in the origin queue or the DLQ; at most one in both.
async fn tally(broker: &Broker, q: &str, prefix: &str, n: usize) -> TestResult {
    let origin = drain(broker, q).await?;
    let dlq = drain(broker, &format!("DLQ.{q}")).await?;
    let mut copies: HashMap<String, usize> = HashMap::new();
    for m in origin.iter().chain(&dlq) {
        *copies.entry(m.id.clone()).or_default() += 1;
    }
    let lost = (0..n)
        .filter(|i| !copies.contains_key(&format!("{prefix}-{i}")))
        .count();
    let duplicated = copies.values().filter(|c| **c > 1).count();
    println!(
        "replay interrupted: moved={} left={} lost={lost} duplicated={duplicated}",
        origin.len(),
        dlq.len()
    );
    if lost > 0 || duplicated > 1 || origin.is_empty() || dlq.is_empty() {
        return Err(fail(format!(
            "moved {} left {} lost {lost} duplicated {duplicated} (want 0 lost, ≤ 1 duplicated, interrupted halfway)",
            origin.len(),
            dlq.len()
        )));
    }
    Ok(())
}

// ---- real brokers, through the binary ------------------------------------------------------

fn url_of(var: &str) -> Result<String, Failed> {
    std::env::var(var).map_err(|_| fail(format!("{var} is not set (scripts/test sets it)")))
}

async fn broker_send_recv(var: &'static str) -> TestResult {
    let url = url_of(var)?;
    let q = unique("bin");
    let (ok, out, err) = bin(&[
        "send",
        "--url",
        &url,
        "-q",
        &q,
        "--declare",
        "-n",
        "3",
        "--body",
        "hi",
        "-H",
        "k=v",
        "--id-prefix",
        "x",
    ])?;
    if !ok || out.lines().count() != 3 {
        return Err(fail(format!("send: {out} {err}")));
    }
    let (ok, out, err) = bin(&["recv", "--url", &url, "-q", &q, "-n", "3", "--json"])?;
    let lines = json_lines(&out)?;
    let broker = coolmq::connect_url(&url).await?;
    broker.delete_queue(&q).await.ok();
    broker.delete_queue(&format!("DLQ.{q}")).await.ok();
    if !ok || lines.len() != 3 || lines[0]["headers"]["k"] != "v" || lines[2]["id"] != "x-2" {
        return Err(fail(format!("recv: {out} {err}")));
    }
    if err.contains(":coolmq@") || err.contains(":guest@") {
        return Err(fail(format!("credentials on stderr: {err}")));
    }
    Ok(())
}

async fn broker_conformance(var: &'static str) -> TestResult {
    let url = url_of(var)?;
    let (ok, out, err) = bin(&["conformance", "--url", &url, "--filter", "confirm::"])?;
    println!("{out}");
    if !ok || !out.contains("0 failed") || out.contains(":guest@") || out.contains(":coolmq@") {
        return Err(fail(format!("conformance: {out}\n{err}")));
    }
    Ok(())
}

async fn broker_bench(var: &'static str) -> TestResult {
    let url = url_of(var)?;
    let (ok, out, err) = bin(&["bench", "--url", &url, "-n", "2000", "--size", "256"])?;
    if !ok || !out.contains("(2000 confirmed, 0 failed") || !out.contains("(2000 acked") {
        return Err(fail(format!("bench: {out}\n{err}")));
    }
    println!("{out}");
    Ok(())
}

async fn broker_wrong_password_is_redacted(var: &'static str) -> TestResult {
    let url = url_of(var)?;
    let mut u = url::Url::parse(&url).map_err(|e| fail(e.to_string()))?;
    u.set_password(Some("hunter2-not-it"))
        .map_err(|_| fail("cannot set password"))?;
    let (ok, out, err) = bin(&["recv", "--url", u.as_str(), "-q", "x", "--timeout", "1s"])?;
    let last = err.lines().last().unwrap_or_default();
    if ok || (out + &err).contains("hunter2") || !last.starts_with("error: authentication-failed") {
        return Err(fail(format!("wrong password: ok={ok} stderr={err}")));
    }
    Ok(())
}

/// SIGKILL `coolmq dlq replay` halfway: nothing lost, at most the message in flight doubled.
async fn broker_replay_killed_halfway(var: &'static str) -> TestResult {
    let url = url_of(var)?;
    let broker = coolmq::connect_url(&url).await?;
    let q = unique("kill");
    fill_dlq(&broker, &q, "k", 200).await?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_coolmq"))
        .args(["dlq", "replay", "--url", &url, "-q", &q, "--rate", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let start = Instant::now();
    loop {
        let moved = broker.queue_depth(&q).await?;
        if moved >= 50 {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            return Err(fail(format!("replay moved only {moved} in 30 s")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill()?;
    child.wait()?;
    let r = tally(&broker, &q, "k", 200).await;
    broker.delete_queue(&q).await.ok();
    broker.delete_queue(&format!("DLQ.{q}")).await.ok();
    r
}

/// The exit code the in-process run reports for `args`.
async fn exit_of(args: &[&str]) -> Result<coolmq_cli::Exit, Failed> {
    let mut out = Vec::new();
    let argv = std::iter::once("coolmq").chain(args.iter().copied());
    match coolmq_cli::run_args(argv, &mut out).await {
        Ok(()) => Err(fail(format!("coolmq {} succeeded", args.join(" ")))),
        Err(e) => Ok(e.exit),
    }
}

/// Every exit code, each from a real failure: in-process for all, and through the binary's
/// process exit status for those one process can show.
async fn memory_exit_codes() -> TestResult {
    use coolmq_cli::Exit;
    let url = format!("memory://{}", uuid::Uuid::new_v4().simple());
    let empty = unique("empty");
    cli_ok(&[
        "send",
        "--url",
        &url,
        "-q",
        &empty,
        "--declare",
        "--body",
        "x",
    ])
    .await?;
    cli_ok(&["recv", "--url", &url, "-q", &empty]).await?;
    let cases: Vec<(Vec<&str>, Exit)> = vec![
        (vec!["send", "--no-such-flag"], Exit::Usage),
        (vec!["send", "--url", "nosuch://h", "-q", "x"], Exit::Usage),
        (
            vec!["recv", "--url", "amqp://127.0.0.1:1", "-q", "x"],
            Exit::Connection,
        ),
        (
            vec!["recv", "--url", &url, "-q", "no-such-queue"],
            Exit::Refused,
        ),
        (
            vec!["send", "--url", &url, "-q", "no-such-queue", "--body", "x"],
            Exit::Refused,
        ),
        (
            vec!["conformance", "--url", &url, "--filter", "no-such-case"],
            Exit::Usage,
        ),
        (
            vec!["recv", "--url", &url, "-q", &empty, "--timeout", "100ms"],
            Exit::NothingReceived,
        ),
    ];
    for (args, want) in &cases {
        let got = exit_of(args).await?;
        if got != *want {
            return Err(fail(format!(
                "coolmq {}: {got:?}, want {want:?}",
                args.join(" ")
            )));
        }
    }
    // The process's own exit status, for codes that need no shared broker (5 and 6 on
    // RabbitMQ: `rabbit::conformance_failure_exits_5`, `rabbit::pipeline_into_a_foreign_queue`).
    for (args, want) in [(&cases[0].0, 2), (&cases[2].0, 3), (&cases[3].0, 4)] {
        let (code, _, err) = bin_with(args, None)?;
        if code != Some(want) {
            return Err(fail(format!(
                "coolmq {}: exit {code:?}, want {want}: {err}",
                args.join(" ")
            )));
        }
        if args[0] == "recv" && args[4] == "no-such-queue" && !err.contains("does not exist") {
            return Err(fail(format!("a missing queue is named: {err}")));
        }
        if err.contains('\u{1b}') {
            return Err(fail(format!("colours on a redirected stderr: {err:?}")));
        }
    }
    Ok(())
}

/// `--json` on every command that prints data: one JSON object per line, nothing else.
async fn memory_json_everywhere() -> TestResult {
    let url = format!("memory://{}", uuid::Uuid::new_v4().simple());
    let q = unique("json");
    let sent = json_lines(
        &cli_ok(&[
            "send",
            "--url",
            &url,
            "-q",
            &q,
            "--declare",
            "-n",
            "2",
            "--id-prefix",
            "j",
            "--body",
            "{}",
            "--content-type",
            "application/json",
            "--json",
        ])
        .await?,
    )?;
    let ok = sent.len() == 2
        && sent[0]["id"] == "j-0"
        && sent[0]["destination"] == q.as_str()
        && sent[0]["confirmed"] == true;
    if !ok {
        return Err(fail(format!("send --json: {sent:?}")));
    }
    let got = json_lines(&cli_ok(&["recv", "--url", &url, "-q", &q, "-n", "2", "--json"]).await?)?;
    if got.len() != 2 || got[0]["properties"]["content_type"] != "application/json" {
        return Err(fail(format!("recv --json: {got:?}")));
    }
    let broker = coolmq::connect_url(&url).await?;
    fill_dlq(&broker, &q, "d", 2).await?;
    let list = json_lines(&cli_ok(&["dlq", "list", "--url", &url, "-q", &q, "--json"]).await?)?;
    if list.len() != 2 || list[0]["origin"] != q.as_str() || list[0]["attempts"] != 7 {
        return Err(fail(format!("dlq list --json: {list:?}")));
    }
    let peek = json_lines(&cli_ok(&["dlq", "peek", "--url", &url, "-q", &q, "--json"]).await?)?;
    if peek.len() != 1 || peek[0]["id"] != "d-0" {
        return Err(fail(format!("dlq peek --json: {peek:?}")));
    }
    let replay = json_lines(
        &cli_ok(&[
            "dlq", "replay", "--url", &url, "-q", &q, "-n", "1", "--json",
        ])
        .await?,
    )?;
    let purge =
        json_lines(&cli_ok(&["dlq", "purge", "--url", &url, "-q", &q, "--yes", "--json"]).await?)?;
    if replay.len() != 1
        || replay[0]["replayed"] != 1
        || purge.len() != 1
        || purge[0]["purged"] != 1
    {
        return Err(fail(format!(
            "dlq replay / purge --json: {replay:?} {purge:?}"
        )));
    }
    let bench = json_lines(
        &cli_ok(&[
            "bench", "--url", &url, "-n", "200", "--size", "16", "--json",
        ])
        .await?,
    )?;
    if bench.len() != 1 || bench[0]["confirmed"] != 200 || bench[0]["acked"] != 200 {
        return Err(fail(format!("bench --json: {bench:?}")));
    }
    let suite = json_lines(
        &cli_ok(&[
            "conformance",
            "--url",
            "memory://",
            "--filter",
            "send::",
            "--json",
        ])
        .await?,
    )?;
    let totals = suite.last().cloned().unwrap_or_default();
    let rows = &suite[..suite.len().saturating_sub(1)];
    if rows.is_empty()
        || rows
            .iter()
            .any(|r| r["result"] != "pass" && r["result"] != "unsupported")
        || totals["failed"] != 0
        || totals["passed"].as_u64()
            != Some(rows.iter().filter(|r| r["result"] == "pass").count() as u64)
    {
        return Err(fail(format!("conformance --json: {suite:?}")));
    }
    let bash = cli_ok(&["completions", "bash"]).await?;
    if !bash.contains("_coolmq()") || !bash.contains("--json") {
        return Err(fail(
            "the bash completion script names neither coolmq nor its options",
        ));
    }
    Ok(())
}

/// A broker set up to lose messages fails the suite, with exit code 5: a RabbitMQ vhost whose
/// policy keeps one message per queue and drops the oldest (`max-length` 1), which a
/// confirmed send cannot notice but the suite's consumers do.
async fn rabbit_conformance_failure_exits_5(var: &'static str) -> TestResult {
    let url = url_of(var)?;
    let vhost = format!("coolmq-lossy-{}", uuid::Uuid::new_v4().simple());
    let ctl = |args: &[&str]| -> TestResult {
        let out = Command::new("rabbitmqctl")
            .args(args)
            .output()
            .map_err(|e| fail(format!("rabbitmqctl: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(fail(format!(
                "rabbitmqctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    let mut u = url::Url::parse(&url).map_err(|e| fail(e.to_string()))?;
    let user = u.username().to_string();
    ctl(&["add_vhost", &vhost])?;
    let run = async {
        ctl(&["set_permissions", "-p", &vhost, &user, ".*", ".*", ".*"])?;
        ctl(&[
            "set_policy",
            "-p",
            &vhost,
            "lossy",
            "^coolmq\\.",
            r#"{"max-length":1}"#,
            "--apply-to",
            "queues",
        ])?;
        u.set_path(&format!("/{vhost}"));
        let (code, out, err) = bin_with(
            &[
                "conformance",
                "--url",
                u.as_str(),
                "--filter",
                "consume::prefetch_bounds",
                "--json",
            ],
            None,
        )?;
        let rows = json_lines(&out)?;
        let failed = rows.iter().filter(|r| r["result"] == "fail").count();
        if code != Some(5) || failed == 0 {
            return Err(fail(format!(
                "on a lossy vhost: exit {code:?}, {failed} failed\n{out}\n{err}"
            )));
        }
        Ok(())
    }
    .await;
    ctl(&["delete_vhost", &vhost])?;
    run
}

/// Through the binary on a real broker: messages from standard input, one per line, to a
/// queue another client declared with other arguments (never declared again: a declare with
/// coolmq's dead-letter arguments would fail with PRECONDITION_FAILED), topic sends, the
/// options, and exit 6 once the queue is empty.
async fn rabbit_pipeline_into_a_foreign_queue(var: &'static str) -> TestResult {
    let url = url_of(var)?;
    let q = unique("foreign");
    let declared = Command::new("amqp-declare-queue")
        .args(["--url", &url, "-q", &q, "-d"])
        .output()
        .map_err(|e| {
            fail(format!(
                "amqp-declare-queue (amqp-tools, scripts/brokers installs it): {e}"
            ))
        })?;
    if !declared.status.success() {
        return Err(fail(format!("amqp-declare-queue: {declared:?}")));
    }
    let input = b"{\"n\":1}\n{\"n\":2}\r\n\n{\"n\":3}\n";
    let (code, out, err) = bin_with(
        &[
            "send",
            "--url",
            &url,
            "-q",
            &q,
            "--file",
            "-",
            "--lines",
            "--content-type",
            "application/json",
            "--ttl",
            "10m",
            "-H",
            "source=pipeline",
            "--json",
        ],
        Some(input),
    )?;
    let sent = json_lines(&out)?;
    if code != Some(0) || sent.len() != 3 {
        return Err(fail(format!(
            "send from stdin: exit {code:?}\n{out}\n{err}"
        )));
    }
    let (code, out, err) = bin(&["recv", "--url", &url, "-q", &q, "-n", "3", "--json"])?;
    let got = json_lines(&out)?;
    let bodies: Vec<String> = got
        .iter()
        .map(|m| m["body"].as_str().unwrap_or("").to_string())
        .collect();
    let first = got.first().cloned().unwrap_or_default();
    let ok = code
        && bodies == ["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]
        && first["properties"]["content_type"] == "application/json"
        && first["headers"]["source"] == "pipeline"
        && first["properties"]["ttl_ms"] == 600_000;
    if !ok {
        return Err(fail(format!("recv: {out}\n{err}")));
    }
    let (code, _, err) = bin_with(
        &["recv", "--url", &url, "-q", &q, "--timeout", "300ms"],
        None,
    )?;
    if code != Some(6) {
        return Err(fail(format!(
            "recv on the emptied queue: exit {code:?}: {err}"
        )));
    }
    // A topic nobody subscribes to: refused as unroutable (4), never silently dropped.
    let (code, _, err) = bin_with(
        &[
            "send",
            "--url",
            &url,
            "--topic",
            &format!("{q}.nobody"),
            "--body",
            "x",
        ],
        None,
    )?;
    let broker = coolmq::connect_url(&url).await?;
    broker.delete_queue(&q).await.ok();
    if code != Some(4) || !err.contains("unroutable") {
        return Err(fail(format!(
            "send to a topic without subscriber: exit {code:?}: {err}"
        )));
    }
    Ok(())
}

type CaseFn = Arc<dyn Fn() -> futures::future::BoxFuture<'static, TestResult> + Send + Sync>;

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let rt = Arc::new(tokio::runtime::Runtime::new().expect("runtime"));
    let mut cases: Vec<(String, CaseFn)> = vec![
        (
            "memory::send_recv_json".into(),
            Arc::new(|| Box::pin(memory_send_recv_json())),
        ),
        (
            "memory::bad_arguments_are_clear".into(),
            Arc::new(|| Box::pin(memory_bad_arguments_are_clear())),
        ),
        (
            "memory::bench_reports".into(),
            Arc::new(|| Box::pin(memory_bench_reports())),
        ),
        (
            "memory::conformance_table".into(),
            Arc::new(|| Box::pin(memory_conformance_table())),
        ),
        (
            "memory::dlq_list_peek_replay_purge".into(),
            Arc::new(|| Box::pin(memory_dlq_list_peek_replay_purge())),
        ),
        (
            "memory::dlq_replay_interrupted_loses_nothing".into(),
            Arc::new(|| Box::pin(memory_replay_interrupted_loses_nothing())),
        ),
        (
            "memory::exit_codes".into(),
            Arc::new(|| Box::pin(memory_exit_codes())),
        ),
        (
            "memory::json_on_every_data_command".into(),
            Arc::new(|| Box::pin(memory_json_everywhere())),
        ),
    ];
    for (name, var) in [
        ("rabbit", "COOLMQ_TEST_RABBIT_URL"),
        ("artemis", "COOLMQ_TEST_ARTEMIS_URL"),
        ("activemq", "COOLMQ_TEST_ACTIVEMQ_URL"),
    ] {
        cases.push((
            format!("{name}::send_recv_json"),
            Arc::new(move || Box::pin(broker_send_recv(var))),
        ));
        cases.push((
            format!("{name}::wrong_password_is_redacted"),
            Arc::new(move || Box::pin(broker_wrong_password_is_redacted(var))),
        ));
        cases.push((
            format!("{name}::conformance_table"),
            Arc::new(move || Box::pin(broker_conformance(var))),
        ));
        if name == "rabbit" {
            cases.push((
                format!("{name}::bench_reports"),
                Arc::new(move || Box::pin(broker_bench(var))),
            ));
            cases.push((
                format!("{name}::conformance_failure_exits_5"),
                Arc::new(move || Box::pin(rabbit_conformance_failure_exits_5(var))),
            ));
            cases.push((
                format!("{name}::pipeline_into_a_foreign_queue"),
                Arc::new(move || Box::pin(rabbit_pipeline_into_a_foreign_queue(var))),
            ));
            cases.push((
                format!("{name}::dlq_replay_killed_halfway"),
                Arc::new(move || Box::pin(broker_replay_killed_halfway(var))),
            ));
        }
    }
    let trials = cases
        .into_iter()
        .map(|(name, f)| {
            let var = match name.split("::").next() {
                Some("rabbit") => Some("COOLMQ_TEST_RABBIT_URL"),
                Some("artemis") => Some("COOLMQ_TEST_ARTEMIS_URL"),
                Some("activemq") => Some("COOLMQ_TEST_ACTIVEMQ_URL"),
                _ => None,
            };
            if let Some(var) = var.filter(|v| std::env::var_os(v).is_none()) {
                return broker_var::missing(name, var);
            }
            let rt = rt.clone();
            Trial::test(name, move || rt.block_on(f()))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
