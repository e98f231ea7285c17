//! `AdjustInventory` → `InventoryAdjusted`.

use std::ops::RangeInclusive;

use eventline_events::{AdjustmentType, Event, InventoryAdjusted};
use eventline_runtime::problem::FieldError;
use serde::Deserialize;

use super::Errors;
use super::fields::{Field, Reason, Sku, Unchecked};

/// Largest quantity one adjustment may add, remove or set.
pub const MAX_STOCK_QUANTITY: i64 = 1_000_000_000;
/// Longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// The adjustment types as clients spell them.
pub const ADJUSTMENT_TYPES: [(&str, AdjustmentType); 3] =
    [("add", AdjustmentType::Add), ("remove", AdjustmentType::Remove), ("set", AdjustmentType::Set)];

/// The quantities an adjustment may carry: `add` and `remove` move the stock by at least one
/// unit; `set` may set it to zero.
pub fn quantity_range(kind: AdjustmentType) -> RangeInclusive<i64> {
    let minimum = if kind == AdjustmentType::Set { 0 } else { 1 };
    minimum..=MAX_STOCK_QUANTITY
}

// The OpenAPI document describes each adjustment type with a schema of its own
// (`http::openapi::split_adjustment_types`); the body is parsed as this one struct.
/// `POST /inventory/{sku}/adjustments` (the sku comes from the path).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdjustInventory {
    /// Units to add or remove (> 0), or the new stock level for `set` (≥ 0).
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(deserialize_with = "super::whole_number")]
    pub quantity: i64,
    /// `add`, `remove` or `set`.
    #[schema(pattern = "^(add|remove|set)$", example = "add")]
    pub adjustment_type: String,
    #[schema(value_type = Reason, inline)]
    pub reason: Unchecked<Reason>,
}

pub fn adjust_inventory(
    sku: &str,
    command: AdjustInventory,
    mut errors: Errors,
) -> Result<Event, Vec<FieldError>> {
    // The sku comes from the path, already text.
    let sku = Sku::parse(sku).map_err(|message| errors.add("sku", message)).ok();
    let adjustment_type =
        ADJUSTMENT_TYPES.iter().find(|(name, _)| *name == command.adjustment_type).map(|(_, kind)| *kind);
    if adjustment_type.is_none() {
        errors.add("adjustmentType", "must be one of add, remove, set");
    }
    // An unknown type is held to the narrowest range.
    let range = quantity_range(adjustment_type.unwrap_or(AdjustmentType::Add));
    if !range.contains(&command.quantity) {
        errors.add("quantity", format!("must be {} to {}", range.start(), range.end()));
    }
    let reason = command.reason.check("reason", &mut errors);
    let (Some(sku), Some(adjustment_type), Some(reason)) = (sku, adjustment_type, reason) else {
        return Err(errors.into_list());
    };
    errors.finish(|| {
        Event::InventoryAdjusted(InventoryAdjusted {
            sku: sku.into_string(),
            quantity: command.quantity,
            adjustment_type,
            reason: reason.into_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::test_support::fields;

    fn adjust(quantity: i64, kind: &str, reason: &str) -> AdjustInventory {
        AdjustInventory { quantity, adjustment_type: kind.into(), reason: reason.into() }
    }

    fn decide(sku: &str, command: AdjustInventory) -> Result<Event, Vec<FieldError>> {
        adjust_inventory(sku, command, Errors::default())
    }

    #[test]
    fn valid_adjustments() {
        let Ok(event) = decide("LAPTOP-001", adjust(10, "add", "restock")) else { panic!() };
        assert_eq!(event.aggregate_id(), "LAPTOP-001");
        assert!(decide("A", adjust(0, "set", "stocktake")).is_ok(), "set may go to zero");
        assert!(decide("A", adjust(MAX_STOCK_QUANTITY, "remove", "write-off")).is_ok());
    }

    #[test]
    fn every_invalid_field_is_reported() {
        assert_eq!(
            fields(decide("bad sku", adjust(0, "steal", ""))),
            ["sku", "adjustmentType", "quantity", "reason"]
        );
        assert_eq!(fields(decide("A", adjust(0, "add", "r"))), ["quantity"]);
        assert_eq!(fields(decide("A", adjust(-1, "set", "r"))), ["quantity"]);
        assert_eq!(fields(decide("A", adjust(MAX_STOCK_QUANTITY + 1, "set", "r"))), ["quantity"]);
        assert_eq!(fields(decide("A", adjust(1, "ADD", "r"))), ["adjustmentType"]);
        assert_eq!(fields(decide("A", adjust(1, "add", &"r".repeat(MAX_REASON_CHARS + 1)))), ["reason"]);
    }
}

#[cfg(test)]
mod properties {
    use eventline_events::is_valid_sku;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Whatever the input: an event exactly as sent when every rule holds (sku pattern, known
        /// adjustment type, quantity in range, reason printable), otherwise errors naming only the
        /// command's fields; never a panic.
        #[test]
        fn adjust_inventory_accepts_exactly_what_the_rules_allow(
            sku in prop_oneof![any::<String>(), "[A-Za-z0-9][A-Za-z0-9._-]{0,70}"],
            kind in prop_oneof![Just("add".to_owned()), Just("remove".to_owned()), Just("set".to_owned()), any::<String>()],
            quantity in prop_oneof![any::<i64>(), -2_i64..=MAX_STOCK_QUANTITY + 2],
            reason in prop_oneof![any::<String>(), "\\PC{1,250}"],
        ) {
            let command = AdjustInventory { quantity, adjustment_type: kind.clone(), reason: reason.as_str().into() };
            let minimum = if kind == "set" { 0 } else { 1 };
            let allowed = is_valid_sku(&sku)
                && ["add", "remove", "set"].contains(&kind.as_str())
                && (minimum..=MAX_STOCK_QUANTITY).contains(&quantity)
                && !reason.trim().is_empty()
                && reason.chars().count() <= MAX_REASON_CHARS
                && !reason.chars().any(char::is_control);
            match adjust_inventory(&sku, command, Errors::default()) {
                Ok(Event::InventoryAdjusted(event)) => {
                    prop_assert!(allowed);
                    prop_assert_eq!((event.sku, event.quantity, event.reason), (sku, quantity, reason));
                }
                Ok(other) => prop_assert!(false, "unexpected event {:?}", other),
                Err(errors) => {
                    prop_assert!(!allowed && !errors.is_empty());
                    for error in errors {
                        let known = ["sku", "adjustmentType", "quantity", "reason"];
                        prop_assert!(known.contains(&error.field.as_str()), "{:?}", error);
                    }
                }
            }
        }
    }
}
