//! The write model as separate processes, the way it fails in production: instances killed with
//! SIGKILL under load, a process that dies between committing a decision and appending it, and
//! PostgreSQL going away under load. Nothing is oversold, nothing decided is lost, and a client
//! that retries with its Idempotency-Key always ends with a definitive answer.

use crate::support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::log::{events, stock_levels};
use crate::support::processes::{Process, binary};
use eventline_testkit::{TcpProxy, TestEnv, eventually, http};
use serde_json::{Value, json};
use tokio::sync::RwLock;

fn adjust(kind: &str, quantity: i64) -> Value {
    json!({"quantity": quantity, "adjustmentType": kind, "reason": "test"})
}

/// `eventline-command state verify` against `env`: whether the state equals a fold of the log.
fn state_verify(env: &TestEnv) -> (bool, String) {
    let output = Command::new(binary("eventline-command"))
        .args(["state", "verify"])
        .env("KAFKA_BROKERS", &env.kafka.brokers)
        .env("EVENTLINE_TOPIC", &env.kafka.topic)
        .env("EVENTLINE_TOPIC_PARTITIONS", env.kafka.topic_partitions.to_string())
        .env("DATABASE_URL", &env.database.url)
        .env("REDIS_URL", &env.redis.url)
        .output()
        .unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

const SETTINGS: [(&str, &str); 2] =
    [("EVENTLINE_ALLOW_UNAUTHENTICATED", "true"), ("EVENTLINE_RATE_LIMIT_PER_S", "0")];

/// Sends one keyed command until it gets a definitive answer (not a 5xx, not a dropped
/// connection), trying the instances in turn, as a client with a retry policy does.
async fn until_definitive(urls: &[String], path: &str, body: &Value, key: &str) -> (u16, Value) {
    for attempt in 0..600 {
        let url = format!("{}{path}", urls[attempt % urls.len()]);
        if let Ok(response) = http().post(url).json(body).header("idempotency-key", key).send().await {
            let status = response.status().as_u16();
            if let Ok(answer) = response.json::<Value>().await
                && status < 500
                && answer["type"] != "https://eventline.dev/problems/idempotency-in-progress"
            {
                return (status, answer);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no definitive answer for {key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_killed_under_load_oversell_nothing_and_every_retry_gets_its_answer() {
    let env = TestEnv::new().await;
    let one = Process::start(&env, "eventline-command", &SETTINGS);
    let two = Process::start(&env, "eventline-command", &SETTINGS);
    one.ready().await;
    two.ready().await;
    let urls = vec![one.base_url.clone(), two.base_url.clone()];
    let (stocked, _) = until_definitive(
        &urls,
        "/inventory/HOT/adjustments",
        &adjust("add", 50),
        &format!("{}-stock", env.id),
    )
    .await;
    assert_eq!(stocked, 202);

    let stop = Arc::new(AtomicBool::new(false));
    let processes = Arc::new(RwLock::new([one, two]));
    let killer = {
        let (stop, processes) = (stop.clone(), processes.clone());
        tokio::spawn(async move {
            let mut kills = 0;
            while !stop.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                processes.write().await[kills % 2].kill_and_restart(&[]);
                kills += 1;
            }
            kills
        })
    };
    // Spread over about three seconds, so that the kills land among them.
    // Keys are unique to the test: Redis remembers answers for a day, across test runs.
    let buyers = (0..200).map(|i| {
        let (urls, key) = (urls.clone(), format!("{}-buyer-{i}", env.id));
        async move {
            tokio::time::sleep(Duration::from_millis(15 * i as u64)).await;
            until_definitive(&urls, "/inventory/HOT/adjustments", &adjust("remove", 1), &key).await
        }
    });
    let answers = futures::future::join_all(buyers).await;
    stop.store(true, Ordering::Release);
    let kills = killer.await.unwrap();
    assert!(kills >= 3, "the instances were killed under load ({kills} kills)");

    let sold: Vec<&str> =
        answers.iter().filter(|(s, _)| *s == 202).map(|(_, a)| a["eventId"].as_str().unwrap()).collect();
    let refused: Vec<&Value> = answers.iter().filter(|(s, _)| *s != 202).map(|(_, a)| a).collect();
    assert!(
        refused.iter().all(|p| p["type"] == "https://eventline.dev/problems/insufficient-stock"),
        "{refused:?}"
    );
    assert_eq!((sold.len(), refused.len()), (50, 150), "{sold:?}");
    // Decisions cut off by a kill are appended by the next lock holder or the sweep.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let levels = loop {
        let levels = stock_levels(&events(&env).await, "HOT");
        if levels.len() >= 51 || std::time::Instant::now() > deadline {
            break levels;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(levels.len(), 51, "the stocking and 50 sales, each once: {levels:?}");
    assert_eq!(levels.last(), Some(&0));
    let in_log: std::collections::HashSet<String> =
        events(&env).await.iter().map(|e| e.event_id.to_string()).collect();
    assert!(sold.iter().all(|id| in_log.contains(*id)), "every sale answered 202 is in the log");
    assert!(levels.iter().all(|l| *l >= 0), "the log never goes below zero: {levels:?}");
    let (equal, report) = state_verify(&env);
    assert!(equal, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_cut_off_before_its_append_is_found_pending_and_appended() {
    let env = TestEnv::new().await;
    let mut settings = SETTINGS.to_vec();
    settings.push(("EVENTLINE_TEST_CRASH_BEFORE_APPEND", "true"));
    let mut command = Process::start(&env, "eventline-command", &settings);
    command.ready().await;
    let body = adjust("add", 5);
    let key = format!("{}-cut-off", env.id);
    let cut_off = http()
        .post(command.url("/inventory/MUG/adjustments"))
        .json(&body)
        .header("idempotency-key", &key)
        .send()
        .await;
    assert!(
        cut_off.is_err(),
        "the process died before answering: {cut_off:?} (a command service built without the \
         `fault-injection` feature has no crash hook: `cargo test --workspace` builds it with it)"
    );
    eventually(Duration::from_secs(5), "the process dead", || {
        let exited = command.exited().is_some();
        async move { exited.then_some(()) }
    })
    .await;
    assert!(events(&env).await.is_empty(), "decided, not appended");

    command.kill_and_restart(&[("EVENTLINE_TEST_CRASH_BEFORE_APPEND", "")]);
    command.ready().await;
    let log = eventually(Duration::from_secs(30), "the pending decision appended", || {
        let env = &env;
        async move {
            let log = events(env).await;
            (!log.is_empty()).then_some(log)
        }
    })
    .await;
    assert_eq!(stock_levels(&log, "MUG"), [5]);
    // The dead process's claim on the key lapses (409 in progress meanwhile); then the retry
    // finds the decision made and appended.
    let answer = eventually(Duration::from_secs(30), "the retry answered", || {
        let url = command.url("/inventory/MUG/adjustments");
        let (body, key) = (body.clone(), key.clone());
        async move {
            let retry = http().post(url).json(&body).header("idempotency-key", &key).send().await.ok()?;
            if retry.status() == 409 {
                return None;
            }
            assert_eq!(retry.status(), 202);
            retry.json::<Value>().await.ok()
        }
    })
    .await;
    assert_eq!(answer["eventId"], log[0].event_id.to_string(), "the retry gets the decision that was made");
    assert_eq!(events(&env).await.len(), 1);
    let (equal, report) = state_verify(&env);
    assert!(equal, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_under_load_means_503_never_202_and_the_service_recovers() {
    let env = TestEnv::new().await;
    let server = env.database.url.split('/').nth(2).unwrap().rsplit('@').next().unwrap().to_owned();
    let proxy = TcpProxy::start(&server).await;
    let mut config = support::command_config(&env);
    config.database.url = env.database.url.replacen(&server, &proxy.address.to_string(), 1);
    let command = support::command_with(config).await;
    eventually(Duration::from_secs(30), "ready", || {
        let url = command.url("/readyz");
        async move { http().get(url).send().await.ok()?.status().is_success().then_some(()) }
    })
    .await;

    let (stop, cut) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let load = {
        let (url, stop, cut) = (command.url("/inventory/LOAD/adjustments"), stop.clone(), cut.clone());
        tokio::spawn(async move {
            let (mut accepted, mut unavailable_while_cut, mut accepted_while_cut) = (Vec::new(), 0, 0);
            while !stop.load(Ordering::Acquire) {
                let was_cut = cut.load(Ordering::Acquire);
                let response = http().post(url.clone()).json(&adjust("add", 1)).send().await.unwrap();
                match response.status().as_u16() {
                    202 => {
                        let body: Value = response.json().await.unwrap();
                        accepted.push(body["eventId"].as_str().unwrap().to_owned());
                        if was_cut && cut.load(Ordering::Acquire) {
                            accepted_while_cut += 1;
                        }
                    }
                    503 => unavailable_while_cut += usize::from(was_cut),
                    other => panic!("unexpected {other}"),
                }
            }
            (accepted, unavailable_while_cut, accepted_while_cut)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.set_enabled(false);
    cut.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cut.store(false, Ordering::Release);
    proxy.set_enabled(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Release);
    let (accepted, unavailable, accepted_while_cut) = load.await.unwrap();
    assert!(unavailable > 0, "PostgreSQL away means 503");
    assert_eq!(accepted_while_cut, 0, "nothing is accepted while the state cannot be written");
    let in_log: std::collections::HashSet<String> =
        events(&env).await.iter().map(|e| e.event_id.to_string()).collect();
    assert!(accepted.iter().all(|id| in_log.contains(id)), "every 202 is in the log");
    let after =
        http().post(command.url("/inventory/LOAD/adjustments")).json(&adjust("add", 1)).send().await.unwrap();
    assert_eq!(after.status(), 202, "recovered by itself");
    let (equal, report) = state_verify(&env);
    assert!(equal, "{report}");
}
