//! `make demo`: a guided tour of a running eventline stack (`make up` or docker-compose). Each step
//! says what it shows, does it through the public interfaces (the HTTP APIs, the Kafka topic, the
//! Redis dead-letter stream) and checks that it showed it; the tour stops with a non-zero exit at
//! the first step that does not.
//!
//! Where the stack is: `EVENTLINE_COMMAND_URL`, `EVENTLINE_QUERY_URL`, `EVENTLINE_PROJECTOR_URL`
//! (default `http://127.0.0.1:8081`, `:8082`, `:8083`), `KAFKA_BROKERS`, `EVENTLINE_TOPIC`,
//! `REDIS_URL` (the defaults of `make up`).
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Demo {
    http: reqwest::Client,
    command: String,
    query: String,
    projector: String,
    brokers: String,
    topic: String,
    redis: String,
    steps: usize,
    /// Every Consistency-Token received, joined: a read with it reflects all writes so far.
    tokens: Vec<String>,
}

/// A command's answer.
struct Accepted {
    body: Value,
    replayed: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let mut demo = Demo {
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
        command: var("EVENTLINE_COMMAND_URL", "http://127.0.0.1:8081"),
        query: var("EVENTLINE_QUERY_URL", "http://127.0.0.1:8082"),
        projector: var("EVENTLINE_PROJECTOR_URL", "http://127.0.0.1:8083"),
        brokers: var("KAFKA_BROKERS", "127.0.0.1:9092"),
        topic: var("EVENTLINE_TOPIC", "eventline.events"),
        redis: var("REDIS_URL", "redis://127.0.0.1:6379"),
        steps: 0,
        tokens: Vec::new(),
    };
    match demo.run().await {
        Ok(()) => {
            println!("\nAll {} steps showed what they should.", demo.steps);
            Ok(())
        }
        Err(error) => {
            println!("\nStep {} did not show what it should: {error:#}", demo.steps);
            std::process::exit(1);
        }
    }
}

impl Demo {
    async fn run(&mut self) -> anyhow::Result<()> {
        // A tag per run, so the tour can be repeated on the same stack.
        let run = &uuid::Uuid::now_v7().simple().to_string()[20..];
        let (book, pen) = (format!("DEMO-{run}-BOOK"), format!("DEMO-{run}-PEN"));

        self.step("The stack is up", "every service answers /readyz: its dependencies are reachable");
        for (name, base) in
            [("command", &self.command), ("query", &self.query), ("projector", &self.projector)]
        {
            let response = self.http.get(format!("{base}/readyz")).send().await;
            let ready = response.as_ref().is_ok_and(|r| r.status().is_success());
            ensure!(ready, "the {name} service at {base} is not ready (start the stack with `make up`)");
            self.say(&format!("{name:<9} {base} ready"));
        }

        self.step(
            "Create two users",
            "POST /users is answered 202 once the UserCreated event is durably in the log, with its position",
        );
        let ada = self.create_user("Ada", "Lovelace", run, None).await?.body;
        let grace = self.create_user("Grace", "Hopper", run, None).await?.body;
        let (ada_id, grace_id) = (text(&ada, "userId")?, text(&grace, "userId")?);

        self.step("Place orders", "POST /orders computes the total on the server (2 × 12.50 + 1.99 = 26.99)");
        let items = json!([{"sku": book, "quantity": 2, "price": "12.50"}, {"sku": pen, "quantity": 1, "price": "1.99"}]);
        let ada_order = self
            .post("/orders", json!({"userId": ada_id, "currency": "EUR", "items": items}), None)
            .await?
            .body;
        ensure!(ada_order["totalAmount"] == "26.99", "Ada's order total is {}", ada_order["totalAmount"]);
        let grace_items = json!([{"sku": book, "quantity": 1, "price": "12.50"}]);
        let grace_order = self
            .post("/orders", json!({"userId": grace_id, "currency": "EUR", "items": grace_items}), None)
            .await?
            .body;
        let (ada_order_id, grace_order_id) = (text(&ada_order, "orderId")?, text(&grace_order, "orderId")?);

        self.step("Settle a payment", "POST /orders/{id}/payments appends PaymentSettled for Ada's order");
        let payment = json!({"amount": "26.99", "currency": "EUR", "paymentMethod": "card"});
        self.post(&format!("/orders/{ada_order_id}/payments"), payment, None).await?;

        self.step(
            "Adjust inventory",
            "add 10 books, remove 3, set pens to 40: the read model folds them to 7 and 40",
        );
        for (sku, kind, quantity) in [(&book, "add", 10), (&book, "remove", 3), (&pen, "set", 40)] {
            let body = json!({"adjustmentType": kind, "quantity": quantity, "reason": "demo"});
            self.post(&format!("/inventory/{sku}/adjustments"), body, None).await?;
        }

        self.step(
            "A business rule refuses a command",
            "paying Ada's order a second time is refused 409 order-already-paid, and removing more books than \
             the 7 in stock 409 insufficient-stock with `available`: nothing is appended",
        );
        let again = json!({"amount": "26.99", "currency": "EUR", "paymentMethod": "card"});
        let paid_twice = self.refused(&format!("/orders/{ada_order_id}/payments"), again).await?;
        ensure!(paid_twice.0 == StatusCode::CONFLICT, "a second payment answered {}", paid_twice.0);
        self.say(&format!("{} {}", paid_twice.0, paid_twice.1["type"]));
        let too_many = json!({"adjustmentType": "remove", "quantity": 8, "reason": "demo"});
        let oversold = self.refused(&format!("/inventory/{book}/adjustments"), too_many).await?;
        ensure!(oversold.1["available"] == 7, "removing 8 books answered {} {}", oversold.0, oversold.1);
        self.say(&format!("{} {} available={}", oversold.0, oversold.1["type"], oversold.1["available"]));

        self.step(
            "Replay a command with the same Idempotency-Key",
            "the second request is answered from the first (idempotent-replayed: true): same user, same event, \
             same position — nothing appended twice",
        );
        let key = format!("demo-{run}");
        let first = self.create_user("Linus", "Torvalds", run, Some(&key)).await?;
        let second = self.create_user("Linus", "Torvalds", run, Some(&key)).await?;
        ensure!(second.replayed, "the second request was not answered as a replay");
        for field in ["userId", "eventId", "position"] {
            ensure!(first.body[field] == second.body[field], "{field} differs between the two answers");
        }
        let linus_id = text(&first.body, "userId")?;

        self.step(
            "Publish a malformed message to the topic",
            "the projector cannot apply it: it is dead-lettered (PostgreSQL, mirrored to a Redis stream) and the \
             projection moves past it instead of retrying it forever",
        );
        let (partition, offset) = self.publish_poison(run).await?;
        self.say(&format!("published to partition {partition} at offset {offset}"));
        let entry = self.await_dead_letter(partition, offset).await?;
        self.say(&format!("dead-lettered: {entry}"));

        self.step(
            "Read everything back with the consistency token",
            "a GET carrying the Consistency-Token of the writes waits until the read models reflect them",
        );
        let user = self.get(&format!("/users/{ada_id}")).await?;
        ensure!(user["orderCount"] == 1, "Ada has {} orders", user["orderCount"]);
        ensure!(user["orders"][0]["status"] == "paid", "Ada's order is {}", user["orders"][0]["status"]);
        ensure!(user["totalSpent"]["EUR"] == "26.99", "Ada spent {}", user["totalSpent"]);
        let order = self.get(&format!("/orders/{ada_order_id}")).await?;
        ensure!(order["status"] == "paid" && order["payment"]["amount"] == "26.99", "Ada's order: {order}");
        ensure!(order["items"].as_array().map(Vec::len) == Some(2), "Ada's order items: {}", order["items"]);
        let unpaid = self.get(&format!("/orders/{grace_order_id}")).await?;
        ensure!(
            unpaid["status"] == "awaiting_payment" && unpaid["payment"].is_null(),
            "Grace's order: {unpaid}"
        );
        // Orders still awaiting a payment, from a projection of their own (orders_by_status).
        let awaiting = self.get(&format!("/orders?status=awaiting_payment&userId={grace_id}")).await?;
        ensure!(
            awaiting["orders"].as_array().map(Vec::len) == Some(1)
                && awaiting["orders"][0]["orderId"] == grace_order_id.as_str(),
            "Grace's orders awaiting payment: {awaiting}"
        );
        let books = self.get(&format!("/inventory/{book}")).await?;
        ensure!(books["quantity"] == 7, "books in stock: {}", books["quantity"]);
        let pens = self.get(&format!("/inventory/{pen}")).await?;
        ensure!(pens["quantity"] == 40, "pens in stock: {}", pens["quantity"]);
        let linus = self.get(&format!("/users/{linus_id}")).await?;
        ensure!(linus["email"] == format!("linus-{run}@example.com").as_str(), "Linus: {linus}");

        self.step(
            "Dead letters and projection status",
            "what an operator looks at: the DLQ and the lag per partition",
        );
        self.show_dead_letters().await?;
        let status: Value =
            self.http.get(format!("{}/projections", self.projector)).send().await?.json().await?;
        for p in status["partitions"].as_array().into_iter().flatten() {
            self.say(&format!(
                "partition {}: next offset {}, high watermark {}, lag {}",
                p["partition"], p["nextOffset"], p["highWatermark"], p["lag"]
            ));
        }
        self.say(&format!("dead letters: {}", status["deadLetters"]));
        ensure!(status["deadLetters"].as_i64().unwrap_or(0) >= 1, "the projection reports no dead letters");
        let moved_past = status["partitions"].as_array().into_iter().flatten().any(|p| {
            p["partition"] == partition && p["nextOffset"].as_i64().is_some_and(|next| next > offset)
        });
        ensure!(
            moved_past,
            "partition {partition} has not moved past the malformed message at offset {offset}"
        );
        Ok(())
    }

    fn step(&mut self, title: &str, shows: &str) {
        self.steps += 1;
        println!("\n{}. {title}\n   shows: {shows}", self.steps);
    }

    fn say(&self, line: &str) {
        println!("   {line}");
    }

    async fn create_user(
        &mut self,
        first: &str,
        last: &str,
        run: &str,
        key: Option<&str>,
    ) -> anyhow::Result<Accepted> {
        let email = format!("{}-{run}@example.com", first.to_lowercase());
        self.post("/users", json!({"email": email, "firstName": first, "lastName": last}), key).await
    }

    /// POSTs a command; expects 202 and records its Consistency-Token.
    /// A command the API must refuse: its status and problem.
    async fn refused(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.command))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let problem: Value = response.json().await.with_context(|| format!("POST {path}: the body"))?;
        ensure!(status.is_client_error(), "POST {path} answered {status}: {problem}");
        Ok((status, problem))
    }

    async fn post(&mut self, path: &str, body: Value, key: Option<&str>) -> anyhow::Result<Accepted> {
        let mut request = self.http.post(format!("{}{path}", self.command)).json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
        let token =
            response.headers().get("consistency-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let answer: Value = response.json().await.with_context(|| format!("POST {path}: the body"))?;
        ensure!(status == StatusCode::ACCEPTED, "POST {path} answered {status}: {answer}");
        let token = token.with_context(|| format!("POST {path} answered without a Consistency-Token"))?;
        self.say(&format!("POST {path} → 202, position {}, token {token}", answer["position"]));
        self.tokens.push(token);
        Ok(Accepted { body: answer, replayed })
    }

    /// GETs a read model with every token so far; expects 200.
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let token = self.tokens.join(",");
        let started = Instant::now();
        let response = self
            .http
            .get(format!("{}{path}", self.query))
            .header("consistency-token", &token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body: Value = response.json().await.with_context(|| format!("GET {path}: the body"))?;
        ensure!(status == StatusCode::OK, "GET {path} answered {status}: {body}");
        self.say(&format!("GET {path} → 200 in {} ms: {body}", started.elapsed().as_millis()));
        Ok(body)
    }

    /// Appends bytes that are not an event; returns where they landed.
    async fn publish_poison(&self, run: &str) -> anyhow::Result<(i32, i64)> {
        let producer: FutureProducer = eventline_tools::stack::kafka_client(&self.brokers)?
            .set("acks", "all")
            .create()
            .context("creating a Kafka producer")?;
        let key = format!("demo-poison-{run}");
        let record =
            FutureRecord::to(&self.topic).key(&key).payload(b"{\"this is\": \"not an event\"".as_slice());
        let delivery = producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(error, _)| error)
            .with_context(|| format!("publishing to {} on {}", self.topic, self.brokers))?;
        Ok((delivery.partition, delivery.offset))
    }

    /// Waits for the dead letter of `partition`/`offset` in the Redis stream operators watch.
    async fn await_dead_letter(&self, partition: i32, offset: i64) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for entry in self.dead_letters().await? {
                if entry.get("partition").map(String::as_str) == Some(&partition.to_string())
                    && entry.get("offset").map(String::as_str) == Some(&offset.to_string())
                {
                    return Ok(describe(&entry));
                }
            }
            if Instant::now() > deadline {
                bail!("no dead letter for partition {partition} offset {offset} after 20 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn show_dead_letters(&self) -> anyhow::Result<()> {
        let entries = self.dead_letters().await?;
        self.say(&format!(
            "stream eventline:dlq:{} holds {} entries; the latest:",
            self.topic,
            entries.len()
        ));
        for entry in entries.iter().rev().take(5) {
            self.say(&format!("  {}", describe(entry)));
        }
        Ok(())
    }

    async fn dead_letters(&self) -> anyhow::Result<Vec<std::collections::BTreeMap<String, String>>> {
        let client = redis::Client::open(self.redis.as_str()).context("REDIS_URL")?;
        let mut connection =
            client.get_multiplexed_async_connection().await.context("connecting to Redis")?;
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("eventline:dlq:{}", self.topic))
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|entry| {
                entry
                    .map
                    .iter()
                    .filter_map(|(k, v)| redis::from_redis_value::<String>(v).ok().map(|v| (k.clone(), v)))
                    .collect()
            })
            .collect())
    }
}

fn describe(entry: &std::collections::BTreeMap<String, String>) -> String {
    let field = |name: &str| entry.get(name).map_or("?", String::as_str);
    format!(
        "#{} partition {} offset {}: {} ({})",
        field("id"),
        field("partition"),
        field("offset"),
        field("errorCode"),
        field("error")
    )
}

fn text(value: &Value, field: &str) -> anyhow::Result<String> {
    value[field].as_str().map(str::to_owned).with_context(|| format!("no {field} in {value}"))
}
