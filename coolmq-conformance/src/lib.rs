//! # coolmq-conformance
//!
//! The shared suite every coolmq backend must pass, published as a library so out-of-tree
//! backends can run it too. Each case is its own named test (pass, fail, or ignored with the
//! missing capability in its kind — never silently absent), runs on fresh uniquely named
//! queues, and deletes what it made.
//!
//! Run it from a `[[test]]` target with `harness = false`:
//!
//! ```no_run
//! use coolmq_conformance::{run, Target};
//! fn main() -> std::process::ExitCode {
//!     let memory = Target::new("memory", |case| {
//!         let mut c = coolmq_core::Config::from_url(format!("memory://{case}")).unwrap();
//!         c.confirm_timeout = std::time::Duration::from_secs(1);
//!         c
//!     }, |c| Box::pin(coolmq_memory::connect(c)))
//!     // The in-process broker's own fault hooks; a networked target gets its faults from a
//!     // `FaultProxy` in front of its URL instead.
//!     .with_injector(coolmq_conformance::memory_faults);
//!     run(vec![memory])
//! }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod case;
mod cases;
mod ctx;
mod inject;
mod proxy;
mod report;
mod runner;

pub use case::{req, Case, CaseFn, Failed, Requirement, Support, TestResult};
pub use ctx::{Ctx, Faults};
pub use inject::{memory_faults, Injector, InjectorFn};
pub use proxy::FaultProxy;
pub use report::{Report, ReportEntry};
pub use runner::{
    run, run_report, run_with_args, trials, trials_reporting, write_report, CapabilityOverride,
    CaseReport, Outcome, Target,
};

/// How much later than scheduled a delayed delivery or redelivery may arrive: a broker's
/// scheduler tick and a loaded machine, never a lost timer.
pub const DELAY_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// `m` without the `traceparent` coolmq adds to a message sent without one: what the sender
/// handed in, for comparing a handed-back message (which keeps the trace, so a resend
/// continues it).
pub fn untraced(m: &coolmq_core::Message) -> coolmq_core::Message {
    let mut m = m.clone();
    m.headers.remove(coolmq_core::TRACEPARENT_HEADER);
    m
}

/// Every case of the suite, in a stable order.
pub fn cases() -> Vec<Case> {
    cases::all()
}
