//! The `orders` and `order_items` read models.

use eventline_events::{Envelope, OrderPlaced};
use eventline_runtime::db;
use rust_decimal::Decimal;
use sqlx::{Postgres, Transaction};
use tracing::Instrument as _;
use uuid::Uuid;

/// Upserts orders from `OrderPlaced` events given in log order: the last one per order gives its
/// terms, `placed_at` is the earliest placement and `updated_at` the latest, within a batch as
/// across batches (an order's events share a partition, so every replay sees the same order). An order whose payment
/// was applied first starts out paid. Returns the users whose figures changed: the owners of the
/// orders, before and after.
pub(super) async fn apply_placed(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(&Envelope, &OrderPlaced)],
) -> sqlx::Result<Vec<Uuid>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let rows = super::last_per_key(events, |o| o.order_id);
    let ids: Vec<Uuid> = rows.iter().map(|(_, o)| o.order_id).collect();
    let users: Vec<Uuid> = rows.iter().map(|(_, o)| o.user_id).collect();
    let currencies: Vec<&str> = rows.iter().map(|(_, o)| o.currency.code()).collect();
    let totals: Vec<Decimal> = rows.iter().map(|(_, o)| o.total_amount.as_decimal()).collect();
    let times = super::placement_times(events);
    let placed: Vec<_> =
        rows.iter().map(|(e, o)| times.get(&o.order_id).map_or(e.occurred_at, |t| t.0)).collect();
    let updated: Vec<_> =
        rows.iter().map(|(e, o)| times.get(&o.order_id).map_or(e.occurred_at, |t| t.1)).collect();
    let event_ids: Vec<Uuid> = rows.iter().map(|(e, _)| e.event_id).collect();
    // A statement's CTEs see the table as it was before the statement: `previous` holds the owners
    // of orders placed again (only logs written before the decision rules can hold those).
    let previous: Vec<Uuid> = sqlx::query_scalar(
        "WITH previous AS (SELECT user_id FROM orders WHERE order_id = ANY($1)),
              upserted AS (
         INSERT INTO orders (order_id, user_id, currency, total_amount, status, placed_at, updated_at, last_event_id)
         SELECT o.id, o.user_id, o.currency, o.total,
                CASE WHEN EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.id) THEN 'paid' ELSE 'awaiting_payment' END,
                o.placed, o.updated, o.event_id
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::timestamptz[], $6::uuid[],
                     $7::timestamptz[])
              AS o(id, user_id, currency, total, placed, event_id, updated)
         ON CONFLICT (order_id) DO UPDATE SET
             user_id = EXCLUDED.user_id,
             currency = EXCLUDED.currency,
             total_amount = EXCLUDED.total_amount,
             placed_at = LEAST(orders.placed_at, EXCLUDED.placed_at),
             updated_at = GREATEST(orders.updated_at, EXCLUDED.updated_at),
             last_event_id = EXCLUDED.last_event_id
         RETURNING 1)
         SELECT DISTINCT user_id FROM previous",
    )
    .bind(&ids)
    .bind(&users)
    .bind(&currencies)
    .bind(&totals)
    .bind(&placed)
    .bind(&event_ids)
    .bind(&updated)
    .fetch_all(&mut **tx)
    .instrument(db::span("INSERT", "orders"))
    .await?;

    // Items are replaced as a whole: an order's lines are those of its latest OrderPlaced.
    sqlx::query("DELETE FROM order_items WHERE order_id = ANY($1)")
        .bind(&ids)
        .execute(&mut **tx)
        .instrument(db::span("DELETE", "order_items"))
        .await?;
    let lines: Vec<(Uuid, i32, &str, i32, Decimal)> = rows
        .iter()
        .flat_map(|(_, o)| {
            o.items.iter().enumerate().map(|(i, item)| {
                let line_no = i32::try_from(i).unwrap_or(i32::MAX);
                let quantity = i32::try_from(item.quantity).unwrap_or(i32::MAX);
                (o.order_id, line_no, item.sku.as_str(), quantity, item.price.as_decimal())
            })
        })
        .collect();
    sqlx::query(
        "INSERT INTO order_items (order_id, line_no, sku, quantity, price)
         SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::int[], $5::numeric[])",
    )
    .bind(lines.iter().map(|l| l.0).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.1).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.2).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.3).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.4).collect::<Vec<_>>())
    .execute(&mut **tx)
    .instrument(db::span("INSERT", "order_items"))
    .await?;
    Ok(users.into_iter().chain(previous).collect())
}
