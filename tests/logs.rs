//! What the services write to their logs: never a secret (API tokens, the database password) and
//! never personal data from a command or an event (emails, names), whether the request succeeds,
//! fails validation, is refused, or its event is poison and dead-lettered; JSON lines written in a
//! traced request carry its trace id. Configuration errors name the variable, not its value.

use std::process::Command;
use std::time::Duration;

use crate::support::processes::{Process, binary};
use eventline_testkit::jaeger::Jaeger;
use eventline_testkit::{TestEnv, eventually, http};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_secrets_and_no_personal_data() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    let id = &env.id;
    let (token, other_token, wrong_token) =
        (format!("tok-a-{id}"), format!("tok-b-{id}"), format!("wrong-{id}"));
    let password = format!("pw-{id}");
    // Trust authentication ignores the password, so the services run with one in their URL.
    let database_url = env.database.url.replacen("://postgres@", &format!("://postgres:{password}@"), 1);
    assert_ne!(database_url, env.database.url, "the test database URL has the expected form");
    let tokens = format!("{token},{other_token}");
    let jaeger = Jaeger::start().await.unwrap();
    let settings = [
        ("DATABASE_URL", database_url.as_str()),
        ("EVENTLINE_API_TOKENS", tokens.as_str()),
        ("LOG_FORMAT", "json"),
        // Traced, so that log lines carry the ids of the span they were written in.
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_endpoint.as_str()),
        // Our own crates at debug: what an operator turns on while troubleshooting.
        (
            "RUST_LOG",
            "info,eventline_command=debug,eventline_projector=debug,eventline_query=debug,eventline_runtime=debug",
        ),
    ];
    let command = Process::start(&env, "eventline-command", &settings);
    let projector = Process::start(&env, "eventline-projector", &settings);
    let query = Process::start(&env, "eventline-query", &settings);
    for process in [&command, &projector, &query] {
        process.ready().await;
    }

    let email = format!("leak.check.{id}@example.com");
    let (first, last) = (format!("Firstname{id}"), format!("Lastname{id}"));
    let post = |path: &str, bearer: &str, body: Value| {
        http().post(command.url(path)).bearer_auth(bearer).json(&body).send()
    };
    let user = json!({"email": email, "firstName": first, "lastName": last});
    assert_eq!(post("/users", &wrong_token, user.clone()).await.unwrap().status(), 401);
    let invalid =
        json!({"email": format!("not-an-email-{id}"), "firstName": format!("Bad\u{7}{id}"), "lastName": ""});
    assert_eq!(post("/users", &token, invalid).await.unwrap().status(), 422);
    let created = post("/users", &token, user).await.unwrap();
    assert_eq!(created.status(), 202);
    let trace_id = created.headers()["traceresponse"].to_str().unwrap().split('-').nth(1).unwrap().to_owned();
    let consistency = created.headers()["consistency-token"].to_str().unwrap().to_owned();
    let user_id = created.json::<Value>().await.unwrap()["userId"].as_str().unwrap().to_owned();

    // Poison messages full of personal data: dead-lettered, and the log says so without it. The
    // second is an envelope whose quantity is an email: the decoder's error quotes such values.
    let poison = format!("{{\"email\": \"poison.{id}@example.com\", \"firstName\": \"Poison{id}\"");
    env.produce_raw(&env.producer(), &format!("poison-{id}"), poison.as_bytes(), None).await;
    let mut typed: Value = serde_json::from_slice(
        &eventline_events::Envelope::new(eventline_events::Event::InventoryAdjusted(
            eventline_events::InventoryAdjusted {
                sku: format!("SKU-{id}"),
                quantity: 1,
                adjustment_type: eventline_events::AdjustmentType::Add,
                reason: "poison".into(),
            },
        ))
        .encode(),
    )
    .unwrap();
    typed["data"]["quantity"] = json!(format!("poison.{id}@example.com"));
    env.produce_raw(&env.producer(), &format!("poison-typed-{id}"), typed.to_string().as_bytes(), None).await;

    let read = http()
        .get(query.url(&format!("/users/{user_id}")))
        .bearer_auth(&token)
        .header("consistency-token", &consistency)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.unwrap()["email"], email.as_str());
    eventually(Duration::from_secs(30), "both poison messages dead-lettered", || async {
        let depth: i64 =
            sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&env.pool).await.ok()?;
        (depth == 2).then_some(())
    })
    .await;

    let mut logs = String::new();
    for process in [command, projector, query] {
        let mut process = process;
        process.terminate();
        logs.push_str(&process.output());
    }
    assert!(logs.lines().count() > 5, "the services logged something:\n{logs}");
    // JSON lines written inside a request's span carry its trace and span ids.
    let traced = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["trace_id"] == trace_id.as_str())
        .unwrap_or_else(|| panic!("no JSON log line carries the trace id {trace_id}:\n{logs}"));
    assert_eq!(traced["span_id"].as_str().unwrap().len(), 16, "{traced}");
    let secrets = [token.as_str(), other_token.as_str(), wrong_token.as_str(), password.as_str()];
    let personal = [email.as_str(), first.as_str(), last.as_str()];
    for needle in secrets.iter().chain(&personal).chain(&[format!("poison.{id}").as_str(), id.as_str()]) {
        let found: Vec<&str> = logs.lines().filter(|line| line.contains(needle)).collect();
        // The test id is in the topic's name, which may be logged; anything else must not be.
        if *needle == id.as_str() {
            assert!(
                found.iter().all(|line| line.contains(&format!("eventline.test.{id}"))
                    || line.contains(&format!("eventline_test_{id}"))
                    || line.contains(&format!("processes-{id}"))),
                "{found:#?}"
            );
            continue;
        }
        assert!(found.is_empty(), "{needle:?} appears in the logs:\n{}", found.join("\n"));
    }
}

/// A bad value in the configuration is reported by the variable's name, never echoed, and the
/// service does not start.
#[test]
fn configuration_errors_name_the_variable_not_its_value() {
    let secret = "hunter2-do-not-print";
    let cases = [
        ("eventline-command", "REDIS_URL", format!("redis://:{secret}@127.0.0.1:notaport/0")),
        ("eventline-projector", "DATABASE_URL", format!("postgres://app:{secret}@127.0.0.1:notaport/db")),
        ("eventline-query", "DATABASE_URL", format!("postgres://app:{secret}@[::1/db")),
        ("eventline-command", "EVENTLINE_RATE_LIMIT_PER_S", secret.to_owned()),
    ];
    for (service, variable, value) in cases {
        let (succeeded, printed) = run_briefly(
            Command::new(binary(service))
                .env(variable, &value)
                .env("EVENTLINE_ALLOW_UNAUTHENTICATED", "true")
                .env("EVENTLINE_COMMAND_ADDR", "127.0.0.1:0")
                .env("EVENTLINE_QUERY_ADDR", "127.0.0.1:0")
                .env("EVENTLINE_PROJECTOR_ADDR", "127.0.0.1:0"),
        );
        assert!(!succeeded, "{service} started with {variable}={value}:\n{printed}");
        assert!(printed.contains(variable), "{service}: the error names {variable}:\n{printed}");
        assert!(!printed.contains(secret), "{service}: the error shows the value of {variable}:\n{printed}");
    }
}

/// Runs `command` for at most 30 s; whether it exited successfully, and what it printed.
fn run_briefly(command: &mut Command) -> (bool, String) {
    let output = std::env::temp_dir().join(format!("config-error-{}.log", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&output).unwrap();
    let mut child = command.stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let succeeded = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.success();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let printed = std::fs::read_to_string(&output).unwrap_or_default();
    let _ = std::fs::remove_file(&output);
    (succeeded, printed)
}
