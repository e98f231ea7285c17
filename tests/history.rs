//! Histories, reads as of a version or a time, and live streams, over HTTP against the real stack
//! (issue 33). Every expectation comes from the log itself, read back independently of the
//! projector and the query service.

use crate::support;

use std::time::Duration;

use crate::support::sse;
use chrono::{DateTime, Utc};
use eventline_events::{AdjustmentType, Envelope, Event};
use eventline_testkit::{TestEnv, http};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

async fn post(url: String, body: Value) -> Option<(Value, String)> {
    let response = http().post(url).json(&body).send().await.unwrap();
    if response.status() != 202 {
        return None;
    }
    let token = response.headers()["consistency-token"].to_str().unwrap().to_owned();
    Some((response.json().await.unwrap(), token))
}

async fn get(url: String, token: &str) -> (u16, Value) {
    let response = http().get(url).header("consistency-token", token).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

/// Every page of a history, following `nextCursor`.
async fn all_pages(url: &str, direction: &str, limit: usize, token: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut page_url = format!("{url}?direction={direction}&limit={limit}");
        if let Some(cursor) = &cursor {
            page_url.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = get(page_url, token).await;
        assert_eq!(status, 200, "{page}");
        let got = page["events"].as_array().unwrap();
        assert!(got.len() <= limit);
        events.extend(got.iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return events,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_s_history_holds_its_placement_and_payment_at_their_positions() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let _projector = support::projector(&env).await;
    let query = support::query(&env).await;

    let (user, _) = post(
        command.url("/users"),
        json!({"email": "h@example.com", "firstName": "Hedy", "lastName": "Lamarr"}),
    )
    .await
    .unwrap();
    let user_id = user["userId"].as_str().unwrap().to_owned();
    let (order, placed_at) = post(
        command.url("/orders"),
        json!({"userId": user_id, "currency": "EUR", "items": [{"sku": "H-1", "quantity": 3, "price": "2.50"}]}),
    )
    .await
    .unwrap();
    let order_id = order["orderId"].as_str().unwrap().to_owned();
    let (_, paid_at) = post(
        command.url(&format!("/orders/{order_id}/payments")),
        json!({"amount": "7.50", "currency": "EUR", "paymentMethod": "card"}),
    )
    .await
    .unwrap();

    let (status, page) = get(query.url(&format!("/orders/{order_id}/history")), &paid_at).await;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{page}");
    assert!(page.get("nextCursor").is_none());
    for (event, (kind, version, token)) in
        events.iter().zip([("OrderPlaced", 1, &placed_at), ("PaymentSettled", 2, &paid_at)])
    {
        assert_eq!(event["type"], kind);
        assert_eq!(event["version"], version);
        assert_eq!(event["aggregateType"], "order");
        assert_eq!(event["aggregateId"], order_id.as_str());
        // The position the command API answered with is where the index says the event is.
        assert_eq!(&format!("{}:{}", event["partition"], event["offset"]), token, "{event}");
        assert!(event["appendedAt"].is_string(), "the broker's append time: {event}");
    }
    assert_eq!(events[0]["data"]["items"][0]["sku"], "H-1");
    assert_eq!(events[1]["data"]["amount"], "7.50");

    // Backwards, one at a time: the payment, then the placement.
    let backwards =
        all_pages(&query.url(&format!("/orders/{order_id}/history")), "backwards", 1, &paid_at).await;
    let types: Vec<&str> = backwards.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["PaymentSettled", "OrderPlaced"]);

    // As of each version: placed, then paid; the latest equals the order as served.
    let (_, now) = get(query.url(&format!("/orders/{order_id}")), &paid_at).await;
    let (status, first) = get(query.url(&format!("/orders/{order_id}?asOf=1")), &paid_at).await;
    assert_eq!(
        (status, first["status"].as_str(), first["payment"].is_null()),
        (200, Some("awaiting_payment"), true)
    );
    assert_eq!(first["version"], 1);
    let (_, second) = get(query.url(&format!("/orders/{order_id}?asOf=2")), &paid_at).await;
    assert_eq!(second, now, "the fold of the whole history is the order the projector stored");
    let at_placement = events[0]["occurredAt"].as_str().unwrap().replace('+', "%2B");
    let (_, by_time) = get(query.url(&format!("/orders/{order_id}?asOfTime={at_placement}")), &paid_at).await;
    assert_eq!(by_time, first);
    let (status, beyond) = get(query.url(&format!("/orders/{order_id}?asOf=3")), &paid_at).await;
    assert_eq!(status, 404);
    assert_eq!(beyond["currentVersion"], 2, "{beyond}");
    assert!(beyond["detail"].as_str().unwrap().contains("version 2"), "{beyond}");
    let (status, before) =
        get(query.url(&format!("/orders/{order_id}?asOfTime=2000-01-01T00:00:00Z")), &paid_at).await;
    assert_eq!(status, 404, "{before}");
    // Both bounds: the earlier wins.
    let (_, both) = get(query.url(&format!("/orders/{order_id}?asOf=2&asOfTime={at_placement}")), "").await;
    assert_eq!(both, first);
    let (status, empty) = get(query.url(&format!("/orders/{order_id}?asOfTime=")), "").await;
    assert_eq!(status, 400, "an empty asOfTime is not a time: {empty}");

    // The user's history: their creation, their order and its payment.
    let (status, page) = get(query.url(&format!("/users/{user_id}/history")), &paid_at).await;
    assert_eq!(status, 200, "{page}");
    let types: Vec<&str> =
        page["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["UserCreated", "OrderPlaced", "PaymentSettled"]);
    let user_pages =
        all_pages(&query.url(&format!("/users/{user_id}/history")), "backwards", 2, &paid_at).await;
    assert_eq!(user_pages.len(), 3);
    assert_eq!(user_pages[0]["type"], "PaymentSettled");

    // Unknown aggregates and malformed cursors.
    let (status, _) = get(query.url(&format!("/orders/{}/history", uuid::Uuid::now_v7())), "").await;
    assert_eq!(status, 404);
    let (status, problem) = get(query.url(&format!("/orders/{order_id}/history?cursor=x")), "").await;
    assert_eq!(status, 400, "{problem}");
}

/// A sku's stock after each of its adjustments in `log`, folded here, independently of the
/// service: (quantity, the time the adjustment occurred).
fn fold_sku(log: &[Envelope], sku: &str) -> Vec<(i64, DateTime<Utc>, uuid::Uuid)> {
    let mut quantity = 0i64;
    let mut states = Vec::new();
    for envelope in log {
        if let Event::InventoryAdjusted(adjustment) = &envelope.event
            && adjustment.sku == sku
        {
            quantity = match adjustment.adjustment_type {
                AdjustmentType::Add => quantity + adjustment.quantity,
                AdjustmentType::Remove => quantity - adjustment.quantity,
                AdjustmentType::Set => adjustment.quantity,
            };
            states.push((quantity, envelope.occurred_at, envelope.event_id));
        }
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_every_version_of_a_sku_is_the_fold_of_the_log_up_to_it() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let _projector = support::projector(&env).await;
    let query = support::query(&env).await;

    // Random adjustment sequences (some removes are refused for want of stock: the log holds only
    // what was accepted, and the fold below reads the log).
    // A new sequence every run; `EVENTLINE_HISTORY_SEED` replays one.
    let seed: u64 =
        std::env::var("EVENTLINE_HISTORY_SEED").map_or_else(|_| rand::random(), |s| s.parse().unwrap());
    eprintln!("adjustment sequences from seed {seed} (EVENTLINE_HISTORY_SEED)");
    let mut rng = StdRng::seed_from_u64(seed);
    let skus: Vec<String> = (0..3).map(|i| format!("ASOF-{i}-{}", env.id)).collect();
    let mut last_token = String::new();
    for _ in 0..45 {
        let sku = &skus[rng.random_range(0..skus.len())];
        let (kind, quantity) = match rng.random_range(0..3) {
            0 => ("add", rng.random_range(1..20)),
            1 => ("remove", rng.random_range(1..12)),
            _ => ("set", rng.random_range(0..40)),
        };
        let body = json!({"quantity": quantity, "adjustmentType": kind, "reason": "property test"});
        if let Some((_, token)) = post(command.url(&format!("/inventory/{sku}/adjustments")), body).await {
            last_token = token;
        }
    }
    let log = support::log::events(&env).await;

    for sku in &skus {
        let expected = fold_sku(&log, sku);
        if expected.is_empty() {
            continue;
        }
        // Wait until the read models hold the sku's last adjustment (a token covers one partition).
        let history_url = query.url(&format!("/inventory/{sku}/history"));
        let forwards = eventline_testkit::eventually(Duration::from_secs(30), "the sku's history", || {
            let url = history_url.clone();
            let want = expected.len();
            async move {
                let events = all_pages(&url, "forwards", 4, "").await;
                (events.len() == want).then_some(events)
            }
        })
        .await;
        let ids: Vec<String> = forwards.iter().map(|e| e["eventId"].as_str().unwrap().to_owned()).collect();
        let logged: Vec<String> = expected.iter().map(|(_, _, id)| id.to_string()).collect();
        assert_eq!(ids, logged, "the history is the log's order");
        let versions: Vec<i64> = forwards.iter().map(|e| e["version"].as_i64().unwrap()).collect();
        assert_eq!(versions, (1..=expected.len() as i64).collect::<Vec<_>>());
        let mut backwards = all_pages(&history_url, "backwards", 3, "").await;
        backwards.reverse();
        assert_eq!(backwards, forwards, "paging backwards gives the same events");

        for (i, (quantity, occurred_at, _)) in expected.iter().enumerate() {
            let version = i as i64 + 1;
            let (status, stock) = get(query.url(&format!("/inventory/{sku}?asOf={version}")), "").await;
            assert_eq!(status, 200, "{stock}");
            assert_eq!(stock["quantity"], *quantity, "{sku} as of {version}");
            assert_eq!(stock["version"], version);
            assert_eq!(time(&stock["updatedAt"]), *occurred_at);
        }
        let (_, now) = get(query.url(&format!("/inventory/{sku}")), &last_token).await;
        let (_, latest) = get(query.url(&format!("/inventory/{sku}?asOf={}", expected.len())), "").await;
        assert_eq!(latest, now, "the fold of the whole history is the stock the projector stored");
        let (status, beyond) =
            get(query.url(&format!("/inventory/{sku}?asOf={}", expected.len() + 1)), "").await;
        assert_eq!((status, beyond["currentVersion"].as_i64()), (404, Some(expected.len() as i64)));
    }
}

/// Reads a stream until `done` says so, returning the `change` events.
async fn changes_until(
    stream: &mut sse::Stream,
    mut done: impl FnMut(&[sse::Message]) -> bool,
) -> Vec<sse::Message> {
    let mut changes = Vec::new();
    while !done(&changes) {
        let message = stream.next().await;
        assert_eq!(message.event, "change", "{message:?}");
        changes.push(message);
    }
    changes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_sees_every_change_once_in_order_across_a_resume() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let _projector = support::projector(&env).await;
    let query = support::query(&env).await;
    let sku = format!("LIVE-{}", env.id);
    let live_url = query.url(&format!("/inventory/{sku}/live"));

    // A sku not adjusted yet: its state is null, and the stream says it has caught up.
    let mut stream = sse::Stream::open(&live_url, None).await;
    let first = stream.next().await;
    assert_eq!((first.event.as_str(), &first.data["state"]), ("state", &Value::Null), "{first:?}");
    assert_eq!(stream.next().await.event, "caught-up");

    // Two writers adjust the sku concurrently.
    const EACH: usize = 30;
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let url = command.url(&format!("/inventory/{sku}/adjustments"));
            tokio::spawn(async move {
                for i in 0..EACH {
                    let body =
                        json!({"quantity": 1 + (i + w) % 5, "adjustmentType": "add", "reason": "live"});
                    post(url.clone(), body).await.expect("an add is accepted");
                }
            })
        })
        .collect();

    let mut seen = changes_until(&mut stream, |c| c.len() == 20).await;
    let last_id = seen.last().unwrap().id.clone().unwrap();
    drop(stream); // a forced disconnect, while the writers go on
    tokio::time::sleep(Duration::from_millis(700)).await;

    let mut resumed = sse::Stream::open(&live_url, Some(&last_id)).await;
    let mut caught_up = false;
    while seen.len() < 2 * EACH {
        let message = resumed.next().await;
        match message.event.as_str() {
            "change" => seen.push(message),
            "caught-up" => {
                assert!(!caught_up, "one caught-up per resume");
                caught_up = true;
            }
            other => panic!("unexpected {other}: {message:?}"),
        }
    }
    if !caught_up {
        // Every change was missed while disconnected: the caught-up follows the last of them.
        let next = resumed.next().await;
        assert_eq!(next.event, "caught-up", "a resumed stream says when it has caught up: {next:?}");
    }
    for writer in writers {
        writer.await.unwrap();
    }

    // Every version once, in order, each with the stock after it, as the log folds.
    let log = support::log::events(&env).await;
    let expected = fold_sku(&log, &sku);
    assert_eq!(expected.len(), 2 * EACH);
    for (i, (change, (quantity, _, event_id))) in seen.iter().zip(&expected).enumerate() {
        let version = i as i64 + 1;
        assert_eq!(change.data["event"]["version"], version, "{change:?}");
        assert_eq!(change.data["event"]["eventId"], event_id.to_string());
        assert_eq!(change.data["state"]["version"], version);
        assert_eq!(change.data["state"]["quantity"], *quantity, "{change:?}");
        let position = format!("{}:{}", change.data["event"]["partition"], change.data["event"]["offset"]);
        assert_eq!(change.id.as_deref(), Some(position.as_str()), "the id is the change's token");
        assert_eq!(change.data["token"], position);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_s_stream_follows_their_orders_and_payments() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let _projector = support::projector(&env).await;
    let query = support::query(&env).await;

    let (user, token) = post(
        command.url("/users"),
        json!({"email": "l@example.com", "firstName": "Lise", "lastName": "Meitner"}),
    )
    .await
    .unwrap();
    let user_id = user["userId"].as_str().unwrap().to_owned();
    let url = query.url(&format!("/users/{user_id}/live"));
    let mut request = sse::Stream::open(&url, None).await;
    // The token of the user's creation may not be applied yet when the stream opens: either the
    // state shows the user, or the creation arrives as a change.
    let state = request.next().await;
    assert_eq!(state.event, "state");
    assert_eq!(request.next().await.event, "caught-up");
    let mut changes = Vec::new();
    if state.data["state"].is_null() {
        changes.extend(changes_until(&mut request, |c| c.len() == 1).await);
        assert_eq!(changes[0].data["event"]["type"], "UserCreated");
    }
    let _ = token;

    let (order, _) = post(
        command.url("/orders"),
        json!({"userId": user_id, "currency": "USD", "items": [{"sku": "L-1", "quantity": 1, "price": "9.99"}]}),
    )
    .await
    .unwrap();
    let order_id = order["orderId"].as_str().unwrap();
    let placed = changes_until(&mut request, |c| c.len() == 1).await.remove(0);
    assert_eq!(placed.data["event"]["type"], "OrderPlaced");
    assert_eq!(placed.data["state"]["orderCount"], 1, "{placed:?}");
    post(
        command.url(&format!("/orders/{order_id}/payments")),
        json!({"amount": "9.99", "currency": "USD", "paymentMethod": "card"}),
    )
    .await
    .unwrap();
    let paid = changes_until(&mut request, |c| c.len() == 1).await.remove(0);
    assert_eq!(paid.data["event"]["type"], "PaymentSettled");
    assert_eq!(paid.data["state"]["totalSpent"]["USD"], "9.99", "{paid:?}");
    // The id covers every partition the user's events are in.
    let id = paid.id.unwrap();
    let token: eventline_events::ConsistencyToken = id.parse().unwrap();
    assert!(token.positions().count() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_reset_and_holds_no_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let _projector = support::projector(&env).await;
    let query =
        support::processes::Process::start(&env, "eventline-query", &[("EVENTLINE_LIVE_BUFFER", "32")]);
    query.ready().await;
    let sku = format!("STALL-{}", env.id);

    // A client with a small receive window that reads the first state and then nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = query.base_url.trim_start_matches("http://").parse().unwrap();
    let mut connection = socket.connect(address).await.unwrap();
    let request =
        format!("GET /inventory/{sku}/live HTTP/1.1\r\nHost: eventline\r\nAccept: text/event-stream\r\n\r\n");
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("event: caught-up") {
        let n = tokio::time::timeout(Duration::from_secs(10), connection.read(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the stream closed");
        received.extend_from_slice(&buffer[..n]);
    }
    let before = query.resident_bytes();

    // 40,000 adjustments with long reasons: far more than the kernel's socket buffers hold.
    let reason = "r".repeat(200);
    let mut token = String::new();
    for _ in 0..40 {
        let commands: Vec<Value> = (0..1000)
            .map(|_| json!({"type": "AdjustInventory", "sku": sku, "quantity": 1, "adjustmentType": "add", "reason": reason}))
            .collect();
        let (_, batch_token) =
            post(command.url("/commands/batch"), json!({"commands": commands})).await.unwrap();
        token = batch_token;
    }
    let (status, stock) = get(format!("{}/inventory/{sku}", query.base_url), &token).await;
    let stock = if status == 200 && stock["version"] == 40_000 {
        stock
    } else {
        eventline_testkit::eventually(Duration::from_secs(60), "all adjustments projected", || {
            let url = format!("{}/inventory/{sku}", query.base_url);
            async move {
                let (_, stock) = get(url, "").await;
                (stock["version"] == 40_000).then_some(stock)
            }
        })
        .await
    };
    assert_eq!(stock["quantity"], 40_000);
    tokio::time::sleep(Duration::from_secs(2)).await; // the feed publishes what was applied
    let after = query.resident_bytes();

    // Reading again: what the kernel held, then `reset` and the current state (a stream may have
    // been reset more than once while the client read nothing: the kernel's buffers let a little
    // through at times).
    let mut tail = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let n = connection.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the stream closed");
            tail.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&tail);
            if let Some(last_reset) = text.rfind("event: reset")
                && text[last_reset..].contains("\"version\":40000")
                && text[last_reset..].contains("event: caught-up")
            {
                return;
            }
        }
    })
    .await
    .expect("a reset after falling behind, then the current state");
    let text = String::from_utf8_lossy(&tail).into_owned();
    let resets = text.matches("event: reset").count();
    let last_reset = &text[text.rfind("event: reset").unwrap()..];
    assert!(last_reset.find("event: state") < last_reset.find("event: caught-up"), "{last_reset}");
    let changes_sent = text.matches("event: change").count();
    // What the changes never sent would take at the least: their reasons alone.
    let unsent_bytes = (40_000 - changes_sent) * reason.len();
    let growth = after.saturating_sub(before);
    eprintln!(
        "resident {before} -> {after} bytes (+{growth}); {resets} resets; {changes_sent} changes sent; \
         the rest would be over {unsent_bytes} bytes"
    );
    assert!(
        (growth as usize) < unsent_bytes / 2,
        "the service's memory grew by {growth} bytes for a client that stopped reading"
    );
    let metrics = http().get(query.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("eventline_query_live_resets_total {resets}")), "{metrics}");
}
