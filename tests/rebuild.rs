//! Rebuilding the read models by replaying the log, during traffic: no failed read, the rebuilt
//! version equals one folded independently, rollback restores the previous version, and a rebuild
//! killed half-way leaves the live version untouched and resumes, and one whose database goes
//! away for a while carries on. `verify` finds no difference under traffic and names the rows
//! that drifted.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use eventline_projector::progress::Progress;
use eventline_projector::{dlq, rebuild, verify};
use eventline_read_models::{State, Version};
use eventline_testkit::{TestEnv, eventually, http};
use serde_json::{Value, json};
use sqlx::PgPool;

/// Appends `users` users, each with an order and a payment, through the batch endpoint; returns
/// the user ids, the order ids and a token covering them.
async fn seed(command: &support::Running, users: usize, tag: &str) -> (Vec<String>, Vec<String>, String) {
    let (mut user_ids, mut order_ids, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in 0..users.div_ceil(100) {
        let mut commands = Vec::new();
        for i in chunk * 100..((chunk + 1) * 100).min(users) {
            let (user, order) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
            commands
                .push(json!({"type": "CreateUser", "userId": user, "email": format!("{tag}{i}@example.com"),
                "firstName": "Re", "lastName": "Build"}));
            commands.push(json!({"type": "PlaceOrder", "orderId": order, "userId": user, "currency": "EUR",
                "items": [{"sku": format!("SKU-{}", i % 7), "quantity": 1 + i % 3, "price": "2.50"}]}));
            if i % 2 == 0 {
                // A payment settles the whole order.
                let total = format!("{:.2}", 2.5 * (1 + i % 3) as f64);
                commands.push(json!({"type": "SettlePayment", "orderId": order, "amount": total,
                    "currency": "EUR", "paymentMethod": "card"}));
            }
            commands.push(json!({"type": "AdjustInventory", "sku": format!("SKU-{}", i % 7),
                "adjustmentType": "add", "quantity": 5, "reason": "restock"}));
            user_ids.push(user);
            order_ids.push(order);
        }
        let response = http()
            .post(command.url("/commands/batch"))
            .json(&json!({"commands": commands}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        tokens.push(response.headers()["consistency-token"].to_str().unwrap().to_owned());
    }
    (user_ids, order_ids, tokens.join(","))
}

/// Waits until the query service reflects `token`.
async fn await_token(query: &support::Running, user: &str, token: &str) {
    let response = http()
        .get(query.url(&format!("/users/{user}")))
        .header("consistency-token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Waits until the rebuild has applied something to version 2; returns how many events.
async fn first_progress_of_version_2(env: &TestEnv) -> i64 {
    eventually(Duration::from_secs(60), "the rebuild's first batch in version 2", || async {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT sum(next_offset)::bigint FROM read_model_v2.projection_checkpoints")
                .fetch_one(&env.pool)
                .await
                .unwrap_or(None);
        applied.filter(|a| *a > 0)
    })
    .await
}

/// The main projection's versions and their states.
async fn version_states(env: &TestEnv) -> Vec<(i32, State)> {
    support::version_states(env, eventline_read_models::Projection::Main).await
}

#[tokio::test]
async fn the_version_states_in_code_are_the_ones_the_database_allows() {
    let env = TestEnv::new().await;
    let check: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid = 'public.read_model_versions'::regclass AND contype = 'c' AND conname LIKE '%state%'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let allowed: Vec<&str> = check.split('\'').skip(1).step_by(2).collect();
    let mut in_code: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
    let mut allowed_sorted = allowed.clone();
    allowed_sorted.sort_unstable();
    in_code.sort_unstable();
    assert_eq!(in_code, allowed_sorted, "the CHECK constraint: {check}");
}

/// Rows of the read-model tables of `a` missing from `b` and the other way round, per table.
async fn differences(pool: &PgPool, a: Version, b: Version) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for &table in eventline_read_models::Projection::Main.read_models() {
        let (a, b) = (a.schema(), b.schema());
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT (SELECT count(*) FROM (SELECT * FROM {a}.{table} EXCEPT SELECT * FROM {b}.{table}) x)
                  + (SELECT count(*) FROM (SELECT * FROM {b}.{table} EXCEPT SELECT * FROM {a}.{table}) y)"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        let rows: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {a}.{table}")).fetch_one(pool).await.unwrap();
        assert!(rows > 0, "{table} is empty");
        found.push((table.to_owned(), count));
    }
    found
}

/// Reads the seeded ids over and over, and writes and reads back new users, until stopped;
/// counts every answer that is not a 200.
struct Traffic {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(
        command: &support::Running,
        query: &support::Running,
        users: Vec<String>,
        orders: Vec<String>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let reader = {
            let (stop, reads, failures) = (stop.clone(), reads.clone(), failures.clone());
            let base = query.url("");
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    for path in [
                        format!("/users/{}", users[i % users.len()]),
                        format!("/orders/{}", orders[i % orders.len()]),
                    ] {
                        let response = http().get(format!("{base}{path}")).send().await.unwrap();
                        if response.status() != 200 {
                            failures.lock().unwrap().push(format!("GET {path}: {}", response.status()));
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        };
        tasks.push(reader);
        let writer = {
            let (stop, reads, failures) = (stop.clone(), reads.clone(), failures.clone());
            let (commands, queries) = (command.url(""), query.url(""));
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let created = http()
                        .post(format!("{commands}/users"))
                        .json(&json!({"email": format!("live{i}-{}@example.com", uuid::Uuid::new_v4()), "firstName": "L", "lastName": "W"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(created.status(), 202);
                    let token = created.headers()["consistency-token"].to_str().unwrap().to_owned();
                    let user: Value = created.json().await.unwrap();
                    let path = format!("/users/{}", user["userId"].as_str().unwrap());
                    let read = http()
                        .get(format!("{queries}{path}"))
                        .header("consistency-token", token)
                        .send()
                        .await
                        .unwrap();
                    if read.status() != 200 {
                        failures.lock().unwrap().push(format!("GET {path} with token: {}", read.status()));
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        tasks.push(writer);
        Traffic { stop, reads, failures, tasks }
    }

    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.reads.load(Ordering::Relaxed), failures)
    }

    /// Waits until `more` reads have been answered after this call.
    async fn reads_more(&self, more: usize) {
        let target = self.reads.load(Ordering::Relaxed) + more;
        eventually(Duration::from_secs(30), &format!("{more} more reads under traffic"), || async {
            (self.reads.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_under_traffic_switches_without_a_failed_read_and_rollback_restores() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let projector = support::projector(&env).await;
    let query = support::query(&env).await;
    let (users, orders, token) = seed(&command, 600, "seed").await;
    await_token(&query, &users[0], &token).await;

    let traffic = Traffic::start(&command, &query, users.clone(), orders.clone());
    traffic.reads_more(50).await;
    let config = support::projector_config(&env, "projector");
    let switched =
        rebuild::rebuild(&config, eventline_read_models::Projection::Main, Progress::Log, 200).await.unwrap();
    assert_eq!((switched.live, switched.previous), (Version::main(2), Some(Version::main(1))));
    assert!(switched.events >= 600 * 3, "{switched:?}");
    // The new version's tables are the live one's, storage parameters (fill factor) included.
    for table in ["users", "orders"] {
        let options: Option<Vec<String>> =
            sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = $1::regclass")
                .bind(format!("read_model_v2.{table}"))
                .fetch_one(&env.pool)
                .await
                .unwrap();
        assert_eq!(options, Some(vec!["fillfactor=70".to_owned()]), "{table}");
    }
    // Traffic goes on after the switch: the live projector now writes version 2.
    traffic.reads_more(100).await;
    let (reads, failures) = traffic.stop().await;
    assert!(reads > 100, "too little traffic to prove anything: {reads} reads");
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(version_states(&env).await, [(1, State::Previous), (2, State::Live)]);

    // Roll back: version 1 catches up with the log (it missed the traffic after the switch),
    // then is live again; both now fold the whole log and must be equal row for row.
    let rolled_back = rebuild::rollback(&config, eventline_read_models::Projection::Main, Progress::Log, 200)
        .await
        .unwrap();
    assert_eq!((rolled_back.live, rolled_back.previous), (Version::main(1), Some(Version::main(2))));
    assert_eq!(version_states(&env).await, [(1, State::Live), (2, State::Previous)]);
    for (table, count) in differences(&env.pool, Version::main(1), Version::main(2)).await {
        assert_eq!(count, 0, "{table} differs between the live and the rebuilt version");
    }
    // The query service follows the switch back too.
    let (more_users, _, token) = seed(&command, 10, "after").await;
    await_token(&query, &more_users[9], &token).await;

    for service in [command, projector, query] {
        service.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_killed_half_way_leaves_the_live_version_untouched_and_resumes() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let projector = support::projector(&env).await;
    let query = support::query(&env).await;
    let (users, _, token) = seed(&command, 1500, "kill").await;
    await_token(&query, &users[0], &token).await;

    // The batch path's resume (a bulk load killed half-way keeps nothing: tests/bulk_rebuild.rs).
    let mut config = support::projector_config(&env, "projector");
    config.rebuild_bulk_max_keys = 0;
    let killed = {
        let config = config.clone();
        tokio::spawn(async move {
            rebuild::rebuild(&config, eventline_read_models::Projection::Main, Progress::Log, 20).await
        })
    };
    // Kill it once version 2 has some, not all, of the log.
    let total: i64 = 1500 * 3 + 750;
    let applied = first_progress_of_version_2(&env).await;
    assert!(applied < total, "the rebuild finished before it could be killed");
    killed.abort();
    let _ = killed.await;
    assert_eq!(version_states(&env).await, [(1, State::Live), (2, State::Building)]);
    // The live version still serves, and still follows writes.
    let (late, _, token) = seed(&command, 5, "late").await;
    await_token(&query, &late[4], &token).await;
    await_token(&query, &users[1499], &token).await;

    let resumed =
        rebuild::rebuild(&config, eventline_read_models::Projection::Main, Progress::Log, 500).await.unwrap();
    assert_eq!((resumed.live, resumed.previous), (Version::main(2), Some(Version::main(1))));
    let (after, _, token) = seed(&command, 5, "after").await;
    await_token(&query, &after[4], &token).await;
    // Version 1 is no longer written; bring it level by rolling back, then compare.
    rebuild::rollback(&config, eventline_read_models::Projection::Main, Progress::Log, 500).await.unwrap();
    for (table, count) in differences(&env.pool, Version::main(1), Version::main(2)).await {
        assert_eq!(count, 0, "{table} differs after a resumed rebuild");
    }
    for service in [command, projector, query] {
        service.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_whose_database_goes_away_for_a_while_carries_on_and_switches() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let projector = support::projector(&env).await;
    let query = support::query(&env).await;
    let (users, _, token) = seed(&command, 1000, "outage").await;
    await_token(&query, &users[999], &token).await;

    // The rebuild reaches PostgreSQL through a proxy this test cuts mid-replay.
    let server = env.database.url.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let proxy = eventline_testkit::TcpProxy::start(&server).await;
    let mut config = support::projector_config(&env, "projector");
    config.database.url = env.database.url.replace(&server, &proxy.address.to_string());
    // The batch path, which rides out the outage (a bulk load cut off gives way to it).
    config.rebuild_bulk_max_keys = 0;
    let rebuilding = tokio::spawn(async move {
        rebuild::rebuild(&config, eventline_read_models::Projection::Main, Progress::Log, 20).await
    });
    first_progress_of_version_2(&env).await;
    proxy.set_enabled(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!rebuilding.is_finished(), "the rebuild gave up while the database was away");
    proxy.set_enabled(true);

    let switched =
        tokio::time::timeout(Duration::from_secs(120), rebuilding).await.unwrap().unwrap().unwrap();
    assert_eq!((switched.live, switched.previous), (Version::main(2), Some(Version::main(1))));
    for (table, count) in differences(&env.pool, Version::main(1), Version::main(2)).await {
        assert_eq!(count, 0, "{table} differs after a rebuild through a database outage");
    }
    for service in [command, projector, query] {
        service.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_records_only_the_dead_letters_the_live_projector_never_reached() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let projector = support::projector(&env).await;
    let (_, _, _) = seed(&command, 50, "dead").await;
    // Dead-lettered by the live projector, then purged by an operator.
    env.produce_raw(&env.producer(), "poison-seen", b"not an event", None).await;
    let seen = eventline_testkit::eventually(Duration::from_secs(20), "the poison dead-lettered", || async {
        dlq::list(&env.pool, &env.kafka.topic).await.unwrap().first().map(|entry| entry.id)
    })
    .await;
    assert!(dlq::purge(&env.pool, seen).await.unwrap());
    // The live projector stops; a second poison message arrives that only the rebuild will meet.
    projector.stop().await.unwrap();
    let (partition, offset) =
        env.produce_raw(&env.producer(), "poison-unseen", b"not an event either", None).await;

    let config = support::projector_config(&env, "projector");
    let switched =
        rebuild::rebuild(&config, eventline_read_models::Projection::Main, Progress::Log, 100).await.unwrap();
    assert_eq!(switched.live, Version::main(2));
    let left = dlq::list(&env.pool, &env.kafka.topic).await.unwrap();
    let positions: Vec<(i32, i64)> = left.iter().map(|entry| (entry.partition, entry.offset)).collect();
    assert_eq!(positions, [(partition, offset)], "the purged entry stays purged; the unseen one is recorded");
    command.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_under_traffic_finds_no_difference_and_then_names_the_rows_that_drifted() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let projector = support::projector(&env).await;
    let query = support::query(&env).await;
    let (users, orders, token) = seed(&command, 600, "verify").await;
    // A poison message, dead-lettered by the live projector and purged by an operator: the fold
    // of the log must not bring it back into the queue.
    env.produce_raw(&env.producer(), "poison", b"not an event", None).await;
    let poison =
        eventline_testkit::eventually(Duration::from_secs(20), "the poison dead-lettered", || async {
            dlq::list(&env.pool, &env.kafka.topic).await.unwrap().first().map(|entry| entry.id)
        })
        .await;
    assert!(dlq::purge(&env.pool, poison).await.unwrap());
    await_token(&query, &users[0], &token).await;

    // Under traffic the live version keeps moving; verify still compares at one position.
    let traffic = Traffic::start(&command, &query, users.clone(), orders.clone());
    traffic.reads_more(50).await;
    let config = support::projector_config(&env, "projector");
    let report = verify::verify(&config, eventline_read_models::Projection::Main, Progress::Log, 100, 5)
        .await
        .unwrap();
    let (reads, failures) = traffic.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(report.live, Version::main(1));
    assert!(report.differing().is_empty(), "{report:#?}");
    let seeded_and_poison = 600 * 3 + 300 + 1;
    assert!(report.positions.values().sum::<i64>() >= seeded_and_poison, "{report:?}");
    let users_table = &report.tables[0];
    assert!(users_table.live_rows >= 600 && users_table.live_rows == users_table.folded_rows, "{report:?}");
    assert_eq!(version_states(&env).await, [(1, State::Live)], "the scratch version is dropped");
    assert_eq!(dlq::depth(&env.pool, &env.kafka.topic).await.unwrap(), 0, "verify touched the DLQ");

    // Drift: a changed row and a lost one.
    sqlx::query("UPDATE read_model_v1.users SET email = 'drift@example.com' WHERE user_id = $1::uuid")
        .bind(&users[0])
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM read_model_v1.inventory WHERE sku = 'SKU-3'").execute(&env.pool).await.unwrap();
    let report = verify::verify(&config, eventline_read_models::Projection::Main, Progress::Log, 1000, 5)
        .await
        .unwrap();
    assert_eq!(report.differing(), ["users", "inventory"], "{report:#?}");
    let users_table = &report.tables[0];
    assert_eq!(users_table.only_live.len(), 1, "{users_table:?}");
    assert_eq!(users_table.only_live[0]["email"], "drift@example.com");
    assert_eq!(users_table.only_folded.len(), 1, "{users_table:?}");
    assert_eq!(users_table.only_folded[0]["email"], "verify0@example.com");
    assert_eq!(users_table.only_folded[0]["user_id"], users[0].as_str());
    let inventory = report.tables.iter().find(|t| t.table == "inventory").unwrap();
    assert!(inventory.only_live.is_empty(), "{inventory:?}");
    assert_eq!(inventory.only_folded.len(), 1);
    assert_eq!(inventory.only_folded[0]["sku"], "SKU-3");
    assert_eq!(inventory.live_rows + 1, inventory.folded_rows);

    for service in [command, projector, query] {
        service.stop().await.unwrap();
    }
}
