//! The write model over HTTP, against real Kafka, PostgreSQL and Redis: every business rule
//! refuses with its problem and appends nothing; batches are decided in order, all or nothing;
//! (a retry that gets its original answer is in commands.rs); `If-Match` guards against a moved aggregate; concurrent
//! commands on one sku from two instances never oversell; a lost decision state is folded again
//! from the log before anything is decided.

use crate::support;

use std::time::Duration;

use crate::support::log::{events, stock_levels};
use eventline_testkit::{TestEnv, eventually, http};
use reqwest::Response;
use serde_json::{Value, json};
use uuid::Uuid;

async fn post(url: String, body: &Value, headers: &[(&str, &str)]) -> Response {
    let mut request = http().post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Asserts the answer is the problem `slug` with `status`, and returns it.
async fn refused(response: Response, status: u16, slug: &str) -> Value {
    assert_eq!(response.status(), status);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], format!("https://eventline.dev/problems/{slug}"), "{problem}");
    problem
}

async fn accepted(response: Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body
}

fn user(id: Uuid, email: &str) -> Value {
    json!({"userId": id, "email": email, "firstName": "Ada", "lastName": "Lovelace"})
}

fn adjust(kind: &str, quantity: i64) -> Value {
    json!({"quantity": quantity, "adjustmentType": kind, "reason": "test"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_refuses_with_its_problem_and_appends_nothing() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let url = |path: &str| command.url(path);
    let (ada, bob, order, other_order) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());

    accepted(post(url("/users"), &user(ada, "ada@example.com"), &[]).await).await;
    refused(post(url("/users"), &user(ada, "someone@example.com"), &[]).await, 409, "user-exists").await;
    refused(post(url("/users"), &user(bob, "ADA@Example.COM"), &[]).await, 409, "email-taken").await;

    let items = json!([{"sku": "BOOK-1", "quantity": 3, "price": "999"}]);
    let place = |id: Uuid, user: Uuid, currency: &str| json!({"orderId": id, "userId": user, "currency": currency, "items": items});
    refused(post(url("/orders"), &place(order, bob, "JPY"), &[]).await, 409, "unknown-user").await;
    let placed = accepted(post(url("/orders"), &place(order, ada, "JPY"), &[]).await).await;
    assert_eq!(placed["totalAmount"], "2997");
    refused(post(url("/orders"), &place(order, ada, "EUR"), &[]).await, 409, "order-exists").await;

    let pay = |amount: &str, currency: &str, payment: Option<Uuid>| {
        let mut body = json!({"amount": amount, "currency": currency, "paymentMethod": "card"});
        if let Some(payment) = payment {
            body["paymentId"] = json!(payment);
        }
        body
    };
    let nowhere = format!("/orders/{}/payments", Uuid::now_v7());
    refused(post(url(&nowhere), &pay("2997", "JPY", None), &[]).await, 404, "order-not-found").await;
    let payments = format!("/orders/{order}/payments");
    refused(post(url(&payments), &pay("3.00", "USD", None), &[]).await, 409, "payment-currency-mismatch")
        .await;
    refused(post(url(&payments), &pay("2996", "JPY", None), &[]).await, 409, "payment-amount-mismatch").await;
    let payment_id = Uuid::now_v7();
    accepted(post(url(&payments), &pay("2997", "JPY", Some(payment_id)), &[]).await).await;
    refused(post(url(&payments), &pay("2997", "JPY", None), &[]).await, 409, "order-already-paid").await;
    accepted(post(url("/orders"), &place(other_order, ada, "JPY"), &[]).await).await;
    let other_payments = format!("/orders/{other_order}/payments");
    refused(
        post(url(&other_payments), &pay("2997", "JPY", Some(payment_id)), &[]).await,
        409,
        "payment-exists",
    )
    .await;

    let problem = refused(
        post(url("/inventory/NEVER-STOCKED/adjustments"), &adjust("remove", 5), &[]).await,
        409,
        "insufficient-stock",
    )
    .await;
    assert_eq!(problem["available"], 0);
    accepted(post(url("/inventory/PEN/adjustments"), &adjust("add", 2), &[]).await).await;
    let problem = refused(
        post(url("/inventory/PEN/adjustments"), &adjust("remove", 3), &[]).await,
        409,
        "insufficient-stock",
    )
    .await;
    assert_eq!(problem["available"], 2);

    let log = events(&env).await;
    let mut kinds: Vec<&str> = log.iter().map(|e| e.event_type().as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["InventoryAdjusted", "OrderPlaced", "OrderPlaced", "PaymentSettled", "UserCreated"],
        "only the five accepted commands are in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_decided_in_order_and_all_or_nothing() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let batch = |commands: Value| json!({"commands": commands});
    let adjust_in = |sku: &str, kind: &str, quantity: i64| json!({"type": "AdjustInventory", "sku": sku, "quantity": quantity, "adjustmentType": kind, "reason": "b"});
    // Each command sees the ones before it.
    accepted(
        post(
            command.url("/commands/batch"),
            &batch(json!([adjust_in("A", "add", 5), adjust_in("A", "remove", 5)])),
            &[],
        )
        .await,
    )
    .await;
    let problem = refused(
        post(
            command.url("/commands/batch"),
            &batch(json!([
                adjust_in("B", "add", 1),
                adjust_in("B", "remove", 2),
                adjust_in("A", "remove", 1)
            ])),
            &[],
        )
        .await,
        409,
        "batch-rejected",
    )
    .await;
    let failing: Vec<(&str, &str)> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        failing,
        [
            ("commands[1]", "https://eventline.dev/problems/insufficient-stock"),
            ("commands[2]", "https://eventline.dev/problems/insufficient-stock")
        ]
    );
    let log = events(&env).await;
    assert_eq!(log.len(), 2, "nothing of the refused batch was appended");
    assert_eq!(stock_levels(&log, "A"), [5, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_guards_against_a_moved_aggregate_and_reads_carry_the_version() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let _projector = support::projector(&env).await;
    let query = support::query(&env).await;
    let adjustments = command.url("/inventory/INK/adjustments");
    accepted(post(adjustments.clone(), &adjust("add", 5), &[]).await).await;
    let response = post(adjustments.clone(), &adjust("remove", 1), &[("if-match", "\"1\"")]).await;
    let token = response.headers()["consistency-token"].to_str().unwrap().to_owned();
    accepted(response).await;
    let problem = refused(
        post(adjustments.clone(), &adjust("remove", 1), &[("if-match", "\"1\"")]).await,
        412,
        "version-mismatch",
    )
    .await;
    assert_eq!(problem["currentVersion"], 2);
    refused(
        post(adjustments.clone(), &adjust("remove", 1), &[("if-match", "3")]).await,
        400,
        "invalid-if-match",
    )
    .await;

    let read =
        http().get(query.url("/inventory/INK")).header("consistency-token", &token).send().await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.headers()["etag"], "\"2\"");
    let stock: Value = read.json().await.unwrap();
    assert_eq!((stock["quantity"].as_i64(), stock["version"].as_i64()), (Some(4), Some(2)));
    assert_eq!(events(&env).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sell_exactly_the_stock_and_the_log_never_goes_below_zero() {
    let env = TestEnv::new().await;
    let (one, two) = (support::command(&env).await, support::command(&env).await);
    let _projector = support::projector(&env).await;
    let query = support::query(&env).await;
    accepted(post(one.url("/inventory/HOT/adjustments"), &adjust("add", 50), &[]).await).await;
    let urls = [one.url("/inventory/HOT/adjustments"), two.url("/inventory/HOT/adjustments")];
    let attempts = (0..200).map(|i| {
        let url = urls[i % 2].clone();
        async move {
            let response = post(url, &adjust("remove", 1), &[]).await;
            let token = response.headers().get("consistency-token").map(|t| t.to_str().unwrap().to_owned());
            (response.status().as_u16(), token)
        }
    });
    let answers = futures::future::join_all(attempts).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    let sold = statuses.iter().filter(|s| **s == 202).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((sold, refused), (50, 150), "{statuses:?}");
    // One token covering every sale: the furthest position per partition.
    let mut furthest = std::collections::BTreeMap::new();
    for token in answers.into_iter().filter_map(|(_, t)| t) {
        for pair in token.split(',') {
            let (partition, offset) = pair.split_once(':').unwrap();
            let offset: i64 = offset.parse().unwrap();
            let entry = furthest.entry(partition.to_owned()).or_insert(offset);
            *entry = (*entry).max(offset);
        }
    }
    let token: Vec<String> = furthest.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    let read = http()
        .get(query.url("/inventory/HOT"))
        .header("consistency-token", token.join(","))
        .send()
        .await
        .unwrap();
    let stock: Value = read.json().await.unwrap();
    assert_eq!(
        (stock["quantity"].as_i64(), stock["version"].as_i64()),
        (Some(0), Some(51)),
        "the stock reads 0"
    );
    let levels = stock_levels(&events(&env).await, "HOT");
    assert_eq!(levels.len(), 51);
    assert_eq!(levels.last(), Some(&0));
    assert!(levels.iter().all(|l| *l >= 0), "{levels:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_decision_state_is_folded_again_from_the_log_before_anything_is_decided() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let ada = Uuid::now_v7();
    accepted(post(command.url("/users"), &user(ada, "ada@example.com"), &[]).await).await;
    accepted(post(command.url("/inventory/CUP/adjustments"), &adjust("add", 3), &[]).await).await;
    command.stop().await.unwrap();

    sqlx::query("DROP SCHEMA command_state CASCADE").execute(&env.pool).await.unwrap();
    let command = support::command(&env).await;
    eventually(Duration::from_secs(30), "the command service ready", || {
        let url = command.url("/readyz");
        async move { http().get(url).send().await.ok()?.status().is_success().then_some(()) }
    })
    .await;
    refused(post(command.url("/users"), &user(ada, "other@example.com"), &[]).await, 409, "user-exists")
        .await;
    let problem = refused(
        post(command.url("/inventory/CUP/adjustments"), &adjust("remove", 4), &[]).await,
        409,
        "insufficient-stock",
    )
    .await;
    assert_eq!(problem["available"], 3);

    // Dropped under a running service: the next decision finds the tables gone, refuses with 503,
    // and the service folds the log again by itself.
    sqlx::query("DROP SCHEMA command_state CASCADE").execute(&env.pool).await.unwrap();
    let outcome = post(command.url("/inventory/CUP/adjustments"), &adjust("remove", 1), &[]).await;
    assert_eq!(outcome.status(), 503);
    let answer = eventually(Duration::from_secs(30), "deciding again after the fold", || {
        let url = command.url("/inventory/CUP/adjustments");
        async move {
            let response = post(url, &adjust("remove", 3), &[]).await;
            (response.status() != 503).then_some(response.status().as_u16())
        }
    })
    .await;
    assert_eq!(answer, 202, "stock 3 folded from the log, so removing 3 is allowed");
    assert_eq!(stock_levels(&events(&env).await, "CUP"), [3, 0]);

    let verify = std::process::Command::new(support::processes::binary("eventline-command"))
        .args(["state", "verify"])
        .env("KAFKA_BROKERS", &env.kafka.brokers)
        .env("EVENTLINE_TOPIC", &env.kafka.topic)
        .env("DATABASE_URL", &env.database.url)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success() && report.contains("equals a fold of the log"), "{report}");
}
