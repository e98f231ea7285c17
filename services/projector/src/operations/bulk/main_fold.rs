//! The main projection folded in memory, event by event, with the rules of `project/users.rs`,
//! `orders.rs`, `payments.rs`, `inventory.rs` and `index.rs`, and its documents assembled as
//! `documents::refresh` assembles them: a bulk load writes each row once, and `verify` (which
//! folds with the batch path) checks the two agree.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt as _};

use chrono::{DateTime, Utc};
use eventline_events::{Envelope, Event, PaymentStatus};
use eventline_read_models::documents::{self, Item, OrderSummary};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::copy::{CHUNK_ROWS, Chunked, CopyRows, Writers, micros};
use super::refused::Refused;
use crate::project::Record;

struct User {
    email: String,
    first_name: String,
    last_name: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_event_id: Uuid,
}

struct Order {
    user_id: Uuid,
    currency: &'static str,
    total: Decimal,
    paid: bool,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_event_id: Uuid,
    items: Vec<(String, i32, Decimal)>,
}

struct Payment {
    order_id: Uuid,
    amount: Decimal,
    currency: &'static str,
    method: String,
    status: &'static str,
    settled_at: DateTime<Utc>,
    last_event_id: Uuid,
}

struct Stock {
    quantity: i64,
    version: i64,
    updated_at: DateTime<Utc>,
    last_event_id: Uuid,
}

/// The main projection's tables, as the events so far leave them.
#[derive(Default)]
pub struct MainFold {
    users: HashMap<Uuid, User>,
    orders: HashMap<Uuid, Order>,
    payments: HashMap<Uuid, Payment>,
    /// Order → payments naming it (an order placed after its payment starts out paid).
    payments_of: HashMap<Uuid, u32>,
    stock: HashMap<String, Stock>,
    /// The event index's last version per aggregate.
    versions: HashMap<(&'static str, String), i64>,
    /// Event index rows not sent yet.
    index: CopyRows,
}

impl MainFold {
    /// Keys held in memory: what bounds a bulk load.
    pub fn entries(&self) -> usize {
        self.users.len() + self.orders.len() + self.payments.len() + self.stock.len() + self.versions.len()
    }

    /// Folds one event applied for the first time.
    pub fn apply(&mut self, record: &Record, envelope: &Envelope) {
        let at = micros(envelope.occurred_at);
        let event_id = envelope.event_id;
        match &envelope.event {
            Event::UserCreated(e) => {
                let user = self.users.entry(e.user_id).or_insert_with(|| User {
                    email: String::new(),
                    first_name: String::new(),
                    last_name: String::new(),
                    created_at: at,
                    updated_at: at,
                    last_event_id: event_id,
                });
                user.email.clone_from(&e.email);
                user.first_name.clone_from(&e.first_name);
                user.last_name.clone_from(&e.last_name);
                user.created_at = user.created_at.min(at);
                user.updated_at = at;
                user.last_event_id = event_id;
            }
            Event::OrderPlaced(e) => {
                let paid = self.payments_of.get(&e.order_id).is_some_and(|n| *n > 0);
                let order = self.orders.entry(e.order_id).or_insert_with(|| Order {
                    user_id: e.user_id,
                    currency: e.currency.code(),
                    total: Decimal::ZERO,
                    paid,
                    placed_at: at,
                    updated_at: at,
                    last_event_id: event_id,
                    items: Vec::new(),
                });
                order.user_id = e.user_id;
                order.currency = e.currency.code();
                order.total = e.total_amount.as_decimal();
                order.placed_at = order.placed_at.min(at);
                order.updated_at = order.updated_at.max(at);
                order.last_event_id = event_id;
                order.items = e
                    .items
                    .iter()
                    .map(|item| {
                        let quantity = i32::try_from(item.quantity).unwrap_or(i32::MAX);
                        (item.sku.clone(), quantity, item.price.as_decimal())
                    })
                    .collect();
            }
            Event::PaymentSettled(e) => {
                let status = match e.status {
                    PaymentStatus::Completed => "completed",
                };
                let payment = Payment {
                    order_id: e.order_id,
                    amount: e.amount.as_decimal(),
                    currency: e.currency.code(),
                    method: e.payment_method.clone(),
                    status,
                    settled_at: at,
                    last_event_id: event_id,
                };
                if let Some(before) = self.payments.insert(e.payment_id, payment)
                    && let Some(n) = self.payments_of.get_mut(&before.order_id)
                {
                    *n -= 1;
                }
                *self.payments_of.entry(e.order_id).or_insert(0) += 1;
                if let Some(order) = self.orders.get_mut(&e.order_id) {
                    order.paid = true;
                    order.updated_at = order.updated_at.max(at);
                }
            }
            Event::InventoryAdjusted(e) => {
                let stock = self.stock.entry(e.sku.clone()).or_insert(Stock {
                    quantity: 0,
                    version: 0,
                    updated_at: at,
                    last_event_id: event_id,
                });
                stock.quantity = eventline_read_models::fold::adjust(stock.quantity, e);
                stock.version += 1;
                stock.updated_at = at;
                stock.last_event_id = event_id;
            }
        }
        self.index_event(record, envelope, at);
    }

    /// The event's row of the event index: numbered after its aggregate's last one (an
    /// aggregate's events share a partition, so they come in log order).
    fn index_event(&mut self, record: &Record, envelope: &Envelope, at: DateTime<Utc>) {
        let kind = envelope.event.aggregate_type();
        let id = envelope.aggregate_id();
        let version = self.versions.entry((kind, id.clone())).or_insert(0);
        *version += 1;
        let appended = record.appended_at_ms.and_then(DateTime::from_timestamp_millis);
        let row = &mut self.index;
        row.text(kind).text(&id).value(&*version).value(&record.partition).value(&record.offset);
        row.value(&envelope.event_id).text(envelope.event_type().as_str()).time(at);
        match appended {
            Some(appended) => row.time(appended),
            None => row.null(),
        };
        row.jsonb(&envelope.event.data_json());
        row.end();
    }

    /// Sends the event index rows folded since the last call.
    pub async fn send_streamed(&mut self, sink: &Writers, schema: &str) -> Result<(), Refused> {
        sink.send(format!("{schema}.event_index"), INDEX, self.index.take()).await
    }

    /// Writes the folded tables, with their documents, into `schema` (the event index is streamed
    /// as the log is read: `send_streamed`).
    pub async fn write(mut self, sink: &Writers, schema: &str) -> Result<(), Refused> {
        self.write_orders(sink, schema).await?;
        self.write_users(sink, schema).await?;
        let payments = std::mem::take(&mut self.payments);
        let mut rows = Chunked::new(
            sink,
            format!("{schema}.payments"),
            "payment_id, order_id, amount, currency, payment_method, status, settled_at, last_event_id",
        );
        for (id, p) in payments {
            let row = rows.row();
            row.value(&id).value(&p.order_id).value(&p.amount).text(p.currency).text(&p.method);
            row.text(p.status).time(p.settled_at).value(&p.last_event_id);
            rows.end().await?;
        }
        rows.finish().await?;
        let mut rows = Chunked::new(
            sink,
            format!("{schema}.inventory"),
            "sku, quantity, updated_at, last_event_id, version",
        );
        for (sku, s) in std::mem::take(&mut self.stock) {
            rows.row()
                .text(&sku)
                .value(&s.quantity)
                .time(s.updated_at)
                .value(&s.last_event_id)
                .value(&s.version);
            rows.end().await?;
        }
        rows.finish().await?;
        Ok(())
    }

    /// Orders with their items and documents (each with its latest payment).
    async fn write_orders(&self, sink: &Writers, schema: &str) -> Result<(), Refused> {
        let mut latest_payment: HashMap<Uuid, (&Uuid, &Payment)> = HashMap::new();
        for (id, payment) in &self.payments {
            let latest = latest_payment.entry(payment.order_id).or_insert((id, payment));
            if (payment.settled_at, id) > (latest.1.settled_at, latest.0) {
                *latest = (id, payment);
            }
        }
        let mut rows = Chunked::new(
            sink,
            format!("{schema}.orders"),
            "order_id, user_id, currency, total_amount, status, placed_at, updated_at, last_event_id, document, document_etag",
        );
        let mut items = CopyRows::new();
        for (id, o) in &self.orders {
            let payment = latest_payment.get(id).map(|(payment_id, p)| documents::Payment {
                payment_id: **payment_id,
                amount: p.amount.to_string(),
                currency: p.currency.to_owned(),
                payment_method: p.method.clone(),
                status: p.status.to_owned(),
                settled_at: p.settled_at,
            });
            let document = documents::Order {
                order_id: *id,
                user_id: o.user_id,
                currency: o.currency.to_owned(),
                total_amount: o.total.to_string(),
                status: status(o.paid).to_owned(),
                items: o
                    .items
                    .iter()
                    .map(|(sku, quantity, price)| Item {
                        sku: sku.clone(),
                        quantity: *quantity,
                        price: price.to_string(),
                    })
                    .collect(),
                placed_at: o.placed_at,
                updated_at: o.updated_at,
                version: 1 + i64::from(payment.is_some()),
                payment,
            };
            let tagged = document.tagged().map_err(Refused::encoding)?;
            let row = rows.row();
            row.value(&id).value(&o.user_id).text(o.currency).value(&o.total).text(status(o.paid));
            row.time(o.placed_at)
                .time(o.updated_at)
                .value(&o.last_event_id)
                .text(&tagged.body)
                .text(&tagged.etag);
            rows.end().await?;
            for (line_no, (sku, quantity, price)) in o.items.iter().enumerate() {
                let line_no = i32::try_from(line_no).unwrap_or(i32::MAX);
                items.value(&id).value(&line_no).text(sku).value(&quantity).value(&price);
                items.end();
            }
            if items.rows() >= CHUNK_ROWS {
                sink.send(format!("{schema}.order_items"), ITEMS, items.take()).await?;
            }
        }
        rows.finish().await?;
        sink.send(format!("{schema}.order_items"), ITEMS, items).await?;
        Ok(())
    }

    /// Users with their figures and documents (their most recent orders in them).
    async fn write_users(&self, sink: &Writers, schema: &str) -> Result<(), Refused> {
        let mut orders_of: HashMap<Uuid, Vec<(&Uuid, &Order)>> = HashMap::new();
        for (id, order) in &self.orders {
            orders_of.entry(order.user_id).or_default().push((id, order));
        }
        let mut rows = Chunked::new(
            sink,
            format!("{schema}.users"),
            "user_id, email, first_name, last_name, created_at, updated_at, last_event_id, order_count, total_spent, document, document_etag",
        );
        for (id, u) in &self.users {
            let mut orders = orders_of.remove(id).unwrap_or_default();
            let mut spent: BTreeMap<&str, Decimal> = BTreeMap::new();
            for (_, order) in orders.iter().filter(|(_, o)| o.paid) {
                let sum = spent.entry(order.currency).or_insert(Decimal::ZERO);
                *sum = sum.checked_add(order.total).ok_or(Refused::Overflow)?;
            }
            orders.sort_by(|a, b| (b.1.placed_at, b.0).cmp(&(a.1.placed_at, a.0)));
            let limit = usize::try_from(documents::STORED_ORDERS_LIMIT).unwrap_or(usize::MAX);
            let total_spent: BTreeMap<String, String> =
                spent.into_iter().map(|(currency, sum)| (currency.to_owned(), sum.to_string())).collect();
            let document = documents::User {
                user_id: *id,
                email: u.email.clone(),
                first_name: u.first_name.clone(),
                last_name: u.last_name.clone(),
                created_at: u.created_at,
                updated_at: u.updated_at,
                order_count: orders.len() as i64,
                total_spent,
                orders: orders
                    .iter()
                    .take(limit)
                    .map(|(order_id, o)| OrderSummary {
                        order_id: **order_id,
                        total_amount: o.total.to_string(),
                        currency: o.currency.to_owned(),
                        status: status(o.paid).to_owned(),
                        placed_at: o.placed_at,
                    })
                    .collect(),
                version: 1,
            };
            let tagged = document.tagged().map_err(Refused::encoding)?;
            let figures = serde_json::to_string(&document.total_spent).map_err(Refused::encoding)?;
            let row = rows.row();
            row.value(&id).text(&u.email).text(&u.first_name).text(&u.last_name).time(u.created_at);
            row.time(u.updated_at).value(&u.last_event_id).value(&document.order_count).jsonb(&figures);
            row.text(&tagged.body).text(&tagged.etag);
            rows.end().await?;
        }
        rows.finish().await?;
        Ok(())
    }
}

const ITEMS: &str = "order_id, line_no, sku, quantity, price";
const INDEX: &str = "aggregate_type, aggregate_id, version, partition, log_offset, event_id, event_type, \
                     occurred_at, appended_at, data";

fn status(paid: bool) -> &'static str {
    if paid { "paid" } else { "awaiting_payment" }
}
