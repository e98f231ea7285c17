//! schemathesis (property-based testing from OpenAPI documents, run as the real program) against
//! both services at once, through the combined document (`docs/openapi/eventline.json`: every
//! operation on its own service, and links from each command to the read that shows it). Every
//! check (`--checks all`), every phase (examples, coverage, fuzzing, and the stateful phase that
//! follows the links: create a user → read it, place an order → pay it → read it, with the answer's
//! Consistency-Token), schemathesis' default number of examples, a fixed seed. Every check means
//! every one but the `Allow` check on `/orders`, a path both services serve (schemathesis.toml). Excluded: the live
//! streams (`…/live`), whose answer never ends (schemathesis reads a whole body, and would wait out
//! its timeout on every case); tests/history.rs tests them with an SSE client.
//!
//! Two answers to schema-valid requests need declaring, because they depend on earlier requests
//! rather than on the request itself: an `Idempotency-Key` reused for a different request is
//! refused with `422` as the IETF draft (draft-ietf-httpapi-idempotency-key-header) says, and an
//! `If-Match` version the aggregate has moved past with `412` as RFC 9110 says (schemathesis
//! generates short keys and small versions that repeat). `schemathesis/` holds the declaration:
//! `positive_data_acceptance` also expects 412 and 422, and a check of ours fails any 412 or 422
//! to a schema-valid request that is not exactly one of those two.

use crate::support;

use std::path::PathBuf;

use crate::support::{openapi, tools};
use axum::Router;
use axum::routing::get;
use eventline_testkit::TestEnv;
use serde_json::Value;
use tokio::process::Command;

/// The seed; `EVENTLINE_SCHEMATHESIS_SEED` picks another for a longer hunt (as do
/// `EVENTLINE_SCHEMATHESIS_EXAMPLES`, over the default 100 per operation).
const SEED: &str = "20261130";
const TOKEN: &str = "schemathesis-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_apis_conform_to_their_openapi_documents() {
    let env = TestEnv::new().await;
    // Authentication on, as in production: schemathesis sends a token with both scopes, and its
    // `ignored_auth` check sends requests without it, which must be refused.
    let tokens = format!("schemathesis:read+write:{TOKEN}");
    let mut config = support::command_config(&env);
    config.access = support::token_access(&tokens);
    let command = support::command_with(config).await;
    let _projector = support::projector(&env).await;
    let mut config = support::query_config(&env);
    config.access = support::token_access(&tokens);
    let query = support::query_with(config).await;

    // The documents the services serve, combined with the addresses they serve at here.
    let served = |url: String| async move { reqwest::get(url).await.unwrap().json::<Value>().await.unwrap() };
    let document = openapi::combined(
        &served(command.url("/openapi.json")).await,
        &served(query.url("/openapi.json")).await,
        &command.url(""),
        &query.url(""),
    );
    // schemathesis takes operation servers from a document it loads over HTTP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let location = format!("http://{}/openapi.json", listener.local_addr().unwrap());
    let app = Router::new().route("/openapi.json", get(move || async move { axum::Json(document) }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let seed = std::env::var("EVENTLINE_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    let declarations = tools::repository().join("tests/schemathesis");
    // `EVENTLINE_SCHEMATHESIS_REPORTS` keeps the reports (JUnit and NDJSON, every case) there.
    let kept = std::env::var_os("EVENTLINE_SCHEMATHESIS_REPORTS").map(PathBuf::from);
    let reports = kept.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("eventline-schemathesis-{}", uuid::Uuid::new_v4()))
    });
    let mut program = Command::new(tools::python_venv().join("bin/schemathesis"));
    program
        .current_dir(&declarations)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &declarations)
        // Every check, as `--checks all` would, but declared in schemathesis.toml: a check named
        // on the command line cannot be turned off for one path there.
        .args(["--no-color", "run", &location, "--seed", &seed])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--workers", "1", "--request-timeout", "10", "--generation-database", "none"])
        .args(["--output-sanitize", "false", "--exclude-path-regex", "/live$"])
        .args(["--report", "junit,ndjson", "--report-dir"])
        .arg(&reports);
    if let Ok(examples) = std::env::var("EVENTLINE_SCHEMATHESIS_EXAMPLES") {
        program.args(["--max-examples", &examples]);
    }
    let output = tools::run(program, "schemathesis").await;
    let printed = tools::printed(&output);
    if kept.is_none() {
        let _ = std::fs::remove_dir_all(&reports);
    }
    assert!(output.status.success(), "schemathesis found problems:\n{printed}");
    // Every phase ran, the stateful one included, and it followed links ("API Links: 6 covered
    // / 20 selected / …").
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(printed.contains(phase), "the {phase} phase did not run:\n{printed}");
    }
    let covered = printed
        .split_once("API Links:")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(covered >= 3, "the stateful phase followed {covered} links:\n{printed}");
    eprintln!("{printed}");
}
