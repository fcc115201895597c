//! Runs the shared conformance suite against every configured backend: the memory broker
//! always, and each real broker whose `COOLMQ_TEST_*_URL` is set (README's test command sets
//! them). A configured broker that cannot be reached fails the run; it never skips.

use std::process::ExitCode;
use std::time::Duration;

use coolmq::Config;
use coolmq_conformance::Target;

fn memory() -> Target {
    Target::new(
        "memory",
        |case| {
            let mut c = Config::from_url(format!("memory://{case}")).expect("valid url");
            // Short enough for the lost-confirm case; a real lost confirm waits the default 30 s.
            c.confirm_timeout = Duration::from_secs(1);
            c
        },
        |c| Box::pin(coolmq::connect_owned(c)),
    )
    .with_injector(coolmq_conformance::memory_faults)
}

/// A target for a real broker named by an environment variable, if it is set.
fn from_env(name: &str, var: &str) -> Option<Target> {
    let url = std::env::var(var).ok().filter(|u| !u.is_empty())?;
    Some(
        Target::new(
            name,
            move |_| Config::from_url(url.clone()).expect("valid broker URL in the environment"),
            |c| Box::pin(coolmq::connect_owned(c)),
        )
        .with_unreachable_hint(format!(
            "{var} is set, so this broker must be running: start it with `scripts/brokers start`"
        )),
    )
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COOLMQ_LOG")
                .unwrap_or_else(|_| "coolmq=error".into()),
        )
        .with_test_writer()
        .try_init();
    let mut targets = vec![memory()];
    let brokers = [
        ("rabbit", "COOLMQ_TEST_RABBIT_URL"),
        ("artemis", "COOLMQ_TEST_ARTEMIS_URL"),
        ("activemq", "COOLMQ_TEST_ACTIVEMQ_URL"),
    ];
    let mut missing = Vec::new();
    for (name, var) in brokers {
        match from_env(name, var) {
            Some(target) => targets.push(target),
            None => missing.push(var),
        }
    }
    // CI never goes green without a broker: its suite would silently not run.
    if std::env::var_os("CI").is_some() && !missing.is_empty() {
        eprintln!(
            "{} not set, and CI runs the suite on every broker: start them with `scripts/brokers start` (scripts/test does)",
            missing.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let mut trials = coolmq_conformance::trials(&targets);
    let ignored: Vec<(String, String)> = trials
        .iter()
        .filter(|t| t.has_ignored_flag())
        .map(|t| (t.name().to_string(), t.kind().to_string()))
        .collect();
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    trials.push(libtest_mimic::Trial::test(
        "docs::ignored_cases_are_the_ones_features_md_lists",
        move || ignored_cases_match_the_docs(&names, &ignored).map_err(Into::into),
    ));
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit_code()
}

/// The table in docs/FEATURES.md between these markers lists every case a backend does not
/// run and the capability it lacks; a case ignored without being listed (or listed and run)
/// fails, so the documented gaps are exactly the real ones.
const BEGIN: &str = "<!-- ignored-cases:begin -->";
const END: &str = "<!-- ignored-cases:end -->";

fn ignored_cases_match_the_docs(
    targets: &[String],
    ignored: &[(String, String)],
) -> Result<(), String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FEATURES.md");
    let doc = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let table = doc
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(table, _)| table)
        .ok_or_else(|| format!("{path} has no {BEGIN} … {END} table"))?;
    // Rows `| target | group::case | needs |`, the header and rule skipped.
    let documented: std::collections::BTreeSet<(String, String)> = table
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
            let [target, case, needs] = cells[..] else {
                return None;
            };
            let case = case.trim().trim_matches('`');
            (case.contains("::") && targets.iter().any(|t| t == target.trim())).then(|| {
                (
                    format!("{}::{case}", target.trim()),
                    format!("unsupported: {}", needs.trim()),
                )
            })
        })
        .collect();
    let actual: std::collections::BTreeSet<(String, String)> = ignored.iter().cloned().collect();
    if documented == actual {
        return Ok(());
    }
    let mut why = String::from("the ignored cases differ from docs/FEATURES.md's table.\n");
    for (name, kind) in actual.difference(&documented) {
        why.push_str(&format!("  ignored here, not listed: {name} [{kind}]\n"));
    }
    for (name, kind) in documented.difference(&actual) {
        why.push_str(&format!("  listed, not ignored here: {name} [{kind}]\n"));
    }
    why.push_str("This run's table:\n| backend | case | needs |\n|---|---|---|\n");
    for (name, kind) in &actual {
        let (target, case) = name.split_once("::").unwrap_or((name, ""));
        let needs = kind.trim_start_matches("unsupported: ");
        why.push_str(&format!("| {target} | `{case}` | {needs} |\n"));
    }
    Err(why)
}
