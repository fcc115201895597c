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

/// RabbitMQ's drivers this build carries: lapin, and amqprs with the `rabbit-amqprs` feature.
/// Tests on RabbitMQ run once per driver, as `rabbit-<driver>` targets.
#[allow(dead_code)]
pub fn rabbit_drivers() -> Vec<&'static str> {
    let mut drivers = vec!["lapin"];
    if cfg!(feature = "rabbit-amqprs") {
        drivers.push("amqprs");
    }
    drivers
}

/// `url` with the driver a RabbitMQ target's name says (`rabbit-amqprs…`, `rabbit-lapin…`);
/// other targets' URLs unchanged.
#[allow(dead_code)]
pub fn on_driver(target: &str, url: String) -> String {
    let driver = match target {
        t if t.starts_with("rabbit-amqprs") => "amqprs",
        t if t.starts_with("rabbit-lapin") => "lapin",
        _ => return url,
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}driver={driver}")
}
