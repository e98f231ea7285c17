//! An event the database refuses parks its own key, not the projection (issue 45): a trigger
//! refusing one aggregate's rows inside a backlog over every partition, every other aggregate
//! readable meanwhile, the key's later events parked behind it, a redrive in order once the
//! trigger is gone, and `verify` agreeing with the log; the same fault on every key tripping the
//! breaker; a dropped column halting the projection with the reason in `/readyz`.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use eventline_events::{AdjustmentType, Envelope, Event, InventoryAdjusted, UserCreated};
use eventline_projector::progress::Progress;
use eventline_testkit::{TestEnv, eventually, http};
use serde_json::{Value, json};
use uuid::Uuid;

const OPERATOR: &str = "operator-token-0123456789";
const REFUSED_SKU: &str = "sku-refused";

fn user(n: usize) -> Envelope {
    Envelope::new(Event::UserCreated(UserCreated {
        user_id: Uuid::now_v7(),
        email: format!("parking{n}@example.com"),
        first_name: format!("First{n}"),
        last_name: format!("Last{n}"),
    }))
}

fn adjustment(sku: &str, kind: AdjustmentType, quantity: i64) -> Envelope {
    Envelope::new(Event::InventoryAdjusted(InventoryAdjusted {
        sku: sku.into(),
        quantity,
        adjustment_type: kind,
        reason: "parking test".into(),
    }))
}

/// A trigger on the first version's `inventory` refusing the rows of `sku` (any sku when `None`):
/// the database refusing data, as a constraint added by hand or a bad deploy would.
async fn refuse_inventory(env: &TestEnv, sku: Option<&str>) {
    let condition = match sku {
        Some(sku) => format!("NEW.sku = '{sku}'"),
        None => "true".into(),
    };
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION refuse_stock() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'stock of % refused by the test', NEW.sku; END $$;
         CREATE TRIGGER refuse_stock BEFORE INSERT OR UPDATE ON inventory
             FOR EACH ROW WHEN ({condition}) EXECUTE FUNCTION refuse_stock();"
    ))
    .execute(&env.pool)
    .await
    .unwrap();
}

async fn allow_inventory(env: &TestEnv) {
    sqlx::raw_sql("DROP TRIGGER refuse_stock ON inventory; DROP FUNCTION refuse_stock();")
        .execute(&env.pool)
        .await
        .unwrap();
}

async fn scalar(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.pool).await.unwrap()
}

async fn readyz(service: &support::Running) -> (u16, Value) {
    let response = http().get(service.url("/readyz")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn console(projector: &support::Running, path: &str, body: Value) -> (u16, Value) {
    let response = http()
        .post(projector.url(&format!("/console/api{path}")))
        .bearer_auth(OPERATOR)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_waits_in_order_while_every_other_key_is_applied_then_a_redrive_applies_it() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    refuse_inventory(&env, Some(REFUSED_SKU)).await;

    // A backlog of 1,200 mixed events over every partition, as a producer outside this
    // repository may write them (each conforming to the published schema); the refused sku's
    // five adjustments are spread through it.
    let producer = env.producer();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut refused_offsets = Vec::new();
    for n in 0..1200 {
        let event = match n % 3 {
            0 => user(n),
            _ => {
                let sku = if n % 240 == 1 { REFUSED_SKU.to_owned() } else { format!("sku-{}", n % 50) };
                let quantity = i64::try_from(n % 7 + 1).unwrap();
                *expected.entry(sku.clone()).or_default() += quantity;
                adjustment(&sku, AdjustmentType::Add, quantity)
            }
        };
        let position = env.produce_event(&producer, &event).await;
        if matches!(&event.event, Event::InventoryAdjusted(a) if a.sku == REFUSED_SKU) {
            refused_offsets.push(position);
        }
    }
    assert_eq!(refused_offsets.len(), 5);

    let projector = support::projector(&env).await;
    let command = support::command(&env).await;
    let query = support::query(&env).await;
    env.wait_for_checkpoints(1200, Duration::from_secs(60)).await;

    // The refused key and its later events wait, in log order; nothing of it was applied.
    let parked: Vec<(i32, i64)> =
        sqlx::query_as("SELECT partition, log_offset FROM parked_events ORDER BY partition, log_offset")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(parked, refused_offsets, "every event of the refused key, and only those, is parked");
    let (key, sqlstate): (Vec<u8>, Option<String>) =
        sqlx::query_as("SELECT message_key, sqlstate FROM parked_keys").fetch_one(&env.pool).await.unwrap();
    assert_eq!(key, REFUSED_SKU.as_bytes());
    assert_eq!(sqlstate.as_deref(), Some("P0001"), "a trigger's exception is a refusal of the data");
    assert_eq!(scalar(&env, &format!("SELECT count(*) FROM inventory WHERE sku = '{REFUSED_SKU}'")).await, 0);

    // Every other aggregate was applied, exactly as the log says.
    assert_eq!(scalar(&env, "SELECT count(*) FROM users").await, 400);
    let stock: BTreeMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT sku, quantity FROM inventory")
            .fetch_all(&env.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let mut others = expected.clone();
    let refused_total = others.remove(REFUSED_SKU).unwrap();
    assert_eq!(stock, others);

    // New writes through the API are readable with their token inside the usual wait.
    for n in 0..6 {
        let response = http()
            .post(command.url("/users"))
            .json(&json!({"email": format!("after{n}@example.com"), "firstName": "A", "lastName": "B"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let token = response.headers()["consistency-token"].to_str().unwrap().to_owned();
        let body: Value = response.json().await.unwrap();
        let read = http()
            .get(query.url(&format!("/users/{}", body["userId"].as_str().unwrap())))
            .header("consistency-token", token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200, "a user created after the parking is readable with its token");
    }

    // The parked aggregate itself is not served as current: its stock is behind the log.
    let stock = http().get(query.url(&format!("/inventory/{REFUSED_SKU}"))).send().await.unwrap();
    assert_eq!(stock.status(), 503);
    let problem: Value = stock.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/aggregate-parked"), "{problem}");
    let other = http().get(query.url("/inventory/sku-1")).send().await.unwrap();
    assert_eq!(other.status(), 200, "another sku reads as usual");

    // One parked key is no reason to stop: the projector stays ready, and says what is parked.
    let (status, body) = readyz(&projector).await;
    assert_eq!(status, 200, "{body}");
    let status: Value = http().get(projector.url("/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["parkedKeys"], 1, "{status}");
    assert_eq!(status["parkedEvents"], 5, "{status}");
    // (The metrics are process-wide, and this test binary runs many projectors at once: the
    // gauges are checked where a projector runs alone, the /status figures here.)

    // Redriving while the trigger still refuses changes nothing.
    let (code, answer) = console(&projector, "/parked/redrive", json!({"key": REFUSED_SKU})).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["outcome"]["outcome"], "failedAgain", "{answer}");
    assert_eq!(scalar(&env, "SELECT count(*) FROM parked_events").await, 5);

    // A later event of the parked key joins it, whatever partition's batch it comes in.
    let late = adjustment(REFUSED_SKU, AdjustmentType::Remove, 2);
    env.produce_event(&producer, &late).await;
    env.wait_for_checkpoints(1207, Duration::from_secs(30)).await;
    assert_eq!(scalar(&env, "SELECT count(*) FROM parked_events").await, 6);

    // The cause fixed: a dry run, then the typed confirmation, applies the key in log order.
    allow_inventory(&env).await;
    let (code, dry) =
        console(&projector, "/parked/redrive", json!({"key": REFUSED_SKU, "dryRun": true})).await;
    assert_eq!(code, 200, "{dry}");
    assert_eq!(dry["outcome"]["outcome"], "applied", "{dry}");
    assert_eq!(scalar(&env, "SELECT count(*) FROM parked_events").await, 6, "a dry run keeps nothing");
    let (code, refused) =
        console(&projector, "/parked/redrive", json!({"key": REFUSED_SKU, "dryRun": false})).await;
    assert_eq!(code, 409, "acting needs the typed confirmation: {refused}");
    let confirm = dry["confirmation"].as_str().unwrap();
    let (code, done) = console(
        &projector,
        "/parked/redrive",
        json!({"key": REFUSED_SKU, "dryRun": false, "confirm": confirm}),
    )
    .await;
    assert_eq!(code, 200, "{done}");
    assert_eq!(done["outcome"]["applied"], 6, "{done}");
    assert_eq!(scalar(&env, "SELECT count(*) FROM parked_keys").await, 0);
    assert_eq!(
        scalar(&env, &format!("SELECT quantity FROM inventory WHERE sku = '{REFUSED_SKU}'")).await,
        refused_total - 2
    );
    assert_eq!(
        scalar(
            &env,
            "SELECT count(*) FROM public.console_audit WHERE action = 'parked.redrive' AND succeeded"
        )
        .await,
        1
    );

    // The read models now equal the log folded from the start.
    let config = support::projector_config(&env, "verify");
    let report = eventline_projector::verify::verify(
        &config,
        eventline_read_models::Projection::Main,
        Progress::Log,
        500,
        3,
    )
    .await
    .unwrap();
    assert!(report.differing().is_empty(), "{:?}", report.differing());

    let stock = http().get(query.url(&format!("/inventory/{REFUSED_SKU}"))).send().await.unwrap();
    assert_eq!(stock.status(), 200, "once redriven, the aggregate is served again");

    // After the redrive, events of the key are applied as any other.
    env.produce_event(&producer, &adjustment(REFUSED_SKU, AdjustmentType::Add, 10)).await;
    eventually(Duration::from_secs(20), "the key's next event applied", || async {
        let quantity =
            scalar(&env, &format!("SELECT quantity FROM inventory WHERE sku = '{REFUSED_SKU}'")).await;
        (quantity == refused_total + 8).then_some(())
    })
    .await;
    for service in [projector, command, query] {
        service.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_refusal_on_every_key_trips_the_breaker_and_the_projection_resumes_once_it_is_fixed() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    refuse_inventory(&env, None).await;
    let producer = env.producer();
    for n in 0..300 {
        env.produce_event(&producer, &adjustment(&format!("sku-{n}"), AdjustmentType::Add, 1)).await;
    }
    let mut config = support::projector_config(&env, "breaker");
    config.park_max_keys = 5;
    let projector = support::projector_with(config).await;

    // The breaker opens: not ready, and why.
    let reason = eventually(Duration::from_secs(30), "the breaker to open", || async {
        let (status, body) = readyz(&projector).await;
        let reason = body["checks"].as_array()?.iter().find(|c| c["name"] == "projection")?["reason"]
            .as_str()?
            .to_owned();
        (status == 503 && reason.contains("breaker")).then_some(reason)
    })
    .await;
    assert!(reason.contains("more than 5 keys"), "{reason}");
    let parked = scalar(&env, "SELECT count(*) FROM parked_keys").await;
    assert!(parked <= 5, "{parked} keys parked, more than the breaker's 5");
    let status: Value = http().get(projector.url("/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["failingBatch"]["kind"], "breaker", "{status}");
    assert_eq!(status["failingBatch"]["sqlstate"], "P0001", "{status}");

    // Fixed: it resumes by itself; what was parked before the breaker opened stays parked.
    allow_inventory(&env).await;
    env.wait_for_checkpoints(300, Duration::from_secs(60)).await;
    let applied = scalar(&env, "SELECT count(*) FROM inventory").await;
    let waiting = scalar(&env, "SELECT count(*) FROM parked_events").await;
    assert_eq!(applied + waiting, 300, "applied and parked make the log");
    assert_eq!(waiting, scalar(&env, "SELECT count(*) FROM parked_keys").await);
    eventually(Duration::from_secs(20), "/readyz to answer 200", || async {
        (readyz(&projector).await.0 == 200).then_some(())
    })
    .await;
    projector.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_column_halts_the_projection_not_ready_with_the_reason_until_it_is_back() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    sqlx::query("ALTER TABLE users RENAME COLUMN first_name TO given_name").execute(&env.pool).await.unwrap();
    let producer = env.producer();
    for n in 0..20 {
        env.produce_event(&producer, &user(n)).await;
    }
    let mut config = support::projector_config(&env, "halt");
    config.stall_secs = 2;
    let projector = support::projector_with(config).await;

    // An outage, not the events' fault: nothing parked, the batch retried, and past the stall
    // bound the projector is not ready and says why.
    let reason = eventually(Duration::from_secs(30), "the projection to report the stall", || async {
        let (status, body) = readyz(&projector).await;
        let reason = body["checks"].as_array()?.iter().find(|c| c["name"] == "projection")?["reason"]
            .as_str()?
            .to_owned();
        (status == 503).then_some(reason)
    })
    .await;
    assert!(reason.starts_with("outage"), "{reason}");
    let status: Value = http().get(projector.url("/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["failingBatch"]["sqlstate"], "42703", "{status}");
    assert_eq!(scalar(&env, "SELECT count(*) FROM parked_keys").await, 0);
    assert_eq!(env.checkpointed().await, 0);

    sqlx::query("ALTER TABLE users RENAME COLUMN given_name TO first_name").execute(&env.pool).await.unwrap();
    env.wait_for_checkpoints(20, Duration::from_secs(30)).await;
    assert_eq!(scalar(&env, "SELECT count(*) FROM users").await, 20);
    eventually(Duration::from_secs(20), "/readyz to answer 200", || async {
        (readyz(&projector).await.0 == 200).then_some(())
    })
    .await;
    projector.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_whose_order_is_parked_is_not_served_as_current() {
    use eventline_events::{OrderItem, OrderPlaced};
    let env = TestEnv::new().await;
    env.create_topic().await;
    let (ada, bob) = (user(1), user(2));
    let id = |envelope: &Envelope| match &envelope.event {
        Event::UserCreated(u) => u.user_id,
        _ => unreachable!(),
    };
    let order = |user_id: Uuid| {
        Envelope::new(Event::OrderPlaced(OrderPlaced {
            order_id: Uuid::now_v7(),
            user_id,
            currency: "EUR".parse().unwrap(),
            items: vec![OrderItem { sku: "sku-1".into(), quantity: 1, price: "5.00".parse().unwrap() }],
            total_amount: "5.00".parse().unwrap(),
        }))
    };
    let (refused, accepted) = (order(id(&ada)), order(id(&bob)));
    let refused_id = refused.aggregate_id();
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION refuse_order() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'order refused by the test'; END $$;
         CREATE TRIGGER refuse_order BEFORE INSERT OR UPDATE ON orders
             FOR EACH ROW WHEN (NEW.order_id = '{refused_id}') EXECUTE FUNCTION refuse_order();"
    ))
    .execute(&env.pool)
    .await
    .unwrap();
    let producer = env.producer();
    for event in [&ada, &bob, &refused, &accepted] {
        env.produce_event(&producer, event).await;
    }
    let projector = support::projector(&env).await;
    let query = support::query(&env).await;
    env.wait_for_checkpoints(4, Duration::from_secs(30)).await;
    let status = |path: String| {
        let url = query.url(&path);
        async move { http().get(url).send().await.unwrap().status().as_u16() }
    };
    // Ada's document lacks her parked order: not current. Bob's is whole.
    assert_eq!(status(format!("/users/{}", id(&ada))).await, 503);
    assert_eq!(status(format!("/orders/{refused_id}")).await, 503);
    assert_eq!(status(format!("/users/{}", id(&bob))).await, 200);
    assert_eq!(status(format!("/users/{}?ordersLimit=3", id(&bob))).await, 200);
    assert_eq!(status(format!("/users/{}?ordersLimit=3", id(&ada))).await, 503);

    sqlx::raw_sql("DROP TRIGGER refuse_order ON orders; DROP FUNCTION refuse_order();")
        .execute(&env.pool)
        .await
        .unwrap();
    let config = support::projector_config(&env, "redrive");
    let live = eventline_testkit::FIRST_VERSION;
    let redriven = eventline_projector::parked::redrive(
        &env.pool,
        live,
        &config.kafka.topic,
        refused_id.as_bytes(),
        false,
    )
    .await
    .unwrap();
    assert!(
        matches!(redriven, eventline_projector::parked::Redriven::Applied { applied: 1, .. }),
        "{redriven:?}"
    );
    let user: Value =
        http().get(query.url(&format!("/users/{}", id(&ada)))).send().await.unwrap().json().await.unwrap();
    assert_eq!(user["orderCount"], 1, "{user}");
    projector.stop().await.unwrap();
    query.stop().await.unwrap();
}
