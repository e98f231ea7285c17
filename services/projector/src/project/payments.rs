//! The `payments` read model, and the paid status of orders.

use eventline_events::{Envelope, PaymentSettled, PaymentStatus};
use eventline_runtime::db;
use rust_decimal::Decimal;
use sqlx::{Postgres, Transaction};
use tracing::Instrument as _;
use uuid::Uuid;

/// Upserts payments from `PaymentSettled` events in log order and marks their orders paid (an
/// order applied later starts out paid; see `orders`).
pub(super) async fn apply_settled(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(&Envelope, &PaymentSettled)],
) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let rows = super::last_per_key(events, |p| p.payment_id);
    let status = |s: PaymentStatus| match s {
        PaymentStatus::Completed => "completed",
    };
    sqlx::query(
        "INSERT INTO payments (payment_id, order_id, amount, currency, payment_method, status, settled_at, last_event_id)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::numeric[], $4::text[], $5::text[], $6::text[],
                              $7::timestamptz[], $8::uuid[])
         ON CONFLICT (payment_id) DO UPDATE SET
             order_id = EXCLUDED.order_id,
             amount = EXCLUDED.amount,
             currency = EXCLUDED.currency,
             payment_method = EXCLUDED.payment_method,
             status = EXCLUDED.status,
             settled_at = EXCLUDED.settled_at,
             last_event_id = EXCLUDED.last_event_id",
    )
    .bind(rows.iter().map(|(_, p)| p.payment_id).collect::<Vec<Uuid>>())
    .bind(rows.iter().map(|(_, p)| p.order_id).collect::<Vec<Uuid>>())
    .bind(rows.iter().map(|(_, p)| p.amount.as_decimal()).collect::<Vec<Decimal>>())
    .bind(rows.iter().map(|(_, p)| p.currency.code()).collect::<Vec<&str>>())
    .bind(rows.iter().map(|(_, p)| p.payment_method.as_str()).collect::<Vec<&str>>())
    .bind(rows.iter().map(|(_, p)| status(p.status)).collect::<Vec<&str>>())
    .bind(rows.iter().map(|(e, _)| e.occurred_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(e, _)| e.event_id).collect::<Vec<Uuid>>())
    .execute(&mut **tx)
    .instrument(db::span("INSERT", "payments"))
    .await?;
    let orders: Vec<Uuid> = rows.iter().map(|(_, p)| p.order_id).collect();
    let paid_at: Vec<_> = rows.iter().map(|(e, _)| e.occurred_at).collect();
    sqlx::query(
        "UPDATE orders SET status = 'paid', updated_at = GREATEST(orders.updated_at, p.at)
         FROM (SELECT id, max(at) AS at FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, at) GROUP BY id) AS p
         WHERE orders.order_id = p.id",
    )
    .bind(&orders)
    .bind(&paid_at)
    .execute(&mut **tx)
    .instrument(db::span("UPDATE", "orders"))
    .await?;
    Ok(())
}
