//! The query routes at the router, without a broker or a listener: each test gets a migrated
//! database of its own (`#[sqlx::test]`), writes the read-model rows it needs, builds the service
//! as `main` does (with the log check off: no `KAFKA_BROKERS`) and sends requests with
//! `oneshot`. What needs the projector and the log end to end is in `tests/` at the root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use clap::Parser as _;
use eventline_testkit::router::{self, Answer};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

const TOPIC: &str = "eventline.routes";

/// The one reader the service lets in.
const TOKEN: &str = "routes-test-reader-token";

/// The service over `pool`'s database, as `main` builds it, and its router.
async fn service(pool: &PgPool) -> (eventline_query::Application, axum::Router) {
    let config = eventline_query::Config::try_parse_from([
        "eventline-query",
        "--listen=127.0.0.1:0",
        &format!("--database-url={}", router::database_url(pool).await),
        "--brokers=",
        &format!("--topic={TOPIC}"),
        "--consistency-wait-ms=300",
        &format!("--api-tokens=reader:read:{TOKEN}"),
    ])
    .unwrap();
    let application = eventline_query::Application::build(config).await.unwrap();
    let router = application.router();
    (application, router)
}

/// Stops the service and ends its sessions on the test's database.
async fn disconnect(pool: &PgPool, service: (eventline_query::Application, axum::Router)) {
    drop(service);
    router::end_other_sessions(pool).await;
}

/// Sends `GET path` with `headers`, as the reader.
async fn get(router: &axum::Router, path: &str, headers: &[(&str, &str)]) -> Answer {
    let bearer = format!("Bearer {TOKEN}");
    let mut request = Request::get(path);
    if !headers.iter().any(|(name, _)| *name == "authorization") {
        request = request.header(header::AUTHORIZATION, &bearer);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    router::send(router, request.body(Body::empty()).unwrap()).await
}

/// A user with two orders, the first paid; a sku with stock; the main projection's checkpoint at
/// offset 10 of partition 0; the served documents assembled as the projector assembles them.
struct Fixture {
    user: Uuid,
    paid: Uuid,
    awaiting: Uuid,
}

async fn fixture(pool: &PgPool) -> Fixture {
    let (user, paid, awaiting) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET search_path TO read_model_v1, public").execute(&mut *conn).await.unwrap();
    sqlx::query(
        "INSERT INTO users (user_id, email, first_name, last_name, created_at, updated_at, last_event_id)
         VALUES ($1, 'ada@example.com', 'Ada', 'Lovelace', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', $1)",
    )
    .bind(user)
    .execute(&mut *conn)
    .await
    .unwrap();
    for (order, status, placed) in
        [(paid, "paid", "2026-01-02T00:00:00Z"), (awaiting, "awaiting_payment", "2026-01-03T00:00:00Z")]
    {
        sqlx::query(
            "INSERT INTO orders (order_id, user_id, currency, total_amount, status, placed_at, updated_at, last_event_id)
             VALUES ($1, $2, 'EUR', 25.00, $3, $4::timestamptz, $4::timestamptz, $1)",
        )
        .bind(order)
        .bind(user)
        .bind(status)
        .bind(placed)
        .execute(&mut *conn)
        .await
        .unwrap();
        sqlx::query("INSERT INTO order_items (order_id, line_no, sku, quantity, price) VALUES ($1, 0, 'SKU-1', 2, 12.50)")
            .bind(order)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO payments (payment_id, order_id, amount, currency, payment_method, status, settled_at, last_event_id)
         VALUES ($1, $2, 25.00, 'EUR', 'card', 'completed', '2026-01-02T01:00:00Z', $1)",
    )
    .bind(Uuid::now_v7())
    .bind(paid)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("INSERT INTO inventory (sku, quantity, updated_at, last_event_id, version) VALUES ('SKU-1', 7, now(), $1, 3)")
        .bind(Uuid::now_v7())
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO projection_checkpoints (topic, partition, next_offset) VALUES ($1, 0, 10)")
        .bind(TOPIC)
        .execute(&mut *conn)
        .await
        .unwrap();
    eventline_read_models::documents::refresh(&mut conn, &[user], &[paid, awaiting]).await.unwrap();
    Fixture { user, paid, awaiting }
}

#[sqlx::test(migrator = "eventline_runtime::db::MIGRATOR")]
async fn a_user_is_served_with_its_orders_and_a_digest_etag(pool: PgPool) {
    let Fixture { user, paid, awaiting } = fixture(&pool).await;
    let service = service(&pool).await;
    let router = service.1.clone();

    let answer = get(&router, &format!("/users/{user}"), &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["email"], "ada@example.com");
    assert_eq!(answer.body["orderCount"], 2);
    assert_eq!(answer.body["totalSpent"]["EUR"], "25.00");
    let listed: Vec<&str> =
        answer.body["orders"].as_array().unwrap().iter().map(|o| o["orderId"].as_str().unwrap()).collect();
    assert_eq!(listed, [awaiting.to_string(), paid.to_string()], "newest first");
    let etag = answer.headers[header::ETAG].to_str().unwrap().to_owned();

    let again = get(&router, &format!("/users/{user}"), &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers[header::ETAG], etag.as_str());

    // Another number of orders than the stored document's: assembled for this request.
    let one = get(&router, &format!("/users/{user}?ordersLimit=1"), &[]).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["orders"].as_array().unwrap().len(), 1);
    assert_ne!(one.headers[header::ETAG], etag.as_str());
    disconnect(&pool, service).await;
}

#[sqlx::test(migrator = "eventline_runtime::db::MIGRATOR")]
async fn bad_ids_and_parameters_are_refused_before_any_read(pool: PgPool) {
    fixture(&pool).await;
    let service = service(&pool).await;
    let router = service.1.clone();
    for (path, status, kind) in [
        ("/users/not-a-uuid", StatusCode::BAD_REQUEST, "invalid-id"),
        ("/orders/42", StatusCode::BAD_REQUEST, "invalid-id"),
        ("/inventory/-bad", StatusCode::BAD_REQUEST, "invalid-id"),
        ("/users/%FF%FE", StatusCode::BAD_REQUEST, "invalid-id"),
        ("/inventory/%FF", StatusCode::BAD_REQUEST, "invalid-id"),
        (
            "/users/0190c9a0-0000-7000-8000-000000000000?ordersLimit=101",
            StatusCode::BAD_REQUEST,
            "invalid-query",
        ),
        ("/users/0190c9a0-0000-7000-8000-000000000000?unknown=1", StatusCode::BAD_REQUEST, "invalid-query"),
        (
            "/users/0190c9a0-0000-7000-8000-000000000000/orders?cursor=nope",
            StatusCode::BAD_REQUEST,
            "invalid-cursor",
        ),
        ("/users/0190c9a0-0000-7000-8000-000000000000", StatusCode::NOT_FOUND, "not-found"),
        ("/orders/0190c9a0-0000-7000-8000-000000000000", StatusCode::NOT_FOUND, "not-found"),
        ("/inventory/SKU-NONE", StatusCode::NOT_FOUND, "not-found"),
    ] {
        let answer = get(&router, path, &[]).await;
        assert_eq!((answer.status, answer.problem()), (status, kind), "{path}: {}", answer.body);
        assert_eq!(answer.headers[header::CONTENT_TYPE], "application/problem+json", "{path}");
    }
    let stranger =
        get(&router, "/inventory/SKU-1", &[("authorization", "Bearer not-a-known-token-at-all")]).await;
    assert_eq!(stranger.status, StatusCode::UNAUTHORIZED);
    disconnect(&pool, service).await;
}

#[sqlx::test(migrator = "eventline_runtime::db::MIGRATOR")]
async fn an_order_is_tagged_by_its_version_and_a_sku_by_its_own(pool: PgPool) {
    let Fixture { paid, awaiting, .. } = fixture(&pool).await;
    let service = service(&pool).await;
    let router = service.1.clone();

    let order = get(&router, &format!("/orders/{paid}"), &[]).await;
    assert_eq!(order.status, StatusCode::OK, "{}", order.body);
    assert_eq!(order.body["status"], "paid");
    assert_eq!(order.body["payment"]["amount"], "25.00");
    assert_eq!(order.headers[header::ETAG], "\"2\"", "placed and paid");
    let awaiting = get(&router, &format!("/orders/{awaiting}"), &[]).await;
    assert_eq!(
        (awaiting.body["payment"].clone(), &awaiting.headers[header::ETAG]),
        (Value::Null, &"\"1\"".parse().unwrap())
    );

    let stock = get(&router, "/inventory/SKU-1", &[]).await;
    assert_eq!((stock.status, stock.body["quantity"].as_i64()), (StatusCode::OK, Some(7)));
    assert_eq!(stock.headers[header::ETAG], "\"3\"");
    let cached = get(&router, "/inventory/SKU-1", &[("if-none-match", "W/\"3\"")]).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    disconnect(&pool, service).await;
}

#[sqlx::test(migrator = "eventline_runtime::db::MIGRATOR")]
async fn a_users_orders_are_paged_with_a_cursor(pool: PgPool) {
    let Fixture { user, paid, awaiting } = fixture(&pool).await;
    let service = service(&pool).await;
    let router = service.1.clone();

    let first = get(&router, &format!("/users/{user}/orders?limit=1"), &[]).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["orders"][0]["orderId"], awaiting.to_string());
    let cursor = first.body["nextCursor"].as_str().unwrap().to_owned();
    let second = get(&router, &format!("/users/{user}/orders?limit=1&cursor={cursor}"), &[]).await;
    assert_eq!(second.body["orders"][0]["orderId"], paid.to_string());
    assert!(second.body.get("nextCursor").is_none(), "the last page has no cursor");
    disconnect(&pool, service).await;
}

#[sqlx::test(migrator = "eventline_runtime::db::MIGRATOR")]
async fn a_consistency_token_is_waited_for_and_refused_when_unreached(pool: PgPool) {
    let Fixture { user, .. } = fixture(&pool).await;
    let service = service(&pool).await;
    let router = service.1.clone();
    let path = format!("/users/{user}");

    // The checkpoint is at offset 10 of partition 0: offset 9 is applied.
    let reached = get(&router, &path, &[("consistency-token", "0:9")]).await;
    assert_eq!(reached.status, StatusCode::OK, "{}", reached.body);

    let behind = get(&router, &path, &[("consistency-token", "0:10")]).await;
    assert_eq!((behind.status, behind.problem()), (StatusCode::SERVICE_UNAVAILABLE, "projection-behind"));
    assert_eq!(behind.headers[header::RETRY_AFTER], "1");

    let invalid = get(&router, &path, &[("consistency-token", "zero:nine")]).await;
    assert_eq!((invalid.status, invalid.problem()), (StatusCode::BAD_REQUEST, "invalid-consistency-token"));

    // Applied while the read waits: answered as soon as the checkpoint passes it.
    let later = {
        let router = router.clone();
        let path = path.clone();
        tokio::spawn(async move { get(&router, &path, &[("consistency-token", "0:12")]).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    sqlx::query("UPDATE read_model_v1.projection_checkpoints SET next_offset = 13 WHERE topic = $1")
        .bind(TOPIC)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('eventline_checkpoints', '')").execute(&pool).await.unwrap();
    let later = later.await.unwrap();
    assert_eq!(later.status, StatusCode::OK, "{}", later.body);
    disconnect(&pool, service).await;
}

#[sqlx::test(migrator = "eventline_runtime::db::MIGRATOR")]
async fn a_parked_aggregate_is_not_served_as_current(pool: PgPool) {
    let Fixture { user, paid, .. } = fixture(&pool).await;
    let service = service(&pool).await;
    let router = service.1.clone();
    sqlx::query(
        "INSERT INTO read_model_v1.parked_keys (topic, message_key, partition, log_offset, event_type, error)
         VALUES ($1, $2, 0, 5, 'PaymentSettled', 'refused')",
    )
    .bind(TOPIC)
    .bind(paid.to_string().into_bytes())
    .execute(&pool)
    .await
    .unwrap();

    let order = get(&router, &format!("/orders/{paid}"), &[]).await;
    assert_eq!((order.status, order.problem()), (StatusCode::SERVICE_UNAVAILABLE, "aggregate-parked"));
    // The user's document lists that order, but the user's own key is not parked.
    let user = get(&router, &format!("/users/{user}"), &[]).await;
    assert_eq!(user.status, StatusCode::OK, "{}", user.body);
    disconnect(&pool, service).await;
}

#[sqlx::test(migrator = "eventline_runtime::db::MIGRATOR")]
async fn orders_by_status_answers_503_until_its_projection_first_catches_up(pool: PgPool) {
    let Fixture { user, awaiting, .. } = fixture(&pool).await;
    let service = service(&pool).await;
    let router = service.1.clone();
    let path = "/orders?status=awaiting_payment";

    // Migrations add the projection as `building`: it has never been live.
    let catching_up = get(&router, path, &[]).await;
    assert_eq!(
        (catching_up.status, catching_up.problem()),
        (StatusCode::SERVICE_UNAVAILABLE, "projection-catching-up"),
        "{}",
        catching_up.body
    );

    sqlx::query(
        "INSERT INTO orders_by_status_v1.orders_by_status (order_id, user_id, status, currency, total_amount, placed_at, updated_at)
         VALUES ($1, $2, 'awaiting_payment', 'EUR', 25.00, now(), now())",
    )
    .bind(awaiting)
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE public.read_model_versions SET state = 'live' WHERE projection = 'orders_by_status'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('eventline_read_model_versions', 'orders_by_status 1')")
        .execute(&pool)
        .await
        .unwrap();
    let listed = eventline_testkit::eventually(Duration::from_secs(5), "the projection to be live", || {
        let router = router.clone();
        async move {
            let answer = get(&router, path, &[]).await;
            (answer.status == StatusCode::OK).then_some(answer)
        }
    })
    .await;
    let orders = listed.body["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["orderId"], awaiting.to_string());
    let mine = get(&router, &format!("{path}&userId={user}"), &[]).await;
    assert_eq!(mine.body["orders"].as_array().unwrap().len(), 1);
    let bad_user = get(&router, &format!("{path}&userId=someone"), &[]).await;
    assert_eq!((bad_user.status, bad_user.problem()), (StatusCode::BAD_REQUEST, "invalid-id"));
    disconnect(&pool, service).await;
}

#[sqlx::test(migrator = "eventline_runtime::db::MIGRATOR")]
async fn histories_page_the_event_index(pool: PgPool) {
    let Fixture { user, paid, .. } = fixture(&pool).await;
    let service = service(&pool).await;
    let router = service.1.clone();
    let event = |kind: &str, id: String, version: i64, offset: i64, event_type: &str| {
        sqlx::query(
            "INSERT INTO read_model_v1.event_index
                 (aggregate_type, aggregate_id, version, partition, log_offset, event_id, event_type, occurred_at, data)
             VALUES ($1, $2, $3, 0, $4, $5, $6, '2026-01-02T00:00:00Z'::timestamptz + $4 * interval '1 minute', '{}')",
        )
        .bind(kind.to_owned())
        .bind(id)
        .bind(version)
        .bind(offset)
        .bind(Uuid::now_v7())
        .bind(event_type.to_owned())
        .execute(&pool)
    };
    event("order", paid.to_string(), 1, 1, "OrderPlaced").await.unwrap();
    event("order", paid.to_string(), 2, 2, "PaymentSettled").await.unwrap();
    event("inventory", "SKU-1".into(), 1, 3, "InventoryAdjusted").await.unwrap();

    let order = get(&router, &format!("/orders/{paid}/history?limit=1"), &[]).await;
    assert_eq!(order.status, StatusCode::OK, "{}", order.body);
    assert_eq!(order.body["events"][0]["type"], "OrderPlaced");
    assert_eq!(order.body["nextCursor"], "1");
    let rest = get(&router, &format!("/orders/{paid}/history?cursor=1"), &[]).await;
    assert_eq!(rest.body["events"][0]["type"], "PaymentSettled");

    let sku = get(&router, "/inventory/SKU-1/history", &[]).await;
    assert_eq!(sku.body["events"].as_array().unwrap().len(), 1);
    let users = get(&router, &format!("/users/{user}/history"), &[]).await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.body);
    let kinds: Vec<&str> =
        users.body["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["OrderPlaced", "PaymentSettled"], "the user's orders' events, by when they occurred");
    let nobody = get(&router, &format!("/users/{}/history", Uuid::now_v7()), &[]).await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
    disconnect(&pool, service).await;
}
