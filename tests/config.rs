//! Choosing a backend by configuration: URLs, TOML, environment, and the typed errors for
//! every way that can go wrong.

use std::time::Duration;

use coolmq::{Config, ErrorKind};

#[tokio::test]
async fn memory_url_connects_and_reports_its_backend() {
    let broker = coolmq::connect_url("memory://config-test").await.unwrap();
    assert_eq!(broker.backend_name(), "memory");
    assert!(broker.capabilities().confirms);
}

#[tokio::test]
async fn same_memory_url_shares_one_broker() {
    let a = coolmq::connect_url("memory://shared-test").await.unwrap();
    let b = coolmq::connect_url("memory://shared-test").await.unwrap();
    a.declare_queue(&a.queue_spec("q")).await.unwrap();
    a.publisher()
        .await
        .unwrap()
        .send(&coolmq::Destination::queue("q"), coolmq::Message::new("x"))
        .await
        .unwrap();
    assert_eq!(b.queue_depth("q").await.unwrap(), 1);
    let c = coolmq::connect_url("memory://other-test").await.unwrap();
    assert_eq!(
        c.queue_depth("q").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn unknown_scheme_lists_the_available_ones() {
    let e = coolmq::connect_url("kafka://localhost:9092")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownScheme);
    let text = e.to_string();
    for scheme in ["memory://", "amqp://", "amqps://", "amqp1://"] {
        assert!(text.contains(scheme), "{text} should list {scheme}");
    }
    assert_eq!(e.context("field"), Some("url"));
}

#[tokio::test]
async fn scheme_without_its_feature_names_the_feature() {
    // A driver list in which the rabbit backend is known but not compiled in.
    let drivers = [coolmq::raw::Driver {
        name: "rabbit",
        schemes: &["amqp", "amqps"],
        feature: "rabbit",
        connect: None,
    }];
    let config = Config::from_url("amqp://guest:secret@localhost:5672/%2f").unwrap();
    let e = coolmq::raw::connect_with(&drivers, &config)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureDisabled);
    assert_eq!(e.context("feature"), Some("rabbit"));
    assert!(e.to_string().contains("enable the `rabbit` feature"), "{e}");
    assert!(!e.to_string().contains("secret"), "credentials leaked: {e}");
}

#[tokio::test]
async fn malformed_url_names_the_field_and_hides_credentials() {
    let e = coolmq::connect_url("amqp://user:hunter2@[bad")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    assert_eq!(e.context("field"), Some("url"));
    assert!(
        !e.to_string().contains("hunter2"),
        "credentials leaked: {e}"
    );

    let e = coolmq::connect_url("no scheme at all").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
}

#[tokio::test]
async fn bad_memory_option_names_the_field() {
    let e = coolmq::connect_url("memory://x?max_message_size=huge")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    assert_eq!(e.context("field"), Some("url.max_message_size"));
    let e = coolmq::connect_url("memory://x?colour=blue")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    assert!(e.to_string().contains("colour"));
}

#[test]
fn toml_carries_every_setting() {
    let c = Config::from_toml_str(
        r#"
        url = "memory://toml"
        prefetch = 10
        publisher_window = 64
        confirm_timeout = "5s"
        connect_timeout = 2000
        dead_letter_prefix = "dead."
        [redelivery.default]
        maximum_redeliveries = 2
        use_exponential_backoff = true
        [redelivery.queues."queue.thread.autopay"]
        maximum_redeliveries = 5
        initial_redelivery_delay = "10s"
        "#,
    )
    .unwrap();
    assert_eq!(c.prefetch, 10);
    assert_eq!(c.publisher_window, 64);
    assert_eq!(c.confirm_timeout, Duration::from_secs(5));
    assert_eq!(c.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.dead_letter_queue("q"), "dead.q");
    let autopay = c.redelivery.policy_for("queue.thread.autopay");
    assert_eq!(autopay.maximum_redeliveries, 5);
    assert_eq!(autopay.initial_redelivery_delay, Duration::from_secs(10));
    assert!(
        autopay.use_exponential_backoff,
        "inherited from the default entry"
    );
}

#[test]
fn malformed_config_names_the_bad_field() {
    let cases = [
        ("prefetch = -1", "prefetch"),
        ("publisher_window = 0", "publisher_window"),
        ("confirm_timeout = \"forever\"", "confirm_timeout"),
        (
            "[redelivery.default]\nbackoff_multiplier = \"big\"",
            "redelivery.default.backoff_multiplier",
        ),
        (
            "[redelivery.queues.q]\nmaximum_redeliveries = -7",
            "redelivery.queues.q.maximum_redeliveries",
        ),
        ("dead_letter_prefix = \"\"", "dead_letter_prefix"),
    ];
    for (toml, field) in cases {
        let e = Config::from_toml_str(toml).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{toml}");
        assert_eq!(e.context("field"), Some(field), "{toml}: {e}");
    }
    let e = Config::from_toml_str("[redelivery.default]\nmaximum_redeliverys = 3").unwrap_err();
    assert!(
        e.to_string().contains("maximum_redeliverys"),
        "unknown key named: {e}"
    );
    let e = Config::from_toml_str("url = ").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
}

/// Environment variables are process-wide, so every env case runs in this one test.
#[tokio::test]
async fn environment_configures_and_overrides_the_file() {
    let dir = std::env::temp_dir().join(format!("coolmq-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("coolmq.toml");
    std::fs::write(&file, "url = \"memory://from-file\"\nprefetch = 7\n").unwrap();
    std::env::set_var("COOLMQ_CONFIG", &file);
    std::env::set_var("COOLMQ_PREFETCH", "9");
    std::env::set_var("COOLMQ_REDELIVERY__DEFAULT__MAXIMUM_REDELIVERIES", "1");
    std::env::set_var("COOLMQ_TEST_SOMETHING_ELSE", "ignored");
    let c = Config::from_env().unwrap();
    assert_eq!(c.url, "memory://from-file");
    assert_eq!(c.prefetch, 9, "the variable overrides the file");
    assert_eq!(c.redelivery.default.maximum_redeliveries, 1);
    let broker = coolmq::connect_from_env().await.unwrap();
    assert_eq!(broker.endpoint(), "memory://from-file");

    std::env::set_var("COOLMQ_PREFETCH", "many");
    let e = Config::from_env().unwrap_err();
    assert_eq!(e.context("field"), Some("prefetch"));

    std::env::set_var("COOLMQ_CONFIG", dir.join("missing.toml"));
    let e = Config::from_env().unwrap_err();
    assert_eq!(e.context("field"), Some("COOLMQ_CONFIG"));
    for v in [
        "COOLMQ_CONFIG",
        "COOLMQ_PREFETCH",
        "COOLMQ_REDELIVERY__DEFAULT__MAXIMUM_REDELIVERIES",
        "COOLMQ_TEST_SOMETHING_ELSE",
    ] {
        std::env::remove_var(v);
    }
}
