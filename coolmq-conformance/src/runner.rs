//! Turns cases into libtest-mimic trials for each target backend and runs them.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use coolmq_core::raw::ConnectFn;
use coolmq_core::{Capabilities, Config};
use libtest_mimic::{Arguments, Failed as MimicFailed, Trial};
use tokio::runtime::Runtime;

use crate::{cases, Case, Ctx, Injector, InjectorFn, Report, ReportEntry, Support};

/// Longest a single case may run before it fails.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a case's cleanup may take.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Adjusts the capabilities a target's backend claims ([`Target::with_capabilities`]).
pub type CapabilityOverride = Arc<dyn Fn(&mut Capabilities) + Send + Sync>;

/// A backend to run the suite against.
#[derive(Clone)]
pub struct Target {
    /// Shown before every case name (`memory::send::…`).
    pub name: String,
    /// The configuration for one case; the argument is unique per case (the memory target
    /// uses it as the broker name, so cases are isolated).
    pub config_for_case: Arc<dyn Fn(&str) -> Config + Send + Sync>,
    /// How to connect.
    pub connect: ConnectFn,
    /// Told to the user when the broker cannot be reached (how to start it).
    pub unreachable_hint: String,
    /// Fault hooks for a target without a network (see [`crate::Injector`]).
    pub injector: Option<InjectorFn>,
    /// Cases of the deployment's own, run after the suite's.
    pub extra_cases: Vec<Case>,
    /// Cases not to run here (`group::case`), with why.
    pub skips: Vec<(String, String)>,
    /// Adjusts the capabilities the backend claims before cases are chosen.
    pub capability_override: Option<CapabilityOverride>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("extra_cases", &self.extra_cases)
            .field("skips", &self.skips)
            .field("injected_faults", &self.injector.is_some())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A target.
    pub fn new(
        name: impl Into<String>,
        config_for_case: impl Fn(&str) -> Config + Send + Sync + 'static,
        connect: ConnectFn,
    ) -> Self {
        Target {
            name: name.into(),
            config_for_case: Arc::new(config_for_case),
            connect,
            unreachable_hint: String::new(),
            injector: None,
            extra_cases: Vec::new(),
            skips: Vec::new(),
            capability_override: None,
        }
    }

    /// Add cases of your own (made with [`crate::case!`]): they run on this target like the
    /// suite's, gated by their requirements.
    pub fn with_cases(mut self, cases: impl IntoIterator<Item = Case>) -> Self {
        self.extra_cases.extend(cases);
        self
    }

    /// Do not run `case` (`group::case`) here, saying why; it is listed as ignored with the
    /// reason. `COOLMQ_CONFORMANCE_SKIP` (comma-separated `target::group::case` or
    /// `group::case`) adds skips from the environment.
    pub fn skip(mut self, case: impl Into<String>, why: impl Into<String>) -> Self {
        self.skips.push((case.into(), why.into()));
        self
    }

    /// Override the capabilities the backend claims (a deployment whose broker is configured
    /// differently, e.g. without a delay plugin). `COOLMQ_CONFORMANCE_CAPABILITIES`
    /// (`target:flag=true|false,…;other:…`) does the same from the environment.
    pub fn with_capabilities(
        mut self,
        adjust: impl Fn(&mut Capabilities) + Send + Sync + 'static,
    ) -> Self {
        self.capability_override = Some(Arc::new(adjust));
        self
    }

    /// The suite's cases and this target's own.
    fn cases(&self) -> Vec<Case> {
        let mut all = cases::all();
        all.extend(self.extra_cases.iter().cloned());
        all
    }

    /// Why `case` is skipped here, if it is (the target's skips, then the environment's).
    fn skipped(&self, case: &str) -> Option<String> {
        if let Some((_, why)) = self.skips.iter().find(|(c, _)| c == case) {
            return Some(why.clone());
        }
        let listed = std::env::var("COOLMQ_CONFORMANCE_SKIP").unwrap_or_default();
        let qualified = format!("{}::{case}", self.name);
        listed
            .split(',')
            .map(str::trim)
            .any(|s| s == case || s == qualified)
            .then(|| "COOLMQ_CONFORMANCE_SKIP".to_string())
    }

    /// Give the suite fault hooks for each case's configuration (the memory broker's are
    /// [`crate::memory_faults`]); the cases that need a negative confirm on demand run only
    /// with them.
    pub fn with_injector(
        mut self,
        injector: impl Fn(&Config) -> Option<Arc<dyn Injector>> + Send + Sync + 'static,
    ) -> Self {
        self.injector = Some(Arc::new(injector));
        self
    }

    fn injector_for(&self, config: &Config) -> Option<Arc<dyn Injector>> {
        self.injector.as_ref().and_then(|f| f(config))
    }

    /// Say how to start the broker, for the failure when it is unreachable.
    pub fn with_unreachable_hint(mut self, hint: impl Into<String>) -> Self {
        self.unreachable_hint = hint.into();
        self
    }
}

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("coolmq-conformance")
            .build()
            .expect("a tokio runtime")
    })
}

async fn probe(target: &Target) -> Result<Support, String> {
    let config = (target.config_for_case)("probe");
    let injected_faults = target.injector_for(&config).is_some();
    let url = config.redacted_url();
    let broker = tokio::time::timeout(Duration::from_secs(60), (target.connect)(config))
        .await
        .map_err(|_| format!("connecting to {url} timed out. {}", target.unreachable_hint))?
        .map_err(|e| format!("cannot connect to {url}: {e}. {}", target.unreachable_hint))?;
    let mut capabilities = broker.capabilities();
    let _ = tokio::time::timeout(CLEANUP_TIMEOUT, broker.close()).await;
    if let Some(adjust) = &target.capability_override {
        adjust(&mut capabilities);
    }
    override_from_env(&target.name, &mut capabilities)?;
    Ok(Support {
        capabilities,
        injected_faults,
    })
}

/// Apply `COOLMQ_CONFORMANCE_CAPABILITIES` (`target:flag=bool,…;…`) to `target`'s
/// capabilities.
fn override_from_env(target: &str, caps: &mut Capabilities) -> Result<(), String> {
    let Ok(spec) = std::env::var("COOLMQ_CONFORMANCE_CAPABILITIES") else {
        return Ok(());
    };
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, flags) = part.split_once(':').ok_or_else(|| {
            format!("COOLMQ_CONFORMANCE_CAPABILITIES: {part:?} is not `target:flag=bool,…`")
        })?;
        if name.trim() != target {
            continue;
        }
        for flag in flags.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (key, value) = flag
                .split_once('=')
                .and_then(|(k, v)| Some((k.trim(), v.trim().parse::<bool>().ok()?)))
                .ok_or_else(|| {
                    format!("COOLMQ_CONFORMANCE_CAPABILITIES: {flag:?} is not `flag=true|false`")
                })?;
            let field = match key {
                "confirms" => &mut caps.confirms,
                "unroutable_returns" => &mut caps.unroutable_returns,
                "transactions" => &mut caps.transactions,
                "transactional_ack" => &mut caps.transactional_ack,
                "delayed_delivery" => &mut caps.delayed_delivery,
                "delivery_count" => &mut caps.delivery_count,
                "dead_letter" => &mut caps.dead_letter,
                "topics" => &mut caps.topics,
                "max_length" => &mut caps.max_length,
                "message_ttl" => &mut caps.message_ttl,
                "nested_headers" => &mut caps.nested_headers,
                "network" => &mut caps.network,
                other => {
                    return Err(format!(
                        "COOLMQ_CONFORMANCE_CAPABILITIES: no capability {other:?}"
                    ))
                }
            };
            *field = value;
        }
    }
    Ok(())
}

/// The trials for every case on every target: a failing `<target>::connect` trial instead
/// when a target's broker cannot be reached.
pub fn trials(targets: &[Target]) -> Vec<Trial> {
    trials_reporting(targets, &Report::default())
}

/// [`trials`], recording each trial's outcome in `report` as it finishes.
pub fn trials_reporting(targets: &[Target], report: &Report) -> Vec<Trial> {
    let mut trials = Vec::new();
    for target in targets {
        let caps = match runtime().block_on(probe(target)) {
            Ok(caps) => caps,
            Err(msg) => {
                report.push(ReportEntry {
                    target: target.name.clone(),
                    case: "connect".into(),
                    outcome: "failed".into(),
                    detail: Some(msg.clone()),
                });
                trials.push(Trial::test(
                    format!("{}::connect", target.name),
                    move || Err(MimicFailed::from(msg)),
                ));
                continue;
            }
        };
        for case in target.cases() {
            let full = case.full_name();
            let name = format!("{}::{full}", target.name);
            let missing = case.missing(&caps);
            let ignored = if let Some(why) = target.skipped(&full) {
                Some(format!("skipped: {why}"))
            } else if !missing.is_empty() {
                Some(format!("unsupported: {}", missing.join(", ")))
            } else {
                None
            };
            if let Some(kind) = ignored {
                report.push(ReportEntry {
                    target: target.name.clone(),
                    case: full,
                    outcome: "ignored".into(),
                    detail: Some(kind.clone()),
                });
                trials.push(
                    Trial::test(name, || Ok(()))
                        .with_kind(kind)
                        .with_ignored_flag(true),
                );
                continue;
            }
            report.push(ReportEntry {
                target: target.name.clone(),
                case: full.clone(),
                outcome: "not run".into(),
                detail: None,
            });
            let (target, report) = (target.clone(), report.clone());
            trials.push(Trial::test(name, move || {
                let r = runtime().block_on(run_case(target.clone(), case));
                match &r {
                    Ok(()) => report.set(&target.name, &full, "passed", None),
                    Err(e) => report.set(
                        &target.name,
                        &full,
                        "failed",
                        e.message().map(str::to_string),
                    ),
                }
                r
            }));
        }
    }
    trials
}

async fn run_case(target: Target, case: crate::Case) -> Result<(), MimicFailed> {
    let id = format!(
        "{}-{}-{}",
        case.group,
        case.name.replace('_', "-"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let config = (target.config_for_case)(&id);
    let broker = (target.connect)(config.clone())
        .await
        .map_err(|e| format!("cannot connect: {e}. {}", target.unreachable_hint))?;
    let injector = target.injector_for(&config);
    let ctx = Ctx::new(broker, config, target.connect, id, injector);
    let outcome = tokio::time::timeout(CASE_TIMEOUT, (case.run)(ctx.clone())).await;
    // Cleanup talks to the broker too: bounded, so a backend whose delete or close hangs fails
    // the case instead of hanging the run.
    let cleaned = tokio::time::timeout(CLEANUP_TIMEOUT, ctx.cleanup()).await;
    match outcome {
        Ok(Ok(())) if cleaned.is_err() => Err(format!(
            "cleanup (deleting the case's queues, closing the broker) did not finish within {CLEANUP_TIMEOUT:?}"
        )
        .into()),
        Ok(Ok(())) => Ok(()),
        Ok(Err(f)) => Err(f.0.into()),
        Err(_) => Err(format!("case timed out after {CASE_TIMEOUT:?}").into()),
    }
}

/// Run the suite against `targets` with the command line's libtest arguments; the exit code
/// is non-zero if any case failed.
pub fn run(targets: Vec<Target>) -> ExitCode {
    run_with_args(targets, Arguments::from_args())
}

/// Run the suite with explicit arguments (filters, `--list`…). With
/// `COOLMQ_CONFORMANCE_REPORT=<file>` the outcome of every case is written there as JSON.
pub fn run_with_args(targets: Vec<Target>, args: Arguments) -> ExitCode {
    let report = Report::default();
    let conclusion = libtest_mimic::run(&args, trials_reporting(&targets, &report));
    write_report(&report);
    conclusion.exit_code()
}

/// Write `report` where `COOLMQ_CONFORMANCE_REPORT` says, if it says.
pub fn write_report(report: &Report) {
    if let Some(path) = std::env::var_os("COOLMQ_CONFORMANCE_REPORT") {
        if let Err(e) = std::fs::write(&path, report.to_json()) {
            eprintln!("cannot write the conformance report to {path:?}: {e}");
        }
    }
}

/// How one case went, for reports outside libtest (the `coolmq conformance` command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The case passed.
    Passed,
    /// The case failed, with why.
    Failed(String),
    /// Not run: the backend lacks these capabilities.
    Unsupported(Vec<&'static str>),
}

/// One case's report line.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// `group::name`.
    pub name: String,
    /// Passed, failed or unsupported.
    pub outcome: Outcome,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Run the cases whose name contains `filter` (all without one) against `target`, one after
/// another, calling `each` as every case finishes. Errors only when the broker cannot be
/// reached at all.
///
/// # Errors
/// The connection failure, with the target's hint on how to start the broker.
pub async fn run_report(
    target: &Target,
    filter: Option<&str>,
    mut each: impl FnMut(&CaseReport),
) -> Result<Vec<CaseReport>, String> {
    let caps = probe(target).await?;
    let mut reports = Vec::new();
    for case in target.cases() {
        let name = case.full_name();
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let mut missing = case.missing(&caps);
        if target.skipped(&name).is_some() {
            missing = vec!["skipped"];
        }
        let start = std::time::Instant::now();
        let outcome = if !missing.is_empty() {
            Outcome::Unsupported(missing)
        } else {
            match run_case(target.clone(), case).await {
                Ok(()) => Outcome::Passed,
                Err(e) => Outcome::Failed(e.message().map(str::to_string).unwrap_or_default()),
            }
        };
        let report = CaseReport {
            name,
            outcome,
            elapsed: start.elapsed(),
        };
        each(&report);
        reports.push(report);
    }
    Ok(reports)
}
