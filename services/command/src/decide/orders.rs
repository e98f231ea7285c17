//! `PlaceOrder` → `OrderPlaced`; the total is computed here, never taken from the client.

use eventline_events::{Amount, Event, OrderItem, OrderPlaced};
use eventline_runtime::problem::FieldError;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::fields::{CurrencyCode, Price, Sku, Unchecked};
use super::{Errors, IdGen, in_currency, optional_id, required_id};

/// Most lines in one order.
pub const MAX_ITEMS: usize = 100;
/// Largest quantity of one line.
pub const MAX_ITEM_QUANTITY: i64 = 10_000;
/// Largest unit price (in currency units).
pub const MAX_UNIT_PRICE: i64 = 1_000_000_000;

/// `POST /orders`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaceOrder {
    /// Generated (UUIDv7) when absent.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub order_id: Option<String>,
    #[schema(value_type = uuid::Uuid)]
    pub user_id: String,
    /// ISO 4217 code (the document lists the accepted ones).
    #[schema(value_type = CurrencyCode)]
    pub currency: Unchecked<CurrencyCode>,
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<OrderLine>,
}

/// One line of `PlaceOrder`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderLine {
    #[schema(value_type = Sku, inline)]
    pub sku: Unchecked<Sku>,
    #[schema(minimum = 1, maximum = 10000)]
    #[serde(deserialize_with = "super::whole_number")]
    pub quantity: i64,
    #[schema(value_type = Price, inline)]
    pub price: Unchecked<Price>,
}

pub fn place_order(
    command: PlaceOrder,
    ids: &mut IdGen,
    mut errors: Errors,
) -> Result<Event, Vec<FieldError>> {
    let order_id = optional_id(command.order_id.as_deref(), "orderId", ids, &mut errors);
    let user_id = required_id(&command.user_id, "userId", &mut errors);
    let currency = command.currency.check("currency", &mut errors).map(|CurrencyCode(currency)| currency);
    if command.items.is_empty() || command.items.len() > MAX_ITEMS {
        errors.add("items", format!("must hold 1 to {MAX_ITEMS} items"));
    }
    let mut items = Vec::with_capacity(command.items.len());
    let mut total = Decimal::ZERO;
    for (i, line) in command.items.into_iter().enumerate() {
        let sku = line.sku.check(&format!("items[{i}].sku"), &mut errors);
        if !(1..=MAX_ITEM_QUANTITY).contains(&line.quantity) {
            errors.add(&format!("items[{i}].quantity"), format!("must be 1 to {MAX_ITEM_QUANTITY}"));
        }
        let field = format!("items[{i}].price");
        let price = line.price.check(&field, &mut errors).map_or(Amount::ZERO, |Price(amount)| amount);
        let price = in_currency(price, currency, &field, &mut errors);
        // Bounded above (10^4 × 10^9 × 100 lines), so this cannot overflow a Decimal.
        total += price.as_decimal() * Decimal::from(line.quantity.clamp(0, MAX_ITEM_QUANTITY));
        let sku = sku.map(Sku::into_string).unwrap_or_default();
        items.push(OrderItem { sku, quantity: u32::try_from(line.quantity).unwrap_or(0), price });
    }
    // An unknown currency was reported as an error above.
    let Some(currency) = currency else { return Err(errors.into_list()) };
    errors.finish(|| {
        total.rescale(currency.fraction_digits());
        Event::OrderPlaced(OrderPlaced {
            order_id,
            user_id,
            currency,
            items,
            total_amount: Amount::new(total),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::test_support::fields;

    fn line(sku: &str, quantity: i64, price: &str) -> OrderLine {
        OrderLine { sku: sku.into(), quantity, price: price.into() }
    }

    fn order(currency: &str, items: Vec<OrderLine>) -> PlaceOrder {
        PlaceOrder {
            order_id: None,
            user_id: "550e8400-e29b-41d4-a716-446655440000".into(),
            currency: currency.into(),
            items,
        }
    }

    fn decide(command: PlaceOrder) -> Result<Event, Vec<FieldError>> {
        place_order(command, &mut IdGen::random(), Errors::default())
    }

    #[test]
    fn the_total_is_computed_exactly_in_the_currency_scale() {
        let Ok(Event::OrderPlaced(placed)) =
            decide(order("USD", vec![line("LAPTOP-001", 1, "299.99"), line("MOUSE-002", 3, "0.1")]))
        else {
            panic!("expected OrderPlaced")
        };
        assert_eq!(placed.total_amount.to_string(), "300.29");
        assert_eq!(placed.items[1].price.to_string(), "0.10");
        assert_eq!(placed.order_id.get_version_num(), 7);
        let Ok(Event::OrderPlaced(yen)) = decide(order("JPY", vec![line("A", 2, "150")])) else { panic!() };
        assert_eq!(yen.total_amount.to_string(), "300");
    }

    #[test]
    fn free_items_are_allowed() {
        let Ok(Event::OrderPlaced(placed)) = decide(order("EUR", vec![line("GIFT", 1, "0")])) else {
            panic!()
        };
        assert_eq!(placed.total_amount.to_string(), "0.00");
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let mut bad = order("usd", vec![line("", 0, "-1"), line("OK", MAX_ITEM_QUANTITY + 1, "1.001")]);
        bad.user_id = "someone".into();
        bad.order_id = Some("123".into());
        assert_eq!(
            fields(decide(bad)),
            [
                "orderId",
                "userId",
                "currency",
                "items[0].sku",
                "items[0].quantity",
                "items[0].price",
                "items[1].quantity"
            ]
        );
        assert_eq!(fields(decide(order("USD", vec![]))), ["items"]);
        let many = (0..=MAX_ITEMS).map(|_| line("A", 1, "1")).collect();
        assert_eq!(fields(decide(order("USD", many))), ["items"]);
        assert_eq!(fields(decide(order("USD", vec![line("A", 1, "1.001")]))), ["items[0].price"]);
        assert_eq!(fields(decide(order("JPY", vec![line("A", 1, "1.5")]))), ["items[0].price"]);
        let too_dear = (MAX_UNIT_PRICE + 1).to_string();
        assert_eq!(fields(decide(order("USD", vec![line("A", 1, &too_dear)]))), ["items[0].price"]);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Prices with 0 to 4 fraction digits, zero and negative ones included.
    fn price() -> impl Strategy<Value = Decimal> {
        (-1_000_i64..=2_000_000_000_000, 0_u32..=4)
            .prop_map(|(mantissa, scale)| Decimal::new(mantissa, scale))
    }

    fn lines() -> impl Strategy<Value = Vec<(String, i64, Decimal)>> {
        let sku = prop_oneof![4 => "[A-Z][A-Z0-9-]{0,12}", 1 => any::<String>()];
        let quantity = prop_oneof![4 => 1..=MAX_ITEM_QUANTITY, 1 => any::<i64>()];
        prop::collection::vec((sku, quantity, price()), 0..=MAX_ITEMS + 2)
    }

    fn is_known_field(field: &str) -> bool {
        let item_field =
            field.strip_prefix("items[").and_then(|rest| rest.split_once("].")).is_some_and(|(i, name)| {
                i.parse::<usize>().is_ok() && ["sku", "quantity", "price"].contains(&name)
            });
        item_field || ["orderId", "userId", "currency", "items"].contains(&field)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Whatever the order: accepted, its lines are kept as sent and its total is the exact sum
        /// of price × quantity in the currency's scale; or refused, naming only the order's fields,
        /// and always refused when a line's quantity or the number of lines is out of range.
        #[test]
        fn an_accepted_order_totals_exactly_and_a_broken_rule_is_always_named(
            currency in prop_oneof![Just("USD"), Just("EUR"), Just("JPY"), Just("KWD"), Just("usd"), Just("XXX")],
            lines in lines(),
        ) {
            let command = PlaceOrder {
                order_id: None,
                user_id: "550e8400-e29b-41d4-a716-446655440000".into(),
                currency: currency.into(),
                items: lines.iter().map(|(sku, quantity, price)| OrderLine {
                    sku: sku.as_str().into(), quantity: *quantity, price: price.to_string().into(),
                }).collect(),
            };
            let count_ok = (1..=MAX_ITEMS).contains(&lines.len());
            let quantities_ok = lines.iter().all(|(_, quantity, _)| (1..=MAX_ITEM_QUANTITY).contains(quantity));
            match place_order(command, &mut IdGen::random(), Errors::default()) {
                Ok(Event::OrderPlaced(placed)) => {
                    prop_assert!(count_ok && quantities_ok);
                    // Quantities are in range here, so this sum cannot overflow.
                    let expected: Decimal = lines.iter().map(|(_, quantity, price)| *price * Decimal::from(*quantity)).sum();
                    prop_assert_eq!(placed.total_amount.as_decimal(), expected);
                    prop_assert_eq!(placed.total_amount.fraction_digits(), placed.currency.fraction_digits());
                    let kept: Vec<(String, i64, Decimal)> = placed.items.iter()
                        .map(|item| (item.sku.clone(), i64::from(item.quantity), item.price.as_decimal()))
                        .collect();
                    prop_assert_eq!(kept, lines);
                }
                Ok(other) => prop_assert!(false, "unexpected event {:?}", other),
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    for error in &errors {
                        prop_assert!(is_known_field(&error.field), "{:?}", error);
                    }
                    let named = |field: &str| errors.iter().any(|e| e.field == field);
                    prop_assert!(count_ok || named("items"));
                    for (i, (_, quantity, _)) in lines.iter().enumerate() {
                        let field = format!("items[{i}].quantity");
                        prop_assert!((1..=MAX_ITEM_QUANTITY).contains(quantity) || named(&field));
                    }
                }
            }
        }
    }
}
