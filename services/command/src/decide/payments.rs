//! `SettlePayment` → `PaymentSettled`, keyed by its order so it follows the order's events.

use eventline_events::{Amount, Event, PaymentSettled, PaymentStatus};
use eventline_runtime::problem::FieldError;
use serde::Deserialize;

use super::fields::{CurrencyCode, Payment, PaymentMethod, Unchecked};
use super::{Errors, IdGen, in_currency, optional_id, required_id};

/// Largest single payment (in currency units).
pub const MAX_PAYMENT: i64 = 1_000_000_000_000;

/// `POST /orders/{orderId}/payments` (the order id comes from the path).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettlePayment {
    /// Generated (UUIDv7) when absent.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub payment_id: Option<String>,
    #[schema(value_type = Payment, inline)]
    pub amount: Unchecked<Payment>,
    /// ISO 4217 code (the document lists the accepted ones).
    #[schema(value_type = CurrencyCode)]
    pub currency: Unchecked<CurrencyCode>,
    #[schema(value_type = PaymentMethod, inline)]
    pub payment_method: Unchecked<PaymentMethod>,
}

pub fn settle_payment(
    order_id: &str,
    command: SettlePayment,
    ids: &mut IdGen,
    mut errors: Errors,
) -> Result<Event, Vec<FieldError>> {
    let order_id = required_id(order_id, "orderId", &mut errors);
    let payment_id = optional_id(command.payment_id.as_deref(), "paymentId", ids, &mut errors);
    let currency = command.currency.check("currency", &mut errors).map(|CurrencyCode(currency)| currency);
    let amount = command.amount.check("amount", &mut errors).map_or(Amount::ZERO, |Payment(amount)| amount);
    let amount = in_currency(amount, currency, "amount", &mut errors);
    let payment_method = command.payment_method.check("paymentMethod", &mut errors);
    let (Some(currency), Some(payment_method)) = (currency, payment_method) else {
        return Err(errors.into_list());
    };
    errors.finish(|| {
        Event::PaymentSettled(PaymentSettled {
            payment_id,
            order_id,
            amount,
            currency,
            payment_method: payment_method.into_string(),
            status: PaymentStatus::Completed,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::test_support::fields;

    const ORDER: &str = "650e8400-e29b-41d4-a716-446655440000";

    fn payment(amount: &str, currency: &str, method: &str) -> SettlePayment {
        SettlePayment {
            payment_id: None,
            amount: amount.into(),
            currency: currency.into(),
            payment_method: method.into(),
        }
    }

    fn decide(order_id: &str, command: SettlePayment) -> Result<Event, Vec<FieldError>> {
        settle_payment(order_id, command, &mut IdGen::random(), Errors::default())
    }

    #[test]
    fn a_valid_payment_is_settled_and_keyed_by_its_order() {
        let Ok(event) = decide(ORDER, payment("320.9", "USD", "credit_card")) else { panic!() };
        assert_eq!(event.aggregate_id(), ORDER);
        let Event::PaymentSettled(paid) = event else { panic!() };
        assert_eq!(paid.amount.to_string(), "320.90");
        assert_eq!(paid.status, PaymentStatus::Completed);
        assert_eq!(paid.payment_id.get_version_num(), 7);
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let mut bad = payment("0", "XXX", "Credit Card");
        bad.payment_id = Some("p-1".into());
        assert_eq!(
            fields(decide("order-1", bad)),
            ["orderId", "paymentId", "currency", "amount", "paymentMethod"]
        );
        assert_eq!(fields(decide(ORDER, payment("-5", "USD", "card"))), ["amount"]);
        assert_eq!(fields(decide(ORDER, payment("1.234", "USD", "card"))), ["amount"]);
        assert!(decide(ORDER, payment("1.234", "KWD", "card")).is_ok(), "KWD has three fraction digits");
        let too_much = (MAX_PAYMENT + 1).to_string();
        assert_eq!(fields(decide(ORDER, payment(&too_much, "USD", "card"))), ["amount"]);
        assert_eq!(fields(decide(ORDER, payment("1", "USD", &"m".repeat(33)))), ["paymentMethod"]);
        assert_eq!(fields(decide(ORDER, payment("1", "USD", ""))), ["paymentMethod"]);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// In US dollars a payment is settled exactly when the amount is above zero, within the
        /// limit and written with at most two fraction digits (`1.500` is refused, like `1.501`),
        /// and the method matches its pattern; the amount is kept to the cent.
        /// Otherwise the errors name only the payment's fields.
        #[test]
        fn a_payment_is_settled_exactly_when_every_rule_holds(
            mantissa in prop_oneof![-10_i64..=10, any::<i64>(), 1_i64..=MAX_PAYMENT * 100 + 2],
            scale in 0_u32..=4,
            method in prop_oneof![Just("credit_card".to_owned()), "[a-z][a-z0-9_]{0,33}", any::<String>()],
        ) {
            let amount = Decimal::new(mantissa, scale);
            let command = SettlePayment {
                payment_id: None, amount: amount.to_string().into(), currency: "USD".into(), payment_method: method.as_str().into(),
            };
            let method_ok = method.len() <= 32
                && method.starts_with(|c: char| c.is_ascii_lowercase())
                && method.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            let amount_ok = amount > Decimal::ZERO
                && amount <= Decimal::from(MAX_PAYMENT)
                && amount.scale() <= 2;
            match settle_payment("650e8400-e29b-41d4-a716-446655440000", command, &mut IdGen::random(), Errors::default()) {
                Ok(Event::PaymentSettled(paid)) => {
                    prop_assert!(method_ok && amount_ok);
                    prop_assert_eq!(paid.amount.as_decimal(), amount);
                    prop_assert_eq!(paid.amount.fraction_digits(), 2);
                    prop_assert_eq!(paid.payment_method, method);
                }
                Ok(other) => prop_assert!(false, "unexpected event {:?}", other),
                Err(errors) => {
                    prop_assert!(!(method_ok && amount_ok), "refused a valid payment: {:?}", errors);
                    for error in errors {
                        prop_assert!(["amount", "paymentMethod"].contains(&error.field.as_str()), "{:?}", error);
                    }
                }
            }
        }
    }
}
