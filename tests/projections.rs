//! Projections live apart (issue 46): a projection added by a deploy (its first version created
//! `building` by its migration) is caught up from the log's start by the live projector itself
//! while the others serve, and its route answers `503 projection-catching-up` until then; a read
//! of another projection, token and all, never waits for it. One projection is rebuilt, verified
//! and rolled back while traffic flows into all of them, the others untouched; a dead letter
//! redriven reaches every live projection at once.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use eventline_projector::progress::Progress;
use eventline_projector::{rebuild, verify};
use eventline_read_models::{Projection, State, Version};
use eventline_testkit::{TestEnv, eventually, http};
use serde_json::{Value, json};
use sqlx::Connection as _;

/// Appends `count` users with an order each, every third order paid; returns the unpaid order
/// ids, the paid ones, one user id and a token covering it all.
async fn seed(
    command: &support::Running,
    count: usize,
    tag: &str,
) -> (BTreeSet<String>, BTreeSet<String>, String, String) {
    let (mut unpaid, mut paid) = (BTreeSet::new(), BTreeSet::new());
    let mut commands = Vec::new();
    let mut first_user = String::new();
    for i in 0..count {
        let (user, order) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
        if first_user.is_empty() {
            first_user = user.clone();
        }
        commands.push(json!({"type": "CreateUser", "userId": user, "email": format!("{tag}{i}@example.com"),
            "firstName": "Pro", "lastName": "Jection"}));
        commands.push(json!({"type": "PlaceOrder", "orderId": order, "userId": user, "currency": "EUR",
            "items": [{"sku": "SKU-P", "quantity": 1, "price": "4.00"}]}));
        if i % 3 == 0 {
            commands.push(json!({"type": "SettlePayment", "orderId": order, "amount": "4.00",
                "currency": "EUR", "paymentMethod": "card"}));
            paid.insert(order);
        } else {
            unpaid.insert(order);
        }
    }
    let response = http()
        .post(command.url("/commands/batch"))
        .json(&json!({"commands": commands}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let token = response.headers()["consistency-token"].to_str().unwrap().to_owned();
    (unpaid, paid, first_user, token)
}

/// Every order listed in `status`, page by page (pages of 7), with `token`.
async fn listed(query: &support::Running, status: &str, token: &str) -> (u16, BTreeSet<String>, Value) {
    let (mut found, mut cursor) = (BTreeSet::new(), String::new());
    loop {
        let response = http()
            .get(query.url(&format!("/orders?status={status}&limit=7&cursor={cursor}")))
            .header("consistency-token", token)
            .send()
            .await
            .unwrap();
        let code = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if code != 200 {
            return (code, found, body);
        }
        for order in body["orders"].as_array().unwrap() {
            assert_eq!(order["status"], status, "{order}");
            assert!(found.insert(order["orderId"].as_str().unwrap().to_owned()), "listed twice: {order}");
        }
        match body["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return (200, found, body),
        }
    }
}

/// [`listed`] once the query service has seen the projection switch live: it learns of a switch by
/// notification (or its once-a-second re-read), and until then still answers that the projection
/// is catching up (never an empty list).
async fn listed_once_switched(query: &support::Running, status: &str, token: &str) -> BTreeSet<String> {
    eventually(Duration::from_secs(10), "the switch seen by the query service", || async {
        let (code, found, body) = listed(query, status, token).await;
        match code {
            200 => Some(found),
            503 => {
                assert_eq!(body["type"], "https://eventline.dev/problems/projection-catching-up", "{body}");
                None
            }
            _ => panic!("{code}: {body}"),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projection_added_catches_up_alone_and_reads_of_the_others_never_wait_for_it() {
    let env = TestEnv::new().await;
    assert_eq!(
        support::version_states(&env, Projection::OrdersByStatus).await,
        [(1, State::Building)],
        "as the migration left it"
    );
    let command = support::command(&env).await;
    let query = support::query(&env).await;
    let (unpaid, paid, user, token) = seed(&command, 40, "added").await;

    // Hold the new projection's first catch-up, as a slow one would be: the projector cannot take
    // its rebuild lock.
    let mut holder =
        sqlx::PgConnection::connect(&support::projector_config(&env, "x").database.url).await.unwrap();
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('eventline-rebuild:' || $1))")
        .bind(Projection::OrdersByStatus.name())
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert!(held);
    let projector = support::projector(&env).await;

    // The main projection serves, token and all, while the new one has not even started (the
    // projector's first batch comes after its group join: the read is asked again until then).
    eventually(Duration::from_secs(60), "a read of the main projection with the token", || async {
        let response = http()
            .get(query.url(&format!("/users/{user}")))
            .header("consistency-token", &token)
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    assert_eq!(
        support::version_states(&env, Projection::OrdersByStatus).await,
        [(1, State::Building)],
        "still held"
    );
    let (code, _, problem) = listed(&query, "awaiting_payment", &token).await;
    assert_eq!(code, 503, "{problem}");
    assert_eq!(problem["type"], "https://eventline.dev/problems/projection-catching-up", "{problem}");
    // Without a token too: never an empty list presented as current.
    let response = http().get(query.url("/orders?status=awaiting_payment")).send().await.unwrap();
    assert_eq!(response.status(), 503);

    // Released: the projector catches it up from the log's start by itself and switches it live.
    holder.close().await.unwrap();
    eventually(Duration::from_secs(60), "the new projection live", || async {
        (support::version_states(&env, Projection::OrdersByStatus).await == [(1, State::Live)]).then_some(())
    })
    .await;
    let found = listed_once_switched(&query, "awaiting_payment", &token).await;
    assert_eq!(found, unpaid);
    let (_, found, _) = listed(&query, "paid", &token).await;
    assert_eq!(found, paid);
    assert_eq!(
        support::version_states(&env, Projection::Main).await,
        [(1, State::Live)],
        "the main projection untouched"
    );

    // Joined to the live runner: new events reach it, and one user's orders are listed alone
    // (the first user of a seed has its order paid).
    let (more_unpaid, more_paid, more_user, token) = seed(&command, 4, "joined").await;
    let response = http()
        .get(query.url(&format!("/orders?status=paid&userId={more_user}")))
        .header("consistency-token", &token)
        .send()
        .await
        .unwrap();
    let code = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(code, 200, "{body}");
    let orders = body["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{body}");
    assert_eq!(orders[0]["userId"], more_user.as_str());
    assert!(more_paid.contains(orders[0]["orderId"].as_str().unwrap()), "{body}");
    let (_, found, _) = listed(&query, "awaiting_payment", &token).await;
    assert_eq!(found, unpaid.union(&more_unpaid).cloned().collect());
    projector.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_projection_is_rebuilt_verified_and_rolled_back_alone_under_traffic() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let projector = support::projector(&env).await;
    let query = support::query(&env).await;
    let (_, _, _, token) = seed(&command, 60, "before").await;
    eventually(Duration::from_secs(60), "the new projection live", || async {
        (support::version_states(&env, Projection::OrdersByStatus).await == [(1, State::Live)]).then_some(())
    })
    .await;
    listed_once_switched(&query, "awaiting_payment", &token).await;

    // Traffic into every projection while one is rebuilt.
    let traffic = {
        let command_url = command.url("/commands/batch");
        tokio::spawn(async move {
            let mut last = String::new();
            for round in 0..20 {
                let user = uuid::Uuid::now_v7().to_string();
                let commands = json!({"commands": [
                    {"type": "CreateUser", "userId": user, "email": format!("during{round}@example.com"), "firstName": "A", "lastName": "B"},
                    {"type": "PlaceOrder", "orderId": uuid::Uuid::now_v7().to_string(), "userId": user, "currency": "EUR",
                     "items": [{"sku": "SKU-T", "quantity": 1, "price": "1.00"}]}]});
                let response = http().post(&command_url).json(&commands).send().await.unwrap();
                assert_eq!(response.status(), 202);
                last = response.headers()["consistency-token"].to_str().unwrap().to_owned();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            last
        })
    };
    let config = support::projector_config(&env, "projector");
    let switched = rebuild::rebuild(&config, Projection::OrdersByStatus, Progress::Log, 50).await.unwrap();
    assert_eq!(switched.live, Projection::OrdersByStatus.version(2));
    assert_eq!(switched.previous, Some(Projection::OrdersByStatus.version(1)));
    let token = traffic.await.unwrap();
    assert_eq!(
        support::version_states(&env, Projection::Main).await,
        [(1, State::Live)],
        "the others are not rebuilt"
    );
    assert_eq!(
        support::version_states(&env, Projection::OrdersByStatus).await,
        [(1, State::Previous), (2, State::Live)]
    );

    // The live projector follows the switch: what comes after reaches version 2.
    let (code, found, body) = listed(&query, "awaiting_payment", &token).await;
    assert_eq!(code, 200, "{body}");
    assert!(found.len() >= 60 * 2 / 3 + 20, "{} listed", found.len());
    let report = verify::verify(&config, Projection::OrdersByStatus, Progress::Log, 100, 5).await.unwrap();
    assert!(report.differing().is_empty(), "{report:?}");
    assert_eq!(report.live, Projection::OrdersByStatus.version(2));

    let rolled_back =
        rebuild::rollback(&config, Projection::OrdersByStatus, Progress::Log, 100).await.unwrap();
    assert_eq!(rolled_back.live, Projection::OrdersByStatus.version(1));
    assert_eq!(
        support::version_states(&env, Projection::OrdersByStatus).await,
        [(1, State::Live), (2, State::Previous)]
    );
    assert_eq!(support::version_states(&env, Projection::Main).await, [(1, State::Live)]);
    let report = verify::verify(&config, Projection::OrdersByStatus, Progress::Log, 100, 5).await.unwrap();
    assert!(report.differing().is_empty(), "{report:?}");
    let report = verify::verify(&config, Projection::Main, Progress::Log, 100, 5).await.unwrap();
    assert!(report.differing().is_empty(), "{report:?}");
    assert_eq!(report.live, Version::main(1));
    projector.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_dead_letter_reaches_every_live_projection_at_once() {
    let env = TestEnv::new().await;
    // A projector on an empty log makes the new projection live at once, then stops.
    let projector = support::projector(&env).await;
    eventually(Duration::from_secs(30), "both projections live", || async {
        (support::version_states(&env, Projection::OrdersByStatus).await == [(1, State::Live)]).then_some(())
    })
    .await;
    projector.stop().await.unwrap();

    // An order that could not be applied when it was read (say, a decoder bug since fixed).
    let payload = include_bytes!("../crates/events/tests/fixtures/order_placed.json");
    let order_id = uuid::Uuid::parse_str("650e8400-e29b-41d4-a716-446655440000").unwrap();
    sqlx::query(
        "INSERT INTO dead_letters (topic, partition, log_offset, payload, error_code, error)
         VALUES ($1, 0, 0, $2, 'invalid_data', 'old error')",
    )
    .bind(&env.kafka.topic)
    .bind(&payload[..])
    .execute(&env.pool)
    .await
    .unwrap();
    let entries = eventline_projector::dlq::list(&env.pool, &env.kafka.topic).await.unwrap();
    let outcome = eventline_projector::dlq::redrive(&env.pool, &entries[0]).await.unwrap();
    assert!(
        matches!(outcome, eventline_projector::dlq::Redriven::Applied { duplicate: false, .. }),
        "{outcome:?}"
    );

    // Both projections have it, from the one redrive (one transaction).
    for table in ["read_model_v1.orders", "orders_by_status_v1.orders_by_status"] {
        let status: Option<String> =
            sqlx::query_scalar(&format!("SELECT status FROM {table} WHERE order_id = $1"))
                .bind(order_id)
                .fetch_optional(&env.pool)
                .await
                .unwrap();
        assert_eq!(status.as_deref(), Some("awaiting_payment"), "{table}");
    }
    assert!(eventline_projector::dlq::list(&env.pool, &env.kafka.topic).await.unwrap().is_empty());
}
