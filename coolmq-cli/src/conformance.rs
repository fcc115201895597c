//! `coolmq conformance`: the published conformance suite against the user's own broker.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use coolmq_conformance::{Outcome, Target as SuiteTarget};

use crate::{CliError, Exit, Target};

#[derive(Debug, Args)]
pub struct Opts {
    #[command(flatten)]
    target: Target,
    /// Run only the cases whose name contains this (e.g. `redelivery`, `confirm::unroutable`).
    #[arg(long)]
    filter: Option<String>,
}

/// With `--json`: one object per case (`case`, `result`: pass / fail / unsupported,
/// `detail`, `seconds`) and a last one with the totals.
pub async fn run(o: Opts, json: bool, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let base = o.target.config()?;
    let url = base.redacted_url();
    let memory = base.url.starts_with("memory:");
    let target = SuiteTarget::new(
        "target",
        move |case_id: &str| {
            let mut config = base.clone();
            if memory {
                // Memory brokers are shared by name: one per case keeps cases isolated.
                config.url = format!("memory://conformance-{case_id}");
            }
            config
        },
        |c| Box::pin(coolmq::connect_owned(c)),
    )
    .with_unreachable_hint("check the URL and that the broker is running")
    .with_injector(coolmq_conformance::memory_faults);
    let w = CliError::io;
    if !json {
        writeln!(out, "coolmq conformance against {url}").map_err(w)?;
        writeln!(out, "{:<62} {:<36} {:>9}", "case", "result", "time").map_err(w)?;
    }
    // Some cases make handlers panic on purpose (the worker must survive it); their verdicts
    // are in the table, so the default hook's messages would only be noise.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut line_error = None;
    let reports = coolmq_conformance::run_report(&target, o.filter.as_deref(), |r| {
        let line = if json {
            let (result, detail) = match &r.outcome {
                Outcome::Passed => ("pass", String::new()),
                Outcome::Failed(why) => ("fail", why.clone()),
                Outcome::Unsupported(caps) => ("unsupported", caps.join(", ")),
            };
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "case": r.name,
                    "result": result,
                    "detail": detail,
                    "seconds": r.elapsed.as_secs_f64(),
                })
            )
        } else {
            text_line(out, r)
        };
        if let Err(e) = line {
            line_error = Some(e);
        }
    })
    .await;
    std::panic::set_hook(hook);
    // The suite could not start: the broker did not answer its capability probe.
    let reports = reports.map_err(|e| CliError::new(Exit::Connection, e))?;
    if let Some(e) = line_error {
        return Err(w(e));
    }
    let count = |f: fn(&Outcome) -> bool| reports.iter().filter(|r| f(&r.outcome)).count();
    let passed = count(|o| matches!(o, Outcome::Passed));
    let failed = count(|o| matches!(o, Outcome::Failed(_)));
    let unsupported = count(|o| matches!(o, Outcome::Unsupported(_)));
    let total: Duration = reports.iter().map(|r| r.elapsed).sum();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "passed": passed,
                "failed": failed,
                "unsupported": unsupported,
                "seconds": total.as_secs_f64(),
            })
        )
    } else {
        writeln!(
            out,
            "{passed} passed, {failed} failed, {unsupported} unsupported by capability ({:.1}s)",
            total.as_secs_f64()
        )
    }
    .map_err(w)?;
    if reports.is_empty() {
        return Err(CliError::usage("no case matches the filter"));
    }
    if failed > 0 {
        return Err(CliError::new(
            Exit::ConformanceFailed,
            format!("{failed} conformance case(s) failed"),
        ));
    }
    Ok(())
}

/// One row of the text table.
fn text_line(
    out: &mut (dyn Write + Send),
    r: &coolmq_conformance::CaseReport,
) -> std::io::Result<()> {
    let (result, detail) = match &r.outcome {
        Outcome::Passed => ("pass".to_string(), String::new()),
        Outcome::Failed(why) => ("FAIL".to_string(), format!("\n    {why}")),
        Outcome::Unsupported(caps) => (format!("unsupported: {}", caps.join(", ")), String::new()),
    };
    writeln!(
        out,
        "{:<62} {:<36} {:>8.2}s{detail}",
        r.name,
        result,
        r.elapsed.as_secs_f64()
    )
}
