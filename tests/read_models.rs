//! The read models are a function of the log: any cross-partition interleaving of the same events,
//! cut into any batches, with redeliveries in one batch and across batches, gives the same rows —
//! and the rows a plain fold of the events predicts.

use std::collections::BTreeMap;

use eventline_events::{
    AdjustmentType, Envelope, Event, InventoryAdjusted, OrderItem, OrderPlaced, PaymentSettled,
    PaymentStatus, UserCreated,
};
use eventline_projector::project::{self, Decoded, Record, Writer};
use eventline_testkit::FIRST_VERSION;
use eventline_testkit::TestEnv;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// Applies `records` as the live projector does (its writer, the version guard, one transaction).
async fn apply_batch(env: &TestEnv, topic: &str, records: &[Record]) {
    let known = std::collections::HashSet::new();
    let parking = project::Parking::REPLAY;
    project::apply(&env.pool, Writer::live(FIRST_VERSION), topic, &Decoded::new(records), &known, parking)
        .await
        .unwrap()
        .expect("version 1 is live");
}

fn envelope(event: Event) -> Envelope {
    Envelope::new(event)
}

/// A little history: a user with two orders (one paid, the payment arriving before the user), and
/// stock movements on two skus including a `set` between deltas.
fn history() -> Vec<Envelope> {
    let user = Uuid::now_v7();
    let (order1, order2) = (Uuid::now_v7(), Uuid::now_v7());
    let usd = "USD".parse().unwrap();
    let item = |sku: &str, quantity, price: &str| OrderItem {
        sku: sku.into(),
        quantity,
        price: price.parse().unwrap(),
    };
    let adjust = |sku: &str, kind, quantity| {
        Event::InventoryAdjusted(InventoryAdjusted {
            sku: sku.into(),
            quantity,
            adjustment_type: kind,
            reason: "r".into(),
        })
    };
    vec![
        envelope(Event::UserCreated(UserCreated {
            user_id: user,
            email: "u@example.com".into(),
            first_name: "U".into(),
            last_name: "Ser".into(),
        })),
        envelope(Event::OrderPlaced(OrderPlaced {
            order_id: order1,
            user_id: user,
            currency: usd,
            items: vec![item("A", 2, "10.00"), item("B", 1, "5.50")],
            total_amount: "25.50".parse().unwrap(),
        })),
        envelope(Event::PaymentSettled(PaymentSettled {
            payment_id: Uuid::now_v7(),
            order_id: order1,
            amount: "25.50".parse().unwrap(),
            currency: usd,
            payment_method: "card".into(),
            status: PaymentStatus::Completed,
        })),
        envelope(Event::OrderPlaced(OrderPlaced {
            order_id: order2,
            user_id: user,
            currency: usd,
            items: vec![item("A", 1, "10.00")],
            total_amount: "10.00".parse().unwrap(),
        })),
        envelope(adjust("A", AdjustmentType::Add, 100)),
        envelope(adjust("B", AdjustmentType::Add, 7)),
        envelope(adjust("A", AdjustmentType::Remove, 3)),
        envelope(adjust("B", AdjustmentType::Set, 50)),
        envelope(adjust("A", AdjustmentType::Remove, 2)),
        envelope(adjust("B", AdjustmentType::Remove, 1)),
    ]
}

/// Partition of an event as Kafka would place it: by aggregate id (3 partitions).
fn partition_of(envelope: &Envelope) -> i32 {
    let key = envelope.aggregate_id();
    (key.bytes().map(u32::from).sum::<u32>() % 3) as i32
}

/// Lays the history out as a log: per partition in order, with offsets.
fn log(history: &[Envelope]) -> BTreeMap<i32, Vec<Record>> {
    let mut partitions: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for envelope in history {
        let partition = partition_of(envelope);
        let records = partitions.entry(partition).or_default();
        records.push(Record {
            partition,
            offset: records.len() as i64,
            key: Some(envelope.aggregate_id().into_bytes()),
            payload: envelope.encode(),
            headers: BTreeMap::new(),
            appended_at_ms: None,
        });
    }
    partitions
}

/// One delivery: a random interleaving of the partitions (each in its own order), with random
/// redeliveries of records already delivered.
fn delivery(log: &BTreeMap<i32, Vec<Record>>, rng: &mut StdRng) -> Vec<Record> {
    let mut cursors: BTreeMap<i32, usize> = log.keys().map(|&p| (p, 0)).collect();
    let mut delivered: Vec<Record> = Vec::new();
    loop {
        let open: Vec<i32> = cursors.iter().filter(|(p, c)| **c < log[p].len()).map(|(p, _)| *p).collect();
        let Some(&partition) = open.choose(rng) else { break };
        let cursor = cursors.get_mut(&partition).unwrap();
        delivered.push(log[&partition][*cursor].clone());
        *cursor += 1;
        if rng.random_bool(0.2) {
            let again = delivered[rng.random_range(0..delivered.len())].clone();
            delivered.push(again);
        }
    }
    delivered
}

/// Every row of every read model, as text, in a stable order.
async fn snapshot(env: &TestEnv) -> Vec<String> {
    let mut rows = Vec::new();
    for table in eventline_read_models::Projection::Main.read_models() {
        let sql = format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY row_to_json(t)::text");
        rows.extend(sqlx::query_scalar::<_, String>(&sql).fetch_all(&env.pool).await.unwrap());
    }
    rows
}

async fn reset(env: &TestEnv) {
    sqlx::query(
        "TRUNCATE users, orders, order_items, payments, inventory, event_index, processed_events, projection_checkpoints,
                  dead_letters, parked_keys, parked_events",
    )
    .execute(&env.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interleaving_and_redelivery_gives_the_same_read_models() {
    let env = TestEnv::new().await;
    let history = history();
    let log = log(&history);
    let mut rng = StdRng::seed_from_u64(20261123);
    let mut first: Option<Vec<String>> = None;
    for run in 0..40 {
        reset(&env).await;
        let delivered = delivery(&log, &mut rng);
        // Cut the delivery into random batches (also re-delivering within a batch).
        let mut rest = delivered.as_slice();
        while !rest.is_empty() {
            let size = rng.random_range(1..=rest.len().min(6));
            let (batch, tail) = rest.split_at(size);
            apply_batch(&env, "interleavings", batch).await;
            rest = tail;
        }
        let rows = snapshot(&env).await;
        match &first {
            None => first = Some(rows),
            Some(first) => assert_eq!(&rows, first, "run {run} differs"),
        }
    }

    // And those rows are what the events say.
    let stock: Vec<(String, i64)> = sqlx::query_as("SELECT sku, quantity FROM inventory ORDER BY sku")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(stock, [("A".to_owned(), 95), ("B".to_owned(), 49)], "100-3-2 and set 50 then -1");
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT total_amount::text, status FROM orders ORDER BY total_amount")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        [("10.00".to_owned(), "awaiting_payment".to_owned()), ("25.50".to_owned(), "paid".to_owned())]
    );
    let items: i64 =
        sqlx::query_scalar("SELECT count(*) FROM order_items").fetch_one(&env.pool).await.unwrap();
    assert_eq!(items, 3);
    // The user's figures, kept by the projector, whichever came first: user, orders or payment.
    let figures: (i64, String) = sqlx::query_as("SELECT order_count, total_spent::text FROM users")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(figures, (2, r#"{"USD": "25.50"}"#.to_owned()), "two orders, one of them paid");
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events").fetch_one(&env.pool).await.unwrap();
    assert_eq!(applied, history.len() as i64, "each event applied once");
    // Times come from the events, not the wall clock.
    let Event::OrderPlaced(order2) = &history[3].event else { unreachable!() };
    let placed_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT placed_at FROM orders WHERE order_id = $1")
            .bind(order2.order_id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(placed_at, history[3].occurred_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_before_its_order_leaves_the_order_paid() {
    let env = TestEnv::new().await;
    let history = history();
    // The payment (index 2) applied in a batch before the order (index 1), as if the two had
    // different keys: the order still ends up paid.
    let records: Vec<Record> = log(&history).into_values().flatten().collect();
    let find = |i: usize| records.iter().find(|r| r.payload == history[i].encode()).unwrap().clone();
    apply_batch(&env, "t", &[find(2)]).await;
    apply_batch(&env, "t", &[find(1)]).await;
    let status: String = sqlx::query_scalar("SELECT status FROM orders").fetch_one(&env.pool).await.unwrap();
    assert_eq!(status, "paid");
}

/// One arithmetic (issue 45): the largest quantities the schema allows, and what they add up to,
/// give the stock the fold gives one event at a time, however the events fall into batches. A
/// property test over random runs of adjustments at and near the ends of `i64`, cut into random
/// batches, applied by the projector's own transaction against PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_quantities_are_stored_as_the_fold_says_whatever_the_batches() {
    use eventline_read_models::fold::StockFold;
    let env = TestEnv::new().await;
    let mut rng = StdRng::seed_from_u64(45);
    let edges = [i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1, 1, -1, 0, 1 << 62];
    for run in 0..60 {
        reset(&env).await;
        let skus = [format!("edge-{run}-a"), format!("edge-{run}-b")];
        let events: Vec<Envelope> = (0..rng.random_range(1..16))
            .map(|_| {
                let kind = *[AdjustmentType::Add, AdjustmentType::Remove, AdjustmentType::Set]
                    .choose(&mut rng)
                    .unwrap();
                let quantity = if rng.random_bool(0.7) {
                    *edges.choose(&mut rng).unwrap()
                } else {
                    rng.random_range(-9..9)
                };
                envelope(Event::InventoryAdjusted(InventoryAdjusted {
                    sku: skus.choose(&mut rng).unwrap().clone(),
                    quantity,
                    adjustment_type: kind,
                    reason: "edge".into(),
                }))
            })
            .collect();
        let records: Vec<Record> = log(&events).into_values().flatten().collect();
        let mut rest = records.as_slice();
        while !rest.is_empty() {
            let (batch, tail) = rest.split_at(rng.random_range(1..=rest.len()));
            apply_batch(&env, "edges", batch).await;
            rest = tail;
        }
        for sku in &skus {
            let mut fold = StockFold::default();
            for event in events.iter().filter(|e| e.aggregate_id() == *sku) {
                fold.apply(&event.event, event.occurred_at);
            }
            let stored: Option<(i64, i64)> =
                sqlx::query_as("SELECT quantity, version FROM inventory WHERE sku = $1")
                    .bind(sku)
                    .fetch_optional(&env.pool)
                    .await
                    .unwrap();
            let folded = fold.state().map(|stock| (stock.quantity, stock.version));
            assert_eq!(stored, folded, "run {run}, {sku}: {events:?}");
        }
        let parked: i64 =
            sqlx::query_scalar("SELECT count(*) FROM parked_events").fetch_one(&env.pool).await.unwrap();
        assert_eq!(parked, 0, "run {run}: an edge value was refused instead of stored as the fold says");
    }
}
