//! The log folded independently of the projector: what the read model must equal.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::bail;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// The log folded independently of the projector, in log order per partition (a sku's and an
/// order's events share one): distinct event ids, stock per sku, and the rules' invariants.
pub(crate) struct Fold {
    pub(crate) ids: HashSet<String>,
    pub(crate) duplicates: u64,
    pub(crate) stock: BTreeMap<String, i64>,
    pub(crate) negative_stock: u64,
    pub(crate) paid: HashSet<String>,
    pub(crate) orders_paid_twice: u64,
    /// Orders placed (each with its user): with `paid`, what the `orders_by_status` projection
    /// must list.
    pub(crate) placed: BTreeMap<String, String>,
    /// Distinct events of the types `orders_by_status` consumes (OrderPlaced, PaymentSettled).
    pub(crate) order_events: u64,
}

impl Fold {
    /// Each placed order's status as the `orders_by_status` projection must have it.
    pub(crate) fn order_statuses(&self) -> BTreeMap<String, &'static str> {
        self.placed
            .keys()
            .map(|order| (order.clone(), if self.paid.contains(order) { "paid" } else { "awaiting_payment" }))
            .collect()
    }
}

pub(crate) fn read_log(brokers: &str, topic: &str) -> anyhow::Result<Fold> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}.chaos-fold"))
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> =
        metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        if high > 0 {
            ends.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let mut fold = Fold {
        ids: HashSet::new(),
        duplicates: 0,
        stock: BTreeMap::new(),
        negative_stock: 0,
        paid: HashSet::new(),
        orders_paid_twice: 0,
        placed: BTreeMap::new(),
        order_events: 0,
    };
    let mut done: HashSet<i32> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Read until the log has been quiet a while after reaching the high watermarks.
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                quiet_since = Instant::now();
                if message.offset() + 1 >= ends.get(&message.partition()).copied().unwrap_or(0) {
                    done.insert(message.partition());
                }
                // The raw JSON, read as docs/events.md describes it: this fold shares no decoder
                // with the projector, so a bug in one does not hide in both.
                let Ok(event) =
                    serde_json::from_slice::<serde_json::Value>(message.payload().unwrap_or_default())
                else {
                    continue;
                };
                let (Some(id), Some(kind)) = (event["eventId"].as_str(), event["eventType"].as_str()) else {
                    continue;
                };
                if !fold.ids.insert(id.to_owned()) {
                    fold.duplicates += 1;
                    continue;
                }
                let data = &event["data"];
                match kind {
                    "InventoryAdjusted" => {
                        let (Some(sku), Some(quantity)) = (data["sku"].as_str(), data["quantity"].as_i64())
                        else {
                            bail!("an InventoryAdjusted without sku or quantity: {event}")
                        };
                        let stock = fold.stock.entry(sku.to_owned()).or_default();
                        *stock = match data["adjustmentType"].as_str() {
                            Some("add") => *stock + quantity,
                            Some("remove") => *stock - quantity,
                            Some("set") => quantity,
                            other => bail!("an adjustment of unknown type {other:?}: {event}"),
                        };
                        fold.negative_stock += u64::from(*stock < 0);
                    }
                    "OrderPlaced" => {
                        fold.order_events += 1;
                        let (Some(order), Some(user)) = (data["orderId"].as_str(), data["userId"].as_str())
                        else {
                            bail!("an OrderPlaced without orderId or userId: {event}")
                        };
                        fold.placed.insert(order.to_owned(), user.to_owned());
                    }
                    "PaymentSettled" => {
                        fold.order_events += 1;
                        let order = data["orderId"].as_str().unwrap_or_default().to_owned();
                        if !fold.paid.insert(order) {
                            fold.orders_paid_twice += 1;
                        }
                    }
                    _ => {}
                }
            }
            Some(Err(error)) => bail!("reading the log: {error}"),
            None if done.len() == ends.len() && quiet_since.elapsed() > Duration::from_secs(2) => {
                return Ok(fold);
            }
            None => {}
        }
    }
    bail!("the log could not be read to its end within 120 s")
}
