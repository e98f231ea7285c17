//! One trace from POST to GET: the three services run as processes exporting over OTLP/gRPC to a
//! real receiver on loopback. A client's `traceparent` on `POST /users` and on the `GET` that
//! reads it back with the consistency token must come back as one trace: the command's server
//! span, its producer span, the projector's span for that event (child of the producer span, and
//! the batch span linked to it) and the query's server span with its consistency wait and SQL.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use eventline_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use eventline_testkit::{TestEnv, eventually, http};
use serde_json::{Value, json};
use support::processes::Process;

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

fn random_hex(len: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..len].to_owned()
}

/// Whether `span` descends from the span `ancestor` through the parents in `spans`.
fn descends(span: &ReceivedSpan, ancestor: &str, spans: &[ReceivedSpan]) -> bool {
    let mut parent = span.parent_span_id.clone();
    for _ in 0..32 {
        if parent == ancestor {
            return true;
        }
        match spans.iter().find(|s| s.span_id == parent) {
            Some(next) => parent = next.parent_span_id.clone(),
            None => return false,
        }
    }
    false
}

fn find<'a>(spans: &'a [ReceivedSpan], what: &str, test: impl Fn(&ReceivedSpan) -> bool) -> &'a ReceivedSpan {
    spans.iter().find(|s| test(s)).unwrap_or_else(|| {
        let summary: Vec<String> = spans
            .iter()
            .map(|s| {
                format!(
                    "{} {} kind={} parent={} trace={}",
                    s.service, s.name, s.kind, s.parent_span_id, s.trace_id
                )
            })
            .collect();
        panic!("no span {what} among:\n{}", summary.join("\n"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_user_from_post_through_the_log_to_get() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    let receiver = OtlpReceiver::start().await;
    // A long export delay: the spans arrive only if the services flush them when they exit.
    let tracing_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info,eventline_runtime=debug"),
        ("EVENTLINE_ALLOW_UNAUTHENTICATED", "true"),
    ];
    let mut command = Process::start(&env, "eventline-command", &tracing_env);
    let mut projector = Process::start(&env, "eventline-projector", &tracing_env);
    let mut query = Process::start(&env, "eventline-query", &tracing_env);
    for process in [&command, &projector, &query] {
        process.ready().await;
    }

    let trace_id = random_hex(32);
    let (post_parent, get_parent) = (random_hex(16), random_hex(16));
    let created = http()
        .post(command.url("/users"))
        .header("traceparent", format!("00-{trace_id}-{post_parent}-01"))
        .json(&json!({"email": "traced@example.com", "firstName": "Tra", "lastName": "Ced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let traceresponse = created.headers()["traceresponse"].to_str().unwrap().to_owned();
    assert!(traceresponse.starts_with(&format!("00-{trace_id}-")), "{traceresponse}");
    let token = created.headers()["consistency-token"].to_str().unwrap().to_owned();
    let user: Value = created.json().await.unwrap();
    let user_id = user["userId"].as_str().unwrap().to_owned();

    let read = http()
        .get(query.url(&format!("/users/{user_id}")))
        .header("traceparent", format!("00-{trace_id}-{get_parent}-01"))
        .header("consistency-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert!(read.headers()["traceresponse"].to_str().unwrap().starts_with(&format!("00-{trace_id}-")));

    // JSON log lines carry the trace and span ids of the request they were written in.
    let logged = command.output();
    let line = logged
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["trace_id"] == trace_id.as_str())
        .unwrap_or_else(|| panic!("no JSON log line of the command service carries the trace id:\n{logged}"));
    assert_eq!(line["span_id"].as_str().unwrap().len(), 16, "{line}");

    for process in [&mut command, &mut projector, &mut query] {
        process.terminate();
    }
    let spans = eventually(Duration::from_secs(20), "the spans of all three services", || {
        let spans = receiver.spans();
        let services: std::collections::BTreeSet<&str> =
            spans.iter().filter(|s| s.trace_id == trace_id).map(|s| s.service.as_str()).collect();
        let complete = services.len() == 3 && spans.iter().any(|s| s.kind == CONSUMER && !s.links.is_empty());
        std::future::ready(complete.then_some(spans))
    })
    .await;
    let ours: Vec<ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).cloned().collect();

    // Command: the server span continues the client's span; the producer span is under it.
    let post = find(&ours, "POST /users (command, server)", |s| {
        s.service == "eventline-command" && s.kind == SERVER && s.parent_span_id == post_parent
    });
    assert_eq!(post.name, "POST /users");
    assert_eq!(post.attributes["http.route"], "/users");
    assert_eq!(post.attributes["http.response.status_code"], "202");
    assert!(traceresponse.contains(&post.span_id), "traceresponse {traceresponse} names the server span");
    let publish = find(&ours, "publish (command, producer)", |s| {
        s.service == "eventline-command" && s.kind == PRODUCER && descends(s, &post.span_id, &ours)
    });
    assert_eq!(publish.attributes["messaging.system"], "kafka");
    assert_eq!(publish.attributes["messaging.destination.name"], env.kafka.topic);
    assert_eq!(publish.attributes["messaging.message.id"], user["eventId"].as_str().unwrap_or_default());

    // Projector: the event's span is a child of the producer span, in the request's trace; the
    // batch span (its own trace) links to the producer span and holds the SQL.
    let event = find(&ours, "process (projector, consumer, child of publish)", |s| {
        s.service == "eventline-projector" && s.kind == CONSUMER && s.parent_span_id == publish.span_id
    });
    assert_eq!(event.attributes["messaging.kafka.offset"], publish.attributes["messaging.kafka.offset"]);
    assert_eq!(
        event.attributes["messaging.destination.partition.id"],
        publish.attributes["messaging.destination.partition.id"]
    );
    let batch = find(&spans, "process batch (projector, linked to publish)", |s| {
        s.service == "eventline-projector"
            && s.kind == CONSUMER
            && s.links.contains(&(trace_id.clone(), publish.span_id.clone()))
    });
    assert!(event.links.contains(&(batch.trace_id.clone(), batch.span_id.clone())), "{event:?}");
    find(&spans, "INSERT users under the batch", |s| {
        s.kind == CLIENT
            && s.trace_id == batch.trace_id
            && s.name == "INSERT users"
            && descends(s, &batch.span_id, &spans)
    });
    find(&spans, "COMMIT under the batch", |s| {
        s.kind == CLIENT
            && s.trace_id == batch.trace_id
            && s.name.starts_with("COMMIT")
            && descends(s, &batch.span_id, &spans)
    });

    // Query: the server span continues the client's span; the consistency wait and SQL are in it.
    let get = find(&ours, "GET /users/{id} (query, server)", |s| {
        s.service == "eventline-query" && s.kind == SERVER && s.parent_span_id == get_parent
    });
    assert_eq!(get.attributes["http.route"], "/users/{id}");
    assert_eq!(get.attributes["http.response.status_code"], "200");
    let wait =
        find(&ours, "consistency wait", |s| s.name == "consistency wait" && descends(s, &get.span_id, &ours));
    assert_eq!(wait.attributes["eventline.consistency.outcome"], "reached");
    find(&ours, "SELECT users (query, client)", |s| {
        s.service == "eventline-query"
            && s.kind == CLIENT
            && s.name == "SELECT users"
            && descends(s, &get.span_id, &ours)
    });
}
