//! The `inventory` read model: stock per sku. Adjustments are deltas, so this is where a double
//! effect would show first; only events claimed as fresh reach it.

use eventline_runtime::db;
use std::collections::HashMap;
use tracing::Instrument as _;

use chrono::{DateTime, Utc};
use eventline_events::{AdjustmentType, Envelope, InventoryAdjusted};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// What a batch does to one sku, folded in log order (a sku's events share a partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    /// `true` when a `set` happened in the batch: `quantity` is then the new stock, else a delta.
    absolute: bool,
    quantity: i64,
    /// Adjustments in the batch, added to the sku's version.
    count: i64,
    at: DateTime<Utc>,
    event_id: Uuid,
}

fn fold<'a>(events: &[(&'a Envelope, &'a InventoryAdjusted)]) -> HashMap<&'a str, Net> {
    let mut net: HashMap<&str, Net> = HashMap::new();
    for (envelope, adjustment) in events {
        let entry = net.entry(adjustment.sku.as_str()).or_insert(Net {
            absolute: false,
            quantity: 0,
            count: 0,
            at: envelope.occurred_at,
            event_id: envelope.event_id,
        });
        // After a set the quantity is the stock; before one, a delta: the same step serves both.
        entry.absolute |= adjustment.adjustment_type == AdjustmentType::Set;
        entry.quantity = eventline_read_models::fold::adjust(entry.quantity, adjustment);
        entry.count += 1;
        entry.at = envelope.occurred_at;
        entry.event_id = envelope.event_id;
    }
    net
}

pub(super) async fn apply_adjusted(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(&Envelope, &InventoryAdjusted)],
) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let net = fold(events);
    let (absolute, relative): (Vec<_>, Vec<_>) = net.iter().partition(|(_, n)| n.absolute);
    upsert(tx, &absolute, "EXCLUDED.quantity").await?;
    upsert(tx, &relative, "inventory.quantity + EXCLUDED.quantity").await
}

/// Upserts `rows`, setting an existing row's quantity to `new_quantity` (an SQL expression over
/// `inventory` and `EXCLUDED`); a new row starts from the net quantity (stock 0 plus the delta).
async fn upsert(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(&&str, &Net)],
    new_quantity: &str,
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO inventory (sku, quantity, updated_at, last_event_id, version)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::timestamptz[], $4::uuid[], $5::bigint[])
         ON CONFLICT (sku) DO UPDATE SET
             quantity = {new_quantity},
             version = inventory.version + EXCLUDED.version,
             updated_at = EXCLUDED.updated_at,
             last_event_id = EXCLUDED.last_event_id"
    ))
    .bind(rows.iter().map(|(sku, _)| **sku).collect::<Vec<&str>>())
    .bind(rows.iter().map(|(_, n)| n.quantity).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, n)| n.at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, n)| n.event_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, n)| n.count).collect::<Vec<_>>())
    .execute(&mut **tx)
    .instrument(db::span("INSERT", "inventory"))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventline_events::Event;

    fn adjustment(sku: &str, kind: AdjustmentType, quantity: i64) -> Envelope {
        Envelope::new(Event::InventoryAdjusted(InventoryAdjusted {
            sku: sku.into(),
            quantity,
            adjustment_type: kind,
            reason: "test".into(),
        }))
    }

    fn folded(envelopes: &[Envelope]) -> HashMap<String, (bool, i64)> {
        let events: Vec<_> = envelopes
            .iter()
            .map(|e| match &e.event {
                Event::InventoryAdjusted(a) => (e, a),
                _ => unreachable!(),
            })
            .collect();
        fold(&events).into_iter().map(|(sku, n)| (sku.to_owned(), (n.absolute, n.quantity))).collect()
    }

    #[test]
    fn deltas_add_up_and_a_set_makes_the_rest_relative_to_it() {
        use AdjustmentType::*;
        let events = [
            adjustment("A", Add, 5),
            adjustment("B", Remove, 2),
            adjustment("A", Remove, 1),
            adjustment("B", Set, 10),
            adjustment("B", Add, 3),
        ];
        let net = folded(&events);
        assert_eq!(net["A"], (false, 4), "a delta of +4");
        assert_eq!(net["B"], (true, 13), "the remove before the set is overwritten by it");
    }
}
