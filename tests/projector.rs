//! The projector against real Kafka and PostgreSQL: exactly-once effect under redelivery, resuming
//! from the PostgreSQL checkpoint, refusing a log that does not match, dead-lettering poison.

use crate::support;

use std::time::Duration;

use eventline_events::{Envelope, Event, UserCreated};

use eventline_testkit::{TestEnv, eventually};
use uuid::Uuid;

fn user_created(n: usize) -> Envelope {
    Envelope::new(Event::UserCreated(UserCreated {
        user_id: Uuid::now_v7(),
        email: format!("user{n}@example.com"),
        first_name: format!("First{n}"),
        last_name: format!("Last{n}"),
    }))
}

/// A fresh environment whose topic exists, and a producer on it.
async fn log() -> (TestEnv, rdkafka::producer::FutureProducer) {
    let env = TestEnv::new().await;
    env.create_topic().await;
    let producer = env.producer();
    (env, producer)
}

/// Waits until the service's `/readyz` answers `status`.
async fn readyz_becomes(service: &support::Running, status: u16) {
    let client = eventline_testkit::http();
    eventually(Duration::from_secs(15), &format!("/readyz to answer {status}"), || async {
        let ready = client.get(service.url("/readyz")).send().await.ok()?;
        (ready.status() == status).then_some(())
    })
    .await;
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.pool).await.unwrap()
}

/// Waits until the checkpoints cover `events` events in total (sum of next offsets).
async fn wait_for_checkpoints(env: &TestEnv, events: i64) {
    env.wait_for_checkpoints(events, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_twice_changes_the_read_model_once() {
    let (env, producer) = log().await;
    let event = user_created(1);
    // The same event twice in the log (a producer retry without idempotence, a replayed import…).
    env.produce_event(&producer, &event).await;
    env.produce_event(&producer, &event).await;

    let projector = support::projector(&env).await;
    wait_for_checkpoints(&env, 2).await;
    projector.stop().await.unwrap();

    assert_eq!(count(&env, "SELECT count(*) FROM users").await, 1);
    assert_eq!(count(&env, "SELECT count(*) FROM processed_events").await, 1);
    let (last_event,): (Uuid,) =
        sqlx::query_as("SELECT last_event_id FROM users").fetch_one(&env.pool).await.unwrap();
    assert_eq!(last_event, event.event_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_projector_resumes_from_its_postgres_checkpoint() {
    let (env, producer) = log().await;
    let first: Vec<Envelope> = (0..6).map(user_created).collect();
    for event in &first {
        env.produce_event(&producer, event).await;
    }
    let projector = support::projector_with(support::projector_config(&env, "first")).await;
    wait_for_checkpoints(&env, 6).await;
    projector.stop().await.unwrap();

    // Mark the applied users and forget their dedup records: a replay from offset 0 would apply
    // them again and overwrite the mark, so the mark surviving proves no replay happened.
    sqlx::query("UPDATE users SET email = 'sentinel@example.com'").execute(&env.pool).await.unwrap();
    sqlx::query("DELETE FROM processed_events").execute(&env.pool).await.unwrap();

    let second: Vec<Envelope> = (6..10).map(user_created).collect();
    for event in &second {
        env.produce_event(&producer, event).await;
    }
    // A new consumer group has no offsets in Kafka at all: only the PostgreSQL checkpoint can
    // position it.
    let projector = support::projector_with(support::projector_config(&env, "second")).await;
    wait_for_checkpoints(&env, 10).await;
    projector.stop().await.unwrap();

    assert_eq!(
        count(&env, "SELECT count(*) FROM users WHERE email = 'sentinel@example.com'").await,
        6,
        "replayed"
    );
    for event in &second {
        let Event::UserCreated(user) = &event.event else { unreachable!() };
        let email: String = sqlx::query_scalar("SELECT email FROM users WHERE user_id = $1")
            .bind(user.user_id)
            .fetch_one(&env.pool)
            .await
            .unwrap_or_else(|_| panic!("event {} was skipped", event.event_id));
        assert_eq!(email, user.email);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_beyond_the_end_of_the_log_stops_the_projector() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    // The read models are bound to this very log (its identity matches), yet say 500 events of
    // partition 1 were applied where the log is empty: the per-partition check catches it.
    let log =
        eventline_runtime::log_identity::fetch(&env.kafka.brokers, &env.kafka.security, &env.kafka.topic)
            .await
            .unwrap();
    eventline_read_models::bind_log(&env.pool, eventline_testkit::FIRST_VERSION, &log).await.unwrap();
    sqlx::query("INSERT INTO projection_checkpoints (topic, partition, next_offset) VALUES ($1, 1, 500)")
        .bind(&env.kafka.topic)
        .execute(&env.pool)
        .await
        .unwrap();
    let projector = support::projector(&env).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), projector.handle)
        .await
        .expect("projector kept running");
    let error = format!("{:#}", ended.unwrap().expect_err("projector should fail"));
    assert!(error.contains("partition 1") && error.contains("500"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_that_record_no_log_and_lie_past_its_end_are_refused_at_start() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    // Read models from before log identities were recorded, with positions this log never had.
    sqlx::query("INSERT INTO projection_checkpoints (topic, partition, next_offset) VALUES ($1, 1, 500)")
        .bind(&env.kafka.topic)
        .execute(&env.pool)
        .await
        .unwrap();
    let refused =
        eventline_projector::Application::build(support::projector_config(&env, "past-the-end")).await;
    let error = format!("{:#}", refused.err().expect("the projector refuses to start"));
    assert!(
        error.contains("another log") && error.contains("partition 1") && error.contains("500"),
        "{error}"
    );
    assert!(error.contains("reset --yes"), "says what to do: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_recorded_and_do_not_stall_the_partition() {
    let (env, producer) = log().await;
    let good = user_created(1);
    let key = good.aggregate_id();
    // Same key, so same partition: the poison sits right before a valid event.
    env.produce_raw(&producer, &key, b"{not json", None).await;
    env.produce_raw(&producer, &key, br#"{"eventType":"UserDeleted"}"#, None).await;
    let (partition, offset) = env.produce_event(&producer, &good).await;

    let projector = support::projector(&env).await;
    wait_for_checkpoints(&env, 3).await;
    projector.stop().await.unwrap();

    assert_eq!(count(&env, "SELECT count(*) FROM users").await, 1);
    let dead: Vec<(i32, i64, String, Vec<u8>)> = sqlx::query_as(
        "SELECT partition, log_offset, error_code, payload FROM dead_letters ORDER BY log_offset",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!((dead[0].0, dead[0].1), (partition, offset - 2));
    assert_eq!(dead[0].2, "not_json");
    assert_eq!(dead[0].3, b"{not json");
    assert_eq!(dead[1].2, "invalid_envelope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_whose_events_differ_from_the_applied_ones_stops_the_projector() {
    let (env, producer) = log().await;
    let (partition, _) = env.produce_event(&producer, &user_created(1)).await;
    let projector = support::projector(&env).await;
    wait_for_checkpoints(&env, 1).await;
    projector.stop().await.unwrap();

    // As if the read models had been built from another log of the same length.
    sqlx::query("UPDATE processed_events SET event_id = $1")
        .bind(Uuid::now_v7())
        .execute(&env.pool)
        .await
        .unwrap();
    let projector = support::projector(&env).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), projector.handle)
        .await
        .expect("projector kept running");
    let error = format!("{:#}", ended.unwrap().expect_err("projector should fail"));
    assert!(
        error.contains(&format!("partition {partition}")) && error.contains("was applied from that offset"),
        "{error}"
    );
}

fn adjustment(sku: &str, quantity: i64) -> Envelope {
    Envelope::new(Event::InventoryAdjusted(eventline_events::InventoryAdjusted {
        sku: sku.into(),
        quantity,
        adjustment_type: eventline_events::AdjustmentType::Add,
        reason: "restock".into(),
    }))
}

async fn stock(env: &TestEnv, sku: &str) -> i64 {
    sqlx::query_scalar("SELECT quantity FROM inventory WHERE sku = $1")
        .bind(sku)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_remembering_or_forgetting_applied_events_doubles_nothing() {
    let (env, producer) = log().await;
    let sku = format!("SKU-{}", env.id);
    let (once, twice) = (adjustment(&sku, 5), adjustment(&sku, 7));
    for event in [&once, &once, &twice, &once] {
        env.produce_event(&producer, event).await;
    }
    let projector = support::projector(&env).await;
    wait_for_checkpoints(&env, 4).await;
    assert_eq!(stock(&env, &sku).await, 12, "each event applied once");

    // The fast path remembers what was applied, under this database's projection id.
    let projection: Uuid = sqlx::query_scalar("SELECT projection_id FROM projection_identity")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let client = redis::Client::open(env.redis.url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("eventline:applied:{projection}:{}", once.event_id);
    let remembered: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut redis).await.unwrap();
    assert!(remembered);

    // Redis forgets everything (as after FLUSHALL; only this test's keys, tests share Redis)…
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("eventline:applied:{projection}:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut redis).await.unwrap();
    // …and both events arrive again: PostgreSQL still knows them.
    env.produce_event(&producer, &once).await;
    env.produce_event(&producer, &twice).await;
    wait_for_checkpoints(&env, 6).await;
    projector.stop().await.unwrap();
    assert_eq!(stock(&env, &sku).await, 12, "no double effect after Redis forgot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_projection_goes_on_through_postgres_alone() {
    let (env, producer) = log().await;
    let sku = format!("SKU-{}", env.id);
    let event = adjustment(&sku, 3);
    for _ in 0..3 {
        env.produce_event(&producer, &event).await;
    }
    env.produce_event(&producer, &adjustment(&sku, 4)).await;
    let mut config = support::projector_config(&env, "no-redis");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    config.redis.url = format!("redis://{closed}");
    let projector = support::projector_with(config).await;
    wait_for_checkpoints(&env, 4).await;
    let ready = eventline_testkit::http().get(projector.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "degraded without Redis");
    projector.stop().await.unwrap();
    assert_eq!(stock(&env, &sku).await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_poison_is_dead_lettered_in_postgres_and_redis_and_survives_redis_losing_it() {
    use rdkafka::message::{Header, OwnedHeaders};
    let (env, producer) = log().await;
    let good = user_created(1);
    let mut valid: serde_json::Value = serde_json::from_slice(&good.encode()).unwrap();
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("not_json", b"\xff\xfe not json".to_vec()),
        ("invalid_envelope", br#"{"hello": "world"}"#.to_vec()),
        ("unknown_event_type", {
            valid["eventType"] = "UserDeleted".into();
            serde_json::to_vec(&valid).unwrap()
        }),
        ("unsupported_schema_version", {
            valid["eventType"] = "UserCreated".into();
            valid["schemaVersion"] = 9.into();
            serde_json::to_vec(&valid).unwrap()
        }),
        ("invalid_data", {
            valid["schemaVersion"] = 1.into();
            valid["data"]["email"] = serde_json::Value::Null;
            serde_json::to_vec(&valid).unwrap()
        }),
    ];
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (_, payload) in &poison {
        let headers = OwnedHeaders::new().insert(Header { key: "traceparent", value: Some(traceparent) });
        env.produce_raw(&producer, "poison-key", payload, Some(headers)).await;
    }
    env.produce_event(&producer, &good).await;

    let projector = support::projector(&env).await;
    wait_for_checkpoints(&env, 6).await;
    assert_eq!(count(&env, "SELECT count(*) FROM users").await, 1, "later events keep flowing");

    let entries = eventline_projector::dlq::list(&env.pool, &env.kafka.topic).await.unwrap();
    let codes: Vec<&str> = entries.iter().map(|e| e.error_code.as_str()).collect();
    assert_eq!(codes, poison.iter().map(|(code, _)| *code).collect::<Vec<_>>());
    for (entry, (_, payload)) in entries.iter().zip(&poison) {
        assert_eq!(&entry.payload, payload, "original bytes");
        assert_eq!(entry.message_key.as_deref(), Some(&b"poison-key"[..]));
        assert_eq!(entry.headers.0["traceparent"], traceparent);
        assert_eq!(entry.trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(entry.attempts, 1);
    }

    // The operators' stream in Redis mirrors them…
    let client = redis::Client::open(env.redis.url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let stream = format!("eventline:dlq:{}", env.kafka.topic);
    let reader = redis.clone();
    let len = || {
        let (mut redis, stream) = (reader.clone(), stream.clone());
        async move { redis::cmd("XLEN").arg(&stream).query_async::<i64>(&mut redis).await.ok() }
    };
    eventually(Duration::from_secs(15), "the DLQ stream in Redis", || async {
        (len().await? == 5).then_some(())
    })
    .await;
    // …and when Redis loses it, the projector puts it back from PostgreSQL.
    let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut redis).await.unwrap();
    eventually(Duration::from_secs(20), "the DLQ stream rebuilt", || async {
        (len().await? == 5).then_some(())
    })
    .await;
    projector.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redriving_applies_what_now_decodes_and_keeps_what_still_fails() {
    let env = TestEnv::new().await;
    let sku = format!("SKU-{}", env.id);
    let fixed = adjustment(&sku, 9);
    // As if an older, buggy projector had refused a valid event, and rightly refused garbage.
    for (offset, payload, code) in
        [(0_i64, fixed.encode(), "invalid_data"), (1, b"garbage".to_vec(), "not_json")]
    {
        sqlx::query(
            "INSERT INTO dead_letters (topic, partition, log_offset, message_key, payload, error_code, error)
             VALUES ($1, 0, $2, 'k', $3, $4, 'old error')",
        )
        .bind(&env.kafka.topic)
        .bind(offset)
        .bind(payload)
        .bind(code)
        .execute(&env.pool)
        .await
        .unwrap();
    }
    let entries = eventline_projector::dlq::list(&env.pool, &env.kafka.topic).await.unwrap();
    use eventline_projector::dlq::{Redriven, redrive};
    let first = redrive(&env.pool, &entries[0]).await.unwrap();
    assert_eq!(first, Redriven::Applied { id: entries[0].id, duplicate: false });
    assert_eq!(stock(&env, &sku).await, 9);
    let second = redrive(&env.pool, &entries[1]).await.unwrap();
    assert!(
        matches!(second, Redriven::FailedAgain { ref error_code, .. } if error_code == "not_json"),
        "{second:?}"
    );

    let left = eventline_projector::dlq::list(&env.pool, &env.kafka.topic).await.unwrap();
    assert_eq!(left.len(), 1, "the applied entry is gone");
    assert_eq!(left[0].attempts, 2);
    // Redriving an event that was applied meanwhile has no second effect.
    sqlx::query(
        "INSERT INTO dead_letters (topic, partition, log_offset, payload, error_code, error)
         VALUES ($1, 0, 2, $2, 'invalid_data', 'old error')",
    )
    .bind(&env.kafka.topic)
    .bind(fixed.encode())
    .execute(&env.pool)
    .await
    .unwrap();
    let again = eventline_projector::dlq::list(&env.pool, &env.kafka.topic).await.unwrap();
    let outcome = redrive(&env.pool, &again[1]).await.unwrap();
    assert!(matches!(outcome, Redriven::Applied { duplicate: true, .. }), "{outcome:?}");
    assert_eq!(stock(&env, &sku).await, 9);
    assert!(eventline_projector::dlq::purge(&env.pool, left[0].id).await.unwrap());
    assert!(eventline_projector::dlq::list(&env.pool, &env.kafka.topic).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_refuses_a_version_that_is_no_longer_live() {
    let env = TestEnv::new().await;
    let sku = format!("SKU-{}", env.id);
    sqlx::query(
        "INSERT INTO dead_letters (topic, partition, log_offset, payload, error_code, error)
         VALUES ($1, 0, 0, $2, 'invalid_data', 'old error')",
    )
    .bind(&env.kafka.topic)
    .bind(adjustment(&sku, 4).encode())
    .execute(&env.pool)
    .await
    .unwrap();
    // As a switch leaves it: the version the redrive was told to write is previous now.
    eventline_read_models::set_state(
        &env.pool,
        eventline_testkit::FIRST_VERSION,
        eventline_read_models::State::Previous,
    )
    .await
    .unwrap();
    let entries = eventline_projector::dlq::list(&env.pool, &env.kafka.topic).await.unwrap();
    use eventline_projector::dlq::{Redriven, redrive};
    let outcome = redrive(&env.pool, &entries[0]).await.unwrap();
    assert!(matches!(outcome, Redriven::NotLive { id, .. } if id == entries[0].id), "{outcome:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM inventory WHERE sku = $1")
        .bind(&sku)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing written to the superseded version");
    assert_eq!(eventline_projector::dlq::list(&env.pool, &env.kafka.topic).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_and_coming_back_loses_and_doubles_nothing() {
    let (env, producer) = log().await;
    // The projector reaches PostgreSQL through a proxy this test can cut.
    let server = env.database.url.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let proxy = eventline_testkit::TcpProxy::start(&server).await;
    let mut config = support::projector_config(&env, "db-outage");
    config.database.url = env.database.url.replace(&server, &proxy.address.to_string());
    let projector = support::projector_with(config).await;

    let sku = format!("SKU-{}", env.id);
    for _ in 0..10 {
        env.produce_event(&producer, &adjustment(&sku, 1)).await;
    }
    wait_for_checkpoints(&env, 10).await;

    proxy.set_enabled(false);
    for _ in 0..10 {
        env.produce_event(&producer, &adjustment(&sku, 1)).await;
    }
    readyz_becomes(&projector, 503).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set_enabled(true);

    wait_for_checkpoints(&env, 20).await;
    readyz_becomes(&projector, 200).await;
    projector.stop().await.unwrap();
    assert_eq!(stock(&env, &sku).await, 20, "every adjustment applied exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_a_database_outage_ends_within_the_drain_bound() {
    let (env, producer) = log().await;
    // The projector process reaches PostgreSQL through a proxy this test can cut.
    let server = env.database.url.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let proxy = eventline_testkit::TcpProxy::start(&server).await;
    let through_proxy = env.database.url.replace(&server, &proxy.address.to_string());
    let mut first = support::processes::Process::start(
        &env,
        "eventline-projector",
        &[("DATABASE_URL", &through_proxy), ("EVENTLINE_DRAIN_SECS", "2")],
    );
    first.ready().await;
    env.produce_event(&producer, &adjustment(&format!("SKU-{}", env.id), 1)).await;
    wait_for_checkpoints(&env, 1).await;

    // The database goes away for the first projector only; a second member joins its group, so
    // partitions move and the first must read checkpoints it cannot reach: it gives up inside the
    // rebalance (five attempts, each up to the pool's 3 s acquire timeout) and then waits the
    // outage out, retrying.
    proxy.set_enabled(false);
    let _second = support::projector_with(support::projector_config(&env, "processes")).await;
    eventually(Duration::from_secs(60), "the first projector retrying its checkpoints", || async {
        let output = first.output();
        output.contains("A database read failed; retrying").then_some(())
    })
    .await;

    let took = first.terminate_within(Duration::from_secs(5)).await;
    eprintln!("stopped {took:?} after SIGTERM, with a drain bound of 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_inside_a_record_batch_resumes_exactly_there() {
    let (env, producer) = log().await;
    let sku = format!("SKU-{}", env.id);
    // Sent together, so the producer packs them into one record batch (offsets 0-5).
    let events: Vec<Envelope> = (0..6).map(|i| adjustment(&sku, 1 << i)).collect();
    let positions = futures::future::join_all(events.iter().map(|e| env.produce_event(&producer, e))).await;
    let partition = positions[0].0;
    assert!(positions.iter().all(|(p, _)| *p == partition));
    // The read models already hold offsets 0 and 1.
    for (event, (_, offset)) in events.iter().zip(&positions).take(2) {
        sqlx::query(
            "INSERT INTO processed_events (event_id, topic, partition, log_offset, event_type)
             VALUES ($1, $2, $3, $4, 'InventoryAdjusted')",
        )
        .bind(event.event_id)
        .bind(&env.kafka.topic)
        .bind(partition)
        .bind(offset)
        .execute(&env.pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO projection_checkpoints (topic, partition, next_offset) VALUES ($1, $2, 2)")
        .bind(&env.kafka.topic)
        .bind(partition)
        .execute(&env.pool)
        .await
        .unwrap();
    let projector = support::projector(&env).await;
    wait_for_checkpoints(&env, 6).await;
    projector.stop().await.unwrap();
    assert_eq!(stock(&env, &sku).await, 4 + 8 + 16 + 32, "exactly offsets 2-5 applied");
}

/// `status`, `dlq list` and `dlq show` only read: pointed at a database that is not migrated they
/// say so and leave it as it was (no migrations table, no read models).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_do_not_migrate() {
    use eventline_projector::cli::{self, DlqCommand};
    let env = TestEnv::new().await;
    let mut config = support::projector_config(&env, "read-only");
    config.database.url = format!("{}_unmigrated", env.database.url);
    eventline_runtime::db::ensure_database(&config.database.url).await.unwrap();
    let outcomes = [
        cli::status(&config, true).await,
        cli::dlq(&config, DlqCommand::List { json: true }).await,
        cli::dlq(&config, DlqCommand::Show { id: 1 }).await,
    ];
    for outcome in outcomes {
        let error = format!("{:#}", outcome.expect_err("an unmigrated database has no read models"));
        assert!(error.contains("eventline-projector migrate"), "{error}");
    }
    let untouched = sqlx::PgPool::connect(&config.database.url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&untouched)
    .await
    .unwrap();
    assert_eq!(tables, 0, "a read-only command created tables");
}

/// `migrate --wait` (the init container of the projector and query pods) applies nothing: it
/// fails on a database nobody migrated, and succeeds once a migration job has run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_wait_waits_for_a_migration_job_and_applies_nothing() {
    let env = TestEnv::new().await;
    let url = format!("{}_waiting", env.database.url);
    eventline_runtime::db::ensure_database(&url).await.unwrap();
    let wait = || {
        std::process::Command::new(support::processes::binary("eventline-projector"))
            .args(["migrate", "--wait", "--timeout-secs", "1"])
            .env("DATABASE_URL", &url)
            .env("KAFKA_BROKERS", &env.kafka.brokers)
            .output()
            .unwrap()
    };
    let waited = wait();
    assert!(!waited.status.success(), "an unmigrated database passed");
    assert!(String::from_utf8_lossy(&waited.stderr).contains("migration job"), "{waited:?}");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let pending = eventline_runtime::db::pending_migrations(&pool).await.unwrap();
    assert_eq!(pending.len(), eventline_runtime::db::MIGRATOR.iter().count(), "--wait applied something");
    eventline_runtime::db::migrate(&pool).await.unwrap();
    assert!(wait().status.success(), "a migrated database did not pass");
    pool.close().await;
    eventline_runtime::db::drop_database(&url).await.unwrap();
}
