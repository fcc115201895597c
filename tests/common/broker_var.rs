//! A test whose broker URL is not set: ignored on a developer's machine, a failure in CI
//! (`CI` set), so CI can never go green without its brokers.

use libtest_mimic::Trial;

/// The trial to run in place of `name` when `var` (a `COOLMQ_TEST_*_URL`) is not set.
pub fn missing(name: impl Into<String>, var: &'static str) -> Trial {
    if std::env::var_os("CI").is_some() {
        Trial::test(name, move || {
            Err(format!(
                "{var} is not set, and CI needs every broker: start them with `scripts/brokers start` (scripts/test does)"
            )
            .into())
        })
    } else {
        Trial::test(name, || Ok(()))
            .with_kind(format!("needs {var} (scripts/test sets it)"))
            .with_ignored_flag(true)
    }
}
