//! A rebuild's bulk load (fold in memory, COPY, indexes after) against the batch path on a log
//! with every edge the rules handle: a profile replaced, an order before its user, a placement
//! replaced, a payment before its order, stock saturating at the ends of i64, a redelivered copy,
//! an undecodable record. `verify` folds the log with the batch path: equal, table by table,
//! documents included. A load that cannot do what the batch path would (a row the database
//! refuses, a log larger than allowed) gives way, and the rebuild still ends equal.

use crate::support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use eventline_events::{
    AdjustmentType, Envelope, Event, InventoryAdjusted, OrderItem, OrderPlaced, PaymentSettled,
    PaymentStatus, UserCreated,
};
use eventline_projector::progress::Progress;
use eventline_projector::{rebuild, verify};
use eventline_read_models::{Projection, State};
use eventline_testkit::{TestEnv, eventually};
use uuid::Uuid;

fn at(second: i64) -> DateTime<Utc> {
    // Nanoseconds, as a foreign producer may send them: both paths keep microseconds.
    DateTime::from_timestamp(1_800_000_000 + second, 123_456_789).unwrap()
}

fn user(id: Uuid, name: &str, second: i64) -> Envelope {
    let event = Event::UserCreated(UserCreated {
        user_id: id,
        email: format!("{name}@example.com"),
        first_name: name.into(),
        last_name: "Bulk\tLoad\\ed".into(),
    });
    Envelope::at(event, Uuid::now_v7(), at(second))
}

fn order(id: Uuid, user: Uuid, sku: &str, quantity: u32, price: &str, second: i64) -> Envelope {
    let total = format!("{:.2}", price.parse::<f64>().unwrap() * f64::from(quantity)).parse().unwrap();
    let price = price.parse().unwrap();
    let event = Event::OrderPlaced(OrderPlaced {
        order_id: id,
        user_id: user,
        currency: "EUR".parse().unwrap(),
        items: vec![OrderItem { sku: sku.into(), quantity, price }],
        total_amount: total,
    });
    Envelope::at(event, Uuid::now_v7(), at(second))
}

fn payment(order: Uuid, amount: &str, second: i64) -> Envelope {
    let event = Event::PaymentSettled(PaymentSettled {
        payment_id: Uuid::now_v7(),
        order_id: order,
        amount: amount.parse().unwrap(),
        currency: "EUR".parse().unwrap(),
        payment_method: "card".into(),
        status: PaymentStatus::Completed,
    });
    Envelope::at(event, Uuid::now_v7(), at(second))
}

fn stock(sku: &str, kind: AdjustmentType, quantity: i64, second: i64) -> Envelope {
    let event = Event::InventoryAdjusted(InventoryAdjusted {
        sku: sku.into(),
        quantity,
        adjustment_type: kind,
        reason: "bulk".into(),
    });
    Envelope::at(event, Uuid::now_v7(), at(second))
}

/// A log with every edge; returns its length.
async fn edged_log(env: &TestEnv) -> i64 {
    env.create_topic().await;
    let producer = env.producer();
    let (ada, bob, cy) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (first, late, early_paid, plain) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let sku = |s: &str| format!("{s}-{}", env.id);
    let mut events = vec![
        user(ada, "ada", 1),
        user(ada, "ada-renamed", 2),
        order(late, bob, &sku("A"), 1, "3.10", 3),
        user(bob, "bob", 4),
        order(first, ada, &sku("A"), 2, "5.00", 5),
        order(first, ada, &sku("B"), 3, "5.00", 6),
        payment(first, "15.00", 7),
        payment(early_paid, "2.50", 8),
        order(early_paid, cy, &sku("A"), 1, "2.50", 9),
        order(plain, cy, &sku("C"), 4, "0.99", 10),
        user(cy, "cy", 11),
        stock(&sku("A"), AdjustmentType::Add, 5, 12),
        stock(&sku("A"), AdjustmentType::Remove, 2, 13),
        stock(&sku("A"), AdjustmentType::Set, 10, 14),
        stock(&sku("A"), AdjustmentType::Add, 1, 15),
        stock(&sku("B"), AdjustmentType::Add, i64::MAX, 16),
        stock(&sku("B"), AdjustmentType::Add, 7, 17),
        stock(&sku("B"), AdjustmentType::Remove, 3, 18),
    ];
    for n in 0..30 {
        let (u, o) = (Uuid::now_v7(), Uuid::now_v7());
        events.push(user(u, &format!("many{n}"), 20 + n));
        events.push(order(o, u, &sku("C"), 1, "1.25", 20 + n));
        if n % 3 == 0 {
            events.push(payment(o, "1.25", 21 + n));
        }
    }
    for event in &events {
        env.produce_event(&producer, event).await;
    }
    // A redelivered copy, and a record that is no event at all.
    env.produce_event(&producer, &events[4]).await;
    env.produce_raw(&producer, &ada.to_string(), b"not an event", None).await;
    events.len() as i64 + 2
}

/// The edged log, applied by a live projector (which keeps running); returns its length.
async fn edged_log_projected(env: &TestEnv) -> (i64, support::Running) {
    let records = edged_log(env).await;
    let projector = support::projector(env).await;
    env.wait_for_checkpoints(records, Duration::from_secs(30)).await;
    (records, projector)
}

async fn rebuilt_and_verified(
    env: &TestEnv,
    config: &eventline_projector::Config,
    projection: Projection,
) -> i64 {
    let switched = rebuild::rebuild(config, projection, Progress::Log, 7).await.unwrap();
    assert_eq!(switched.live, projection.version(2));
    let report = verify::verify(config, projection, Progress::Log, 5, 5).await.unwrap();
    assert!(report.differing().is_empty(), "{projection}: {report:?}");
    assert_eq!(support::version_states(env, projection).await, [(1, State::Previous), (2, State::Live)]);
    switched.loaded_in_bulk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_loaded_rebuild_equals_the_batch_path_on_every_edge() {
    let env = TestEnv::new().await;
    let (records, projector) = edged_log_projected(&env).await;
    let config = support::projector_config(&env, "bulk");
    for projection in Projection::ALL {
        assert_eq!(
            rebuilt_and_verified(&env, &config, projection).await,
            records,
            "{projection} loaded in bulk"
        );
    }
    // The dead letter was recorded once, by the live projector; the rebuild did not add it again.
    let dead: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&env.pool).await.unwrap();
    assert_eq!(dead, 1);
    projector.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_that_cannot_do_what_the_batch_path_would_gives_way_and_the_rebuild_ends_equal() {
    let env = TestEnv::new().await;
    let (_, projector) = edged_log_projected(&env).await;

    // More keys than allowed in memory: replayed batch by batch.
    let mut config = support::projector_config(&env, "bulk");
    config.rebuild_bulk_max_keys = 10;
    assert_eq!(rebuilt_and_verified(&env, &config, Projection::OrdersByStatus).await, 0);

    // A row the database refuses (a check the new version's tables copy): the batch path parks
    // its key, as the live one would.
    sqlx::query(
        "ALTER TABLE read_model_v1.users ADD CONSTRAINT no_bob CHECK (first_name <> 'bob') NOT VALID",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let config = support::projector_config(&env, "bulk");
    let switched = rebuild::rebuild(&config, Projection::Main, Progress::Log, 7).await.unwrap();
    assert_eq!(switched.loaded_in_bulk, 0, "gave way");
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM read_model_v2.parked_keys")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(parked, 1, "bob's key, parked by the batch path");
    projector.stop().await.unwrap();
}

/// Whether a COPY into version 2 of `main` is under way.
async fn copying_into_version_2(env: &TestEnv) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'COPY read\\_model\\_v2.%')",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulk_load_killed_half_way_holds_nothing_and_the_rebuild_resumes_in_bulk() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    let producer = env.producer();
    let mut records = 0;
    for n in 0..3000 {
        let (u, o) = (Uuid::now_v7(), Uuid::now_v7());
        for event in [user(u, &format!("k{n}"), n), order(o, u, "K", 1, "1.00", n), payment(o, "1.00", n + 1)]
        {
            env.produce_event(&producer, &event).await;
            records += 1;
        }
    }
    let projector = support::projector(&env).await;
    env.wait_for_checkpoints(records, Duration::from_secs(60)).await;
    let config = support::projector_config(&env, "bulk");

    // Killed while it COPYs into version 2 (as a process killed then would be).
    let killed = {
        let config = config.clone();
        tokio::spawn(async move { rebuild::rebuild(&config, Projection::Main, Progress::Log, 500).await })
    };
    eventually(Duration::from_secs(60), "the bulk load COPYing into version 2", || async {
        copying_into_version_2(&env).await.then_some(())
    })
    .await;
    killed.abort();
    let _ = killed.await;
    // Its writers finish or roll back.
    eventually(Duration::from_secs(30), "the killed load's writers done", || async {
        (!copying_into_version_2(&env).await).then_some(())
    })
    .await;
    // No checkpoints: the version holds nothing, whatever its tables kept (each table commits on
    // its own connection; one cut off after some committed left their rows, which the next load
    // empties first).
    let checkpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM read_model_v2.projection_checkpoints")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(checkpoints, 0, "the killed load's checkpoints");
    assert_eq!(
        support::version_states(&env, Projection::Main).await,
        [(1, State::Live), (2, State::Building)],
        "the live version untouched, version 2 still building"
    );

    // What a load cut off between its tables' commits and its checkpoints leaves: the next load
    // empties it first.
    sqlx::query(
        "INSERT INTO read_model_v2.processed_events VALUES (gen_random_uuid(), 'left', 0, 0, 'UserCreated')",
    )
    .execute(&env.pool)
    .await
    .unwrap();

    let resumed = rebuild::rebuild(&config, Projection::Main, Progress::Log, 500).await.unwrap();
    assert_eq!(resumed.live, Projection::Main.version(2));
    assert_eq!(resumed.loaded_in_bulk, records, "loaded in bulk again, from the start");
    let report = verify::verify(&config, Projection::Main, Progress::Log, 500, 5).await.unwrap();
    assert!(report.differing().is_empty(), "{report:?}");
    let dedup: i64 = sqlx::query_scalar("SELECT count(*) FROM read_model_v2.processed_events")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(dedup, records, "one dedup record per event, none left from the load cut off");
    projector.stop().await.unwrap();
}
