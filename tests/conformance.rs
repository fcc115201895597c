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
    from_url(name, var, url)
}

/// RabbitMQ's targets for `var`: one per driver, named `rabbit-<driver><suffix>`.
fn rabbit(suffix: &str, var: &str) -> Vec<Target> {
    let Some(url) = std::env::var(var).ok().filter(|u| !u.is_empty()) else {
        return Vec::new();
    };
    rabbit_drivers::rabbit_drivers()
        .into_iter()
        .filter_map(|driver| {
            let name = format!("rabbit-{driver}{suffix}");
            from_url(&name, var, rabbit_drivers::on_driver(&name, url.clone()))
        })
        .collect()
}

/// A target for a real broker at `url` (from `var`).
fn from_url(name: &str, var: &str, url: String) -> Option<Target> {
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

/// The RabbitMQ cluster, once per driver: its address list, quorum queues (README, "Running
/// on a cluster").
fn rabbit_cluster(var: &str) -> Vec<Target> {
    let Some(url) = std::env::var(var).ok().filter(|u| !u.is_empty()) else {
        return Vec::new();
    };
    rabbit_drivers::rabbit_drivers()
        .into_iter()
        .map(|driver| {
            let url = rabbit_drivers::on_driver(&format!("rabbit-{driver}"), url.clone());
            rabbit_cluster_on(driver, url, var)
        })
        .collect()
}

fn rabbit_cluster_on(driver: &str, url: String, var: &str) -> Target {
    Target::new(
        format!("rabbit-{driver}-cluster"),
        move |_| {
            let mut c = Config::from_url(url.clone()).expect("valid broker URL in the environment");
            c.queue_kind = coolmq::QueueKind::Quorum;
            c
        },
        |c| Box::pin(coolmq::connect_owned(c)),
    )
    .with_unreachable_hint(format!(
        "{var} is set, so the cluster must be running: start it with `scripts/brokers start`"
    ))
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
    let mut missing = Vec::new();
    // RabbitMQ once per driver (lapin, amqprs): plain, over TLS, the cluster.
    for (suffix, var) in [
        ("", "COOLMQ_TEST_RABBIT_URL"),
        ("-tls", "COOLMQ_TEST_RABBIT_TLS_URL"),
    ] {
        let found = rabbit(suffix, var);
        if found.is_empty() {
            missing.push(var);
        }
        targets.extend(found);
    }
    let brokers = [
        ("artemis", "COOLMQ_TEST_ARTEMIS_URL"),
        ("activemq", "COOLMQ_TEST_ACTIVEMQ_URL"),
        // The HA pairs, through their `failover:(live,backup)` address lists.
        ("artemis-pair", "COOLMQ_TEST_ARTEMIS_PAIR_URL"),
        ("activemq-pair", "COOLMQ_TEST_ACTIVEMQ_PAIR_URL"),
        // Over TLS, with the test CA.
        ("artemis-tls", "COOLMQ_TEST_ARTEMIS_TLS_URL"),
        ("activemq-tls", "COOLMQ_TEST_ACTIVEMQ_TLS_URL"),
    ];
    for (name, var) in brokers {
        match from_env(name, var) {
            Some(target) => targets.push(target),
            None => missing.push(var),
        }
    }
    let cluster = "COOLMQ_TEST_RABBIT_CLUSTER_URL";
    let found = rabbit_cluster(cluster);
    if found.is_empty() {
        missing.push(cluster);
    }
    targets.extend(found);
    // CI never goes green without a broker: its suite would silently not run.
    if std::env::var_os("CI").is_some() && !missing.is_empty() {
        eprintln!(
            "{} not set, and CI runs the suite on every broker: start them with `scripts/brokers start` (scripts/test does)",
            missing.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let report = coolmq_conformance::Report::default();
    let mut trials = coolmq_conformance::trials_reporting(&targets, &report);
    let planned = report.entries();
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    trials.push(libtest_mimic::Trial::test(
        "docs::features_md_is_generated_from_this_suite",
        move || features_doc::check(&names, &planned).map_err(Into::into),
    ));
    let conclusion = libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials);
    coolmq_conformance::write_report(&report);
    conclusion.exit_code()
}

#[path = "conformance/features_doc.rs"]
mod features_doc;
#[path = "common/rabbit_drivers.rs"]
mod rabbit_drivers;
