//! The orders-by-status projection folded in memory, event by event, with the rules of
//! `project/orders_by_status.rs`.

use foldhash::HashMap;

use chrono::{DateTime, Utc};
use eventline_events::{Envelope, Event};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::copy::{Chunked, Writers, micros};
use super::refused::Refused;

#[derive(Default)]
struct Row {
    /// From the placement (none while only a payment was seen).
    placed: Option<Placed>,
    paid_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
}

struct Placed {
    user_id: Uuid,
    currency: &'static str,
    total: Decimal,
    placed_at: DateTime<Utc>,
}

/// Each order's row as the events so far leave it.
#[derive(Default)]
pub struct OrdersByStatusFold {
    orders: HashMap<Uuid, Row>,
}

impl OrdersByStatusFold {
    /// Keys held in memory.
    pub fn entries(&self) -> usize {
        self.orders.len()
    }

    /// Folds one event applied for the first time (placements and payments; others change
    /// nothing).
    pub fn apply(&mut self, envelope: &Envelope) {
        let at = micros(envelope.occurred_at);
        let (order_id, placed) = match &envelope.event {
            Event::OrderPlaced(e) => (e.order_id, Some(e)),
            Event::PaymentSettled(e) => (e.order_id, None),
            Event::UserCreated(_) | Event::InventoryAdjusted(_) => return,
        };
        let row = self.orders.entry(order_id).or_default();
        row.updated_at = Some(row.updated_at.map_or(at, |u| u.max(at)));
        match placed {
            Some(e) => {
                let placed_at = row.placed.as_ref().map_or(at, |p| p.placed_at.min(at));
                row.placed = Some(Placed {
                    user_id: e.user_id,
                    currency: e.currency.code(),
                    total: e.total_amount.as_decimal(),
                    placed_at,
                });
            }
            None => row.paid_at = Some(row.paid_at.map_or(at, |p| p.min(at))),
        }
    }

    /// Writes the rows into `schema`.
    pub async fn write(self, sink: &Writers, schema: &str) -> Result<(), Refused> {
        let mut rows = Chunked::new(
            sink,
            format!("{schema}.orders_by_status"),
            "order_id, user_id, status, currency, total_amount, placed_at, paid_at, updated_at",
        );
        for (id, o) in self.orders {
            let row = rows.row();
            row.value(&id);
            match &o.placed {
                Some(p) => row.value(&p.user_id),
                None => row.null(),
            };
            row.text(if o.paid_at.is_some() { "paid" } else { "awaiting_payment" });
            match &o.placed {
                Some(p) => row.text(p.currency).value(&p.total).time(p.placed_at),
                None => row.null().null().null(),
            };
            match o.paid_at {
                Some(at) => row.time(at),
                None => row.null(),
            };
            match o.updated_at {
                Some(at) => row.time(at),
                None => row.null(),
            };
            rows.end().await?;
        }
        rows.finish().await
    }
}
