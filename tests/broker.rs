//! The stack against broker faults, on an Apache Kafka broker of the test's own: the log survives a
//! broker restart and every service recovers by itself; a frozen broker costs a few `503`s, never
//! a command service that stays broken; read models built from another log are refused, never
//! served as current.

use crate::support;

use std::time::{Duration, Instant};

use eventline_testkit::{OwnBroker, TestEnv, eventually, http};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Adds `quantity` to `sku`; the response (202 or a problem).
async fn add_stock(command: &support::Running, sku: &str, quantity: i64) -> reqwest::Response {
    http()
        .post(command.url(&format!("/inventory/{sku}/adjustments")))
        .json(&json!({"quantity": quantity, "adjustmentType": "add", "reason": "broker test"}))
        .send()
        .await
        .unwrap()
}

/// The stock of `sku` once the read models reflect `token` (a projector that just started takes
/// a few seconds to join its group: until then the query service answers 503, projection behind).
async fn stock_at(query: &support::Running, sku: &str, token: &str) -> i64 {
    eventually(Duration::from_secs(30), "the read models to reach the token", || async {
        let response = http()
            .get(query.url(&format!("/inventory/{sku}")))
            .header("consistency-token", token)
            .send()
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        response.json::<Value>().await.ok()?["quantity"].as_i64()
    })
    .await
}

/// What a log replaced under running services must cause: the projector stops by itself instead
/// of mixing the logs, and the query service stops being ready and refuses reads of `sku` (with
/// `token`, one from the new log, if given) rather than serve them as current.
async fn another_log_is_refused(
    projector: support::Running,
    query: &support::Running,
    sku: &str,
    token: Option<&str>,
) {
    let ended = tokio::time::timeout(Duration::from_secs(30), projector.handle).await;
    let error = format!("{:#}", ended.expect("the projector stops by itself").unwrap().unwrap_err());
    assert!(error.contains("another log"), "{error}");
    eventually(Duration::from_secs(30), "the query service to notice the other log", || async {
        let ready = http().get(query.url("/readyz")).send().await.ok()?;
        (ready.status() == 503).then_some(())
    })
    .await;
    let mut read = http().get(query.url(&format!("/inventory/{sku}")));
    if let Some(token) = token {
        read = read.header("consistency-token", token);
    }
    let read = read.send().await.unwrap();
    assert_eq!(read.status(), 503);
    let problem: Value = read.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/read-models-from-another-log"), "{problem}");
}

fn token_of(response: &reqwest::Response) -> String {
    response.headers()["consistency-token"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_survives_a_broker_restart_and_every_service_recovers_by_itself() {
    let mut env = TestEnv::new().await;
    let mut broker = OwnBroker::start().await;
    env.kafka.brokers = broker.address.clone();
    let (command, projector, query) =
        (support::command(&env).await, support::projector(&env).await, support::query(&env).await);
    let sku = format!("DURABLE-{}", env.id);
    let mut last = String::new();
    for _ in 0..20 {
        let response = add_stock(&command, &sku, 1).await;
        assert_eq!(response.status(), 202);
        last = token_of(&response);
    }
    assert_eq!(stock_at(&query, &sku, &last).await, 20);

    broker.restart().await;
    let restarted = Instant::now();
    // The command service appends again without a restart of its own.
    let accepted = eventually(Duration::from_secs(30), "the command service to append again", || async {
        let response = add_stock(&command, &sku, 1).await;
        (response.status() == 202).then(|| token_of(&response))
    })
    .await;
    let command_back = restarted.elapsed();
    // The projector consumes again without a restart of its own.
    eventually(Duration::from_secs(60), "the projector to apply the new event", || async {
        let response = http()
            .get(query.url(&format!("/inventory/{sku}")))
            .header("consistency-token", &accepted)
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let projector_back = restarted.elapsed();
    eprintln!("broker restart: commands back after {command_back:?}, projection after {projector_back:?}");

    // The 20 events from before the restart are still in the log, and none was applied twice.
    assert_eq!(stock_at(&query, &sku, &accepted).await, 21);
    let messages = env.read_topic().await;
    assert_eq!(messages.len(), 21, "the log kept every event across the restart");
    let ready = http().get(projector.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    for service in [command, projector, query] {
        service.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_costs_503s_and_the_command_service_recovers_by_itself() {
    let mut env = TestEnv::new().await;
    let broker = OwnBroker::start().await;
    env.kafka.brokers = broker.address.clone();
    let command = support::command_with(eventline_command::Config {
        append_timeout_ms: 2000,
        ..support::command_config(&env)
    })
    .await;
    let sku = format!("FROZEN-{}", env.id);
    assert_eq!(add_stock(&command, &sku, 1).await.status(), 202);

    broker.freeze();
    let frozen = Instant::now();
    let mut refused = 0;
    while frozen.elapsed() < Duration::from_secs(6) {
        let started = Instant::now();
        let response = add_stock(&command, &sku, 1).await;
        assert_ne!(response.status(), 202, "a frozen broker acknowledged nothing");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(4), "503 took {:?}", started.elapsed());
        refused += 1;
    }
    broker.resume();
    let resumed = Instant::now();
    eventually(Duration::from_secs(20), "appends to succeed again", || async {
        (add_stock(&command, &sku, 1).await.status() == 202).then_some(())
    })
    .await;
    eprintln!(
        "frozen broker: {refused} commands refused; appending again {:?} after resuming",
        resumed.elapsed()
    );
    // And they keep succeeding: the producer is not left fenced.
    for _ in 0..10 {
        assert_eq!(add_stock(&command, &sku, 1).await.status(), 202);
    }
    let ready = http().get(command.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    command.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_built_from_another_log_are_refused_not_served_as_current() {
    let mut env = TestEnv::new().await;
    let mut broker = OwnBroker::start().await;
    env.kafka.brokers = broker.address.clone();
    let (command, projector, query) =
        (support::command(&env).await, support::projector(&env).await, support::query(&env).await);
    let sku = format!("OTHER-{}", env.id);
    let mut last = String::new();
    for _ in 0..5 {
        let response = add_stock(&command, &sku, 1).await;
        last = token_of(&response);
    }
    assert_eq!(stock_at(&query, &sku, &last).await, 5);

    // Another log under the same address: a broker replaced without its disk.
    broker.replace_log().await;
    // The new log gets an event at a position the old read models have long passed.
    env.create_topic().await;
    let fresh = eventually(Duration::from_secs(30), "an append to the new log", || async {
        let response = add_stock(&command, &sku, 100).await;
        // The producer id the command service holds means nothing to the new broker: it must
        // notice and replace its producer by itself.
        (response.status() == 202).then(|| token_of(&response))
    })
    .await;

    another_log_is_refused(projector, &query, &sku, Some(&fresh)).await;
    // A new projector refuses to start on them, and says what to do.
    let refused = eventline_projector::Application::build(support::projector_config(&env, "other")).await;
    let message = format!("{:#}", refused.err().expect("refused"));
    assert!(message.contains("another log") && message.contains("reset"), "{message}");
    command.stop().await.unwrap();
    query.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_and_recreated_under_running_services_is_another_log() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let env = TestEnv::new().await;
    let (command, projector, query) =
        (support::command(&env).await, support::projector(&env).await, support::query(&env).await);
    let sku = format!("RECREATED-{}", env.id);
    let mut last = String::new();
    for _ in 0..3 {
        last = token_of(&add_stock(&command, &sku, 1).await);
    }
    assert_eq!(stock_at(&query, &sku, &last).await, 3);
    let before =
        eventline_runtime::log_identity::fetch(&env.kafka.brokers, &env.kafka.security, &env.kafka.topic)
            .await
            .unwrap();

    // The operator deletes the topic and creates it again under the same name: Kafka gives it a
    // new topic id, and its offsets start again at 0.
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        eventline_runtime::kafka::client_config(&env.kafka).create().unwrap();
    let deleted = admin.delete_topics(&[&env.kafka.topic], &AdminOptions::new()).await.unwrap();
    assert!(deleted[0].is_ok(), "{deleted:?}");
    let after = eventually(Duration::from_secs(30), "the topic to exist again", || async {
        eventline_runtime::kafka::ensure_topic(&env.kafka).await.ok()?;
        eventline_runtime::log_identity::fetch(&env.kafka.brokers, &env.kafka.security, &env.kafka.topic)
            .await
            .ok()
            .filter(|identity| identity.topic_id != before.topic_id)
    })
    .await;
    assert_eq!(
        after.cluster_id, before.cluster_id,
        "the same cluster: only the topic id tells the logs apart"
    );

    another_log_is_refused(projector, &query, &sku, None).await;
    command.stop().await.unwrap();
    query.stop().await.unwrap();
}
