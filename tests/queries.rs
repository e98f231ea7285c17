//! The query API against the real stack: every field and status, ETags, pagination, and
//! read-your-writes with a projector that is late or stopped.

use crate::support;

use std::time::{Duration, Instant};

use eventline_testkit::{TestEnv, eventually, http};
use reqwest::Response;
use serde_json::{Value, json};

async fn post(url: String, body: Value) -> (Value, String) {
    let response = http().post(url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let token = response.headers()["consistency-token"].to_str().unwrap().to_owned();
    (response.json().await.unwrap(), token)
}

async fn get(url: String, token: Option<&str>) -> Response {
    let mut request = http().get(url);
    if let Some(token) = token {
        request = request.header("consistency-token", token);
    }
    request.send().await.unwrap()
}

async fn problem(response: Response, status: u16, slug: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert!(body["type"].as_str().unwrap().ends_with(&format!("/{slug}")), "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_orders_and_stock_read_back_with_every_field() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let projector = support::projector(&env).await;
    let query = support::query(&env).await;

    // Every write's token: the reads below must wait for all of them (a token covers only the
    // partitions its own events went to).
    let mut tokens = Vec::new();
    let (user, token) = post(
        command.url("/users"),
        json!({"email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace"}),
    )
    .await;
    tokens.push(token);
    let user_id = user["userId"].as_str().unwrap().to_owned();
    let mut orders = Vec::new();
    for (i, price) in ["10.00", "20.50", "5"].iter().enumerate() {
        let (order, token) = post(
            command.url("/orders"),
            json!({"userId": user_id, "currency": "USD", "items": [{"sku": format!("SKU-{i}"), "quantity": 2, "price": price}]}),
        )
        .await;
        tokens.push(token);
        orders.push(order);
    }
    let paid = orders[1]["orderId"].as_str().unwrap().to_owned();
    let (payment, token) = post(
        command.url(&format!("/orders/{paid}/payments")),
        json!({"amount": "41.00", "currency": "USD", "paymentMethod": "credit_card"}),
    )
    .await;
    tokens.push(token);
    let (_, token) = post(
        command.url("/inventory/SKU-0/adjustments"),
        json!({"quantity": 12, "adjustmentType": "set", "reason": "stocktake"}),
    )
    .await;
    // A batch's token covers all of its commands.
    let (batch, all) = post(
        command.url("/commands/batch"),
        json!({"commands": [{"type": "AdjustInventory", "sku": "SKU-0", "quantity": 2, "adjustmentType": "remove", "reason": "sold"}]}),
    )
    .await;
    assert_eq!(batch["results"].as_array().unwrap().len(), 1);
    tokens.extend([token, all]);
    let token = tokens.join(",");
    let token = token.as_str();

    let response = get(query.url(&format!("/users/{user_id}?ordersLimit=2")), Some(token)).await;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["userId"], user_id.as_str());
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!((body["firstName"].as_str(), body["lastName"].as_str()), (Some("Ada"), Some("Lovelace")));
    assert!(body["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["orderCount"], 3);
    assert_eq!(body["totalSpent"], json!({"USD": "41.00"}), "paid orders only");
    let listed = body["orders"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["orderId"], orders[2]["orderId"], "most recent first");
    assert_eq!(listed[0]["totalAmount"], "10.00");
    assert_eq!(listed[0]["status"], "awaiting_payment");
    assert_eq!(listed[1]["status"], "paid");
    for field in ["orderId", "totalAmount", "currency", "status", "placedAt"] {
        assert!(listed[0].get(field).is_some(), "{field}");
    }

    // ETag: the same representation is not sent twice.
    let not_modified = http()
        .get(query.url(&format!("/users/{user_id}?ordersLimit=2")))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"], etag.as_str());

    // The whole history, two at a time.
    let first: Value =
        get(query.url(&format!("/users/{user_id}/orders?limit=2")), None).await.json().await.unwrap();
    assert_eq!(first["orders"].as_array().unwrap().len(), 2);
    let cursor = first["nextCursor"].as_str().unwrap();
    let second: Value = get(query.url(&format!("/users/{user_id}/orders?limit=2&cursor={cursor}")), None)
        .await
        .json()
        .await
        .unwrap();
    let rest = second["orders"].as_array().unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["orderId"], orders[0]["orderId"]);
    assert!(second.get("nextCursor").is_none());

    let order: Value = get(query.url(&format!("/orders/{paid}")), None).await.json().await.unwrap();
    assert_eq!(order["orderId"], paid.as_str());
    assert_eq!(order["userId"], user_id.as_str());
    assert_eq!(order["totalAmount"], "41.00");
    assert_eq!(order["currency"], "USD");
    assert_eq!(order["status"], "paid");
    assert_eq!(order["items"], json!([{"sku": "SKU-1", "quantity": 2, "price": "20.50"}]));
    assert_eq!(order["payment"]["paymentId"], payment["paymentId"]);
    assert_eq!(order["payment"]["amount"], "41.00");
    assert_eq!(order["payment"]["paymentMethod"], "credit_card");
    assert_eq!(order["payment"]["status"], "completed");
    assert!(order["payment"]["settledAt"].is_string());
    assert!(order["placedAt"].is_string() && order["updatedAt"].is_string());
    let unpaid: Value = get(query.url(&format!("/orders/{}", orders[0]["orderId"].as_str().unwrap())), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unpaid["status"], "awaiting_payment");
    assert!(unpaid["payment"].is_null());

    // GET /users/{id} and /orders/{id} serve the documents the projector stored (the user's lists
    // the payment its batch brought); a row without one (stored before documents were) is
    // assembled at read time into the very same body and ETag.
    let user_url = query.url(&format!("/users/{user_id}"));
    let order_url = query.url(&format!("/orders/{paid}"));
    let served = |url: String| async move {
        let response = get(url, None).await;
        assert_eq!(response.status(), 200);
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        (response.bytes().await.unwrap(), etag)
    };
    let (stored_user, stored_order) = (served(user_url.clone()).await, served(order_url.clone()).await);
    let listed: Value = serde_json::from_slice(&stored_user.0).unwrap();
    let statuses: Vec<&str> =
        listed["orders"].as_array().unwrap().iter().map(|o| o["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["awaiting_payment", "paid", "awaiting_payment"]);
    assert_eq!(stored_order.1, "\"2\"");
    let cleared = sqlx::query(
        "WITH u AS (UPDATE users SET document = NULL, document_etag = NULL
                     WHERE user_id = $1::uuid AND document IS NOT NULL RETURNING 1),
              o AS (UPDATE orders SET document = NULL, document_etag = NULL
                     WHERE order_id = $2::uuid AND document IS NOT NULL RETURNING 1)
         SELECT (SELECT count(*) FROM u) + (SELECT count(*) FROM o)",
    )
    .bind(&user_id)
    .bind(&paid)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(sqlx::Row::get::<i64, _>(&cleared, 0), 2, "both documents were stored");
    assert_eq!(served(user_url).await, stored_user, "assembled at read time");
    assert_eq!(served(order_url).await, stored_order, "assembled at read time");

    let stock: Value = get(query.url("/inventory/SKU-0"), None).await.json().await.unwrap();
    assert_eq!(stock["sku"], "SKU-0");
    assert_eq!(stock["quantity"], 10, "set 12, then remove 2");
    assert!(stock["updatedAt"].is_string());

    let unknown = "650e8400-e29b-41d4-a716-446655440000";
    problem(get(query.url(&format!("/users/{unknown}")), None).await, 404, "not-found").await;
    problem(get(query.url(&format!("/users/{unknown}/orders")), None).await, 404, "not-found").await;
    problem(get(query.url(&format!("/orders/{unknown}")), None).await, 404, "not-found").await;
    problem(get(query.url("/inventory/NOPE"), None).await, 404, "not-found").await;
    problem(get(query.url("/users/nope"), None).await, 400, "invalid-id").await;
    problem(get(query.url("/orders/nope"), None).await, 400, "invalid-id").await;
    problem(get(query.url("/inventory/bad%20sku"), None).await, 400, "invalid-id").await;
    problem(get(query.url(&format!("/users/{user_id}?ordersLimit=101")), None).await, 400, "invalid-query")
        .await;
    problem(get(query.url(&format!("/users/{user_id}?ordersLimit=x")), None).await, 400, "invalid-query")
        .await;
    problem(
        get(query.url(&format!("/users/{user_id}/orders?cursor=zzz")), None).await,
        400,
        "invalid-cursor",
    )
    .await;
    problem(
        get(query.url(&format!("/users/{user_id}")), Some("garbage")).await,
        400,
        "invalid-consistency-token",
    )
    .await;
    // A partition the topic does not have: refused at once, not waited for until 503. (The
    // service learns the partition count from the broker within its first log check.)
    let impossible = eventually(Duration::from_secs(15), "the partition count known", || async {
        let started = Instant::now();
        let response = get(query.url(&format!("/users/{user_id}")), Some("900:1")).await;
        (response.status() == 409).then(|| (response, started.elapsed()))
    })
    .await;
    assert!(impossible.1 < Duration::from_millis(500), "refused only after {:?}", impossible.1);
    problem(impossible.0, 409, "impossible-consistency-token").await;

    // An offset at or beyond the end of its partition: the log never issued it. Nothing else is
    // written now, so the last write's offset + 1 is exactly the end; the last write itself reads.
    let last = tokens
        .last()
        .unwrap()
        .split(',')
        .map(|p| p.split_once(':').unwrap())
        .max_by_key(|p| p.1.parse::<i64>().unwrap())
        .unwrap();
    let at_end = format!("{}:{}", last.0, last.1.parse::<i64>().unwrap() + 1);
    for token in [at_end.as_str(), "0:79207050838884019"] {
        let started = Instant::now();
        let response = get(query.url(&format!("/users/{user_id}")), Some(token)).await;
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{token} refused only after {:?}",
            started.elapsed()
        );
        let body = problem(response, 409, "impossible-consistency-token").await;
        assert!(body["detail"].as_str().unwrap().contains("ends before offset"), "{body}");
    }
    let within = format!("{}:{}", last.0, last.1);
    assert_eq!(get(query.url(&format!("/users/{user_id}")), Some(&within)).await.status(), 200, "{within}");

    for service in [command, projector, query] {
        service.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_a_token_waits_for_a_late_projector_and_gives_up_with_503() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let query = support::query(&env).await;
    let (user, token) = post(
        command.url("/users"),
        json!({"email": "late@example.com", "firstName": "L", "lastName": "Ate"}),
    )
    .await;
    let url = query.url(&format!("/users/{}", user["userId"].as_str().unwrap()));

    // No projector: the read waits the bound (2 s), then says the projection is behind.
    let started = Instant::now();
    let behind = get(url.clone(), Some(&token)).await;
    let waited = started.elapsed();
    assert_eq!(behind.headers()["retry-after"], "1");
    problem(behind, 503, "projection-behind").await;
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4), "{waited:?}");
    // Without a token the read answers from what is there.
    problem(get(url.clone(), None).await, 404, "not-found").await;

    // The projector starts while a read waits: the read answers as soon as the write is applied.
    let waiting = {
        let (url, token) = (url.clone(), token.clone());
        tokio::spawn(async move { get(url, Some(&token)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the read must still be waiting when the projector starts");
    let projector = support::projector(&env).await;
    let response = waiting.await.unwrap();
    assert_eq!(response.status(), 200, "never a 404 for one's own write");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["email"], "late@example.com");

    for service in [command, projector, query] {
        service.stop().await.unwrap();
    }
}

/// Every read is an index or primary-key lookup: no sequential scan in any plan, on tables large
/// enough for the planner to care.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_uses_indexes_not_sequential_scans() {
    use eventline_query::http::statements::*;
    use eventline_read_models::documents::{STORE_ORDERS_SQL, STORE_USERS_SQL};
    let env = TestEnv::new().await;
    let seed = [
        "INSERT INTO users SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid,
                'u' || i || '@example.com', 'F', 'L', now(), now(), gen_random_uuid()
         FROM generate_series(1, 5000) i",
        "INSERT INTO orders SELECT gen_random_uuid(),
                ('00000000-0000-4000-8000-' || lpad((i % 5000 + 1)::text, 12, '0'))::uuid, 'USD', i,
                CASE WHEN i % 2 = 0 THEN 'paid' ELSE 'awaiting_payment' END,
                now() - i * interval '1 minute', now(), gen_random_uuid()
         FROM generate_series(1, 50000) i",
        "INSERT INTO order_items SELECT order_id, 0, 'SKU', 1, 1 FROM orders",
        "INSERT INTO payments SELECT gen_random_uuid(), order_id, 1, 'USD', 'card', 'completed', now(), gen_random_uuid()
         FROM orders WHERE status = 'paid'",
        "INSERT INTO inventory SELECT 'SKU-' || i, i, now(), gen_random_uuid() FROM generate_series(1, 20000) i",
        "INSERT INTO parked_keys (topic, message_key, partition, log_offset, event_type, error)
         SELECT 'eventline.events', convert_to('key-' || i, 'UTF8'), 0, i, 'UserCreated', 'refused' FROM generate_series(1, 5000) i",
        "INSERT INTO parked_events (topic, partition, log_offset, message_key, event_id, event_type, payload, headers, user_id)
         SELECT 'eventline.events', 0, i, convert_to('key-' || i, 'UTF8'), gen_random_uuid(), 'OrderPlaced', '', '{}',
                CASE WHEN i % 2 = 0 THEN gen_random_uuid() END
         FROM generate_series(1, 5000) i",
        "ANALYZE",
    ];
    for statement in seed {
        sqlx::query(statement).execute(&env.pool).await.unwrap();
    }
    let user = "'00000000-0000-4000-8000-000000000042'::uuid";
    let order: String =
        sqlx::query_scalar("SELECT order_id::text FROM orders LIMIT 1").fetch_one(&env.pool).await.unwrap();
    let order = format!("'{order}'::uuid");
    // Each statement with its arguments ($1, $2, … in order).
    let plans: [(&str, &str, Vec<String>); 11] = [
        (
            "stored user document",
            STORED_USER_SQL,
            vec![user.into(), "'eventline.events'".into(), format!("convert_to({user}::text, 'UTF8')")],
        ),
        ("user document", USER_DOCUMENTS_SQL, vec![format!("ARRAY[{user}]"), "5".into()]),
        (
            "the projector's store of user documents",
            STORE_USERS_SQL,
            vec![
                format!("ARRAY[{user}]"),
                "ARRAY['{}']".into(),
                "ARRAY['\"e\"']".into(),
                "ARRAY[1::bigint]".into(),
                "ARRAY['{}'::jsonb]".into(),
            ],
        ),
        (
            "the projector's store of order documents",
            STORE_ORDERS_SQL,
            vec![format!("ARRAY[{order}]"), "ARRAY['{}']".into(), "ARRAY['\"e\"']".into()],
        ),
        ("user exists", USER_EXISTS_SQL, vec![user.into()]),
        (
            "orders",
            ORDERS_SQL,
            vec![user.into(), "21".into(), "NULL::timestamptz".into(), "NULL::uuid".into()],
        ),
        ("orders after a cursor", ORDERS_SQL, vec![user.into(), "21".into(), "now()".into(), order.clone()]),
        (
            "stored order document",
            STORED_ORDER_SQL,
            vec![order.clone(), "'eventline.events'".into(), format!("convert_to({order}::text, 'UTF8')")],
        ),
        (
            "parked user",
            PARKED_SQL,
            vec!["'eventline.events'".into(), format!("convert_to({user}::text, 'UTF8')"), user.into()],
        ),
        ("order document", ORDER_DOCUMENTS_SQL, vec![format!("ARRAY[{order}]")]),
        ("stock", STOCK_SQL, vec!["'SKU-42'".into()]),
    ];
    // The services run these as prepared statements, which PostgreSQL plans once for any
    // arguments after a few executions (a generic plan): both plans must use indexes.
    let mut connection = env.pool.acquire().await.unwrap();
    for (name, sql, args) in plans {
        let literal = args
            .iter()
            .enumerate()
            .rev()
            .fold(sql.to_owned(), |sql, (i, arg)| sql.replace(&format!("${}", i + 1), arg));
        let custom: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN {literal}")).fetch_all(&mut *connection).await.unwrap();
        sqlx::raw_sql(&format!("PREPARE planned AS {sql}")).execute(&mut *connection).await.unwrap();
        sqlx::raw_sql("SET plan_cache_mode = force_generic_plan").execute(&mut *connection).await.unwrap();
        let generic: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN EXECUTE planned({})", args.join(", ")))
                .fetch_all(&mut *connection)
                .await
                .unwrap();
        sqlx::raw_sql("DEALLOCATE planned; RESET plan_cache_mode").execute(&mut *connection).await.unwrap();
        for (kind, plan) in [("custom", custom.join("\n")), ("generic", generic.join("\n"))] {
            assert!(!plan.contains("Seq Scan"), "{name} scans sequentially ({kind} plan):\n{plan}");
            assert!(plan.contains("Index"), "{name} uses no index ({kind} plan):\n{plan}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_its_openapi_document() {
    let env = TestEnv::new().await;
    let query = support::query(&env).await;
    let served: Value = http().get(query.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(served, serde_json::to_value(eventline_query::http::openapi_document()).unwrap());
    query.stop().await.unwrap();
}
