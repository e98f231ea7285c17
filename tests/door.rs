//! Defences at the door: each client's reads are rate-limited as its commands are, and one client
//! over its limit does not slow another; a flood of idle or slow connections is closed by the
//! header read timeout and never keeps other clients out.

use crate::support;
use crate::support::sse;

use std::time::{Duration, Instant};

use eventline_testkit::{TestEnv, http};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_read_rate_is_told_to_wait_and_others_are_not() {
    let env = TestEnv::new().await;
    let mut config = support::query_config(&env);
    config.read_rate_limit_per_s = 0.5;
    config.read_rate_limit_burst = 3.0;
    let query = support::query_with(config).await;
    let user = query.url("/users/550e8400-e29b-41d4-a716-446655440000");

    // Three reads (answered, here 404) use the burst; the fourth is refused with a problem.
    for _ in 0..3 {
        let status = http().get(&user).send().await.unwrap().status();
        assert_ne!(status, 429);
    }
    let refused = http().get(&user).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "https://eventline.dev/problems/rate-limited", "{problem}");

    // Another client (another address) has a bucket of its own; operational routes are not limited.
    let other = reqwest::Client::builder().local_address("127.0.0.2".parse().ok()).build().unwrap();
    assert_ne!(other.get(&user).send().await.unwrap().status(), 429);
    assert_eq!(http().get(query.url("/healthz")).send().await.unwrap().status(), 200);
    query.stop().await.unwrap();
}

/// Holds `idle` connections that send nothing and `slow` ones that send their headers a byte at a
/// time, while a normal client keeps being answered within a second; then the service has closed
/// them all (the header read timeout) and is healthy.
async fn a_flood_of_idle_and_slow_connections(service: &support::Running) {
    const IDLE: usize = 2000;
    const SLOW: usize = 200;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(service.address).await.unwrap());
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut stream = TcpStream::connect(service.address).await.unwrap();
        let stop = stop.clone();
        slow.push(tokio::spawn(async move {
            // Headers that never end, a byte every 200 ms: closed by the server, or still open.
            let request =
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a'));
            for byte in request {
                tokio::select! {
                    () = stop.cancelled() => return false,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                if stream.write_all(&[*byte]).await.is_err() {
                    return true;
                }
            }
            false
        }));
    }
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let started = Instant::now();
        let status = client.get(service.url("/healthz")).send().await.unwrap().status();
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(1), "answered in {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The header read timeout (2 s here) has closed the idle ones: each reads the end of its stream.
    // All read at once, under one deadline: without the timeout this fails in 5 s, not in hours.
    let reads = idle.into_iter().map(|mut stream| {
        tokio::spawn(async move {
            let mut byte = [0u8; 1];
            matches!(
                tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await,
                Ok(Ok(0) | Err(_))
            )
        })
    });
    let mut closed = 0;
    for read in reads.collect::<Vec<_>>() {
        closed += usize::from(read.await.unwrap());
    }
    assert_eq!(closed, IDLE, "idle connections the server closed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let mut slow_closed = 0;
    for task in slow {
        slow_closed += usize::from(task.await.unwrap());
    }
    assert_eq!(slow_closed, SLOW, "slow connections the server closed");
    assert_eq!(client.get(service.url("/readyz")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_do_not_keep_other_clients_out() {
    let env = TestEnv::new().await;
    let serving =
        eventline_runtime::server::ServeConfig { header_read_timeout_secs: 2, ..Default::default() };
    let mut config = support::command_config(&env);
    config.serving = serving;
    let command = support::command_with(config).await;
    let mut config = support::projector_config(&env, "door");
    config.serving = serving;
    let projector = support::projector_with(config).await;
    let mut config = support::query_config(&env);
    config.serving = serving;
    let query = support::query_with(config).await;
    a_flood_of_idle_and_slow_connections(&command).await;
    a_flood_of_idle_and_slow_connections(&query).await;
    // The projector's admin port (console, metrics, probes) too.
    a_flood_of_idle_and_slow_connections(&projector).await;

    // A live stream sends nothing to the server for longer than the header read timeout: it is
    // a response under way, not an idle connection, and stays open.
    let sku = format!("DOOR-{}", env.id);
    let mut stream = stock_stream(&query, &sku).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    restock(&command, &sku).await;
    assert_eq!(stream.next().await.event, "change");
    for running in [command, projector, query] {
        running.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_body_that_trickles_in_is_refused_in_time_and_does_nothing() {
    let env = TestEnv::new().await;
    let mut config = support::command_config(&env);
    config.serving.body_read_timeout_secs = 1;
    let command = support::command_with(config).await;
    let mut stream = TcpStream::connect(command.address).await.unwrap();
    let head =
        "POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(br#"{"email": "slow@example.com", "#).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("request-timeout") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
    assert!(env.read_topic().await.is_empty(), "a command whose body never came reached the log");
    command.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_held_by_a_lock_is_answered_503_in_time_and_the_service_goes_on() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let _projector = support::projector(&env).await;
    let mut config = support::query_config(&env);
    config.read_timeout_secs = 1;
    let query = support::query_with(config).await;
    let user = query.url("/users/550e8400-e29b-41d4-a716-446655440000");
    let status = eventline_testkit::eventually(Duration::from_secs(60), "the query API ready", || async {
        let status = http().get(&user).send().await.ok()?.status();
        (status == 404).then_some(status)
    })
    .await;
    assert_eq!(status, 404);
    // A live stream opened before: it will outlast the read limit.
    let sku = format!("LIMIT-{}", env.id);
    let mut stream = stock_stream(&query, &sku).await;

    // An operator's long transaction holds the live users table.
    let version =
        eventline_read_models::live(&env.pool, eventline_read_models::Projection::Main).await.unwrap();
    let mut lock = env.pool.begin().await.unwrap();
    sqlx::raw_sql(&format!("LOCK TABLE {}.users IN ACCESS EXCLUSIVE MODE", version.schema()))
        .execute(&mut *lock)
        .await
        .unwrap();
    let started = Instant::now();
    let held = http().get(&user).send().await.unwrap();
    assert_eq!(held.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
    assert_eq!(held.headers()["retry-after"], "1");
    let problem: Value = held.json().await.unwrap();
    assert_eq!(problem["type"], "https://eventline.dev/problems/read-timeout", "{problem}");

    lock.rollback().await.unwrap();
    assert_eq!(http().get(&user).send().await.unwrap().status(), 404, "reads go on once the lock is gone");
    // The stream opened before the lock has been open for longer than the limit, and still
    // delivers: the limit bounds getting an answer, not sending it.
    restock(&command, &sku).await;
    assert_eq!(stream.next().await.event, "change");
    query.stop().await.unwrap();
}

/// The live stream of `sku`'s stock, past its first state.
async fn stock_stream(query: &support::Running, sku: &str) -> sse::Stream {
    let mut stream = sse::Stream::open(&query.url(&format!("/inventory/{sku}/live")), None).await;
    assert_eq!(stream.next().await.event, "state");
    assert_eq!(stream.next().await.event, "caught-up");
    stream
}

/// Adds a few units of `sku`: a change its live stream shows.
async fn restock(command: &support::Running, sku: &str) {
    let adjust = json!({"quantity": 3, "adjustmentType": "add", "reason": "door"});
    let url = command.url(&format!("/inventory/{sku}/adjustments"));
    assert_eq!(http().post(url).json(&adjust).send().await.unwrap().status(), 202);
}
