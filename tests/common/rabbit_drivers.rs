//! RabbitMQ's tests run once per driver: the drivers this build carries and the URL of each.

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
