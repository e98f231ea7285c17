//! The projector as a process, killed at random moments and run beside a second instance:
//! whatever happens between two lines, nothing is lost and nothing doubled.
//!
//! - killed with SIGKILL mid-stream and restarted, it resumes from its PostgreSQL checkpoint (the
//!   kill lands between commits, and often after a database commit and before the advisory Kafka
//!   offset commit);
//! - two instances share the partitions through the consumer group; when one stops (SIGTERM) or
//!   is killed (SIGKILL, no goodbye), the other takes its partitions over.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eventline_events::{AdjustmentType, Envelope, Event, InventoryAdjusted};
use eventline_testkit::{TestEnv, eventually};

/// A projector process, killed when dropped so a failing test leaves nothing running.
struct Projector(Child);

impl Projector {
    /// Sends `signal` (`TERM`, `KILL`) and waits for the process to end.
    fn stop(&mut self, signal: &str) {
        let pid = self.0.id().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(status.success());
        self.0.wait().unwrap();
    }
}

impl Drop for Projector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_projector(env: &TestEnv, log: &std::path::Path) -> Projector {
    spawn_in_group(env, log, &format!("scale-out-{}", env.id))
}

fn spawn_in_group(env: &TestEnv, log: &std::path::Path, group: &str) -> Projector {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_eventline-projector"))
        .env("KAFKA_BROKERS", &env.kafka.brokers)
        .env("EVENTLINE_TOPIC", &env.kafka.topic)
        .env("DATABASE_URL", &env.database.url)
        .env("REDIS_URL", &env.redis.url)
        .env("EVENTLINE_PROJECTOR_ADDR", "127.0.0.1:0")
        .env("EVENTLINE_PROJECTOR_GROUP", group)
        .env("EVENTLINE_SESSION_TIMEOUT_MS", "6000")
        // Small batches, so that a kill "after some progress" lands mid-stream.
        .env("EVENTLINE_BATCH_SIZE", "20")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Projector(child)
}

fn adjustment(sku: &str) -> Envelope {
    Envelope::new(Event::InventoryAdjusted(InventoryAdjusted {
        sku: sku.into(),
        quantity: 1,
        adjustment_type: AdjustmentType::Add,
        reason: "scale-out".into(),
    }))
}

/// The partitions a projector's log (JSON lines) says it resumed, from line `from` on.
fn resumed_partitions(log: &std::path::Path, from: usize) -> std::collections::BTreeSet<i64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .skip(from)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        // LOG_FORMAT=json flattens an event's fields into the line.
        .filter(|line| line["message"].as_str().is_some_and(|m| m.starts_with("Resuming partition")))
        .filter_map(|line| line["partition"].as_i64())
        .collect()
}

fn lines(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().lines().count()
}

/// Waits until the checkpoints cover all `events` of the topic: every event has been applied and
/// its position committed, so a doubled effect would show now.
async fn checkpointed_all(env: &TestEnv, events: i64) {
    env.wait_for_checkpoints(events, Duration::from_secs(90)).await;
}

async fn applied(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(SUM(quantity), 0)::bigint FROM inventory")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_work_and_one_finishes_when_the_other_stops() {
    survivor_finishes_the_work("TERM").await;
}

/// The production path after a crash: the killed member says no goodbye, the broker drops it after
/// the session timeout and hands its partitions to the survivor. (Tansu 0.6.0, the earlier local
/// broker, handed the survivor only its own share again; this test is what shows such a broker.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_work_and_one_finishes_when_the_other_is_killed() {
    survivor_finishes_the_work("KILL").await;
}

async fn survivor_finishes_the_work(signal: &str) {
    let env = TestEnv::new().await;
    env.create_topic().await;
    let producer = env.producer();
    let skus: Vec<String> = (0..12).map(|i| format!("SKU-{i}-{}", env.id)).collect();
    let dir = std::env::temp_dir();
    let (log_a, log_b) = (dir.join(format!("{}-a.log", env.id)), dir.join(format!("{}-b.log", env.id)));
    let mut a = spawn_projector(&env, &log_a);
    let mut b = spawn_projector(&env, &log_b);

    // Both must own partitions before the kill means anything.
    eventually(Duration::from_secs(60), "both instances to own partitions", || async {
        let owns = |log: &std::path::Path| {
            std::fs::read_to_string(log).unwrap_or_default().contains("Resuming partition")
        };
        (owns(&log_a) && owns(&log_b)).then_some(())
    })
    .await;
    let produce_round = || async {
        for sku in &skus {
            env.produce_event(&producer, &adjustment(sku)).await;
        }
    };
    for _ in 0..5 {
        produce_round().await;
    }
    let held_by_a = resumed_partitions(&log_a, 0);
    let b_lines_before = lines(&log_b);
    assert!(!held_by_a.is_empty(), "instance a never owned a partition");
    a.stop(signal); // KILL: no goodbye to the group, no flush
    for _ in 0..5 {
        produce_round().await;
    }
    let expected = (skus.len() * 10) as i64;
    checkpointed_all(&env, expected).await;
    b.stop("TERM");
    assert_eq!(applied(&env).await, expected, "nothing lost, nothing doubled");
    let per_sku: Vec<i64> =
        sqlx::query_scalar("SELECT quantity FROM inventory ORDER BY sku").fetch_all(&env.pool).await.unwrap();
    assert_eq!(per_sku, vec![10; skus.len()]);
    let taken_over = resumed_partitions(&log_b, b_lines_before);
    assert!(
        held_by_a.is_subset(&taken_over),
        "the survivor resumed {taken_over:?} after the stop; the stopped instance held {held_by_a:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_stream_and_restarted_applies_everything_once() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    let producer = env.producer();
    let skus: Vec<String> = (0..20).map(|i| format!("SKU-{i}-{}", env.id)).collect();
    let rounds = 60;
    for _ in 0..rounds {
        let sends = skus.iter().map(|sku| {
            let (env, producer, event) = (&env, &producer, adjustment(sku));
            async move { env.produce_event(producer, &event).await }
        });
        futures::future::join_all(sends).await;
    }
    let expected = (skus.len() * rounds) as i64;
    let log = std::env::temp_dir().join(format!("{}-crash.log", env.id));
    let (mut kills, mut mid_stream_kills) = (0, 0);
    // Kill it as soon as it has made some progress, several times over. Every incarnation rejoins
    // the same consumer group, as a restarted projector does in production: the broker must hand
    // it the partitions the killed member held.
    let group = format!("crash-{}", env.id);
    for _ in 0..4 {
        let mut projector = spawn_in_group(&env, &log, &group);
        let before = applied(&env).await;
        eventually(Duration::from_secs(60), "some progress", || async {
            (applied(&env).await > before || before == expected).then_some(())
        })
        .await;
        projector.stop("KILL");
        kills += 1;
        let at_kill = applied(&env).await;
        if at_kill < expected {
            mid_stream_kills += 1;
        } else {
            break;
        }
    }
    let mut projector = spawn_in_group(&env, &log, &group);
    checkpointed_all(&env, expected).await;
    projector.stop("TERM");
    assert!(
        mid_stream_kills >= 1,
        "no kill landed before the end of the log ({kills} kills): nothing was tested"
    );
    assert_eq!(applied(&env).await, expected, "after {kills} kills: nothing lost, nothing doubled");
    let per_sku: Vec<i64> =
        sqlx::query_scalar("SELECT quantity FROM inventory ORDER BY sku").fetch_all(&env.pool).await.unwrap();
    assert_eq!(per_sku, vec![rounds as i64; skus.len()]);
}
