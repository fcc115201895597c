//! Turns cases into libtest-mimic trials for each target backend and runs them.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use coolmq_core::raw::ConnectFn;
use coolmq_core::Config;
use libtest_mimic::{Arguments, Failed as MimicFailed, Trial};
use tokio::runtime::Runtime;

use crate::{cases, Ctx, Injector, InjectorFn, Support};

/// Longest a single case may run before it fails.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a case's cleanup may take.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

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
        }
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
    let capabilities = broker.capabilities();
    let _ = tokio::time::timeout(CLEANUP_TIMEOUT, broker.close()).await;
    Ok(Support {
        capabilities,
        injected_faults,
    })
}

/// The trials for every case on every target: a failing `<target>::connect` trial instead
/// when a target's broker cannot be reached.
pub fn trials(targets: &[Target]) -> Vec<Trial> {
    let mut trials = Vec::new();
    for target in targets {
        let caps = match runtime().block_on(probe(target)) {
            Ok(caps) => caps,
            Err(msg) => {
                trials.push(Trial::test(
                    format!("{}::connect", target.name),
                    move || Err(MimicFailed::from(msg)),
                ));
                continue;
            }
        };
        for case in cases::all() {
            let name = format!("{}::{}", target.name, case.full_name());
            let missing = case.missing(&caps);
            if !missing.is_empty() {
                let kind = format!("unsupported: {}", missing.join(", "));
                trials.push(
                    Trial::test(name, || Ok(()))
                        .with_kind(kind)
                        .with_ignored_flag(true),
                );
                continue;
            }
            let target = target.clone();
            trials.push(Trial::test(name, move || {
                runtime().block_on(run_case(target, case))
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

/// Run the suite with explicit arguments (filters, `--list`…).
pub fn run_with_args(targets: Vec<Target>, args: Arguments) -> ExitCode {
    libtest_mimic::run(&args, trials(&targets)).exit_code()
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
    for case in cases::all() {
        let name = case.full_name();
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let missing = case.missing(&caps);
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
