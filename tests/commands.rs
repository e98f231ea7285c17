//! The command service against real Kafka and Redis: every command lands on the topic with the
//! right key, headers and envelope; invalid input is refused and appends nothing; idempotency keys
//! replay, refuse reuse and serialise concurrent requests; a stopped broker means 503, never 2xx.

use crate::support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use eventline_events::{Envelope, Event};
use eventline_testkit::{OwnBroker, TestEnv, http};
use rdkafka::Message;
use rdkafka::message::Headers;
use reqwest::Response;
use serde_json::{Value, json};

const USER: &str = "550e8400-e29b-41d4-a716-446655440000";
const ORDER: &str = "650e8400-e29b-41d4-a716-446655440000";

async fn post(url: String, body: &Value, key: Option<&str>) -> Response {
    let mut request = http().post(url).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

async fn expect_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    response.json().await.unwrap()
}

fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_lands_on_the_topic_with_key_headers_and_envelope() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let mut accepted: Vec<Value> = Vec::new();
    let requests = [
        (
            "/users",
            json!({"userId": USER, "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace"}),
        ),
        (
            "/orders",
            json!({"orderId": ORDER, "userId": USER, "currency": "USD",
            "items": [{"sku": "LAPTOP-001", "quantity": 2, "price": "299.99"}, {"sku": "MOUSE-002", "quantity": 1, "price": "10.5"}]}),
        ),
        (
            &format!("/orders/{ORDER}/payments"),
            json!({"amount": "610.48", "currency": "USD", "paymentMethod": "credit_card"}),
        ),
        (
            "/inventory/LAPTOP-001/adjustments",
            json!({"quantity": 5, "adjustmentType": "add", "reason": "received"}),
        ),
    ];
    for (path, body) in &requests {
        let response = post(command.url(path), body, None).await;
        assert_eq!(response.status(), 202, "{path}");
        let token = response.headers()["consistency-token"].to_str().unwrap().to_owned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(token, format!("{}:{}", body["position"]["partition"], body["position"]["offset"]));
        accepted.push(body);
    }
    assert_eq!(accepted[1]["totalAmount"], "610.48", "computed by the server");
    assert_eq!(accepted[1]["orderId"], ORDER);
    assert_eq!(accepted[2]["orderId"], ORDER);
    assert_eq!(accepted[3]["sku"], "LAPTOP-001");

    let batch = json!({"commands": [
        {"type": "CreateUser", "email": "b@example.com", "firstName": "B", "lastName": "B"},
        {"type": "AdjustInventory", "sku": "MOUSE-002", "quantity": 7, "adjustmentType": "set", "reason": "stocktake"},
        {"type": "AdjustInventory", "sku": "LAPTOP-001", "quantity": 2, "adjustmentType": "remove", "reason": "sold"},
    ]});
    let response = post(command.url("/commands/batch"), &batch, None).await;
    assert_eq!(response.status(), 202);
    let token = response.headers()["consistency-token"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["eventType"], "UserCreated");
    assert_eq!(results[1]["eventType"], "InventoryAdjusted");
    assert_eq!(results[2]["eventType"], "InventoryAdjusted");
    for result in results {
        let (p, o) = (&result["position"]["partition"], &result["position"]["offset"]);
        assert!(
            token.split(',').any(|pair| pair == format!("{p}:{o}") || pair.starts_with(&format!("{p}:")))
        );
    }
    accepted.extend(results.iter().cloned());

    let messages = env.read_topic().await;
    let positions: Vec<String> = accepted.iter().map(|a| a["position"].to_string()).collect();
    let read: Vec<String> = messages.iter().map(|m| format!("{}:{}", m.partition(), m.offset())).collect();
    assert_eq!(
        messages.len(),
        accepted.len(),
        "exactly one message per accepted command: {positions:?} vs {read:?}"
    );
    let by_id: HashMap<String, _> = messages
        .iter()
        .map(|m| (Envelope::decode(m.payload().unwrap()).unwrap().event_id.to_string(), m))
        .collect();
    for result in &accepted {
        let message = by_id[result["eventId"].as_str().unwrap()];
        assert_eq!(i64::from(message.partition()), result["position"]["partition"].as_i64().unwrap());
        assert_eq!(message.offset(), result["position"]["offset"].as_i64().unwrap());
        let envelope = Envelope::decode(message.payload().unwrap()).unwrap();
        assert_eq!(message.key().unwrap(), envelope.aggregate_id().as_bytes(), "keyed by aggregate id");
        let headers: HashMap<&str, &[u8]> =
            message.headers().unwrap().iter().map(|h| (h.key, h.value.unwrap())).collect();
        assert_eq!(headers["event-type"], envelope.event_type().as_str().as_bytes());
        assert_eq!(headers["event-id"], envelope.event_id.to_string().as_bytes());
        assert_eq!(headers["schema-version"], b"1");
        assert_eq!(headers["content-type"], b"application/json");
        match &envelope.event {
            Event::UserCreated(e) => assert_eq!(result["userId"], e.user_id.to_string()),
            Event::OrderPlaced(e) => {
                assert_eq!(e.total_amount.to_string(), "610.48");
                assert_eq!(e.items[1].price.to_string(), "10.50");
            }
            Event::PaymentSettled(e) => assert_eq!(e.order_id.to_string(), ORDER),
            Event::InventoryAdjusted(e) => assert_eq!(result["sku"], e.sku.as_str()),
        }
    }
    // Payments follow their order: same key, same partition.
    let partition_of = |i: usize| accepted[i]["position"]["partition"].clone();
    assert_eq!(partition_of(1), partition_of(2));
    command.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_commands_are_refused_field_by_field_and_append_nothing() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let cases: Vec<(String, Value, Vec<&str>)> = vec![
        (
            "/users".into(),
            json!({"email": "no", "firstName": "", "lastName": "x"}),
            vec!["email", "firstName"],
        ),
        ("/users".into(), json!({"email": "a@b.co", "firstName": "A"}), vec!["."]),
        (
            "/users".into(),
            json!({"email": "a@b.co", "firstName": "A", "lastName": "B", "admin": true}),
            vec!["."],
        ),
        (
            "/orders".into(),
            json!({"userId": "u", "currency": "usd", "items": [{"sku": "A", "quantity": 0, "price": "1.001"}]}),
            // Fraction digits are judged against a known currency only.
            vec!["userId", "currency", "items[0].quantity"],
        ),
        ("/orders".into(), json!({"userId": USER, "currency": "JPY", "items": []}), vec!["items"]),
        (
            "/orders".into(),
            json!({"userId": USER, "currency": "JPY", "items": [{"sku": "A", "quantity": 1, "price": "1.5"}]}),
            vec!["items[0].price"],
        ),
        (
            "/orders".into(),
            json!({"userId": USER, "currency": "USD", "items": [{"sku": "A", "quantity": 1, "price": "x"}]}),
            vec!["items[0].price"],
        ),
        (
            "/orders".into(),
            json!({"userId": USER, "currency": "USD", "items": [{"sku": "A", "quantity": 1.5, "price": "1"}]}),
            vec!["items[0].quantity"],
        ),
        (
            format!("/orders/{ORDER}/payments"),
            json!({"amount": "0", "currency": "USD", "paymentMethod": "card"}),
            vec!["amount"],
        ),
        (
            // Amounts are decimal strings, never JSON numbers (which clients may hold as floats).
            format!("/orders/{ORDER}/payments"),
            json!({"amount": 12.5, "currency": "USD", "paymentMethod": "card"}),
            vec!["amount"],
        ),
        (
            "/orders/not-a-uuid/payments".into(),
            json!({"amount": "1", "currency": "USD", "paymentMethod": "card"}),
            vec!["orderId"],
        ),
        (
            "/inventory/A/adjustments".into(),
            json!({"quantity": 1, "adjustmentType": "steal", "reason": "r"}),
            vec!["adjustmentType"],
        ),
        (
            "/inventory/bad%20sku/adjustments".into(),
            json!({"quantity": 0, "adjustmentType": "add", "reason": ""}),
            vec!["sku", "quantity", "reason"],
        ),
    ];
    for (path, body, fields) in cases {
        let problem = expect_problem(post(command.url(&path), &body, None).await, 422).await;
        assert!(problem["type"].as_str().unwrap().ends_with("/validation-error"));
        let got = error_fields(&problem);
        if fields == ["."] {
            assert_eq!(got.len(), 1, "{path} {body}: {problem}");
        } else {
            assert_eq!(got, fields, "{path} {body}: {problem}");
        }
    }

    let batch = json!({"commands": [
        {"type": "CreateUser", "email": "ok@example.com", "firstName": "O", "lastName": "K"},
        {"type": "CreateUser", "email": "bad", "firstName": "O", "lastName": "K"},
        {"type": "Nope"},
        {"type": "SettlePayment", "amount": "1", "currency": "USD", "paymentMethod": "card"},
        {"type": "PlaceOrder", "userId": USER, "currency": "USD", "items": [{"sku": "A", "quantity": 1, "price": "1", "x": 1}]},
    ]});
    let problem = expect_problem(post(command.url("/commands/batch"), &batch, None).await, 422).await;
    let fields = error_fields(&problem);
    assert_eq!(fields[..3], ["commands[1].email", "commands[2].type", "commands[3].orderId"], "{problem}");
    assert!(fields[3].starts_with("commands[4].items[0]"), "{problem}");
    problem_for_empty_batch(&command).await;

    let client = http();
    let raw = |path: &str, content_type: &str, body: String| {
        client.post(command.url(path)).header("content-type", content_type).body(body).send()
    };
    expect_problem(raw("/orders", "application/json", "{\"userId\": ".into()).await.unwrap(), 400).await;
    expect_problem(raw("/orders", "text/plain", "{}".into()).await.unwrap(), 415).await;
    // Two media types for one body (reqwest appends a repeated header): neither is guessed.
    let valid_user = json!({"email": "twice@example.com", "firstName": "T", "lastName": "W"}).to_string();
    for path in ["/users", "/commands/batch"] {
        let twice = client
            .post(command.url(path))
            .header("content-type", "application/json")
            .header("content-type", "text/plain")
            .body(valid_user.clone())
            .send()
            .await
            .unwrap();
        let problem = expect_problem(twice, 400).await;
        assert!(problem["type"].as_str().unwrap().ends_with("/ambiguous-content-type"), "{problem}");
    }
    expect_problem(
        raw("/users", "application/json", format!("\"{}\"", "x".repeat(65 * 1024))).await.unwrap(),
        413,
    )
    .await;
    let big_batch = format!("{{\"commands\": [\"{}\"]}}", "x".repeat(4 * 1024 * 1024));
    expect_problem(raw("/commands/batch", "application/json", big_batch).await.unwrap(), 413).await;
    // Within the batch limit but over the single-command one: accepted by size, judged by content.
    let mid = format!("{{\"commands\": [\"{}\"]}}", "x".repeat(100 * 1024));
    expect_problem(raw("/commands/batch", "application/json", mid).await.unwrap(), 422).await;

    env.create_topic().await;
    assert!(env.read_topic().await.is_empty(), "an invalid command reached the log");
    command.stop().await.unwrap();
}

async fn problem_for_empty_batch(command: &support::Running) {
    let empty =
        expect_problem(post(command.url("/commands/batch"), &json!({"commands": []}), None).await, 422).await;
    assert_eq!(error_fields(&empty), ["commands"]);
    let commands: Vec<Value> = (0..1001).map(|_| json!({"type": "CreateUser"})).collect();
    let over =
        expect_problem(post(command.url("/commands/batch"), &json!({"commands": commands}), None).await, 422)
            .await;
    assert_eq!(error_fields(&over), ["commands"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_replays_the_response_and_refuses_another_body() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let user = json!({"userId": USER, "email": "key@example.com", "firstName": "Ke", "lastName": "Y"});
    assert_eq!(post(command.url("/users"), &user, None).await.status(), 202);
    let key = format!("order-{}", env.id);
    let order =
        json!({"userId": USER, "currency": "EUR", "items": [{"sku": "A", "quantity": 3, "price": "2.50"}]});

    let first = post(command.url("/orders"), &order, Some(&key)).await;
    assert_eq!(first.status(), 202);
    let first_token = first.headers()["consistency-token"].clone();
    let first: Value = first.json().await.unwrap();
    // Same body, keys in another order: the same request.
    let reordered: Value =
        serde_json::from_str(r#"{"items":[{"price":"2.50","quantity":3,"sku":"A"}],"currency":"EUR","userId":"550e8400-e29b-41d4-a716-446655440000"}"#).unwrap();
    let again = post(command.url("/orders"), &reordered, Some(&key)).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["consistency-token"], first_token);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "same ids, same eventId, same position");

    let other =
        json!({"userId": USER, "currency": "EUR", "items": [{"sku": "A", "quantity": 4, "price": "2.50"}]});
    let reused = expect_problem(post(command.url("/orders"), &other, Some(&key)).await, 422).await;
    assert!(reused["type"].as_str().unwrap().ends_with("/idempotency-key-reused"));
    // Same key and body on another endpoint is another request too.
    let elsewhere = expect_problem(post(command.url("/users"), &order, Some(&key)).await, 422).await;
    assert!(elsewhere["type"].as_str().unwrap().ends_with("/validation-error"), "{elsewhere}");

    expect_problem(post(command.url("/orders"), &order, Some("has space")).await, 400).await;
    assert_eq!(env.read_topic().await.len(), 2, "the user, and one append for the key");
    command.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_append_once() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let key = format!("user-{}", env.id);
    let body = json!({"email": "same@example.com", "firstName": "Same", "lastName": "Key"});
    let responses =
        futures::future::join_all((0..12).map(|_| post(command.url("/users"), &body, Some(&key)))).await;
    let mut event_ids = Vec::new();
    for response in responses {
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        event_ids.push(body["eventId"].as_str().unwrap().to_owned());
    }
    event_ids.dedup();
    assert_eq!(event_ids.len(), 1, "every response names the same event");
    assert_eq!(env.read_topic().await.len(), 1, "and it was appended once");
    command.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_response_gets_the_original_answer_and_appends_nothing() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let key = format!("lost-{}", env.id);
    let body = json!({"email": "lost@example.com", "firstName": "Lost", "lastName": "Response"});
    let first: Value = post(command.url("/users"), &body, Some(&key)).await.json().await.unwrap();
    // As if the service crashed after the append, before the response was stored: the claim
    // expires and nothing is remembered.
    let client = redis::Client::open(env.redis.url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let _: () =
        redis::cmd("DEL").arg(format!("eventline:idempotency:{key}")).query_async(&mut redis).await.unwrap();
    // The retry decides the same command with the same derived ids, finds that decision made and
    // appended, and answers as the first time: a command never conflicts with itself.
    let retry = post(command.url("/users"), &body, Some(&key)).await;
    assert_eq!(retry.status(), 202);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry, first, "the same ids, event and position");
    assert_eq!(env.read_topic().await.len(), 1, "appended once");

    let projector = support::projector(&env).await;
    env.wait_for_checkpoints(1, Duration::from_secs(30)).await;
    projector.stop().await.unwrap();
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&env.pool).await.unwrap();
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events").fetch_one(&env.pool).await.unwrap();
    assert_eq!((users, applied), (1, 1), "…and applied once");
    command.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_plain_commands_work_and_keyed_ones_get_503() {
    let env = TestEnv::new().await;
    let mut config = support::command_config(&env);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    config.redis.url = format!("redis://{closed}");
    let command = support::command_with(config).await;
    let body = json!({"email": "r@example.com", "firstName": "No", "lastName": "Redis"});
    assert_eq!(post(command.url("/users"), &body, None).await.status(), 202);
    let unavailable = post(command.url("/users"), &body, Some("k-1")).await;
    assert_eq!(unavailable.headers()["retry-after"], "1");
    let unavailable = expect_problem(unavailable, 503).await;
    assert!(unavailable["type"].as_str().unwrap().ends_with("/idempotency-unavailable"));
    command.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_means_503_within_the_append_timeout_never_2xx() {
    let mut broker = OwnBroker::start().await;
    let mut env = TestEnv::new().await;
    env.kafka.brokers = broker.address.clone();
    let command = support::command(&env).await;
    let body =
        |i: usize| json!({"email": format!("b{i}@example.com"), "firstName": "Broker", "lastName": "Down"});
    assert_eq!(post(command.url("/users"), &body(0), None).await.status(), 202);

    broker.kill();
    for i in 1..4 {
        // The last one carries a key: only then does the answer advise retrying with it.
        let key = (i == 3).then(|| format!("broker-down-{}", env.id));
        let started = Instant::now();
        let response = post(command.url("/users"), &body(i), key.as_deref()).await;
        let elapsed = started.elapsed();
        assert_eq!(response.headers()["retry-after"], "1");
        let problem = expect_problem(response, 503).await;
        assert!(problem["type"].as_str().unwrap().ends_with("/log-unavailable"), "{problem}");
        assert!(elapsed <= Duration::from_secs(5), "503 took {elapsed:?}");
        let detail = problem["detail"].as_str().unwrap();
        assert_eq!(detail.contains("Idempotency-Key"), key.is_some(), "{detail}");
    }
    let ready = http().get(command.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready without a broker");
    command.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_would_lose_events_is_refused_at_start() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let env = TestEnv::new().await;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        eventline_runtime::kafka::client_config(&env.kafka).create().unwrap();
    let topic =
        NewTopic::new(&env.kafka.topic, 3, TopicReplication::Fixed(1)).set("retention.ms", "86400000");
    let created = admin.create_topics([&topic], &AdminOptions::new()).await.unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    let refused = eventline_command::Application::build(support::command_config(&env)).await;
    let error = format!("{:#}", refused.err().expect("a finite retention must be refused"));
    assert!(error.contains("retention.ms=86400000") && error.contains("kept forever"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_its_openapi_document() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let served: Value = http().get(command.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(served, serde_json::to_value(eventline_command::http::openapi_document()).unwrap());
    command.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_configured_commands_need_one_and_refused_ones_append_nothing() {
    let env = TestEnv::new().await;
    let mut config = support::command_config(&env);
    config.access.api_tokens = "first-secret-token-0001,second-secret-token-0002".parse().unwrap();
    config.access.allow_unauthenticated = false;
    let command = support::command_with(config).await;
    let user = json!({"email": "token@example.com", "firstName": "To", "lastName": "Ken"});

    for authorization in [None, Some("Bearer wrong-secret-token-0000"), Some("Basic Zmlyc3Q6c2VjcmV0")] {
        let mut request = http().post(command.url("/users")).json(&user);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        // RFC 6750: a challenge without an error code when no bearer token came, `invalid_token`
        // for one that is not valid.
        let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
        match authorization {
            Some(bearer) if bearer.starts_with("Bearer") => {
                assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}")
            }
            _ => assert_eq!(challenge, r#"Bearer realm="eventline""#),
        }
        let problem = expect_problem(response, 401).await;
        assert!(problem["type"].as_str().unwrap().ends_with("/unauthorized"), "{problem}");
    }
    // The batch endpoint too; the operational routes and the API description stay open.
    let batch =
        http().post(command.url("/commands/batch")).json(&json!({"commands": []})).send().await.unwrap();
    expect_problem(batch, 401).await;
    // Ready once the decision state is folded from the (empty) log.
    eventline_testkit::eventually(Duration::from_secs(10), "ready", || async {
        http().get(command.url("/readyz")).send().await.ok()?.status().is_success().then_some(())
    })
    .await;
    for open in ["/healthz", "/readyz", "/openapi.json", "/docs", "/metrics"] {
        assert_eq!(http().get(command.url(open)).send().await.unwrap().status(), 200, "{open}");
    }
    assert!(env.read_topic().await.is_empty(), "a refused command reached the log");

    let accepted = http()
        .post(command.url("/users"))
        .bearer_auth("second-secret-token-0002")
        .json(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    assert_eq!(env.read_topic().await.len(), 1);
    command.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_service_starts_only_when_told_to_accept_anyone() {
    let env = TestEnv::new().await;
    let mut config = support::command_config(&env);
    config.access.allow_unauthenticated = false;
    let refused = eventline_command::Application::build(config).await.err().expect("it must not start");
    let message = format!("{refused:#}");
    assert!(
        message.contains("EVENTLINE_API_TOKENS") && message.contains("EVENTLINE_ALLOW_UNAUTHENTICATED"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_limit_gets_429_with_retry_after_and_nothing_is_appended() {
    let env = TestEnv::new().await;
    let mut config = support::command_config(&env);
    config.rate_limit_per_s = 0.5;
    config.rate_limit_burst = 3.0;
    let command = support::command_with(config).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let body = json!({"email": format!("rate{i}@example.com"), "firstName": "Ra", "lastName": "Te"});
        let response = post(command.url("/users"), &body, None).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry_after), "{retry_after}");
            let problem = expect_problem(response, 429).await;
            assert!(problem["type"].as_str().unwrap().ends_with("/rate-limited"), "{problem}");
        }
    }
    assert_eq!(statuses, [202, 202, 202, 429, 429]);
    assert_eq!(env.read_topic().await.len(), 3, "only the admitted commands are in the log");
    command.stop().await.unwrap();
}
