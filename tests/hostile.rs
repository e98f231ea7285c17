//! Hostile input on every endpoint: oversized, deeply nested, non-UTF-8, NUL-containing,
//! wrongly typed and injection-looking requests always get a 4xx problem+json — never a 5xx, never
//! a crash, never an event in the log — and text that is valid, however odd, is stored and served
//! back verbatim.

use crate::support;

use eventline_testkit::{TestEnv, http};
use reqwest::Response;
use serde_json::{Value, json};

const USER: &str = "550e8400-e29b-41d4-a716-446655440000";
const ORDER: &str = "650e8400-e29b-41d4-a716-446655440000";

/// Asserts a 4xx problem+json answer and returns its status.
async fn refused(what: &str, response: Response) -> u16 {
    let status = response.status().as_u16();
    assert!((400..500).contains(&status), "{what}: answered {status}");
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{what}: answered {status}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status, "{what}: {problem}");
    assert!(problem["type"].as_str().is_some_and(|t| t.starts_with("https://")), "{what}: {problem}");
    status
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_commands_get_a_4xx_problem_and_append_nothing() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let routes = [
        "/users".to_owned(),
        "/orders".to_owned(),
        format!("/orders/{ORDER}/payments"),
        "/inventory/SKU-1/adjustments".to_owned(),
        "/commands/batch".to_owned(),
    ];
    // Over the single-command limit (64 KiB) but small enough to be sent whole before the
    // answer; the batch limit gets its own test below.
    let big = "x".repeat(80 * 1024);
    let bodies: Vec<(&str, Vec<u8>, &str)> = vec![
        ("oversized", format!("{{\"email\": \"{big}\"}}").into_bytes(), "application/json"),
        ("deeply nested", nested(100_000).into_bytes(), "application/json"),
        ("nested inside a field", format!("{{\"email\": {}}}", nested(5_000)).into_bytes(), "application/json"),
        ("not UTF-8", b"{\"email\": \"\xff\xfe\xfd\", \"firstName\": \"\xc3\x28\"}".to_vec(), "application/json"),
        ("NUL in strings", br#"{"email":"a\u0000@x.io","firstName":"A\u0000","lastName":"B","userId":"\u0000","orderId":"\u0000","currency":"E\u0000R","items":[],"amount":"1\u0000","paymentMethod":"c\u0000","quantity":1,"adjustmentType":"add\u0000","reason":"\u0000","commands":[{"type":"CreateUser\u0000"}]}"#.to_vec(), "application/json"),
        ("raw NUL bytes", b"{\"email\":\"a\x00@x.io\"}".to_vec(), "application/json"),
        ("wrong types", br#"{"email":5,"firstName":[],"lastName":{},"userId":true,"currency":1,"items":"x","amount":[],"quantity":"1","commands":{}}"#.to_vec(), "application/json"),
        ("huge numbers", br#"{"quantity":1e400,"amount":1e400,"items":[{"sku":"S","quantity":99999999999999999999999,"price":"1"}],"commands":[]}"#.to_vec(), "application/json"),
        ("injection in ids", br#"{"userId":"' OR 1=1 --","orderId":"1; DROP TABLE users","email":"x@y.io","firstName":"a","lastName":"b","currency":"EUR","items":[{"sku":"'; DROP TABLE inventory;--","quantity":1,"price":"1"}]}"#.to_vec(), "application/json"),
        ("empty", Vec::new(), "application/json"),
        ("not JSON", b"<xml>no</xml>".to_vec(), "application/json"),
        ("wrong content type", br#"{"email":"a@b.io"}"#.to_vec(), "text/plain"),
        ("JSON null", b"null".to_vec(), "application/json"),
    ];
    for route in &routes {
        for (what, body, content_type) in &bodies {
            let response = http()
                .post(command.url(route))
                .header("content-type", *content_type)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            refused(&format!("POST {route} with a {what} body"), response).await;
        }
    }
    // A batch over its 4 MiB limit is refused as soon as its Content-Length is seen: the answer
    // is a 413 problem, or, when the client is still writing the rest, a closed connection.
    let huge = format!("{{\"commands\": [\"{}\"]}}", "x".repeat(6 * 1024 * 1024));
    match http()
        .post(command.url("/commands/batch"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
    {
        Ok(response) => assert_eq!(refused("an oversized batch", response).await, 413),
        Err(error) => assert!(error.is_request(), "an oversized batch: {error}"),
    }
    // Hostile paths and headers.
    let body = json!({"amount": "1.00", "currency": "EUR", "paymentMethod": "card", "quantity": 1, "adjustmentType": "add", "reason": "r"});
    for path in [
        "/orders/'%20OR%201=1--/payments",
        "/orders/%00/payments",
        "/orders/%FF%FE/payments",
        "/inventory/%00/adjustments",
        "/inventory/%3Cscript%3E/adjustments",
        "/inventory/a%20b;DROP/adjustments",
        "/inventory/%FF/adjustments",
    ] {
        let response = http().post(command.url(path)).json(&body).send().await.unwrap();
        refused(&format!("POST {path}"), response).await;
    }
    let user = json!({"email": "k@example.com", "firstName": "K", "lastName": "K"});
    for key in ["", "\u{7f}bad", &"k".repeat(300)] {
        let response =
            http().post(command.url("/users")).header("idempotency-key", key).json(&user).send().await;
        if let Ok(response) = response {
            refused(&format!("Idempotency-Key {key:?}"), response).await;
        }
    }
    assert!(env.read_topic().await.is_empty(), "a refused request reached the log");
    command.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_but_valid_text_is_stored_and_served_back_verbatim() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let projector = support::projector(&env).await;
    let query = support::query(&env).await;
    let odd = [
        ("o'brien+tag@example.com", "Robert'); DROP TABLE users;--", "<script>alert(1)</script>"),
        ("ünïcödé@bücher.example", "名前 🦀 \u{202e}RTL\u{202c}", "\\u0000 not a NUL, just text"),
        ("x@y.io", "${jndi:ldap://x}", "{{7*7}} %s %n"),
    ];
    for (email, first, last) in odd {
        let created = http()
            .post(command.url("/users"))
            .json(&json!({"email": email, "firstName": first, "lastName": last}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 202, "{email} {first} {last}");
        let token = created.headers()["consistency-token"].to_str().unwrap().to_owned();
        let id = created.json::<Value>().await.unwrap()["userId"].as_str().unwrap().to_owned();
        let read: Value = http()
            .get(query.url(&format!("/users/{id}")))
            .header("consistency-token", token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (read["email"].as_str(), read["firstName"].as_str(), read["lastName"].as_str()),
            (Some(email), Some(first), Some(last))
        );
    }
    for service in [command, projector, query] {
        service.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_reads_get_a_4xx_problem() {
    let env = TestEnv::new().await;
    let query = support::query(&env).await;
    let long = "9".repeat(5000);
    let paths = [
        "/users/'%20OR%201=1--".to_owned(),
        "/users/%00".to_owned(),
        "/users/%FF%FE".to_owned(),
        format!("/users/{long}"),
        "/orders/1;DROP%20TABLE%20orders".to_owned(),
        "/orders/%F0%28%8C%BC".to_owned(),
        "/inventory/%00".to_owned(),
        "/inventory/%3Cscript%3E".to_owned(),
        format!("/users/{USER}/orders?limit=99999999999999999999"),
        format!("/users/{USER}/orders?limit=-1"),
        format!("/users/{USER}/orders?limit=%00"),
        format!("/users/{USER}/orders?cursor=%00%FF"),
        format!("/users/{USER}/orders?cursor={long}"),
        format!("/users/{USER}?ordersLimit=1e9"),
    ];
    for path in &paths {
        let response = http().get(query.url(path)).send().await.unwrap();
        refused(&format!("GET {path}"), response).await;
    }
    for token in ["0:1\u{0}", "' OR 1=1", &"0:1,".repeat(2000), "-1:-1", "0:99999999999999999999999"] {
        let response =
            http().get(query.url(&format!("/users/{USER}"))).header("consistency-token", token).send().await;
        if let Ok(response) = response {
            refused(&format!("Consistency-Token {:?}", &token[..token.len().min(20)]), response).await;
        }
    }
    query.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_request_does_not_hold_a_stopping_service() {
    use std::time::{Duration, Instant};
    use support::processes::Process;
    use tokio::io::AsyncWriteExt;

    let env = TestEnv::new().await;
    let console = format!("olga:operator:{OPERATOR_TOKEN}");
    let settings = [
        ("EVENTLINE_DRAIN_SECS", "2"),
        ("EVENTLINE_ALLOW_UNAUTHENTICATED", "true"),
        ("EVENTLINE_CONSOLE_TOKENS", console.as_str()),
    ];
    // Each service gets a request that it has started to handle and that never ends: a body
    // promised and not sent (the handler waits for it), or a head never finished.
    let hung = [
        (
            "eventline-command",
            "POST /users HTTP/1.1\r\nHost: eventline\r\nContent-Type: application/json\r\n\
             Content-Length: 1000\r\n\r\n{\"email\":"
                .to_owned(),
        ),
        (
            "eventline-projector",
            format!(
                "POST /console/api/dead-letters/redrive HTTP/1.1\r\nHost: eventline\r\n\
                 Authorization: Bearer {OPERATOR_TOKEN}\r\nContent-Type: application/json\r\n\
                 Content-Length: 1000\r\n\r\n{{\"selection\":"
            ),
        ),
        (
            "eventline-query",
            "GET /users/550e8400-e29b-41d4-a716-446655440000 HTTP/1.1\r\nHost: eventl".to_owned(),
        ),
    ];
    for (name, request) in hung {
        let service = Process::start(&env, name, &settings);
        service.ready().await;
        let address: std::net::SocketAddr = service.base_url.trim_start_matches("http://").parse().unwrap();
        let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
        connection.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await; // the request is under way
        let stopping = Instant::now();
        let stopped = tokio::task::spawn_blocking(move || {
            let mut service = service;
            service.terminate(); // SIGTERM; asserts a clean exit
        });
        tokio::time::timeout(Duration::from_secs(30), stopped)
            .await
            .unwrap_or_else(|_| panic!("{name} did not stop within 30 s with a request hanging"))
            .unwrap();
        let took = stopping.elapsed();
        assert!(took < Duration::from_secs(8), "{name} took {took:?} to stop (drain bound 2 s)");
        drop(connection);
    }
}

const OPERATOR_TOKEN: &str = "operator-token-0123456789";
