//! Decisions: pure functions from a command to the event it produces, or every reason it is
//! invalid. No I/O here, so every rule is testable as given/when/then; a later issue adds aggregate
//! state as a further argument.
//!
//! Ids the client does not send come from an [`IdGen`]: random (UUIDv7) normally, derived from the
//! idempotency key when there is one, so that a retried request decides exactly the same event.

pub mod fields;
pub mod formats;
mod inventory;
mod orders;
mod payments;
mod users;

pub use inventory::{
    ADJUSTMENT_TYPES, AdjustInventory, MAX_REASON_CHARS, MAX_STOCK_QUANTITY, adjust_inventory, quantity_range,
};
pub use orders::{MAX_ITEM_QUANTITY, MAX_ITEMS, MAX_UNIT_PRICE, OrderLine, PlaceOrder, place_order};
pub use payments::{MAX_PAYMENT, SettlePayment, settle_payment};
pub use users::{CreateUser, MAX_EMAIL_CHARS, MAX_NAME_CHARS, create_user};

use eventline_events::{Amount, Currency};
use eventline_runtime::problem::FieldError;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Where generated ids come from.
#[derive(Debug, Clone)]
pub struct IdGen {
    seed: Option<[u8; 32]>,
    counter: u32,
}

impl IdGen {
    /// Fresh time-ordered ids (UUIDv7).
    pub fn random() -> Self {
        IdGen { seed: None, counter: 0 }
    }

    /// Ids that are a function of `seed` and the order they are asked for (UUIDv8 from SHA-256):
    /// the same request with the same idempotency key gets the same ids on every retry.
    pub fn derived(seed: [u8; 32]) -> Self {
        IdGen { seed: Some(seed), counter: 0 }
    }

    pub fn next_id(&mut self) -> Uuid {
        let Some(seed) = self.seed else {
            return Uuid::now_v7();
        };
        let digest = Sha256::new().chain_update(seed).chain_update(self.counter.to_be_bytes()).finalize();
        self.counter += 1;
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Uuid::new_v8(bytes)
    }
}

/// Collects the field errors of one command; `prefix` places them inside a batch.
#[derive(Debug, Default)]
pub struct Errors {
    prefix: String,
    list: Vec<FieldError>,
}

impl Errors {
    pub fn within(prefix: impl Into<String>) -> Self {
        Errors { prefix: prefix.into(), list: Vec::new() }
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.list.push(FieldError::new(format!("{}{field}", self.prefix), message));
    }

    pub fn into_list(self) -> Vec<FieldError> {
        self.list
    }

    /// `Ok(value)` when no error was added.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<FieldError>> {
        if self.list.is_empty() { Ok(value()) } else { Err(self.list) }
    }
}

/// A client-supplied id (must be a non-nil UUID) or a generated one.
pub(crate) fn optional_id(id: Option<&str>, field: &str, ids: &mut IdGen, errors: &mut Errors) -> Uuid {
    match id {
        None => ids.next_id(),
        Some(id) => required_id(id, field, errors),
    }
}

pub(crate) fn required_id(id: &str, field: &str, errors: &mut Errors) -> Uuid {
    // Only the hyphenated form (36 characters), as the document's `format: uuid` says; the parser
    // alone would also take the braced, URN and unhyphenated forms.
    match Uuid::try_parse(id) {
        Ok(parsed) if id.len() == 36 && !parsed.is_nil() => parsed,
        _ => {
            errors.add(field, "must be a UUID such as 550e8400-e29b-41d4-a716-446655440000 (not nil)");
            Uuid::nil()
        }
    }
}

/// An integer field. JSON Schema counts `2.0` (and `2e0`) as the integer 2, so they are read as
/// 2; a number with a fraction, or beyond 64 bits, is refused.
pub(crate) fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::Deserialize as _;
    use serde::de::Error as _;
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(whole) = number.as_i64() {
        return Ok(whole);
    }
    let text = number.to_string();
    let value = if text.contains(['e', 'E']) {
        Decimal::from_scientific(&text)
    } else {
        Decimal::from_str_exact(&text)
    };
    match value {
        Ok(value) if value.fract().is_zero() => {
            i64::try_from(value).map_err(|_| D::Error::custom("must be a whole number of at most 19 digits"))
        }
        _ => Err(D::Error::custom("must be a whole number")),
    }
}

/// `amount` rescaled to exactly `currency`'s fraction digits, or an error when it has more. With
/// no currency (an unknown one, already reported) the amount is kept as it is.
pub(crate) fn in_currency(
    amount: Amount,
    currency: Option<Currency>,
    field: &str,
    errors: &mut Errors,
) -> Amount {
    let Some(currency) = currency else { return amount };
    if amount.fraction_digits() > currency.fraction_digits() {
        errors.add(
            field,
            format!("{} allows at most {} fraction digits", currency, currency.fraction_digits()),
        );
        return amount;
    }
    let mut canonical = amount.as_decimal();
    canonical.rescale(currency.fraction_digits());
    Amount::new(canonical)
}

#[cfg(test)]
pub(crate) mod test_support {
    use eventline_runtime::problem::FieldError;

    /// The invalid fields of a rejected command, in order.
    pub fn fields<T: std::fmt::Debug>(result: Result<T, Vec<FieldError>>) -> Vec<String> {
        result.expect_err("should be invalid").into_iter().map(|e| e.field).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_repeat_for_the_same_seed_and_differ_between_seeds() {
        let (mut a, mut b, mut c) =
            (IdGen::derived([1; 32]), IdGen::derived([1; 32]), IdGen::derived([2; 32]));
        let first = a.next_id();
        assert_eq!(first, b.next_id());
        assert_ne!(first, a.next_id(), "successive ids differ");
        assert_ne!(first, c.next_id());
        assert_eq!(first.get_version_num(), 8);
        assert_eq!(IdGen::random().next_id().get_version_num(), 7);
    }

    #[test]
    fn amounts_are_rescaled_to_their_currency() {
        let usd = Some("USD".parse().unwrap());
        let jpy = Some("JPY".parse().unwrap());
        let check = |text: &str, currency| {
            let mut errors = Errors::default();
            let amount = in_currency(Amount::parse_plain(text).unwrap(), currency, "amount", &mut errors);
            errors.finish(|| amount.to_string()).map_err(|e| e[0].message.clone())
        };
        assert_eq!(check("10.5", usd).unwrap(), "10.50");
        assert_eq!(check("0", usd).unwrap(), "0.00");
        assert!(check("1.001", usd).unwrap_err().contains("at most 2 fraction digits"));
        assert!(check("1.5", jpy).unwrap_err().contains("at most 0 fraction digits"));
        assert_eq!(check("1.001", None).unwrap(), "1.001", "an unknown currency is reported elsewhere");
    }

    #[test]
    fn whole_numbers_may_be_written_with_a_zero_fraction() {
        #[derive(serde::Deserialize)]
        struct Quantity {
            #[serde(deserialize_with = "whole_number")]
            n: i64,
        }
        let read =
            |json: &str| serde_json::from_str::<Quantity>(json).map(|q| q.n).map_err(|e| e.to_string());
        assert_eq!(read(r#"{"n": 2}"#), Ok(2));
        assert_eq!(read(r#"{"n": 2.0}"#), Ok(2));
        assert_eq!(read(r#"{"n": 2e0}"#), Ok(2));
        assert_eq!(read(r#"{"n": -0.0}"#), Ok(0));
        assert!(read(r#"{"n": 2.5}"#).unwrap_err().contains("whole number"));
        assert!(read(r#"{"n": 1e30}"#).is_err());
        assert!(read(r#"{"n": "2"}"#).is_err());
    }
}
