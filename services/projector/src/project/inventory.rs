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
    change: Change,
    /// Adjustments in the batch, added to the sku's version.
    count: i64,
    at: DateTime<Utc>,
    event_id: Uuid,
}

/// A batch's effect on a sku's stock: from the stock before it (unknown here) to the stock after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// A `set` happened: the stock after the batch, whatever it was before.
    Absolute(i64),
    /// Only adds and removes: the stock after is `ClampAdd::apply` of the stock before.
    Relative(ClampAdd),
}

/// `x ↦ min(max(x + delta, low), high)`: a run of saturating adds and removes, composed. The
/// stock saturates at the ends of `i64` at every step (`fold::adjust`), and saturation is not
/// associative (`MAX + 1 - 1` is `MAX - 1` one step at a time, `MAX` as a net delta of 0); these
/// functions are closed under composition, so a batch gives the same stock as the events one by
/// one, however the log is split into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClampAdd {
    delta: i128,
    low: i64,
    high: i64,
}

impl ClampAdd {
    const IDENTITY: ClampAdd = ClampAdd { delta: 0, low: i64::MIN, high: i64::MAX };

    /// This, then a saturating add of `quantity` (negative for a remove).
    fn then_add(self, quantity: i128) -> ClampAdd {
        ClampAdd {
            delta: self.delta + quantity,
            low: saturate(i128::from(self.low) + quantity),
            high: saturate(i128::from(self.high) + quantity),
        }
    }

    fn apply(self, stock: i64) -> i64 {
        saturate((i128::from(stock) + self.delta).clamp(i128::from(self.low), i128::from(self.high)))
    }

    /// The net delta, when this is a plain saturating add of it (no step in between saturated
    /// in a way the final saturation would not): what the set-based upsert applies. Otherwise
    /// (stock near the ends of `i64`) the rare exact path does.
    fn as_saturating_add(self) -> Option<i64> {
        let delta = i64::try_from(self.delta).ok()?;
        let low_plain = i128::from(self.low) <= (i128::from(i64::MIN) + self.delta).max(i128::from(i64::MIN));
        let high_plain =
            i128::from(self.high) >= (i128::from(i64::MAX) + self.delta).min(i128::from(i64::MAX));
        (low_plain && high_plain).then_some(delta)
    }
}

/// A batch's net delta as a decimal (it can pass `i64`: 96 bits hold the sum of billions of them).
fn delta_as_decimal(delta: i128) -> rust_decimal::Decimal {
    rust_decimal::Decimal::try_from_i128_with_scale(delta, 0).unwrap_or(if delta < 0 {
        rust_decimal::Decimal::MIN
    } else {
        rust_decimal::Decimal::MAX
    })
}

fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

fn fold<'a>(events: &[(&'a Envelope, &'a InventoryAdjusted)]) -> HashMap<&'a str, Net> {
    let mut net: HashMap<&str, Net> = HashMap::new();
    for (envelope, adjustment) in events {
        let entry = net.entry(adjustment.sku.as_str()).or_insert(Net {
            change: Change::Relative(ClampAdd::IDENTITY),
            count: 0,
            at: envelope.occurred_at,
            event_id: envelope.event_id,
        });
        let quantity = i128::from(adjustment.quantity);
        entry.change = match (entry.change, adjustment.adjustment_type) {
            (_, AdjustmentType::Set) => Change::Absolute(adjustment.quantity),
            // After a set the stock is known: the fold's own step.
            (Change::Absolute(stock), _) => {
                Change::Absolute(eventline_read_models::fold::adjust(stock, adjustment))
            }
            (Change::Relative(f), AdjustmentType::Add) => Change::Relative(f.then_add(quantity)),
            (Change::Relative(f), AdjustmentType::Remove) => Change::Relative(f.then_add(-quantity)),
        };
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
    let (mut absolute, mut relative, mut exact) = (Vec::new(), Vec::new(), Vec::new());
    for (sku, n) in &net {
        match n.change {
            Change::Absolute(stock) => absolute.push((*sku, stock, n)),
            Change::Relative(f) => match f.as_saturating_add() {
                Some(delta) => relative.push((*sku, delta, n)),
                None => exact.push((*sku, f, n)),
            },
        }
    }
    upsert(tx, &absolute, "EXCLUDED.quantity").await?;
    // A new sku starts from stock 0 plus the delta; an existing one adds it, saturating.
    upsert(
        tx,
        &relative,
        "GREATEST(LEAST(inventory.quantity::numeric + EXCLUDED.quantity, 9223372036854775807), -9223372036854775808)::bigint",
    )
    .await?;
    apply_exactly(tx, &exact).await
}

/// Upserts `rows` (sku, quantity, what the batch did), setting an existing row's quantity to
/// `new_quantity` (an SQL expression over `inventory` and `EXCLUDED`); a new row takes the
/// quantity as it is.
async fn upsert(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(&str, i64, &Net)],
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
    .bind(rows.iter().map(|(sku, _, _)| *sku).collect::<Vec<&str>>())
    .bind(rows.iter().map(|(_, quantity, _)| *quantity).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, _, n)| n.at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, _, n)| n.event_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, _, n)| n.count).collect::<Vec<_>>())
    .execute(&mut **tx)
    .instrument(db::span("INSERT", "inventory"))
    .await?;
    Ok(())
}

/// The rare skus whose stock saturated partway through the batch: a new row starts from the
/// function applied to 0, an existing one gets it applied to its stock.
async fn apply_exactly(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(&str, ClampAdd, &Net)],
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let deltas: Vec<rust_decimal::Decimal> = rows.iter().map(|(_, f, _)| delta_as_decimal(f.delta)).collect();
    sqlx::query(
        "WITH u AS (SELECT * FROM UNNEST($1::text[], $2::numeric[], $3::bigint[], $4::bigint[], $5::bigint[],
                                        $6::timestamptz[], $7::uuid[], $8::bigint[])
                    AS u(sku, delta, low, high, initial, at, event_id, count)),
              inserted AS (
                  INSERT INTO inventory (sku, quantity, updated_at, last_event_id, version)
                  SELECT sku, initial, at, event_id, count FROM u
                  ON CONFLICT (sku) DO NOTHING RETURNING sku)
         UPDATE inventory SET quantity = LEAST(GREATEST(inventory.quantity::numeric + u.delta, u.low), u.high)::bigint,
                              version = inventory.version + u.count, updated_at = u.at, last_event_id = u.event_id
         FROM u WHERE inventory.sku = u.sku AND u.sku NOT IN (SELECT sku FROM inserted)",
    )
    .bind(rows.iter().map(|(sku, _, _)| *sku).collect::<Vec<&str>>())
    .bind(&deltas)
    .bind(rows.iter().map(|(_, f, _)| f.low).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, f, _)| f.high).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, f, _)| f.apply(0)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, _, n)| n.at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, _, n)| n.event_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, _, n)| n.count).collect::<Vec<_>>())
    .execute(&mut **tx)
    .instrument(db::span("UPDATE", "inventory"))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventline_events::Event;
    use proptest::prelude::*;

    fn adjustment(sku: &str, kind: AdjustmentType, quantity: i64) -> Envelope {
        Envelope::new(Event::InventoryAdjusted(InventoryAdjusted {
            sku: sku.into(),
            quantity,
            adjustment_type: kind,
            reason: "test".into(),
        }))
    }

    fn adjustments(envelopes: &[Envelope]) -> Vec<(&Envelope, &InventoryAdjusted)> {
        envelopes
            .iter()
            .map(|e| match &e.event {
                Event::InventoryAdjusted(a) => (e, a),
                _ => unreachable!(),
            })
            .collect()
    }

    /// The stock after the batch from `before`, as the upserts compute it.
    fn after(net: &Net, before: Option<i64>) -> i64 {
        match (net.change, before) {
            (Change::Absolute(stock), _) => stock,
            (Change::Relative(f), None) => f.apply(0),
            (Change::Relative(f), Some(stock)) => match f.as_saturating_add() {
                Some(delta) => saturate(i128::from(stock) + i128::from(delta)),
                None => f.apply(stock),
            },
        }
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
        let net = fold(&adjustments(&events));
        assert_eq!(net["A"].change, Change::Relative(ClampAdd::IDENTITY.then_add(5).then_add(-1)));
        // From MAX: +5 saturates at MAX, then -1 gives MAX - 1.
        assert_eq!(
            net["A"].change,
            Change::Relative(ClampAdd { delta: 4, low: i64::MIN + 4, high: i64::MAX - 1 })
        );
        assert_eq!(after(&net["A"], Some(10)), 14);
        assert_eq!(net["B"].change, Change::Absolute(13), "the remove before the set is overwritten by it");
    }

    #[test]
    fn saturation_partway_through_a_batch_is_kept() {
        use AdjustmentType::*;
        let events = [adjustment("A", Add, 1), adjustment("A", Remove, 1)];
        let net = fold(&adjustments(&events));
        // One at a time from MAX: MAX + 1 saturates at MAX, then - 1 gives MAX - 1.
        assert_eq!(after(&net["A"], Some(i64::MAX)), i64::MAX - 1);
        assert_eq!(after(&net["A"], Some(7)), 7);
    }

    fn quantity() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(i64::MAX),
            Just(i64::MIN),
            Just(i64::MAX - 1),
            Just(i64::MIN + 1),
            -5i64..5,
            any::<i64>()
        ]
    }

    fn step() -> impl Strategy<Value = (AdjustmentType, i64)> {
        (
            prop_oneof![Just(AdjustmentType::Add), Just(AdjustmentType::Remove), Just(AdjustmentType::Set)],
            quantity(),
        )
    }

    proptest! {
        /// Any run of adjustments, split into batches anywhere, from any stock (or none), gives
        /// the stock the fold gives one event at a time.
        #[test]
        fn batches_give_the_stock_of_the_events_one_by_one(
            steps in proptest::collection::vec(step(), 1..12),
            start in proptest::option::of(quantity()),
            cuts in proptest::collection::vec(any::<bool>(), 12),
        ) {
            let events: Vec<Envelope> = steps.iter().map(|(kind, q)| adjustment("A", *kind, *q)).collect();
            let mut one_by_one = start;
            for (_, adjustment) in adjustments(&events) {
                one_by_one = Some(eventline_read_models::fold::adjust(one_by_one.unwrap_or(0), adjustment));
            }
            let mut stock = start;
            let mut batch = Vec::new();
            for (i, event) in events.iter().enumerate() {
                batch.push(event.clone());
                if cuts[i] || i == events.len() - 1 {
                    let net = fold(&adjustments(&batch));
                    stock = Some(after(&net["A"], stock));
                    batch.clear();
                }
            }
            prop_assert_eq!(stock, one_by_one);
        }
    }
}
