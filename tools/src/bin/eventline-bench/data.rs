//! The log side of the benchmark: a prefilled topic (which also gives the raw produce ceiling),
//! the consume-and-decode ceiling, and a naive projector to compare the real one against.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use eventline_events::{
    AdjustmentType, Amount, Currency, Envelope, Event, HEADER_CONTENT_TYPE, HEADER_EVENT_ID,
    HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION, InventoryAdjusted, JSON_CONTENT_TYPE, OrderItem, OrderPlaced,
    PaymentSettled, PaymentStatus, UserCreated,
};
use eventline_projector::project::{self, Decoded, Record, Writer};
use eventline_runtime::config::DatabaseConfig;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

/// What the prefill wrote: ids to query, and how fast the broker took it.
pub struct Prefilled {
    pub per_s: f64,
    pub users: Vec<Uuid>,
    pub orders: Vec<Uuid>,
}

/// A producer with the command service's settings (acks=all, idempotent, linger 2 ms).
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    eventline_tools::stack::kafka_client(brokers)?
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .create()
        .context("creating a Kafka producer")
}

/// The `i`-th event of a realistic mix: per group of four, a user, their order (two lines), its
/// payment and a stock adjustment.
fn event(i: u64, user: Uuid, order: Uuid) -> anyhow::Result<Event> {
    let price = Amount::from_str("12.50").map_err(|e| anyhow::anyhow!("{e}"))?;
    let eur = Currency::from_str("EUR").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(match i % 4 {
        0 => Event::UserCreated(UserCreated {
            user_id: user,
            email: format!("bench{i}@example.com"),
            first_name: "Bench".into(),
            last_name: "Mark".into(),
        }),
        1 => Event::OrderPlaced(OrderPlaced {
            order_id: order,
            user_id: user,
            currency: eur,
            items: vec![
                OrderItem { sku: format!("SKU-{}", i % 500), quantity: 2, price },
                OrderItem { sku: format!("SKU-{}", (i + 1) % 500), quantity: 1, price },
            ],
            total_amount: Amount::from_str("37.50").map_err(|e| anyhow::anyhow!("{e}"))?,
        }),
        2 => Event::PaymentSettled(PaymentSettled {
            payment_id: Uuid::now_v7(),
            order_id: order,
            amount: Amount::from_str("37.50").map_err(|e| anyhow::anyhow!("{e}"))?,
            currency: eur,
            payment_method: "card".into(),
            status: PaymentStatus::Completed,
        }),
        _ => Event::InventoryAdjusted(InventoryAdjusted {
            sku: format!("SKU-{}", i % 500),
            quantity: 3,
            adjustment_type: AdjustmentType::Add,
            reason: "restock".into(),
        }),
    })
}

/// One event as the command service sends it: key, payload and headers.
struct Encoded {
    key: String,
    payload: Vec<u8>,
    id: String,
    event_type: &'static str,
    version: String,
}

/// Appends `events` events to `topic` as the command service would (same headers and key, same
/// producer settings), many in flight; returns the ids written and the rate. The events are
/// built and encoded before the clock starts, so the rate is the broker's and the client's.
pub async fn prefill(brokers: &str, topic: &str, events: u64) -> anyhow::Result<Prefilled> {
    let (mut users, mut orders, mut encoded) = (Vec::new(), Vec::new(), Vec::new());
    let (mut user, mut order) = (Uuid::now_v7(), Uuid::now_v7());
    for i in 0..events {
        if i % 4 == 0 {
            (user, order) = (Uuid::now_v7(), Uuid::now_v7());
            users.push(user);
            orders.push(order);
        }
        let envelope = Envelope::new(event(i, user, order)?);
        let event_type = envelope.event_type();
        encoded.push(Encoded {
            key: envelope.aggregate_id(),
            payload: envelope.encode(),
            id: envelope.event_id.to_string(),
            event_type: event_type.as_str(),
            version: event_type.current_version().to_string(),
        });
    }
    let producer = producer(brokers)?;
    // The first event connects, fetches metadata and gets a producer id before the clock starts.
    let Some((first, rest)) = encoded.split_first() else {
        return Ok(Prefilled { per_s: 0.0, users, orders });
    };
    send(&producer, topic, first).await.map_err(|(error, _)| error).context("producing")?;
    let mut in_flight = FuturesUnordered::new();
    let started = Instant::now();
    for event in rest {
        in_flight.push(send(&producer, topic, event));
        if in_flight.len() >= 50_000
            && let Some(sent) = in_flight.next().await
        {
            sent.map_err(|(error, _)| error).context("producing")?;
        }
    }
    while let Some(sent) = in_flight.next().await {
        sent.map_err(|(error, _)| error).context("producing")?;
    }
    let per_s = rest.len() as f64 / started.elapsed().as_secs_f64();
    Ok(Prefilled { per_s, users, orders })
}

/// Sends one encoded event.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    event: &Encoded,
) -> Result<(), (rdkafka::error::KafkaError, rdkafka::message::OwnedMessage)> {
    let headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header { key: HEADER_EVENT_TYPE, value: Some(event.event_type) })
        .insert(Header { key: HEADER_EVENT_ID, value: Some(event.id.as_str()) })
        .insert(Header { key: HEADER_SCHEMA_VERSION, value: Some(event.version.as_str()) })
        .insert(Header { key: HEADER_CONTENT_TYPE, value: Some(JSON_CONTENT_TYPE) });
    let record = FutureRecord::to(topic).key(&event.key).payload(&event.payload).headers(headers);
    producer.send(record, Duration::from_secs(30)).await.map(|_| ())
}

/// A consumer configured as the projector's.
fn consumer(brokers: &str, group: &str) -> anyhow::Result<StreamConsumer> {
    eventline_tools::stack::kafka_client(brokers)?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // As the projector: its EVENTLINE_FETCH_WAIT_MS.
        .set(
            "fetch.wait.max.ms",
            std::env::var("EVENTLINE_FETCH_WAIT_MS").unwrap_or_else(|_| "500".to_owned()),
        )
        .create()
        .context("creating a Kafka consumer")
}

/// Reads and decodes `events` events of `topic` from the start, writing nothing: the most a
/// projector on this consumer could do. Returns events/s.
pub async fn consume_ceiling(brokers: &str, topic: &str, events: u64) -> anyhow::Result<f64> {
    let consumer = consumer(brokers, &format!("{topic}.bench-consume"))?;
    consumer.subscribe(&[topic])?;
    let (mut decoded, mut started) = (0_u64, None);
    while decoded < events {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("the log stopped delivering")??;
        started.get_or_insert_with(Instant::now);
        if Envelope::decode(message.payload().unwrap_or_default()).is_ok() {
            decoded += 1;
        }
    }
    Ok(decoded as f64 / started.map_or(1e-9, |s| s.elapsed().as_secs_f64()))
}

/// A naive projector on the first `sample` events: each event in its own transaction (the same
/// projection code) after its own Redis round trip (a dedup claim). Returns events/s.
pub async fn naive_projector(
    brokers: &str,
    topic: &str,
    database_url: &str,
    redis_url: &str,
    sample: u64,
) -> anyhow::Result<f64> {
    // The projector's own pool of the live version (its schema on the search path).
    let database = DatabaseConfig { url: database_url.to_owned(), max_connections: 2 };
    let public = eventline_runtime::db::pool(&database)?;
    let live = eventline_read_models::live(&public, eventline_read_models::Projection::Main).await?;
    public.close().await;
    let pool = eventline_read_models::pool(&database, live)?;
    let redis = redis::Client::open(redis_url)?;
    let mut connection = redis.get_multiplexed_async_connection().await?;
    let consumer = consumer(brokers, &format!("{topic}.bench-naive"))?;
    consumer.subscribe(&[topic])?;
    let mut records = Vec::with_capacity(usize::try_from(sample).unwrap_or(0));
    while (records.len() as u64) < sample {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("the log stopped delivering")??;
        records.push(Record::from_message(&message));
    }
    let started = Instant::now();
    for record in &records {
        let key = format!("eventline:bench:naive:{topic}:{}:{}", record.partition, record.offset);
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(600)
            .query_async(&mut connection)
            .await?;
        let decoded = Decoded::new(std::slice::from_ref(record));
        project::apply(
            &pool,
            Writer::live(live),
            topic,
            &decoded,
            &HashSet::new(),
            project::Parking::live(100),
        )
        .await?
        .map_err(|_| {
            anyhow::anyhow!("read-model version {live} is no longer live in the benchmark database")
        })?;
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64())
}

/// What a single owner of the log would pay to append: transactions of `per_transaction` events
/// (the mix of [`prefill`]), one after the other from one transactional producer, as a single
/// decider fenced by its producer epoch would commit its groups. Each "request" of the returned
/// run is one transaction; its latency is begin → commit acknowledged.
pub async fn transactional_produce(
    brokers: &str,
    topic: &str,
    per_transaction: usize,
    run: Duration,
) -> anyhow::Result<crate::load::Measured> {
    use rdkafka::producer::Producer;
    use std::sync::Arc;

    let producer: FutureProducer = eventline_tools::stack::kafka_client(brokers)?
        .set("transactional.id", format!("{topic}.bench-transactional"))
        .set("linger.ms", "0")
        .create()
        .context("creating a transactional Kafka producer")?;
    let producer = Arc::new(producer);
    let init = producer.clone();
    tokio::task::spawn_blocking(move || init.init_transactions(Duration::from_secs(30)))
        .await?
        .context("initialising transactions (a producer epoch)")?;
    let (user, order) = (Uuid::now_v7(), Uuid::now_v7());
    let encoded = (0..per_transaction as u64)
        .map(|i| {
            let envelope = Envelope::new(event(i, user, order)?);
            Ok((envelope.aggregate_id(), envelope.encode()))
        })
        .collect::<anyhow::Result<Vec<(String, Vec<u8>)>>>()?;
    let (encoded, topic) = (Arc::new(encoded), topic.to_owned());
    let measured = crate::load::closed_loop(1, run, move |_| {
        let (producer, encoded, topic) = (producer.clone(), encoded.clone(), topic.clone());
        async move {
            producer.begin_transaction()?;
            let sends = encoded.iter().map(|(key, payload)| {
                producer.send(FutureRecord::to(&topic).key(key).payload(payload), Duration::from_secs(30))
            });
            for sent in futures::future::join_all(sends).await {
                sent.map_err(|(error, _)| error)?;
            }
            // Every message is delivered before the commit: rust-rdkafka's flush inside
            // commit_transaction otherwise polls in steps that last 100 ms each.
            tokio::task::spawn_blocking(move || producer.commit_transaction(Duration::from_secs(30)))
                .await??;
            Ok(())
        }
    })
    .await;
    Ok(measured)
}
