//! The machine-readable result of a run: one entry per target and case, written as JSON when
//! `COOLMQ_CONFORMANCE_REPORT` names a file, so documents (docs/FEATURES.md) are generated
//! from what ran instead of written by hand.

use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One case on one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportEntry {
    /// The target (`memory`, `rabbit`, …).
    pub target: String,
    /// `group::case`.
    pub case: String,
    /// `passed`, `failed`, `ignored` (a missing capability or a skip) or `not run` (filtered
    /// out).
    pub outcome: String,
    /// Why it failed or was ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Every entry of a run, filled as trials finish.
#[derive(Debug, Clone, Default)]
pub struct Report(Arc<Mutex<Vec<ReportEntry>>>);

impl Report {
    pub(crate) fn push(&self, entry: ReportEntry) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    }

    pub(crate) fn set(&self, target: &str, case: &str, outcome: &str, detail: Option<String>) {
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries
            .iter_mut()
            .find(|e| e.target == target && e.case == case)
        {
            e.outcome = outcome.to_string();
            e.detail = detail;
        }
    }

    /// The entries so far, sorted by target and case.
    pub fn entries(&self) -> Vec<ReportEntry> {
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        entries.sort_by(|a, b| (&a.target, &a.case).cmp(&(&b.target, &b.case)));
        entries
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.entries()).unwrap_or_else(|_| "[]".into())
    }
}
