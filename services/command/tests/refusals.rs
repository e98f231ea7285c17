//! Commands refused at the router, before any decision or append: no broker is needed (the
//! producer points at a port nothing listens on, and nothing is sent to it). Each test gets a
//! database of its own (`#[sqlx::test]`) for the decision state's pool, builds the service as
//! `main` does, over a topic taken as prepared, and sends requests with `oneshot`. Decisions and
//! appends are tested end to end in `tests/` at the root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use clap::Parser as _;
use eventline_testkit::router::{self, Answer};
use serde_json::json;
use sqlx::PgPool;

/// The one writer the service lets in, and a reader it refuses.
const WRITER: &str = "refusals-test-writer-token";
const READER: &str = "refusals-test-reader-token";

async fn service(pool: &PgPool) -> (eventline_command::Application, axum::Router) {
    let config = eventline_command::Config::try_parse_from([
        "eventline-command",
        "--listen=127.0.0.1:0",
        &format!("--database-url={}", router::database_url(pool).await),
        // Nothing listens there: a command that reached the log would fail, none of these does.
        "--kafka-brokers=127.0.0.1:9",
        "--topic=eventline.refusals",
        "--redis-url=redis://127.0.0.1:9",
        &format!("--api-tokens=writer:write:{WRITER},reader:read:{READER}"),
    ])
    .unwrap();
    let application = eventline_command::Application::over_topic(config).await.unwrap();
    let router = application.router();
    (application, router)
}

async fn post(router: &axum::Router, path: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Answer {
    let mut request = Request::post(path);
    let bearer = format!("Bearer {WRITER}");
    if !headers.iter().any(|(name, _)| *name == "authorization") {
        request = request.header(header::AUTHORIZATION, &bearer);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    router::send(router, request.body(body.into()).unwrap()).await
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// Stops the service and ends its sessions on the test's database.
async fn disconnect(pool: &PgPool, service: (eventline_command::Application, axum::Router)) {
    drop(service);
    router::end_other_sessions(pool).await;
}

#[sqlx::test]
async fn a_command_that_cannot_be_read_is_refused_with_what_is_wrong(pool: PgPool) {
    let service = service(&pool).await;
    let router = service.1.clone();

    let no_json = post(&router, "/users", &[("content-type", "text/plain")], "hello").await;
    assert_eq!(no_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", no_json.body);

    let broken = post(&router, "/users", &[JSON], "{\"email\": ").await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST, "{}", broken.body);

    let invalid = json!({"email": "not an address", "firstName": "", "lastName": "Lovelace"});
    let answer = post(&router, "/users", &[JSON], invalid.to_string()).await;
    assert_eq!(
        (answer.status, answer.problem()),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation-error"),
        "{}",
        answer.body
    );
    let fields: Vec<&str> =
        answer.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["email", "firstName"], "every field that is wrong, named");

    let order = json!({"userId": "someone", "currency": "EUR", "items": []});
    let answer = post(&router, "/orders", &[JSON], order.to_string()).await;
    assert_eq!(
        (answer.status, answer.problem()),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation-error"),
        "{}",
        answer.body
    );

    let huge = json!({"email": "a@example.com", "firstName": "x".repeat(2 << 20), "lastName": "y"});
    let answer = post(&router, "/users", &[JSON], huge.to_string()).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    disconnect(&pool, service).await;
}

#[sqlx::test]
async fn headers_a_command_cannot_honour_are_refused_before_the_decision(pool: PgPool) {
    let service = service(&pool).await;
    let router = service.1.clone();
    let user = json!({"email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace"}).to_string();

    let key = post(&router, "/users", &[JSON, ("idempotency-key", "has space")], user.clone()).await;
    assert_eq!(
        (key.status, key.problem()),
        (StatusCode::BAD_REQUEST, "invalid-idempotency-key"),
        "{}",
        key.body
    );

    let if_match = post(&router, "/users", &[JSON, ("if-match", "soon")], user.clone()).await;
    assert_eq!((if_match.status, if_match.problem()), (StatusCode::BAD_REQUEST, "invalid-if-match"));

    let batch = json!({"commands": [{"type": "CreateUser", "email": "b@example.com", "firstName": "B", "lastName": "C"}]});
    let on_batch = post(&router, "/commands/batch", &[JSON, ("if-match", "\"1\"")], batch.to_string()).await;
    assert_eq!(
        on_batch.status,
        StatusCode::BAD_REQUEST,
        "If-Match names one aggregate's version: {}",
        on_batch.body
    );
    disconnect(&pool, service).await;
}

#[sqlx::test]
async fn only_a_writer_may_send_commands(pool: PgPool) {
    let service = service(&pool).await;
    let router = service.1.clone();
    let user = json!({"email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace"}).to_string();

    let anonymous = post(&router, "/users", &[JSON, ("authorization", "")], user.clone()).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let reader = format!("Bearer {READER}");
    let read_only = post(&router, "/users", &[JSON, ("authorization", &reader)], user).await;
    assert_eq!(read_only.status, StatusCode::FORBIDDEN);
    disconnect(&pool, service).await;
}
