//! A third party extends the suite: its own case runs next to the suite's, a listed case is
//! skipped with its reason, a capability override gates cases, and the report says all of it.

use std::time::Duration;

use coolmq_conformance::req::{CONFIRMS, TOPICS};
use coolmq_conformance::{
    case, run_report, trials_reporting, Ctx, Outcome, Report, Target, TestResult,
};
use coolmq_core::{Config, Message};

async fn my_round_trip(ctx: Ctx) -> TestResult {
    let q = ctx.queue("mine").await?;
    ctx.send(&q, Message::new("mine").with_id("m-1")).await?;
    let got = ctx.drain(&q, Duration::from_millis(200)).await?;
    coolmq_conformance::check_eq!(got.len(), 1, "my message arrived");
    Ok(())
}

fn target() -> Target {
    Target::new(
        "mine",
        |case| {
            let mut c = Config::from_url(format!("memory://extend-{case}")).expect("url");
            c.confirm_timeout = Duration::from_secs(1);
            c
        },
        |c| Box::pin(coolmq_memory::connect(c)),
    )
    .with_injector(coolmq_conformance::memory_faults)
    .with_cases([case!("mine", my_round_trip, [CONFIRMS])])
    .skip(
        "send::roundtrip_empty_body",
        "our gateway refuses empty bodies",
    )
    .with_capabilities(|c| c.topics = false)
}

#[test]
fn extra_cases_skips_and_overrides_shape_the_run() {
    let report = Report::default();
    let trials = trials_reporting(&[target()], &report);
    let entries = report.entries();
    let find = |case: &str| {
        entries
            .iter()
            .find(|e| e.case == case)
            .unwrap_or_else(|| panic!("{case} is in the report"))
    };
    // The suite's cases and the extra one, each once.
    assert_eq!(trials.len(), coolmq_conformance::cases().len() + 1);
    assert_eq!(find("mine::my_round_trip").outcome, "not run");
    let skipped = find("send::roundtrip_empty_body");
    assert_eq!(skipped.outcome, "ignored");
    assert_eq!(
        skipped.detail.as_deref(),
        Some("skipped: our gateway refuses empty bodies")
    );
    // Topics are off by the override: every case needing them is ignored for that reason.
    let topic_cases: Vec<_> = coolmq_conformance::cases()
        .into_iter()
        .filter(|c| c.requires.iter().any(|r| r.0 == TOPICS.0))
        .map(|c| c.full_name())
        .collect();
    assert!(!topic_cases.is_empty());
    for name in &topic_cases {
        let e = find(name);
        assert_eq!(e.outcome, "ignored", "{name}");
        assert!(
            e.detail.as_deref().is_some_and(|d| d.contains("topics")),
            "{name}: {:?}",
            e.detail
        );
    }
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(entries.len()));
}

#[test]
fn an_extra_case_runs_and_passes() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let reports = rt
        .block_on(run_report(&target(), Some("mine::"), |_| {}))
        .expect("the memory broker is reachable");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].outcome, Outcome::Passed);
}
