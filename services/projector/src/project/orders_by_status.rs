//! The `orders_by_status` projection: every order with its status, from `OrderPlaced` and
//! `PaymentSettled`, in either order (a payment applied first leaves a row that waits for its
//! order's fields, already paid).

use eventline_events::{Envelope, Event, OrderPlaced, PaymentSettled};
use eventline_runtime::db;
use rust_decimal::Decimal;
use sqlx::{Postgres, Transaction};
use tracing::Instrument as _;
use uuid::Uuid;

use super::Positioned;

pub(super) async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    events: &[&Positioned<'_>],
) -> sqlx::Result<()> {
    let (mut placed, mut paid) = (Vec::new(), Vec::new());
    for event in events {
        let envelope: &Envelope = &event.envelope;
        match &envelope.event {
            Event::OrderPlaced(order) => placed.push((envelope, order)),
            Event::PaymentSettled(payment) => paid.push((envelope, payment)),
            Event::UserCreated(_) | Event::InventoryAdjusted(_) => {}
        }
    }
    // Orders first, so a payment in the same batch as its order finds it.
    apply_placed(tx, &placed).await?;
    apply_paid(tx, &paid).await
}

/// An order placed (again: the last placement in log order wins, its first time is kept), paid
/// already if its payment came first.
async fn apply_placed(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(&Envelope, &OrderPlaced)],
) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let rows = super::last_per_key(events, |o| o.order_id);
    let times = super::placement_times(events);
    sqlx::query(
        "INSERT INTO orders_by_status
             (order_id, user_id, status, currency, total_amount, placed_at, updated_at)
         SELECT id, user_id, 'awaiting_payment', currency, total, placed, updated
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::timestamptz[], $6::timestamptz[])
              AS o(id, user_id, currency, total, placed, updated)
         ON CONFLICT (order_id) DO UPDATE SET
             user_id = EXCLUDED.user_id,
             currency = EXCLUDED.currency,
             total_amount = EXCLUDED.total_amount,
             placed_at = LEAST(orders_by_status.placed_at, EXCLUDED.placed_at),
             updated_at = GREATEST(orders_by_status.updated_at, EXCLUDED.updated_at)",
    )
    .bind(rows.iter().map(|(_, o)| o.order_id).collect::<Vec<Uuid>>())
    .bind(rows.iter().map(|(_, o)| o.user_id).collect::<Vec<Uuid>>())
    .bind(rows.iter().map(|(_, o)| o.currency.code()).collect::<Vec<&str>>())
    .bind(rows.iter().map(|(_, o)| o.total_amount.as_decimal()).collect::<Vec<Decimal>>())
    .bind(rows.iter().map(|(e, o)| times.get(&o.order_id).map_or(e.occurred_at, |t| t.0)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(e, o)| times.get(&o.order_id).map_or(e.occurred_at, |t| t.1)).collect::<Vec<_>>())
    .execute(&mut **tx)
    .instrument(db::span("INSERT", "orders_by_status"))
    .await
    .map(|_| ())
}

/// Orders paid: marked so, whether or not they were placed yet (the earliest payment's time is
/// kept). Every settled payment is a completed one (the only status the log records).
async fn apply_paid(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(&Envelope, &PaymentSettled)],
) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut first_paid = std::collections::HashMap::new();
    for &(envelope, payment) in events {
        let at = first_paid.entry(payment.order_id).or_insert(envelope.occurred_at);
        *at = (*at).min(envelope.occurred_at);
    }
    let (orders, times): (Vec<Uuid>, Vec<_>) = first_paid.into_iter().unzip();
    sqlx::query(
        "INSERT INTO orders_by_status (order_id, status, paid_at, updated_at)
         SELECT id, 'paid', at, at FROM UNNEST($1::uuid[], $2::timestamptz[]) AS p(id, at)
         ON CONFLICT (order_id) DO UPDATE SET
             status = 'paid',
             paid_at = LEAST(orders_by_status.paid_at, EXCLUDED.paid_at),
             updated_at = GREATEST(orders_by_status.updated_at, EXCLUDED.updated_at)",
    )
    .bind(&orders)
    .bind(&times)
    .execute(&mut **tx)
    .instrument(db::span("INSERT", "orders_by_status"))
    .await
    .map(|_| ())
}
