//! One user through the whole system: POST /users on the command service, through the log and the
//! projector, to GET /users/{id} on the query service.

use crate::support;

use std::time::Duration;

use eventline_testkit::{TestEnv, eventually, http};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_user_can_be_read_back() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let projector = support::projector(&env).await;
    let query = support::query(&env).await;
    let client = http();

    let response = client
        .post(command.url("/users"))
        .json(&json!({"email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let token = response.headers()["consistency-token"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    let user_id = accepted["userId"].as_str().unwrap().to_owned();
    let position = &accepted["position"];
    assert_eq!(token, format!("{}:{}", position["partition"], position["offset"]));
    assert!(accepted["eventId"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());

    let user: Value = eventually(Duration::from_secs(20), "the user in the read model", || {
        let (client, url) = (client.clone(), query.url(&format!("/users/{user_id}")));
        async move {
            let response = client.get(url).send().await.ok()?;
            (response.status() == 200).then_some(response.json().await.ok()?)
        }
    })
    .await;
    assert_eq!(user["userId"], user_id.as_str());
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["firstName"], "Ada");
    assert_eq!(user["lastName"], "Lovelace");
    assert_eq!(user["createdAt"], user["updatedAt"]);

    for service in [&command, &projector, &query] {
        let ready = client.get(service.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
        assert_eq!(client.get(service.url("/healthz")).send().await.unwrap().status(), 200);
        assert_eq!(client.get(service.url("/metrics")).send().await.unwrap().status(), 200);
    }
    let metrics = client.get(projector.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("eventline_projector_events_total"), "{metrics}");

    for service in [command, projector, query] {
        service.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_service_is_ready_only_once_the_live_read_models_are_known() {
    let env = TestEnv::new().await;
    // A database nobody has migrated yet: reachable, but without a live read-model version.
    let empty = env
        .database
        .url
        .replace(&format!("eventline_test_{}", env.id), &format!("eventline_test_{}_empty", env.id));
    eventline_runtime::db::ensure_database(&empty).await.unwrap();
    let database = eventline_runtime::config::DatabaseConfig { url: empty, ..env.database.clone() };
    let query = support::query_with(eventline_query::Config {
        database: database.clone(),
        ..support::query_config(&env)
    })
    .await;
    let url = query.url("/readyz");
    let client = http();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let not_ready = client.get(&url).send().await.unwrap();
    assert_eq!(not_ready.status(), 503);
    let body: Value = not_ready.json().await.unwrap();
    assert!(
        body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "live read models" && c["ok"] == false),
        "{body}"
    );
    // Once migrated, the service finds the live version by itself.
    let pool = eventline_runtime::db::pool(&database).unwrap();
    eventline_runtime::db::migrate(&pool).await.unwrap();
    eventually(Duration::from_secs(20), "/readyz to answer 200", || {
        let (client, url) = (client.clone(), url.clone());
        async move { (client.get(url).send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    query.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_ids_are_problems() {
    let env = TestEnv::new().await;
    let query = support::query(&env).await;
    let client = http();

    let missing = client.get(query.url("/users/550e8400-e29b-41d4-a716-446655440000")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["status"], 404);
    assert!(body["type"].as_str().unwrap().ends_with("/not-found"));

    let malformed = client.get(query.url("/users/not-a-uuid")).send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.headers()["content-type"], "application/problem+json");

    let no_route = client.get(query.url("/nothing/here")).send().await.unwrap();
    assert_eq!(no_route.status(), 404);
    assert_eq!(no_route.headers()["content-type"], "application/problem+json");
    query.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_commands_are_rejected_with_problems_and_append_nothing() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let client = http();
    let post = |body: &'static str, content_type: &'static str| {
        client.post(command.url("/users")).header("content-type", content_type).body(body).send()
    };

    let invalid =
        post(r#"{"email": "nope", "firstName": "", "lastName": "L"}"#, "application/json").await.unwrap();
    assert_eq!(invalid.status(), 422);
    assert_eq!(invalid.headers()["content-type"], "application/problem+json");
    let body: Value = invalid.json().await.unwrap();
    let fields: Vec<&str> =
        body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["email", "firstName"]);

    let malformed = post(r#"{"email": "#, "application/json").await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.headers()["content-type"], "application/problem+json");

    let wrong_type = post(r#"{}"#, "text/plain").await.unwrap();
    assert_eq!(wrong_type.status(), 415);

    let missing_field = post(r#"{"email": "a@b.co", "firstName": "A"}"#, "application/json").await.unwrap();
    assert_eq!(missing_field.status(), 422);

    let big = format!(r#"{{"email": "a@b.co", "firstName": "{}", "lastName": "B"}}"#, "x".repeat(70 * 1024));
    let too_large = client
        .post(command.url("/users"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    assert_eq!(too_large.headers()["content-type"], "application/problem+json");

    // Nothing reached the log: every partition is still empty.
    let consumer: rdkafka::consumer::BaseConsumer =
        eventline_runtime::kafka::client_config(&env.kafka).create().unwrap();
    for partition in 0..eventline_testkit::TEST_PARTITIONS {
        let (_, high) = rdkafka::consumer::Consumer::fetch_watermarks(
            &consumer,
            &env.kafka.topic,
            partition,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(high, 0, "partition {partition} received an event");
    }
    command.stop().await.unwrap();
}
