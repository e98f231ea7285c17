//! The operator console on the projector's admin port. Its API enforces who may do what (roles,
//! CSRF, read-only) whatever a page shows; and in a real browser (Chromium, driven over WebDriver
//! by chromedriver) an operator watches the projection move while events are produced, finds poison
//! messages as dead letters, redrives them behind a dry run and a typed confirmation, and finds
//! each action in the audit.

use crate::support;
use crate::support::browser::Browser;

use std::time::Duration;

use eventline_events::{Envelope, Event, UserCreated};
use eventline_testkit::{TestEnv, eventually};
use fantoccini::Locator;
use serde_json::{Value, json};
use uuid::Uuid;

const OPERATOR: &str = "operator-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";

fn user_created(n: usize) -> Envelope {
    Envelope::new(Event::UserCreated(UserCreated {
        user_id: Uuid::now_v7(),
        email: format!("console{n}.{}@example.com", Uuid::new_v4().simple()),
        first_name: format!("First{n}"),
        last_name: format!("Last{n}"),
    }))
}

/// Two poison messages (JSON that is not an event) on the log; returns their keys.
async fn poison(env: &TestEnv) -> [String; 2] {
    let producer = env.producer();
    let keys = [format!("poison-a-{}", env.id), format!("poison-b-{}", env.id)];
    for key in &keys {
        env.produce_raw(&producer, key, br#"{"eventType": "UserCreated", "data": 42}"#, None).await;
    }
    keys
}

async fn dead_letter_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&env.pool).await.unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_api_enforces_roles_csrf_and_read_only_and_audits_every_action() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    let projector = support::projector(&env).await;
    let http = eventline_testkit::http();
    let url = |path: &str| projector.url(path);

    // Nobody gets in without a token; a wrong token is told so.
    let (status, problem) = send(http.get(url("/console/api/projection"))).await;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["type"], "https://eventline.dev/problems/console-unauthorized");
    let (status, _) =
        send(http.get(url("/console/api/projection")).bearer_auth("not-a-console-token-at-all")).await;
    assert_eq!(status, 401);

    poison(&env).await;
    eventually(Duration::from_secs(30), "two dead letters", || async {
        (dead_letter_count(&env).await == 2).then_some(())
    })
    .await;

    // A viewer sees the projection and the dead letters, payloads masked, and may count.
    let overview = eventually(Duration::from_secs(15), "an observed projection", || async {
        let (status, body) = send(http.get(url("/console/api/projection")).bearer_auth(VIEWER)).await;
        (status == 200 && body["deadLetters"] == 2).then_some(body)
    })
    .await;
    assert_eq!(overview["partitions"].as_array().unwrap().len(), 3, "{overview}");
    let (status, listed) = send(http.get(url("/console/api/dead-letters")).bearer_auth(VIEWER)).await;
    assert_eq!(status, 200);
    assert_eq!(listed["total"], 2, "{listed}");
    assert_eq!(listed["groups"][0]["count"], 2, "one group: same error, no event type");
    let id = listed["entries"][0]["id"].as_i64().unwrap();
    let (_, detail) =
        send(http.get(url(&format!("/console/api/dead-letters/{id}"))).bearer_auth(VIEWER)).await;
    assert_eq!(detail["payloadMasked"], true);
    assert_eq!(detail["payload"], Value::Null);
    let (_, detail) =
        send(http.get(url(&format!("/console/api/dead-letters/{id}"))).bearer_auth(OPERATOR)).await;
    assert_eq!(detail["payloadMasked"], false);
    assert!(detail["payload"].as_str().unwrap().contains("42"));

    let all = json!({ "selection": { "all": true } });
    let (status, dry) =
        send(http.post(url("/console/api/dead-letters/redrive")).bearer_auth(VIEWER).json(&all)).await;
    assert_eq!(
        (status, dry["matching"].clone(), dry["confirmation"].clone()),
        (200, json!(2), json!("redrive 2"))
    );
    // …but not act: a 403 from the server, whatever the page shows.
    let act = json!({ "selection": { "all": true }, "dryRun": false, "confirm": "redrive 2" });
    let (status, problem) =
        send(http.post(url("/console/api/dead-letters/redrive")).bearer_auth(VIEWER).json(&act)).await;
    assert_eq!(status, 403, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("operator role"));

    // An operator acting on more than one entry must type the dry run's confirmation.
    let unconfirmed = json!({ "selection": { "all": true }, "dryRun": false });
    let (status, problem) =
        send(http.post(url("/console/api/dead-letters/redrive")).bearer_auth(OPERATOR).json(&unconfirmed))
            .await;
    assert_eq!(status, 409, "{problem}");
    let stale = json!({ "selection": { "all": true }, "dryRun": false, "confirm": "redrive 3" });
    let (status, _) =
        send(http.post(url("/console/api/dead-letters/redrive")).bearer_auth(OPERATOR).json(&stale)).await;
    assert_eq!(status, 409, "a confirmation for another count is stale");
    let (status, none) = send(
        http.post(url("/console/api/dead-letters/discard"))
            .bearer_auth(OPERATOR)
            .json(&json!({ "selection": {} })),
    )
    .await;
    assert_eq!(status, 400, "an empty selection is refused: {none}");
    let no_reason = json!({ "selection": { "ids": [id] }, "dryRun": false });
    let (status, _) =
        send(http.post(url("/console/api/dead-letters/discard")).bearer_auth(OPERATOR).json(&no_reason))
            .await;
    assert_eq!(status, 400, "a discard needs a reason");

    // The page's way in: a session cookie, and the CSRF token on every action.
    let (status, session) = {
        let response =
            http.post(url("/console/api/session")).json(&json!({ "token": OPERATOR })).send().await.unwrap();
        let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        let status = response.status().as_u16();
        let mut body: Value = response.json().await.unwrap();
        body["cookie"] = json!(cookie.split(';').next().unwrap());
        (status, body)
    };
    assert_eq!(status, 200);
    let cookie = session["cookie"].as_str().unwrap();
    let with_cookie = |path: &str| http.post(url(path)).header("cookie", cookie);
    let (status, problem) = send(with_cookie("/console/api/dead-letters/redrive").json(&act)).await;
    assert_eq!(status, 403, "no CSRF token: {problem}");
    let csrf = session["csrfToken"].as_str().unwrap();
    let (status, done) =
        send(with_cookie("/console/api/dead-letters/redrive").header("x-csrf-token", csrf).json(&act)).await;
    assert_eq!(status, 200, "{done}");
    let outcomes: Vec<&str> =
        done["outcomes"].as_array().unwrap().iter().map(|o| o["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["failedAgain", "failedAgain"], "still poison");

    // A read-only console refuses even an operator.
    let read_only = support::projector_with(eventline_projector::Config {
        console_read_only: true,
        ..support::projector_config(&env, "projector")
    })
    .await;
    let (status, problem) = send(
        eventline_testkit::http()
            .post(read_only.url("/console/api/dead-letters/discard"))
            .bearer_auth(OPERATOR)
            .json(&json!({ "selection": { "ids": [id] }, "dryRun": false, "reason": "cleanup" })),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("read-only"));
    read_only.stop().await.unwrap();

    // Every action (not the dry runs, not the refusals) is in the audit, with who did it.
    let (_, audit) = send(http.get(url("/console/api/audit")).bearer_auth(VIEWER)).await;
    let audit = audit.as_array().unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0]["actor"].as_str(), audit[0]["action"].as_str()),
        (Some("olga"), Some("dead-letters.redrive"))
    );
    assert_eq!(audit[0]["parameters"]["confirm"], "redrive 2");

    // Find by key: the partition the producer chose, the row, the events (payloads for operators).
    let user = user_created(7);
    let Event::UserCreated(created) = &user.event else { unreachable!() };
    let (partition, offset) = env.produce_event(&env.producer(), &user).await;
    let key = created.user_id.to_string();
    let found = eventually(Duration::from_secs(20), "the user found with its row", || async {
        let (status, body) =
            send(http.get(url("/console/api/find")).query(&[("key", key.as_str())]).bearer_auth(VIEWER))
                .await;
        (status == 200 && body["kind"] == "user").then_some(body)
    })
    .await;
    assert_eq!(found["partition"], partition, "{found}");
    assert_eq!(found["row"]["email"], created.email.as_str());
    assert_eq!(found["events"][0]["offset"], offset);
    assert_eq!(found["events"][0]["eventType"], "UserCreated");
    assert_eq!(found["events"][0]["version"], 1);
    assert_eq!(found["events"][0]["data"], Value::Null, "masked for a viewer");

    // Rebuild and rollback switch what readers see: operators only, and typed.
    let (status, versions) = send(http.get(url("/console/api/versions")).bearer_auth(VIEWER)).await;
    assert_eq!((status, versions["versions"][0]["state"].as_str()), (200, Some("live")), "{versions}");
    let typed = json!({ "confirm": "rebuild" });
    let (status, _) = send(http.post(url("/console/api/rebuild")).bearer_auth(VIEWER).json(&typed)).await;
    assert_eq!(status, 403);
    let (status, _) =
        send(http.post(url("/console/api/rebuild")).bearer_auth(OPERATOR).json(&json!({}))).await;
    assert_eq!(status, 409, "not confirmed");

    // The console's API is described, like the other APIs.
    let (_, document) = send(http.get(url("/console/api/openapi.json"))).await;
    for path in ["/console/api/projection", "/console/api/dead-letters/redrive", "/console/api/audit"] {
        assert!(document["paths"][path].is_object(), "{path} is described");
    }
    projector.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_checkpoint_stops_moving_is_shown_stalled_and_lag_in_time_grows() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    let projector = support::projector_with(eventline_projector::Config {
        stall_secs: 2,
        ..support::projector_config(&env, "projector")
    })
    .await;
    let http = eventline_testkit::http();
    let overview = || async {
        let (status, body) =
            send(http.get(projector.url("/console/api/projection")).bearer_auth(VIEWER)).await;
        (status == 200).then_some(body)
    };
    eventually(Duration::from_secs(15), "a first observation", overview).await;

    // The projector cannot write (the users table is locked by another session), so a user
    // created now waits: lag in events and in time, the checkpoint does not move.
    let mut blocker = env.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    let (partition, _) = env.produce_event(&env.producer(), &user_created(1)).await;
    let stalled = eventually(Duration::from_secs(30), "a stalled alert", || async {
        let body = overview().await?;
        let alert = body["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["kind"] == "stalled" && a["partition"] == partition)?;
        let row = body["partitions"].as_array()?.iter().find(|p| p["partition"] == partition)?.clone();
        Some((alert.clone(), row))
    })
    .await;
    let (alert, row) = stalled;
    assert!(alert["message"].as_str().unwrap().contains("not moved"), "{alert}");
    assert_eq!(row["lag"], 1);
    assert!(row["stalledSeconds"].as_f64().unwrap() >= 2.0, "{row}");
    assert!(row["lagSeconds"].is_null() || row["lagSeconds"].as_f64().unwrap() >= 0.0, "{row}");

    // Released, the partition drains and the alert goes.
    blocker.rollback().await.unwrap();
    eventually(Duration::from_secs(30), "the alert to clear", || async {
        let body = overview().await?;
        (body["lag"] == 0 && body["alerts"].as_array()?.is_empty()).then_some(())
    })
    .await;
    projector.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_started_from_the_console_reports_its_progress_while_it_runs() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    // A log long enough for the replay to take a few observations.
    let producer = env.producer();
    let sends = (0..50_000).map(|n| {
        let envelope = user_created(n);
        let (producer, env) = (&producer, &env);
        async move { env.produce_event(producer, &envelope).await }
    });
    futures::future::join_all(sends).await;
    // The batch path: a bulk load of 50,000 events ends between two of the console's looks (its
    // progress shows as the phase "loading in bulk", read from the load, not the checkpoints).
    let mut config = support::projector_config(&env, "projector");
    config.rebuild_bulk_max_keys = 0;
    let projector = support::projector_with(config).await;
    env.wait_for_checkpoints(50_000, Duration::from_secs(180)).await;
    let http = eventline_testkit::http();
    let url = |path: &str| projector.url(path);

    let (status, job) = send(
        http.post(url("/console/api/rebuild")).bearer_auth(OPERATOR).json(&json!({ "confirm": "rebuild" })),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let (status, _) =
        send(http.post(url("/console/api/verify")).bearer_auth(OPERATOR).json(&json!({}))).await;
    assert_eq!(status, 409, "one operation at a time");

    // While it runs: its version, a phase, per-partition progress short of the goal, a rate.
    let running = eventually(Duration::from_secs(60), "a running job with progress", || async {
        let (_, versions) = send(http.get(url("/console/api/versions")).bearer_auth(VIEWER)).await;
        let job = versions["job"].clone();
        let under_way = job["state"] == "running"
            && job["version"] == 2
            && job["done"].as_i64()? > 0
            && job["done"].as_i64()? < job["goal"].as_i64()?
            && job["eventsPerSecond"].as_f64()? > 0.0;
        under_way.then_some(job)
    })
    .await;
    assert!(
        ["loading in bulk", "replaying", "catching up"].contains(&running["phase"].as_str().unwrap()),
        "{running}"
    );
    assert_eq!(running["partitions"].as_array().unwrap().len(), 3);
    let finished = eventually(Duration::from_secs(120), "the rebuild to end", || async {
        let (_, versions) = send(http.get(url("/console/api/versions")).bearer_auth(VIEWER)).await;
        (versions["job"]["state"] != "running").then_some(versions)
    })
    .await;
    assert_eq!(finished["job"]["state"], "succeeded", "{finished}");
    assert_eq!(finished["job"]["done"], 50_000);
    assert_eq!(finished["versions"][1]["state"], "live");

    // Both ends are audited, with who started it.
    let (_, audit) = send(http.get(url("/console/api/audit")).bearer_auth(VIEWER)).await;
    let actions: Vec<(&str, bool)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["succeeded"].as_bool().unwrap()))
        .collect();
    assert_eq!(actions, [("versions.rebuild", true), ("versions.rebuild", true)], "{audit}");
    projector.stop().await.unwrap();
}

impl Browser {
    async fn sign_in(&self, console: &str, token: &str) {
        self.client.goto(console).await.unwrap();
        self.type_into("#login-token", token).await;
        self.click("#login-submit").await;
        self.until_text("#whoami", "signed in", |t| !t.is_empty()).await;
    }

    /// What the page's own fetch gets for an action, as the page would send it (session cookie
    /// and CSRF token): the server's refusal, not a hidden button.
    async fn act_from_page(&self, path: &str, body: Value) -> u64 {
        let script = "const [path, body, done] = arguments; \
            call('POST', path, body).then(() => done(200), (e) => done(e.status));";
        self.client.execute_async(script, vec![json!(path), body]).await.unwrap().as_u64().unwrap()
    }

    /// Saves what the page shows, for the eye (target/console-screenshots).
    async fn screenshot(&self, name: &str) {
        let directory = eventline_testkit::repository().join("target/console-screenshots");
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join(format!("{name}.png")), self.client.screenshot().await.unwrap())
            .unwrap();
    }
}

/// The sum of the checkpoints the page's partition table shows (read in one script: the live
/// page may redraw the table between two WebDriver calls).
async fn checkpoints_shown(browser: &Browser) -> i64 {
    let script = "return [...document.querySelectorAll('#partitions tbody td:nth-child(2)')]\
        .reduce((sum, cell) => sum + (Number(cell.textContent.replace(/,/g, '')) || 0), 0);";
    browser.client.execute(script, vec![]).await.unwrap().as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_the_projection_and_redrives_dead_letters_in_a_browser() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    let projector = support::projector(&env).await;
    let console = projector.url("/console");
    // One page that loads nothing from elsewhere (the SVG namespace is a name, not a fetch).
    let page = reqwest::get(&console).await.unwrap().text().await.unwrap();
    let page = page.replace("http://www.w3.org/2000/svg", "");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page references no external resource"
    );
    let browser = Browser::start().await;

    // Signed in, the projection is shown: a row per partition.
    browser.sign_in(&console, OPERATOR).await;
    assert!(browser.text("#whoami").await.contains("olga (operator)"));
    let badge = browser.client.find(Locator::Css("#read-only")).await.unwrap();
    assert!(!badge.is_displayed().await.unwrap(), "this console is not read-only");
    eventually(Duration::from_secs(20), "the partitions shown", || async {
        let rows = browser.client.find_all(Locator::Css("#partitions tbody tr")).await.ok()?;
        (rows.len() == 3).then_some(())
    })
    .await;
    let before = checkpoints_shown(&browser).await;

    // The view follows the log live (Server-Sent Events) while events are produced.
    let producer = env.producer();
    let produced: Vec<Envelope> = (0..30).map(user_created).collect();
    for envelope in &produced {
        env.produce_event(&producer, envelope).await;
    }
    eventually(Duration::from_secs(30), "the page to show the new checkpoints", || async {
        (checkpoints_shown(&browser).await >= before + 30).then_some(())
    })
    .await;
    browser.until_text("#total-lag", "lag back to 0", |t| t == "0").await;
    browser.screenshot("projection").await;

    // Poison messages become dead letters, grouped and listed.
    poison(&env).await;
    browser.until_text("#dead-letter-count", "two dead letters counted", |t| t == "2").await;
    browser.click("#tab-dead-letters").await;
    eventually(Duration::from_secs(10), "two entries listed", || async {
        let rows = browser.client.find_all(Locator::Css("#dl-entries tbody tr")).await.ok()?;
        (rows.len() == 2).then_some(())
    })
    .await;
    browser.click("#dl-entries tbody tr").await;
    browser.until_text("#dl-detail-payload", "the payload shown", |t| t.contains("42")).await;
    browser.screenshot("dead-letters").await;

    // The fix: here the messages are corrected (as a producer fix would have sent them).
    let fixed: Vec<Envelope> = (100..102).map(user_created).collect();
    let ids: Vec<i64> = sqlx::query_scalar("SELECT dead_letter_id FROM dead_letters ORDER BY dead_letter_id")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    for (id, envelope) in ids.iter().zip(&fixed) {
        sqlx::query("UPDATE dead_letters SET payload = $2 WHERE dead_letter_id = $1")
            .bind(id)
            .bind(envelope.encode())
            .execute(&env.pool)
            .await
            .unwrap();
    }

    // Redrive: a dry run counts, then the typed confirmation redrives them.
    browser.click("#dl-redrive").await;
    browser
        .until_text("#confirm-count", "the dry run's count", |t| t.contains("2 entries would be redriven"))
        .await;
    assert_eq!(browser.text("#confirm-expected").await, "redrive 2");
    browser.screenshot("confirm").await;
    browser.click("#confirm-go").await;
    browser
        .until_text("#confirm-error", "a refusal without the confirmation", |t| t.contains("confirm"))
        .await;
    browser.type_into("#confirm-input", "redrive 2").await;
    browser.click("#confirm-go").await;
    browser.until_text("#action-result", "both applied", |t| t.contains("2 applied")).await;
    assert_eq!(dead_letter_count(&env).await, 0);
    for envelope in &fixed {
        let Event::UserCreated(user) = &envelope.event else { unreachable!() };
        let found: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE user_id = $1")
            .bind(user.user_id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert_eq!(found, 1, "the redriven event is in the read model");
    }

    // The audit records it, with who and what was confirmed.
    browser.click("#tab-audit").await;
    let row = browser
        .until_text("#audit-log tbody tr", "the redrive in the audit", |t| t.contains("dead-letters.redrive"))
        .await;
    assert!(
        row.contains("olga (operator)") && row.contains("redrive 2") && row.contains("2 applied"),
        "{row}"
    );
    browser.screenshot("audit").await;

    // A rebuild started from the page shows its progress and switches; verify then finds the
    // new version equal to the log.
    browser.click("#tab-versions").await;
    browser.click("#job-rebuild").await;
    browser.type_into("#confirm-input", "rebuild").await;
    browser.click("#confirm-go").await;
    browser.until_text("#job-state", "the rebuild to succeed", |t| t == "succeeded").await;
    let switched = browser.text("#job-switched").await;
    assert!(switched.contains("v2 is live"), "{switched}");
    assert_eq!(browser.text("#job-phase").await, "switched");
    browser.screenshot("rebuild").await;
    browser.click("#job-verify").await;
    browser.until_text("#job-kind", "the verify", |t| t == "verify").await;
    browser.until_text("#job-state", "the verify to succeed", |t| t == "succeeded").await;
    let report = browser.text("#verify-report").await;
    assert!(report.contains("users") && !report.contains("DIFFERS"), "{report}");
    browser.screenshot("verify").await;

    // Find: one of the users produced above, its partition, row and event.
    let Event::UserCreated(first) = &produced[0].event else { unreachable!() };
    browser.click("#tab-find").await;
    browser.type_into("#find-key", &first.user_id.to_string()).await;
    browser.click("#find-go").await;
    browser.until_text("#find-kind", "the user found", |t| t.starts_with("user")).await;
    let events = browser.text("#find-events").await;
    assert!(events.contains("UserCreated") && events.contains(&produced[0].event_id.to_string()), "{events}");
    browser.screenshot("find").await;

    // A viewer's page cannot act: the button is off, and the server refuses the request anyway.
    browser.click("#logout").await;
    browser.sign_in(&console, VIEWER).await;
    assert_eq!(
        browser
            .client
            .find(Locator::Css("#dl-redrive"))
            .await
            .unwrap()
            .attr("disabled")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    let status = browser
        .act_from_page("/dead-letters/redrive", json!({ "selection": { "all": true }, "dryRun": false }))
        .await;
    assert_eq!(status, 403);

    // A read-only console refuses every action, for an operator too.
    let read_only = support::projector_with(eventline_projector::Config {
        console_read_only: true,
        ..support::projector_config(&env, "projector")
    })
    .await;
    browser.sign_in(&read_only.url("/console"), OPERATOR).await;
    assert!(browser.client.find(Locator::Css("#read-only")).await.unwrap().is_displayed().await.unwrap());
    let status = browser
        .act_from_page(
            "/dead-letters/discard",
            json!({ "selection": { "all": true }, "dryRun": false, "reason": "x" }),
        )
        .await;
    assert_eq!(status, 403);
    browser.close().await;
    read_only.stop().await.unwrap();
    projector.stop().await.unwrap();
}
