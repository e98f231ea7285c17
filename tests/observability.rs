//! Traces and metrics as users of `make up` see them. The three services run as processes with
//! the environment `make up` gives them (traces to an OTLP endpoint, nothing else about
//! telemetry), exporting to a real Jaeger started by `scripts/jaeger.sh`; every assertion on a
//! span reads it back from Jaeger's query API, while the services keep running.
//!
//! - one POST → broker → projector → GET with a consistency token is one trace, with spans from
//!   all three services and the attributes docs/operations.md promises;
//! - a batch, a refused command (4xx) and a read that times out waiting (503) have the span
//!   status users expect, and each answer's `traceresponse` names a trace Jaeger has;
//! - every metric the Grafana dashboard, the alerting rules and the docs name is exported, and
//!   every exported metric is described and documented.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::processes::Process;
use eventline_testkit::jaeger::{Jaeger, TraceSpan, kind, status};
use eventline_testkit::{TestEnv, eventually, http};
use serde_json::{Value, json};

fn random_hex(len: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..len].to_owned()
}

/// The trace id a response's `traceresponse` header names.
fn trace_of(response: &reqwest::Response) -> String {
    let value = response.headers().get("traceresponse").expect("a traceresponse header").to_str().unwrap();
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[1].len(), parts[2].len()), (4, "00", 32, 16), "{value}");
    parts[1].to_owned()
}

/// Whether `span` descends from the span `ancestor` through the parents in `spans`.
fn descends(span: &TraceSpan, ancestor: &str, spans: &[TraceSpan]) -> bool {
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

fn find<'a>(spans: &'a [TraceSpan], what: &str, test: impl Fn(&TraceSpan) -> bool) -> &'a TraceSpan {
    spans.iter().find(|s| test(s)).unwrap_or_else(|| panic!("no span {what} among:\n{}", summary(spans)))
}

fn summary(spans: &[TraceSpan]) -> String {
    let lines: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{} {:?} kind={} status={} span={} parent={}",
                s.service, s.name, s.kind, s.status, s.span_id, s.parent_span_id
            )
        })
        .collect();
    lines.join("\n")
}

/// Waits until Jaeger holds spans of `trace_id` that satisfy `complete`.
async fn trace_in_jaeger(
    jaeger: &Jaeger,
    trace_id: &str,
    what: &str,
    complete: impl Fn(&[TraceSpan]) -> bool,
) -> Vec<TraceSpan> {
    let mut last = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        last = jaeger.trace(trace_id).await.unwrap();
        if complete(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("Jaeger has no complete trace {trace_id} ({what}) after 30 s; it has:\n{}", summary(&last))
}

fn services(spans: &[TraceSpan]) -> BTreeSet<&str> {
    spans.iter().map(|s| s.service.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_in_jaeger_and_metrics_as_make_up_runs_the_services() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    let jaeger = Jaeger::start().await.unwrap();
    // What scripts/up.sh sets for the services, and nothing more.
    let make_up = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_endpoint.as_str()),
        ("EVENTLINE_ALLOW_UNAUTHENTICATED", "true"),
    ];
    let command = Process::start(&env, "eventline-command", &make_up);
    let mut projector = Process::start(&env, "eventline-projector", &make_up);
    let query = Process::start(&env, "eventline-query", &make_up);
    for process in [&command, &projector, &query] {
        process.ready().await;
    }
    the_projection_has_started(&command, &query).await;

    one_trace_from_post_through_the_log_to_get(&env, &jaeger, &command, &query).await;
    a_batch_and_a_refusal_have_the_status_users_expect(&jaeger, &command).await;
    a_read_that_times_out_is_an_error(&jaeger, &command, &mut projector, &query).await;
    dashboards_rules_and_docs_name_only_exported_metrics(&[&command, &projector, &query]).await;
    spans_are_flushed_on_exit(&jaeger, command).await;
}

/// A command service exporting only once a minute still delivers its last spans: SIGTERM flushes.
async fn spans_are_flushed_on_exit(jaeger: &Jaeger, mut command: Process) {
    command.kill_and_restart(&[("OTEL_BSP_SCHEDULE_DELAY", "60000")]);
    command.ready().await;
    let body = json!({"email": "flushed@example.com", "firstName": "Flu", "lastName": "Shed"});
    let created = http().post(command.url("/users")).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 202);
    let trace_id = trace_of(&created);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let early = jaeger.trace(&trace_id).await.unwrap();
    assert!(
        early.iter().all(|s| s.service != "eventline-command"),
        "the command service exported before its delay, so this proves nothing:\n{}",
        summary(&early)
    );
    command.terminate();
    trace_in_jaeger(jaeger, &trace_id, "the spans flushed on exit", |spans| {
        let command = |kind| spans.iter().any(|s| s.service == "eventline-command" && s.kind == kind);
        command(kind::SERVER) && command(kind::PRODUCER)
    })
    .await;
}

/// Ready does not mean the projector owns its partitions yet (the group may still be joining on
/// a loaded machine): one event is read back first, so the traced request below measures tracing,
/// not start-up, against the 2 s consistency wait `make up` serves with.
async fn the_projection_has_started(command: &Process, query: &Process) {
    let body = json!({"email": "warm-up@example.com", "firstName": "Warm", "lastName": "Up"});
    let created = http().post(command.url("/users")).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 202);
    let user: Value = created.json().await.unwrap();
    let url = query.url(&format!("/users/{}", user["userId"].as_str().unwrap()));
    eventually(Duration::from_secs(60), "the first event to be projected", || {
        let url = url.clone();
        async move { http().get(url).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
}

/// A traced client's POST and its GET with the consistency token are one trace in Jaeger.
async fn one_trace_from_post_through_the_log_to_get(
    env: &TestEnv,
    jaeger: &Jaeger,
    command: &Process,
    query: &Process,
) {
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
    assert_eq!(trace_of(&created), trace_id);
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
    assert_eq!(trace_of(&read), trace_id);

    let spans = trace_in_jaeger(jaeger, &trace_id, "POST, projection and GET", |spans| {
        services(spans).len() == 3
            && spans.iter().any(|s| s.service == "eventline-projector" && s.kind == kind::CONSUMER)
    })
    .await;
    assert_eq!(
        services(&spans),
        BTreeSet::from(["eventline-command", "eventline-projector", "eventline-query"]),
        "{}",
        summary(&spans)
    );

    // Command: the server span continues the client's span; the producer span is under it.
    let post = find(&spans, "POST /users (command, server)", |s| {
        s.service == "eventline-command" && s.kind == kind::SERVER && s.parent_span_id == post_parent
    });
    assert_eq!(post.name, "POST /users");
    assert_eq!(post.attributes["http.route"], "/users");
    assert_eq!(post.attributes["http.response.status_code"], "202");
    assert_eq!(post.status, status::UNSET);
    let publish = find(&spans, "publish (command, producer)", |s| {
        s.service == "eventline-command" && s.kind == kind::PRODUCER && descends(s, &post.span_id, &spans)
    });
    assert_eq!(publish.attributes["messaging.system"], "kafka");
    assert_eq!(publish.attributes["messaging.destination.name"], env.kafka.topic);
    assert_eq!(publish.attributes["messaging.message.id"], user["eventId"].as_str().unwrap());
    assert_eq!(publish.attributes["eventline.event.type"], "UserCreated");
    let (partition, offset) = (
        &publish.attributes["messaging.destination.partition.id"],
        &publish.attributes["messaging.kafka.offset"],
    );
    assert_eq!(
        format!("{partition}:{offset}"),
        token,
        "the producer span names the position the token carries"
    );

    // Projector: the event's span is a child of the producer span, in the request's trace, and
    // links to the batch span (a trace of its own, which links back and holds the SQL).
    let event = find(&spans, "process (projector, consumer, child of publish)", |s| {
        s.service == "eventline-projector" && s.kind == kind::CONSUMER && s.parent_span_id == publish.span_id
    });
    for attribute in [
        "messaging.system",
        "messaging.destination.name",
        "messaging.destination.partition.id",
        "messaging.kafka.offset",
        "messaging.message.id",
        "eventline.event.type",
    ] {
        assert_eq!(event.attributes.get(attribute), publish.attributes.get(attribute), "{attribute}");
    }
    let (batch_trace, batch_span) = event.links.first().cloned().expect("the event span links to its batch");
    let batch = trace_in_jaeger(jaeger, &batch_trace, "the projector's batch", |spans| {
        spans.iter().any(|s| s.span_id == batch_span) && spans.iter().any(|s| s.name.starts_with("COMMIT"))
    })
    .await;
    let batch_root = find(&batch, "process batch (projector, consumer)", |s| s.span_id == batch_span);
    assert_eq!(batch_root.kind, kind::CONSUMER);
    assert!(batch_root.links.contains(&(trace_id.clone(), publish.span_id.clone())), "{batch_root:?}");
    find(&batch, "INSERT users under the batch", |s| {
        s.kind == kind::CLIENT && s.name == "INSERT users" && descends(s, &batch_span, &batch)
    });

    // Query: the server span continues the client's span; the consistency wait and SQL are in it.
    let get = find(&spans, "GET /users/{id} (query, server)", |s| {
        s.service == "eventline-query" && s.kind == kind::SERVER && s.parent_span_id == get_parent
    });
    assert_eq!(get.attributes["http.route"], "/users/{id}");
    assert_eq!(get.attributes["http.response.status_code"], "200");
    let wait = find(&spans, "consistency wait", |s| {
        s.name == "consistency wait" && descends(s, &get.span_id, &spans)
    });
    assert_eq!(wait.attributes["eventline.consistency.outcome"], "reached");
    assert_eq!(wait.attributes["eventline.consistency.token"], token);
    find(&spans, "SELECT users (query, client)", |s| {
        s.service == "eventline-query"
            && s.kind == kind::CLIENT
            && s.name == "SELECT users"
            && descends(s, &get.span_id, &spans)
    });
}

/// A client that sends no trace context still learns its trace from `traceresponse` (the
/// README's "try it"): a batch is one server span with a producer span per event and the
/// projector's spans under them; a refused command is a 4xx, which is not a server error.
async fn a_batch_and_a_refusal_have_the_status_users_expect(jaeger: &Jaeger, command: &Process) {
    let batch = json!({"commands": [
        {"type": "CreateUser", "email": "batch@example.com", "firstName": "Bat", "lastName": "Ch"},
        {"type": "AdjustInventory", "sku": "TRACE-001", "quantity": 5, "adjustmentType": "set", "reason": "stocktake"},
    ]});
    let response = http().post(command.url("/commands/batch")).json(&batch).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let trace_id = trace_of(&response);
    let spans = trace_in_jaeger(jaeger, &trace_id, "the batch and its projection", |spans| {
        spans.iter().filter(|s| s.kind == kind::CONSUMER).count() == 2
    })
    .await;
    let server = find(&spans, "POST /commands/batch", |s| s.kind == kind::SERVER);
    assert_eq!(server.name, "POST /commands/batch");
    assert_eq!(server.status, status::UNSET);
    let producers: Vec<&TraceSpan> = spans.iter().filter(|s| s.kind == kind::PRODUCER).collect();
    assert_eq!(producers.len(), 2, "{}", summary(&spans));
    assert!(producers.iter().all(|p| descends(p, &server.span_id, &spans) && p.status != status::ERROR));
    let types: BTreeSet<&str> =
        producers.iter().map(|p| p.attributes["eventline.event.type"].as_str()).collect();
    assert_eq!(types, BTreeSet::from(["UserCreated", "InventoryAdjusted"]));

    let taken = json!({"email": "batch@example.com", "firstName": "Again", "lastName": "Taken"});
    let refused = http().post(command.url("/users")).json(&taken).send().await.unwrap();
    assert_eq!(refused.status(), 409);
    let trace_id = trace_of(&refused);
    let spans = trace_in_jaeger(jaeger, &trace_id, "the refused command", |spans| !spans.is_empty()).await;
    let server = find(&spans, "POST /users (refused)", |s| s.kind == kind::SERVER);
    assert_eq!(server.attributes["http.response.status_code"], "409");
    assert_eq!(server.status, status::UNSET, "a refusal is the client's error, not the server's");
    assert!(spans.iter().all(|s| s.kind != kind::PRODUCER), "a refused command appends nothing");
}

/// With the projector down, a read that waits for a position it cannot reach answers 503; its
/// server span is an error and its consistency wait says it stayed behind.
async fn a_read_that_times_out_is_an_error(
    jaeger: &Jaeger,
    command: &Process,
    projector: &mut Process,
    query: &Process,
) {
    projector.kill();
    let body = json!({"email": "late@example.com", "firstName": "La", "lastName": "Te"});
    let created = http().post(command.url("/users")).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 202);
    let token = created.headers()["consistency-token"].to_str().unwrap().to_owned();
    let user: Value = created.json().await.unwrap();
    let url = query.url(&format!("/users/{}", user["userId"].as_str().unwrap()));
    let read = http().get(&url).header("consistency-token", &token).send().await.unwrap();
    assert_eq!(read.status(), 503);
    let trace_id = trace_of(&read);
    let spans = trace_in_jaeger(jaeger, &trace_id, "the read that timed out", |spans| spans.len() >= 2).await;
    let server = find(&spans, "GET /users/{id} (503)", |s| s.kind == kind::SERVER);
    assert_eq!(server.attributes["http.response.status_code"], "503");
    assert_eq!(server.status, status::ERROR);
    let wait = find(&spans, "consistency wait", |s| s.name == "consistency wait");
    assert_eq!(wait.attributes["eventline.consistency.outcome"], "behind");
    // Started again, the projector applies the event and the same read succeeds.
    projector.kill_and_restart(&[]);
    projector.ready().await;
    eventually(Duration::from_secs(60), "the read once the projector is back", || {
        let request = http().get(&url).header("consistency-token", &token).send();
        async move { (request.await.ok()?.status() == 200).then_some(()) }
    })
    .await;
}

/// Every `eventline_…` metric the dashboard, the alerting rules and the docs name must be
/// exported by a service after the traffic above; every exported one must carry a description
/// and appear in docs/operations.md's metric table.
async fn dashboards_rules_and_docs_name_only_exported_metrics(processes: &[&Process]) {
    let mut exported = BTreeSet::new();
    let mut described = BTreeSet::new();
    for process in processes {
        let url = process.url("/metrics");
        // The projector publishes lag and dead letters every few seconds after it starts.
        let text = eventually(Duration::from_secs(20), &format!("{url} with every metric"), || {
            let url = url.clone();
            async move {
                let text = http().get(url).send().await.ok()?.text().await.ok()?;
                let complete =
                    !text.contains("eventline_projector_") || text.contains("eventline_projector_lag");
                complete.then_some(text)
            }
        })
        .await;
        let scraped = metric_names::parse(&text);
        exported.extend(scraped.samples);
        described.extend(scraped.described);
    }
    let root = eventline_testkit::repository();
    let named = metric_names::named_in_repository(&root);
    let families = metric_names::families(&exported);
    let missing: Vec<String> = named
        .iter()
        .filter(|(name, _)| !exported.contains(name) && !families.contains(name))
        .map(|(name, place)| format!("{name} (in {place})"))
        .collect();
    assert!(missing.is_empty(), "named but not exported by any service:\n{}", missing.join("\n"));

    let undescribed: Vec<&String> = families.iter().filter(|f| !described.contains(*f)).collect();
    assert!(undescribed.is_empty(), "exported without a description: {undescribed:?}");
    let operations = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let undocumented: Vec<&String> =
        families.iter().filter(|f| !operations.contains(&format!("`{f}`"))).collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in docs/operations.md's metric table: {undocumented:?}"
    );
}

/// Metric names: what a scrape exports, and what the repository's dashboards, rules and docs name.
mod metric_names {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// What one `/metrics` scrape holds.
    pub struct Scraped {
        /// Names of the samples (`…_bucket`, `…_count` included).
        pub samples: BTreeSet<String>,
        /// Names with a `# HELP` line.
        pub described: BTreeSet<String>,
    }

    pub fn parse(text: &str) -> Scraped {
        let mut scraped = Scraped { samples: BTreeSet::new(), described: BTreeSet::new() };
        for line in text.lines() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                scraped.described.extend(help.split_whitespace().next().map(str::to_owned));
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                scraped.samples.insert(line[..end].to_owned());
            }
        }
        scraped
    }

    /// Metric families of `samples`: a histogram's or summary's `_bucket`, `_sum` and `_count`
    /// are one family.
    pub fn families(samples: &BTreeSet<String>) -> BTreeSet<String> {
        samples
            .iter()
            .filter(|name| name.starts_with("eventline_"))
            .map(|name| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        let base = name.strip_suffix(suffix)?;
                        let aggregated = samples.contains(&format!("{base}_sum"))
                            && samples.contains(&format!("{base}_count"));
                        aggregated.then(|| base.to_owned())
                    })
                    .unwrap_or_else(|| name.clone())
            })
            .collect()
    }

    /// Names of eventline's metrics the repository refers to under `root`, each with the file
    /// naming it: every `eventline_…` name in the Grafana dashboards and the alerting rules, and
    /// in the README and docs those with a metric's prefix (docs also name crates and tables).
    pub fn named_in_repository(root: &Path) -> Vec<(String, String)> {
        let mut files: Vec<(std::path::PathBuf, bool)> = Vec::new();
        let listed = |dir: &str, extension: &str| -> Vec<std::path::PathBuf> {
            let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|e| e == extension))
                .collect();
            paths.sort();
            paths
        };
        files.extend(listed("deploy/grafana/dashboards", "json").into_iter().map(|p| (p, true)));
        files.extend(listed("deploy/prometheus", "yml").into_iter().map(|p| (p, true)));
        files.extend(listed("docs", "md").into_iter().map(|p| (p, false)));
        files.push((root.join("README.md"), false));
        let mut named = Vec::new();
        for (path, every_name) in files {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let place = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            for name in names_in(&text) {
                if every_name || is_metric_name(&name) {
                    named.push((name, place.clone()));
                }
            }
        }
        named.sort();
        named.dedup();
        named
    }

    /// Every `eventline_[a-z_]+` word of `text`.
    fn names_in(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("eventline_") {
            let preceded =
                rest[..at].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
            if !preceded {
                names.push(tail[..end].trim_end_matches('_').to_owned());
            }
            rest = &tail[end.max(1)..];
        }
        names
    }

    /// Whether a name in prose is a metric's: the services' metric prefixes, not a package
    /// (`eventline_command_client`) or a crate (`eventline_command`).
    fn is_metric_name(name: &str) -> bool {
        let prefixed = ["eventline_command_", "eventline_projector_", "eventline_query_", "eventline_http_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || name == "eventline_ready"
            || name.starts_with("eventline_ready_");
        prefixed && !name.ends_with("_client")
    }

    #[test]
    fn a_misspelt_name_in_a_dashboard_rules_or_docs_is_found() {
        let root =
            std::env::temp_dir().join(format!("eventline-metric-names-{}", uuid::Uuid::new_v4().simple()));
        for dir in ["deploy/grafana/dashboards", "deploy/prometheus", "docs"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let write = |path: &str, text: &str| std::fs::write(root.join(path), text).unwrap();
        write("deploy/grafana/dashboards/d.json", r#"{"expr": "rate(eventline_command_acepted_total[1m])"}"#);
        write("deploy/prometheus/alerts.yml", "expr: eventline_projector_lagg > 0");
        write(
            "docs/operations.md",
            "`eventline_query_consistency_wait_second` and the crate `eventline_runtime`",
        );
        write("README.md", "the `eventline_command_client` package");
        let named: Vec<String> = named_in_repository(&root).into_iter().map(|(name, _)| name).collect();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            named,
            [
                "eventline_command_acepted_total",
                "eventline_projector_lagg",
                "eventline_query_consistency_wait_second"
            ]
        );
    }

    #[test]
    fn histogram_samples_are_one_family() {
        let samples: BTreeSet<String> = [
            "eventline_x_seconds_bucket",
            "eventline_x_seconds_sum",
            "eventline_x_seconds_count",
            "eventline_y_total",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(
            families(&samples),
            BTreeSet::from(["eventline_x_seconds".to_owned(), "eventline_y_total".to_owned()])
        );
    }
}
