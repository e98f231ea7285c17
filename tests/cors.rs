//! Browsers on other origins: only the origins the operator lists may call the APIs (CORS), none
//! by default. Checked at the HTTP level (preflights, answers, refusals) and in a real browser
//! (a page of one service calling the other, which is another origin).

use crate::support;
use crate::support::browser::Browser;

use eventline_testkit::{TestEnv, http};
use reqwest::{Method, Response};
use serde_json::json;

const TOKEN: &str = "browser-secret-token-0001";

fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// A command service that wants a token and lets `origins` call it.
async fn command(env: &TestEnv, origins: &str) -> support::Running {
    let mut config = support::command_config(env);
    config.access.api_tokens = TOKEN.parse().unwrap();
    config.access.allow_unauthenticated = false;
    config.cors.allowed_origins = origins.parse().unwrap();
    support::command_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_listed_origins_may_call_the_apis() {
    let env = TestEnv::new().await;
    let app = "http://app.example";
    let command = command(&env, &format!("{app}, https://other.example")).await;
    let mut config = support::query_config(&env);
    config.cors.allowed_origins = app.parse().unwrap();
    let query = support::query_with(config).await;

    // A preflight from a listed origin is answered before the token check, with what the API
    // serves and reads.
    let preflight = |origin: &str| {
        http()
            .request(Method::OPTIONS, command.url("/users"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type, idempotency-key")
    };
    let allowed = preflight(app).send().await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(header(&allowed, "access-control-allow-origin").as_deref(), Some(app));
    assert!(header(&allowed, "access-control-allow-methods").unwrap().contains("POST"));
    let headers = header(&allowed, "access-control-allow-headers").unwrap();
    for name in ["authorization", "content-type", "idempotency-key"] {
        assert!(headers.contains(name), "{name} not allowed: {headers}");
    }
    let stranger = preflight("http://evil.example").send().await.unwrap();
    assert_eq!(header(&stranger, "access-control-allow-origin"), None);

    // The answers a page reads: accepted (with the Consistency-Token exposed) and refused.
    let user = json!({"email": "cors@example.com", "firstName": "Cor", "lastName": "S"});
    let send = |token: Option<&str>| {
        let request = http().post(command.url("/users")).header("origin", app).json(&user);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    let accepted = send(Some(TOKEN)).send().await.unwrap();
    assert_eq!(accepted.status(), 202);
    assert_eq!(header(&accepted, "access-control-allow-origin").as_deref(), Some(app));
    assert!(header(&accepted, "access-control-expose-headers").unwrap().contains("consistency-token"));
    let refused = send(None).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(header(&refused, "access-control-allow-origin").as_deref(), Some(app));

    let read = http()
        .get(query.url("/users/550e8400-e29b-41d4-a716-446655440000"))
        .header("origin", app)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&read, "access-control-allow-origin").as_deref(), Some(app));
    assert!(header(&read, "access-control-expose-headers").unwrap().contains("etag"));
    let other = http()
        .get(query.url("/users/550e8400-e29b-41d4-a716-446655440000"))
        .header("origin", "https://other.example")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&other, "access-control-allow-origin"), None, "the query API lists only {app}");

    // Without configuration, no origin is allowed.
    let unconfigured = support::query(&env).await;
    let read = http().get(unconfigured.url("/healthz")).header("origin", app).send().await.unwrap();
    assert_eq!(header(&read, "access-control-allow-origin"), None);
    for running in [command, query, unconfigured] {
        running.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_a_listed_origin_sends_commands_from_a_browser() {
    let env = TestEnv::new().await;
    // The page: the query service's /docs, whose origin is the query service's address.
    let query = support::query(&env).await;
    let page_origin = query.url("");
    let listed = command(&env, &page_origin).await;
    let unlisted = command(&env, "https://elsewhere.example").await;
    let browser = Browser::start().await;
    browser.client.goto(&query.url("/docs")).await.unwrap();

    // The page's own fetch, as a front end would send it: a token and JSON, hence a preflight.
    let script = "const [url, token, done] = arguments; \
        fetch(url, { method: 'POST', headers: { 'Authorization': 'Bearer ' + token, \
            'Content-Type': 'application/json' }, \
            body: JSON.stringify({ email: 'page@example.com', firstName: 'Pa', lastName: 'Ge' }) }) \
        .then((r) => done({ status: r.status, token: r.headers.get('Consistency-Token') }), \
              (e) => done({ blocked: String(e) }));";
    let call = |url: String| browser.client.execute_async(script, vec![json!(url), json!(TOKEN)]);
    let answer = call(listed.url("/users")).await.unwrap();
    assert_eq!(answer["status"], 202, "{answer}");
    assert!(
        answer["token"].as_str().is_some_and(|t| !t.is_empty()),
        "Consistency-Token not readable: {answer}"
    );
    let answer = call(unlisted.url("/users")).await.unwrap();
    assert!(answer["blocked"].is_string(), "an unlisted origin was let through: {answer}");
    browser.close().await;

    // Only the listed service's command reached the log.
    let events = env.read_topic().await;
    assert_eq!(events.len(), 1, "events in the log");
    for running in [query, listed, unlisted] {
        running.stop().await.unwrap();
    }
}
