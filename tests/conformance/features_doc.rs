//! docs/FEATURES.md's case list and per-backend tables are generated from the suite: this
//! check regenerates them from the run's report and fails when the file differs (with
//! `COOLMQ_UPDATE_DOCS=1` it writes them instead). Only the rows of the targets configured in
//! this run are compared, so a run without some broker checks the rest.

use std::collections::BTreeMap;

use coolmq_conformance::ReportEntry;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FEATURES.md");

/// The generated blocks: (marker, rows keyed by target where per target).
fn blocks(entries: &[ReportEntry]) -> Vec<(&'static str, String)> {
    // The case list: every case of the suite, by group (the same on every target).
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let cases = coolmq_conformance::cases();
    for c in &cases {
        groups.entry(c.group).or_default().push(c.name);
    }
    let mut list = format!("The suite has {} cases.\n\n", cases.len());
    for (group, names) in &groups {
        list.push_str(&format!(
            "- **{group}** ({}): {}\n",
            names.len(),
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Per target: how many run, how many are ignored.
    let mut results = String::from("| target | cases | run | ignored |\n|---|---|---|---|\n");
    let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for e in entries {
        let (run, ignored) = per.entry(e.target.as_str()).or_default();
        if e.outcome == "ignored" {
            *ignored += 1;
        } else {
            *run += 1;
        }
    }
    for (target, (run, ignored)) in &per {
        results.push_str(&format!(
            "| {target} | {} | {run} | {ignored} |\n",
            run + ignored
        ));
    }
    let mut ignored = String::from("| backend | case | needs |\n|---|---|---|\n");
    for e in entries.iter().filter(|e| e.outcome == "ignored") {
        let needs = e
            .detail
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches("unsupported: ");
        ignored.push_str(&format!("| {} | `{}` | {needs} |\n", e.target, e.case));
    }
    vec![
        ("cases", list),
        ("results", results),
        ("ignored-cases", ignored),
    ]
}

/// Rows of a table block that belong to `targets` (or every line of a non-table block).
fn relevant(block: &str, targets: &[String]) -> Vec<String> {
    block
        .lines()
        .filter(|l| {
            let first = l
                .trim_start_matches('|')
                .split('|')
                .next()
                .unwrap_or("")
                .trim();
            !l.starts_with("| ")
                || l.starts_with("| backend")
                || l.starts_with("| target")
                || targets.iter().any(|t| t == first)
        })
        .map(str::to_string)
        .collect()
}

fn replace(doc: &str, marker: &str, body: &str) -> Result<String, String> {
    let begin = format!("<!-- {marker}:begin -->\n");
    let end = format!("<!-- {marker}:end -->");
    let (head, rest) = doc
        .split_once(&begin)
        .ok_or_else(|| format!("docs/FEATURES.md has no {begin:?}"))?;
    let (_, tail) = rest
        .split_once(&end)
        .ok_or_else(|| format!("docs/FEATURES.md has no {end:?}"))?;
    Ok(format!("{head}{begin}{body}{end}{tail}"))
}

fn current<'a>(doc: &'a str, marker: &str) -> &'a str {
    let begin = format!("<!-- {marker}:begin -->\n");
    let end = format!("<!-- {marker}:end -->");
    doc.split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map_or("", |(body, _)| body)
}

/// Compare (or, with `COOLMQ_UPDATE_DOCS`, write) the generated blocks.
pub fn check(targets: &[String], entries: &[ReportEntry]) -> Result<(), String> {
    let doc = std::fs::read_to_string(PATH).map_err(|e| format!("{PATH}: {e}"))?;
    let generated = blocks(entries);
    if std::env::var_os("COOLMQ_UPDATE_DOCS").is_some() {
        let mut updated = doc.clone();
        for (marker, body) in &generated {
            updated = replace(&updated, marker, body)?;
        }
        return std::fs::write(PATH, updated).map_err(|e| format!("{PATH}: {e}"));
    }
    let mut why = String::new();
    for (marker, body) in &generated {
        let (want, have) = (
            relevant(body, targets),
            relevant(current(&doc, marker), targets),
        );
        if want != have {
            why.push_str(&format!(
                "docs/FEATURES.md's {marker} block is out of date; this run's:\n{body}\n"
            ));
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        why.push_str(
            "Regenerate with: COOLMQ_UPDATE_DOCS=1 cargo test --test conformance -- docs::",
        );
        Err(why)
    }
}
